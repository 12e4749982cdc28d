"""The logic of rz-worker: it reports to rz-master what its machine runs and converges on
what the master wants there (see docs/control-plane.md, "Reconciliation, not commands").

Runs in the rz-worker process, in one thread (the Supervisor's children die with the
thread that started them). Each step() polls the master's DEALER and every node's
`--control-fd` channel, then:

    master -> worker   WANT {start: [spec], stop: [node_id], connect: {node_id: [endpoint]}}
                       BLOB {hash}, bytes          the answer to a FETCH
    worker -> master   REGISTER, then HEARTBEAT    every HEARTBEAT_INTERVAL by the clock
                       FETCH {hash, what}          a snapshot's manifest or blob
                       LOG {node_id, lines}        the nodes' stderr, one batch a step

A start spec is {node_id, generation, argv, snapshot, env}. A node already known with
the same node_id and generation is adopted, not started again; one of another generation
is stopped first. Stops send SIGTERM and never wait: a later poll reaps the node, which is
reported once as STOPPED and then forgotten.
"""

import logging
import os
import secrets
import socket
import sys
import time
from collections import deque

import zmq

from rezina import defaults
from rezina.control import protocol, snapshot
from rezina.control.control_channel import Channel
from rezina.control.protocol import BadMessage, decode, encode
from rezina.control.supervisor import BACKOFF, FAILED, LIVE, STOPPED, NodeSpec, Supervisor
from rezina.errors import RezinaError
from rezina.security import Security, handshake_failure, unwatch_handshake, \
    watch_handshake

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 10.0            # seconds a FETCH waits for its BLOB
RUNS_KEPT = 1000                # run records kept while the master does not hear us
STOPPING = 'STOPPING'
GOODBYE_LINGER_MS = 500         # how long a stopping worker tries to say goodbye
SNAPSHOT_GC_INTERVAL = 600.0    # seconds between removals of the snapshots no node uses
STARTS_PER_STEP = 8             # node processes started in one pass of the loop
PENDING = 'PENDING'             # a start that could not begin (no code): its last_error says why


class Agent:
    """One machine's rz-worker: a DEALER to the master, and a Supervisor of its nodes."""

    def __init__(self, master_host, master_port, worker_ip, slots, root,
                 clock=time.monotonic, context=None, security=None, master_key=None):
        self.master = f"{master_host}:{master_port}"
        self.worker_ip = worker_ip
        self.slots = slots
        self.root = root
        self.clock = clock
        self.host = socket.gethostname()
        self.worker_id = f"{self.host}:{worker_ip}"
        self.session = secrets.token_hex(8)

        self.own_context = context is None
        self.context = context or zmq.Context()
        self.dealer = self.context.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        # nothing queues for a master that is not there: a heartbeat is sent again anyway
        self.dealer.setsockopt(zmq.IMMEDIATE, 1)
        (security or Security()).connect(self.dealer, master_key)
        self.monitor = watch_handshake(self.dealer)
        self.refusal = None         # why the master's handshake failed, logged once
        self.dealer.connect(f"tcp://{self.master}")

        self.supervisor = Supervisor(clock=clock, on_lines=self._on_lines,
                                     on_exit=self._on_exit)
        self.generations = {}       # node_id -> generation of the node we run
        self.pending = {}           # node_id -> start spec waiting for its old node to end
        self.stopping = set()       # node_ids stopped by the master's wish
        self.start_errors = {}      # node_id -> (generation, why it could not start)
        self.connects = {}          # node_id -> endpoints the master wants it to read from
        self.channels = {}          # node_id -> Channel of its current process
        self.runs = deque(maxlen=RUNS_KEPT)     # run records until the master acks them
        self.run_seq = 0
        self.inputs = {}            # node_id -> the endpoints its command line reads from
        self.lines = {}             # node_id -> stderr lines not yet sent
        self.deferred = deque()     # messages that came while a FETCH waited
        self.registered = False
        self.refused_since = None
        self.next_beat = clock()
        self.next_gc = clock() + SNAPSHOT_GC_INTERVAL
        self.more_to_start = False  # pending nodes left for the next step

    def step(self, timeout):
        """One pass of the loop: wait up to timeout s for the master or a node, then act."""
        self._sync_channels()
        poller = zmq.Poller()
        poller.register(self.dealer, zmq.POLLIN)
        for channel in self.channels.values():
            if channel.sock.fileno() != -1 and not channel.ended:
                poller.register(channel.sock, zmq.POLLIN)
        poller.poll(0 if self.more_to_start else max(0, int(timeout * 1000)))

        self._receive()
        for node_id, channel in list(self.channels.items()):
            self._take_records(node_id, channel)
        self._start_pending()
        self.supervisor.poll()
        self._sync_channels()
        if self.clock() >= self.next_gc:
            self.next_gc = self.clock() + SNAPSHOT_GC_INTERVAL
            self._gc()
        if self.clock() >= self.next_beat:
            self.next_beat = self.clock() + defaults.HEARTBEAT_INTERVAL
            self._beat()
        for node_id, lines in self.lines.items():
            self._send(protocol.LOG, {'node_id': node_id, 'lines': lines})
        self.lines.clear()

    def close(self, timeout=defaults.DRAIN_TIMEOUT + 5.0):
        """Stop every node (SIGKILL after timeout s) and close the sockets."""
        try:
            self.supervisor.close(timeout)
            if self.registered:         # so the master moves our nodes now, not in 3 s
                self._send(protocol.GOODBYE, {'worker': self.worker_id,
                                              'session': self.session})
        finally:
            unwatch_handshake(self.dealer, self.monitor)
            self.dealer.close(linger=GOODBYE_LINGER_MS)
            if self.own_context:
                self.context.term()

    # the master

    def _send(self, kind, header):
        try:
            self.dealer.send_multipart(encode(kind, header), zmq.NOBLOCK)
        except zmq.Again:
            log.debug("worker %s: rz-master at %s not connected; dropped a message",
                      self.worker_id, self.master)

    def _receive(self):
        for _ in range(256):        # bounded, as a node's reads are
            if self.deferred:
                frames = self.deferred.popleft()
            else:
                try:
                    frames = self.dealer.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    return
            try:
                kind, header, _ = decode(frames)
            except BadMessage as exc:
                log.warning("worker %s: a message from rz-master ignored: %s",
                            self.worker_id, exc)
                continue
            if kind == protocol.WANT:
                self._want(header)
            elif kind != protocol.BLOB:     # a BLOB here answers a FETCH that timed out
                log.debug("worker %s: unexpected %r ignored", self.worker_id, kind)

    def _beat(self):
        refusal = handshake_failure(self.monitor)
        if refusal and refusal != self.refusal:
            log.error("worker %s: rz-master at %s: %s", self.worker_id, self.master, refusal)
        self.refusal = refusal or self.refusal
        nodes = self._report()
        # every beat says who we are, so a restarted master knows us from the first one
        me = {'worker': self.worker_id, 'host': self.host, 'address': self.worker_ip,
              'slots': self.slots, 'session': self.session, 'nodes': nodes}
        if not self.registered:
            self._send(protocol.REGISTER, me)
            return
        self._send(protocol.HEARTBEAT, dict(me, runs=list(self.runs)))

        # a stopped node is reported once as such, then forgotten
        for node_id in list(self.stopping):
            node = self.supervisor.nodes.get(node_id)
            if node is None or node.state in (STOPPED, FAILED):
                self._forget(node_id)

    def _report(self):
        nodes = []
        for node in self.supervisor.nodes.values():
            entry = node.report()
            if node.node_id in self.stopping and node.state in LIVE:
                entry['state'] = STOPPING
            channel = self.channels.get(node.node_id)
            entry['generation'] = self.generations.get(node.node_id)
            entry['status'] = channel.status if channel else None
            entry['bound'] = list(channel.bound) if channel and node.pid else []
            nodes.append(entry)
        for node_id, (generation, why) in self.start_errors.items():
            nodes.append({'node_id': node_id, 'generation': generation, 'pid': None,
                          'state': PENDING, 'restarts': 0, 'last_error': why,
                          'status': None, 'bound': []})
        return nodes

    def _want(self, header):
        if header.get('error'):
            # a worker restarted at once is refused until its old self has been silent
            # for PEER_LOST_AFTER; one that is refused for longer is a duplicate
            if self.refused_since is None:
                self.refused_since = self.clock()
                log.warning("worker %s: rz-master says: %s; trying again", self.worker_id,
                            header['error'])
            elif self.clock() - self.refused_since > defaults.PEER_LOST_AFTER + 2.0:
                raise RezinaError(f"rz-master at {self.master} refused this worker: "
                                  f"{header['error']}")
            return
        self.refused_since = None
        self.registered = True
        acked = header.get('runs_ack')
        if isinstance(acked, int):
            while self.runs and self.runs[0]['seq'] <= acked:
                self.runs.popleft()
        for node_id in header.get('stop') or ():
            self._stop(str(node_id))
        for spec in header.get('start') or ():
            if not isinstance(spec, dict) or not isinstance(spec.get('node_id'), str) \
                    or not isinstance(spec.get('argv'), list) or not spec['argv']:
                log.warning("worker %s: a start spec ignored: %.200r", self.worker_id, spec)
                continue
            self._want_started(spec)
        for node_id, endpoints in (header.get('connect') or {}).items():
            wanted = self.connects.setdefault(str(node_id), [])
            wanted.extend(str(e) for e in endpoints or () if str(e) not in wanted)

    def _fetch(self, what, sha):
        """The bytes of a manifest or blob from the master.

        TODO: this blocks the loop (nodes' records and heartbeats wait) for up to 10 s a
        file; fetch in the background so a big snapshot does not stall the worker."""
        self._send(protocol.FETCH, {'hash': sha, 'what': what})
        deadline = time.monotonic() + FETCH_TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            if not self.dealer.poll(max(1, int(left * 1000))):
                continue
            frames = self.dealer.recv_multipart()
            try:
                kind, header, data = decode(frames)
            except BadMessage:
                continue
            if kind != protocol.BLOB or header.get('hash') != sha:
                self.deferred.append(frames)
                continue
            if header.get('error'):
                raise RezinaError(f"rz-master has no {what} {sha}: {header['error']}")
            return data or b''
        raise RezinaError(f"no {what} {sha} from rz-master at {self.master} "
                          f"within {FETCH_TIMEOUT:g} s")

    # the nodes

    def _want_started(self, spec):
        node_id, generation = spec['node_id'], spec.get('generation')
        node = self.supervisor.nodes.get(node_id)
        adopted = (node is not None and node_id not in self.stopping
                   and self.generations.get(node_id) == generation)
        if not adopted:
            self.pending[node_id] = spec

    def _start_pending(self):
        """Start the pending nodes, STARTS_PER_STEP at most, so that heartbeats, stops
        and signals are not held up while many start."""
        started = 0
        self.more_to_start = False
        for node_id, spec in list(self.pending.items()):
            if started == STARTS_PER_STEP:
                self.more_to_start = True
                return
            node = self.supervisor.nodes.get(node_id)
            if node is not None and (node.state in LIVE or node.state == BACKOFF):
                self._stop(node_id, keep_pending=True)    # another generation: it goes first
                continue
            if node is not None:
                self._forget(node_id)
            del self.pending[node_id]
            self._start(spec)
            started += 1

    def _start(self, spec):
        node_id, generation = spec['node_id'], spec.get('generation')
        argv = [_command(str(spec['argv'][0])), *map(str, spec['argv'][1:])]
        cwd = None
        if spec.get('snapshot'):
            try:
                cwd = snapshot.materialize(
                    spec['snapshot'], self.root,
                    lambda sha: self._fetch('manifest', sha),
                    lambda sha: self._fetch('blob', sha))
            except RezinaError as exc:
                log.error("node %s: cannot start: %s", node_id, exc)
                self.start_errors[node_id] = (generation, f"cannot get its code: {exc}")
                return
            argv += ['--path', cwd]
        env = {str(k): str(v) for k, v in (spec.get('env') or {}).items()}
        self.start_errors.pop(node_id, None)
        self.stopping.discard(node_id)
        self.generations[node_id] = generation
        self.inputs[node_id] = [argv[i + 1] for i in range(len(argv) - 1)
                                if argv[i] in ('--in', '-i')]
        self.supervisor.start(NodeSpec(node_id, argv, env=env or None, cwd=cwd, control=True))

    def _gc(self):
        """Remove the snapshots none of our nodes runs or waits to run."""
        keep = {os.path.basename(node.spec.cwd) for node in self.supervisor.nodes.values()
                if node.spec.cwd}
        keep.update(spec.get('snapshot') for spec in self.pending.values())
        try:
            removed = snapshot.gc(self.root, keep)
        except OSError as exc:
            log.warning("worker %s: cannot remove old snapshots: %s", self.worker_id, exc)
            return
        if removed:
            log.info("worker %s: removed %d snapshots no node uses", self.worker_id,
                     len(removed))

    def _stop(self, node_id, keep_pending=False):
        if not keep_pending:
            self.pending.pop(node_id, None)
        self.start_errors.pop(node_id, None)
        if node_id in self.supervisor.nodes:
            self.stopping.add(node_id)
            self.supervisor.terminate(node_id)

    def _forget(self, node_id):
        self.supervisor.remove(node_id)         # it has ended: this does not wait
        self.stopping.discard(node_id)
        self.generations.pop(node_id, None)
        self.channels.pop(node_id, None)
        self.inputs.pop(node_id, None)
        if node_id not in self.pending:
            self.connects.pop(node_id, None)

    def _sync_channels(self):
        """A channel for each node's current process; the connects it has not had."""
        for node in self.supervisor.nodes.values():
            channel = self.channels.get(node.node_id)
            if node.control_sock is not None and (channel is None
                                                  or channel.sock is not node.control_sock):
                channel = self.channels[node.node_id] = Channel(node.control_sock)
                channel.connected.update(self.inputs.get(node.node_id, ()))
            if channel is None or node.control_sock is None:
                continue
            new = [e for e in self.connects.get(node.node_id, ()) if e not in channel.connected]
            if new:
                channel.send({'op': 'connect', 'endpoints': new})
                channel.connected.update(new)
            channel.flush()

    def _take_records(self, node_id, channel):
        for record in channel.read():
            op = record.pop('op', None)
            if op == 'status':
                channel.status = record
            elif op == 'bound' and record.get('endpoint') not in channel.bound:
                channel.bound.append(record.get('endpoint'))
                self.next_beat = self.clock()       # consumers wait for it: tell at once
            elif op == 'run':
                self.run_seq += 1
                self.runs.append(dict(record, node_id=node_id, seq=self.run_seq,
                                      at=time.time()))

    def _on_exit(self, node):
        """A node's process ended: read the records it sent last."""
        channel = self.channels.get(node.node_id)
        if channel is not None and channel.sock is node.control_sock:
            self._take_records(node.node_id, channel)
            node.ended = bool((channel.status or {}).get('ended'))

    def _on_lines(self, node_id, lines):
        self.lines.setdefault(node_id, []).extend(lines)


def _command(name):
    """An rz command beside this Python (the worker's venv), else name for PATH."""
    if os.sep not in name:
        path = os.path.join(os.path.dirname(sys.executable), name)
        if os.access(path, os.X_OK):
            return path
    return name
