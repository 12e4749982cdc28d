"""The records rz-master keeps in memory of what it wants run where: Worker, Typology and
Placement, and the states they are in (see docs/control-plane.md, "States").

Runs in rz-master's one thread; the Registry (rezina/control/registry.py) holds these
records and writes them through to the State.

Placement states, as the workers report them (STARTING, RUNNING, BACKOFF, FAILED,
STOPPING, PENDING) and the master's own:

    WAITING   placed, not yet started: no worker, or its producers have no endpoint yet
    DONE      exited 0 by itself (a one-shot run ended)

A placement's `want` is 'run' or 'stop'. A 'stop' placement is forgotten once its worker
no longer reports it, has stopped it, or is offline.
"""

import datetime
import time

from rezina.control import plan

ONLINE, OFFLINE = 'ONLINE', 'OFFLINE'
WAITING, DONE, FAILED, RUNNING = 'WAITING', 'DONE', 'FAILED', 'RUNNING'
# typology states
STARTING, DEGRADED, STOPPING, STOPPED, COMPLETE = (
    'STARTING', 'DEGRADED', 'STOPPING', 'STOPPED', 'COMPLETE')
ACTIVE = (STARTING, RUNNING, DEGRADED)
ENDED = ('STOPPED', FAILED, 'PENDING')      # reported states of a node that is not running


def one_shot_id():
    """The run id of a one-shot typology's start: UTC, to the millisecond."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime('%Y%m%dT%H%M%S.') + f"{now.microsecond // 1000:03d}Z"


class Worker:
    """An rz-worker as the master knows it: where it is, its slots, its last reports."""

    def __init__(self, id, host, address, slots, session, state=ONLINE, seen=None):
        self.id = id
        self.host = host
        self.address = address
        self.slots = max(1, int(slots or 1))
        self.session = session
        self.state = state
        self.seen = seen if seen is not None else time.monotonic()
        self.wall_seen = time.time()
        self.peer = None            # its ROUTER identity
        self.reported = {}          # node_id -> its last report


class Placement:
    """One node of a typology's stage: the worker it is placed on and how it runs there."""

    def __init__(self, node_id, typology, stage, idx, worker_id=None, generation=1,
                 base=None, state=WAITING, restarts=0, last_error=None, endpoint=None,
                 want='run'):
        self.node_id = node_id
        self.typology = typology
        self.stage = stage
        self.idx = idx
        self.worker_id = worker_id
        self.generation = generation
        self.base = base or []
        self.state = state
        self.restarts = restarts
        self.last_error = last_error
        self.endpoint = endpoint
        self.want = want
        self.argv = None            # the command line it was last started with
        self.sent_at = None         # when a start was last sent (monotonic)
        self.status = {}
        self.pid = None
        self.rate = 0.0
        self._last = None           # (monotonic, items) of the last status, for the rate

    def saved(self):
        return {'base': self.base, 'want': self.want, 'argv': self.argv}


class Typology:
    """A submitted typology: its spec, snapshot, state and stages."""

    def __init__(self, name, spec, snapshot, state):
        self.name = name
        self.spec = spec
        self.snapshot = snapshot
        self.state = state
        self.stages = plan.stages(spec)
        self.removing = False       # forget it once its nodes have stopped
