"""The client ops of rz-master: what `rz`, the HTTP API and TypologyBuilder ask (see
docs/control-plane.md, "Client ops: arguments and results").

Runs in rz-master's loop. answer() turns a REQUEST header into a REPLY header; an op's
UsageError or RezinaError becomes {ok: false, error: its one line}.
"""

import logging
import os
import time

from rezina.control import plan, targets
from rezina.control.records import ACTIVE, OFFLINE, ONLINE
from rezina.errors import RezinaError
from rezina.schedule import resolve_first, grid_index

log = logging.getLogger(__name__)

LOG_TAIL_MAX = 10000            # most log lines one logs request answers
LOG_READ_MAX = 1 << 20          # most bytes of log one logs request reads


class Ops:
    def __init__(self, master):
        self.master = master
        self.registry = master.registry

    def answer(self, header):
        rid, op = header.get('rid'), header.get('op')
        args = header.get('args') if isinstance(header.get('args'), dict) else {}
        handler = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
        if handler is None:
            return {'rid': rid, 'ok': False, 'error': f"unknown op {op!r}"}
        try:
            return {'rid': rid, 'ok': True, 'result': handler(**args)}
        except TypeError as exc:
            return {'rid': rid, 'ok': False, 'error': f"op {op}: {exc}"}
        except RezinaError as exc:
            return {'rid': rid, 'ok': False, 'error': str(exc)}
        except Exception as exc:            # a bug: answered, so the client does not wait
            log.exception("op %s failed", op)
            return {'rid': rid, 'ok': False,
                    'error': f"rz-master failed on {op}: {type(exc).__name__}: {exc}"}

    # reading

    def op_workers(self):
        reg = self.registry
        return [{'id': w.id, 'host': w.host, 'address': w.address, 'slots': w.slots,
                 'load': reg.load(w.id), 'state': w.state,
                 'last_heartbeat': w.wall_seen if w.state != OFFLINE or w.peer else None,
                 'nodes': len(w.reported)}          # what it runs, by its last report
                for w in sorted(reg.workers.values(), key=lambda w: w.id)]

    def op_ls(self):
        out = []
        for t in sorted(self.registry.typologies.values(), key=lambda t: t.name):
            runs = self.master.state.runs(t.name, limit=1)
            nodes = self.registry.of(t.name)
            out.append({'name': t.name, 'state': t.state,
                        'schedule': _schedule(t.spec), 'last_run': runs[0] if runs else None,
                        'next_run': _next_run(t) if t.state in ACTIVE else None,
                        'nodes': len(nodes),
                        'failed_nodes': sum(1 for p in nodes if p.state == 'FAILED'),
                        'missed': sum(p.status.get('missed', 0) for p in nodes)})
        return out

    def op_ps(self, typology=None):
        if typology is not None:
            self.registry.get(typology)
        rows = []
        for p in sorted(self.registry.placements.values(),
                        key=lambda p: (p.typology, self._stage_index(p), p.idx)):
            if typology is not None and p.typology != typology:
                continue
            s = p.status
            state = 'STOPPING' if p.want == 'stop' else p.state
            worker = self.registry.workers.get(p.worker_id)
            if state in ('STARTING', 'RUNNING') and worker is not None \
                    and worker.state != ONLINE:
                state = 'UNKNOWN'       # its worker is not heard from: we cannot tell
            rows.append({'typology': p.typology, 'node_id': p.node_id, 'stage': p.stage,
                         'index': p.idx, 'worker': p.worker_id, 'pid': p.pid,
                         'state': state,
                         'restarts': p.restarts,
                         'items_in': s.get('items_in'),
                         'items_out': s.get('items_out', s.get('stored')),
                         'failed': s.get('failed'), 'dropped': s.get('dropped'),
                         'redelivered': s.get('redelivered'), 'rejected': s.get('rejected'),
                         'busy_seconds': s.get('busy_seconds'), 'rate': round(p.rate, 1),
                         'in_flight': s.get('in_flight', s.get('runs_in_flight')),
                         'oldest_age': s.get('oldest_age'), 'last_error': p.last_error,
                         'endpoint': p.endpoint, 'generation': p.generation})
        return rows

    def _stage_index(self, p):
        t = self.registry.typologies.get(p.typology)
        for stage in t.stages if t else ():
            if stage.name == p.stage:
                return stage.index
        return 1 << 30

    def op_runs(self, typology, limit=50):
        runs = self.master.state.runs(typology, limit=int(limit))
        if not runs:
            self.registry.get(typology)       # an unknown name, or one never run
        return [{k: r[k] for k in ('run_id', 'started', 'ended', 'items', 'failed', 'state')}
                for r in runs]

    def op_failures(self, typology, limit=50):
        typology = str(typology)
        if not self.master.failed_items.known(typology):
            self.registry.get(typology)       # an unknown name, or one with none yet
        return self.master.failed_items.newest(typology, max(1, int(limit)))

    def op_stages(self, typology):
        return [s.describe() for s in self.registry.get(typology).stages]

    def op_logs(self, typology, cursor=None, limit=100):
        self.registry.get(typology)
        path = self.master.log_path(typology)
        limit = max(1, min(int(limit), LOG_TAIL_MAX))
        try:
            with open(path, 'rb') as f:
                size = f.seek(0, os.SEEK_END)
                if cursor is None or not 0 <= int(cursor) <= size:
                    start = max(0, size - LOG_READ_MAX)
                    f.seek(start)
                    lines = f.read().splitlines()[-limit:]
                    return {'lines': [b.decode('utf-8', 'replace') for b in lines],
                            'cursor': size}
                f.seek(int(cursor))
                data = f.read(LOG_READ_MAX)
        except FileNotFoundError:
            return {'lines': [], 'cursor': 0}
        end = data.rfind(b'\n') + 1                 # whole lines only
        return {'lines': [b.decode('utf-8', 'replace') for b in data[:end].splitlines()],
                'cursor': int(cursor) + end}

    # changing

    def op_submit(self, spec):
        return self.op_start(spec=spec)

    def op_start(self, spec=None, typology=None):
        if spec is None:
            self._not_returned(str(typology))
            t = self.registry.start(str(typology))
            return {'typology': t.name, 'state': t.state}
        plan.check_spec(spec)
        t = self.registry.typologies.get(spec['name'])
        if t is not None and (t.state in ACTIVE or self.registry.of(t.name)):
            raise RezinaError(f"typology {t.name} is {t.state} already: restart it, or "
                              f"stop it first")
        return self._put(spec)

    def op_restart(self, spec=None, typology=None):
        if spec is None:
            t = self._not_returned(str(typology))
            return self._put(t.spec, stop_first=True)
        plan.check_spec(spec)
        return self._put(spec)

    def _not_returned(self, name):
        t = self.registry.get(name)
        if t.spec['bocca'].get('remote'):
            raise RezinaError(f"typology {name}: its results went to the process that "
                              f"submitted it ({t.spec['bocca']['target'].split(':')[-1]}); "
                              f"start it again from there")
        return t

    def _put(self, spec, stop_first=False):
        """Snapshot the workspace, check the spec's code is in it, then run the spec
        (after stopping the typology's nodes, for a restart by name)."""
        snapshot_id = self.master.take_snapshot()
        targets.check(spec, self.master.store, snapshot_id, self.master.workspace)
        if stop_first:
            self.registry.stop(spec['name'], staged=False)
        t = self.registry.put(spec, snapshot_id)
        log.info("typology %s submitted (snapshot %s)", t.name, snapshot_id[:12])
        self.master.forget_snapshots()
        return {'typology': t.name, 'state': t.state, 'snapshot': snapshot_id}

    def op_stop(self, typology):
        t = self.registry.stop(str(typology))
        return {'typology': t.name, 'state': t.state}

    def op_remove(self, typology):
        name = str(typology)
        state = self.registry.remove(name)
        if state == 'REMOVED':
            self.master.failed_items.forget(name)
        self.master.forget_snapshots()
        return {'typology': name, 'state': state}

    def op_scale(self, typology, stage, n):
        if type(n) is not int:
            raise RezinaError(f"scale {typology} {stage} {n!r}: expected a whole number")
        return self.registry.scale(str(typology), stage, n)


def _schedule(spec):
    s = spec.get('schedule') or {}
    return {'start': s.get('start'), 'interval': s.get('interval'), 'cron': s.get('cron')}


def _next_run(t):
    s = t.spec.get('schedule') or {}
    now = time.time()
    if s.get('cron'):
        from rezina.cron import CronSchedule        # croniter costs 20 ms to import
        try:
            return CronSchedule(s['cron'], s.get('start')).first
        except RezinaError:
            return None
    if s.get('interval'):
        first = resolve_first(now, s['interval'], s.get('start'))
        if first >= now:
            return first
        return grid_index(now, s['interval']) * s['interval']
    return None
