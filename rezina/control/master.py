"""rz-master's loop: one ROUTER for workers and clients, the Registry of what runs where,
the typologies' log files and the workspace snapshots (see docs/control-plane.md).

Runs in rz-master's main thread. Each pass waits up to 0.1 s for a message, answers it,
then marks silent workers offline and reconciles the placements. A worker's HEARTBEAT is
answered by a WANT built from the placements; REQUESTs are answered by ops.Ops.
"""

import logging
import os
import time
from collections import OrderedDict

import zmq

from rezina.control import plan, protocol, snapshot
from rezina.control.failed_items import FailedItems
from rezina.control.ops import Ops
from rezina.control.protocol import BadMessage, decode, encode
from rezina.control.records import DONE, ENDED, WAITING
from rezina.control.registry import Registry
from rezina.errors import RezinaError
from rezina.security import Security

log = logging.getLogger(__name__)

RUN_FAILURES_KEPT = 10000       # runs whose failures by node the master keeps in memory
RESEND_START = 5.0              # seconds before a start not yet seen running is sent again


class Master:
    def __init__(self, state, host, port, workspace, logdir, context=None, security=None):
        self.state = state
        self.workspace = os.path.abspath(os.path.expanduser(workspace))
        self.logdir = os.path.abspath(os.path.expanduser(logdir))
        self.store = os.path.join(os.path.dirname(state.path), 'snapshots')
        self.registry = Registry(state)
        self.run_failures = OrderedDict()   # (typology, run) -> {source, nodes: {id: n}}
        self.failed_items = FailedItems()
        self.ops = Ops(self)
        self.context = context or zmq.Context.instance()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.security = security or Security()
        try:
            self.security.bind(self.router, f"tcp://{host}:{port or '*'}", 'rz-master')
        except RezinaError:
            self.router.close()
            raise
        try:
            if port == 0:
                self.port = self.router.bind_to_random_port(f"tcp://{host}")
            else:
                self.router.bind(f"tcp://{host}:{port}")
                self.port = port
        except zmq.ZMQError as exc:
            self.router.close()
            raise RezinaError(f"cannot bind the control socket on {host}:{port}: "
                              f"{exc}") from None
        self.host = host
        for what, path in (('log dir', self.logdir), ('workspace', self.workspace)):
            try:
                os.makedirs(path, exist_ok=True)
            except OSError as exc:
                self.router.close()
                raise RezinaError(f"cannot use {what} {path}: {exc.strerror}") from None
        log.info("rz-master listening on %s:%d, %s (workspace %s, logs %s, state %s)",
                 host, self.port, self.security.describe(), self.workspace, self.logdir,
                 os.path.dirname(state.path))

    def run(self, should_stop):
        while not should_stop():
            self.step(0.1)

    def step(self, timeout):
        if self.router.poll(int(timeout * 1000)):
            for _ in range(1000):           # bounded, so reconciliation is not starved
                try:
                    frames = self.router.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._handle(frames)
        try:
            self.registry.check_workers()
            self.registry.reconcile()
        except Exception:                   # logged; the next pass tries again
            log.exception("reconciliation failed")

    def close(self):
        self.router.close(linger=0)
        self.security.close()

    # messages

    def _handle(self, frames):
        if len(frames) < 2:
            return
        peer, rest = frames[0], frames[1:]
        try:
            kind, header, _ = decode(rest)
        except BadMessage as exc:
            log.warning("a control message that is not rezina's: %s", exc)
            return
        try:
            if kind in (protocol.REGISTER, protocol.HEARTBEAT):
                self._heartbeat(peer, header)
            elif kind == protocol.REQUEST:
                self._send(peer, protocol.REPLY, self.ops.answer(header))
            elif kind == protocol.GOODBYE:
                self.registry.worker_left(header)
            elif kind == protocol.LOG:
                self._log_lines(header)
            elif kind == protocol.FETCH:
                self._fetch(peer, header)
        except Exception:                   # one bad message never stops the master
            log.exception("a control message of kind %s failed", kind.decode('ascii',
                                                                             'replace'))

    def _send(self, peer, kind, header, blob=None):
        try:
            self.router.send_multipart([peer, *encode(kind, header, blob)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.debug("an answer could not be sent: %s", exc)

    def _fetch(self, peer, header):
        sha = str(header.get('hash'))
        try:
            if header.get('what') == 'manifest':
                data = snapshot.manifest_bytes(self.store, sha)
            else:
                data = snapshot.blob(self.store, sha)
            self._send(peer, protocol.BLOB, {'hash': sha}, data)
        except RezinaError as exc:
            self._send(peer, protocol.BLOB, {'hash': sha, 'error': str(exc)}, b'')

    # workers

    def _heartbeat(self, peer, header):
        reg = self.registry
        try:
            worker = reg.worker_seen(header, peer)
        except RezinaError as exc:
            self._send(peer, protocol.WANT, {'error': str(exc)})
            return
        reported = {}
        for entry in header.get('nodes') or ():
            if isinstance(entry, dict) and isinstance(entry.get('node_id'), str):
                reported[entry['node_id']] = entry
        worker.reported = reported
        for entry in reported.values():
            self._take_report(worker, entry)
        acked = self._take_runs(header.get('runs') or ())
        want = self._want(worker, reported)
        if acked is not None:
            want['runs_ack'] = acked
        self._send(peer, protocol.WANT, want)

    def _take_report(self, worker, entry):
        p = self.registry.placements.get(entry['node_id'])
        if p is None or p.worker_id != worker.id or p.generation != entry.get('generation'):
            return
        state = entry.get('state')
        if (state == 'STOPPED' and p.want == 'run') or p.state == DONE:
            state = DONE                # ended by itself, or all its producers have
        changed = (state != p.state or entry.get('restarts', 0) != p.restarts
                   or entry.get('last_error') != p.last_error)
        if state == 'FAILED' and p.state != 'FAILED':
            log.error("node %s on %s FAILED: %s", p.node_id, worker.id,
                      entry.get('last_error'))
        p.state, p.pid = state, entry.get('pid')
        p.restarts, p.last_error = entry.get('restarts', 0), entry.get('last_error')
        bound = entry.get('bound') or []
        if bound and bound[-1] != p.endpoint:
            p.endpoint, changed = bound[-1], True
        status = entry.get('status') or {}
        if isinstance(status.get('failed_by_run'), dict):
            self._node_failures(p, status['failed_by_run'])
        self.failed_items.take(p, status, worker.id)
        if status:
            items = status.get('items_out', status.get('stored', 0)) or 0
            now = time.monotonic()
            if p._last is not None and now > p._last[0] and items >= p._last[1]:
                p.rate = (items - p._last[1]) / (now - p._last[0])
            p._last = (now, items)
            p.status = status
        if changed:
            self.registry.save(p)

    def _node_failures(self, p, by_run):
        """A node's failed items by run: a run's FAILED counts them all, the source's and
        those of every stage after it."""
        for run, count in by_run.items():
            key = (p.typology, str(run))
            known = self.run_failures.get(key)
            if known is None:
                known = self.run_failures[key] = {'source': 0, 'nodes': {}}
                if len(self.run_failures) > RUN_FAILURES_KEPT:
                    self.run_failures.popitem(last=False)
            if isinstance(count, int) and known['nodes'].get(p.node_id) != count:
                known['nodes'][p.node_id] = count
                self.state.record_run(p.typology, str(run),
                                      failed=known['source'] + sum(known['nodes'].values()))

    def _take_runs(self, runs):
        acked = None
        for run in runs:
            if not isinstance(run, dict):
                continue
            typology = str(run.get('node_id', '')).split(plan.SEP)[0]
            at = run.get('at') or time.time()
            seconds = run.get('seconds') or 0.0
            known = self.run_failures.setdefault((typology, str(run.get('run'))),
                                                 {'source': 0, 'nodes': {}})
            known['source'] = run.get('failed') or 0
            self.state.record_run(typology, str(run.get('run')), started=at - seconds,
                                  ended=at, items=run.get('items'),
                                  failed=known['source'] + sum(known['nodes'].values()),
                                  state=run.get('state'))
            if isinstance(run.get('seq'), int):
                acked = max(acked or 0, run['seq'])
        return acked

    def _want(self, worker, reported):
        """What this worker should run: starts, stops and producers to connect."""
        reg = self.registry
        start, stop, connect = [], [], {}
        now = time.monotonic()
        for node_id, entry in reported.items():
            p = reg.placements.get(node_id)
            done = p is not None and p.state == DONE and entry.get('state') not in ENDED
            if p is None or p.worker_id != worker.id or p.want == 'stop' or done:
                if p is None and entry.get('state') not in ENDED:
                    log.info("node %s on %s belongs to no typology: stopped", node_id,
                             worker.id)
                stop.append(node_id)
                if p is not None and p.want == 'stop' and p.worker_id == worker.id \
                        and entry.get('state') in ENDED:
                    reg.forget(p)
        for p in list(reg.placements.values()):
            if p.worker_id != worker.id:
                continue
            if p.want == 'stop':
                if p.node_id not in reported:
                    reg.forget(p)
                continue
            entry = reported.get(p.node_id)
            if p.state == DONE:
                continue                # nothing to start: its part of the run is over
            if entry is not None and entry.get('generation') == p.generation \
                    and entry.get('state') != 'PENDING':
                if p.state != DONE:
                    connect[p.node_id] = reg.producers(p)
                continue
            if p.sent_at is not None and now - p.sent_at < RESEND_START:
                continue
            spec = self._start_spec(p)
            if spec is not None:
                start.append(spec)
                p.sent_at = now
        return {'start': start, 'stop': stop, 'connect': connect}

    def _start_spec(self, p):
        t = self.registry.typologies.get(p.typology)
        if t is None:
            return None
        stage = next((s for s in t.stages if s.name == p.stage), None)
        endpoints = self.registry.producers(p)
        if stage is None or (stage.kind != plan.HYDRANT and not endpoints):
            return None                 # its producers have no endpoint yet
        p.argv = plan.with_inputs(p.base, endpoints)
        if p.state == WAITING:
            p.state = 'STARTING'
        self.registry.save(p)
        return {'node_id': p.node_id, 'generation': p.generation, 'argv': p.argv,
                'snapshot': t.snapshot, 'env': {}}

    # logs

    def log_path(self, typology):
        return os.path.join(self.logdir, plan.safe_name(typology) + '.log')

    def _log_lines(self, header):
        node_id = str(header.get('node_id'))
        typology = node_id.split(plan.SEP)[0]
        lines = [str(line) for line in header.get('lines') or ()]
        if not lines or typology not in self.registry.typologies:
            return
        stamp = time.strftime('%Y-%m-%d %H:%M:%S')
        try:
            with open(self.log_path(typology), 'a', encoding='utf-8') as f:
                f.writelines(f"{stamp} {node_id}: {line.rstrip()}\n" for line in lines)
        except OSError as exc:
            log.warning("typology %s: %d log lines lost: %s", typology, len(lines), exc)

    def forget_snapshots(self):
        """Remove the stored snapshots no typology runs (the ones of stopped nodes still
        draining go too: they have their code)."""
        keep = {t.snapshot for t in self.registry.typologies.values()}
        removed = snapshot.gc_store(self.store, keep)
        if removed:
            log.info("removed %d snapshots no typology uses", len(removed))

    def take_snapshot(self):
        return snapshot.take(self.workspace, self.store)

