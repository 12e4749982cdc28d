"""What rz-master wants run where: its registry of typologies, their node placements and
the workers, in memory, written through to the State (see docs/control-plane.md, "States").

Runs in rz-master's one thread. The Registry decides (place, move, scale, stop); the
Master feeds it the workers' reports and sends the WANTs it builds. The records it holds,
and their states, are in rezina/control/records.py.
"""

import logging
import time

from rezina import defaults
from rezina.control import plan
from rezina.control.records import (ACTIVE, COMPLETE, DEGRADED, DONE, FAILED, OFFLINE,
                                    ONLINE, RUNNING, STARTING, STOPPED, STOPPING, WAITING,
                                    Placement, Typology, Worker, one_shot_id)
from rezina.errors import RezinaError, UsageError

log = logging.getLogger(__name__)
NODES_PER_SLOT = 4              # the most nodes a stage may be scaled to, a slot of all workers


class Registry:
    def __init__(self, state, clock=time.monotonic):
        self.state = state
        self.clock = clock
        self.workers = {}
        self.typologies = {}
        self.placements = {}
        self._load()

    def _load(self):
        """What the state holds: typologies and placements as they were; workers offline
        until they report, with PEER_LOST_AFTER and a little more to do so."""
        now = self.clock()
        for row in self.state.workers():
            self.workers[row['id']] = Worker(row['id'], row['host'], row['address'],
                                             row['slots'], row['session'], OFFLINE,
                                             seen=now + 2.0)
            self.workers[row['id']].state = row['state']
        for row in self.state.typologies():
            self.typologies[row['name']] = Typology(row['name'], row['spec'],
                                                    row['snapshot'], row['state'])
        for row in self.state.placements():
            saved = row['spec'] or {}
            p = Placement(row['node_id'], row['typology'], row['stage'], row['idx'],
                          row['worker_id'], row['generation'], saved.get('base'),
                          row['state'], row['restarts'], row['last_error'], row['endpoint'],
                          saved.get('want', 'run'))
            p.argv = saved.get('argv')
            self.placements[p.node_id] = p

    # workers

    def worker_seen(self, header, peer):
        """A REGISTER or HEARTBEAT from a worker: the Worker, known now."""
        wid = str(header.get('worker'))
        w = self.workers.get(wid)
        if w is not None and w.state == ONLINE and w.session != header.get('session') \
                and w.peer is not None and w.peer != peer \
                and self.clock() - w.seen < defaults.PEER_LOST_AFTER:
            raise RezinaError(f"another rz-worker is online as {wid} (same host and "
                              f"--worker-ip): give this one another --worker-ip")
        if w is None or w.session != header.get('session') or w.state != ONLINE:
            log.info("worker %s at %s is online (%s slots)", wid, header.get('address'),
                     header.get('slots'))
        changed = w is None or w.state != ONLINE or w.session != header.get('session')
        if w is None:
            w = self.workers[wid] = Worker(wid, header.get('host'), header.get('address'),
                                           header.get('slots'), header.get('session'))
        w.host, w.address = header.get('host') or w.host, header.get('address') or w.address
        w.slots = max(1, int(header.get('slots') or w.slots))
        w.session, w.state, w.peer = header.get('session'), ONLINE, peer
        w.seen, w.wall_seen = self.clock(), time.time()
        if changed:
            self.state.upsert_worker(w.id, w.host, w.address, w.slots, w.session, ONLINE,
                                     w.wall_seen)
        return w

    def worker_left(self, header):
        """A worker said goodbye (it is stopping): offline now, its nodes move."""
        w = self.workers.get(str(header.get('worker')))
        if w is not None and w.session == header.get('session') and w.state == ONLINE:
            log.info("worker %s: stopped", w.id)
            self._offline(w)

    def _offline(self, w):
        w.state = OFFLINE
        w.reported = {}
        w.peer = None
        self.state.set_worker_state(w.id, OFFLINE)

    def check_workers(self):
        now = self.clock()
        for w in self.workers.values():
            if w.state == ONLINE and now - w.seen > defaults.PEER_LOST_AFTER:
                log.warning("worker %s: no heartbeat for %.1f s: offline", w.id, now - w.seen)
                self._offline(w)

    def load(self, worker_id):
        return sum(self._weight(p) for p in self.placements.values()
                   if p.worker_id == worker_id and p.want == 'run' and p.state != DONE)

    def _weight(self, p):
        t = self.typologies.get(p.typology)
        stage = t and next((s for s in t.stages if s.name == p.stage), None)
        return stage.weight if stage else 1

    def choose(self, typology, stage_name, exclude=()):
        """The online worker for a new node: least loaded, the stage's other nodes' workers
        last; None if no worker is online."""
        online = [w for w in self.workers.values() if w.state == ONLINE and w.id not in exclude]
        if not online:
            return None
        holding = {p.worker_id for p in self.placements.values()
                   if p.typology == typology and p.stage == stage_name and p.want == 'run'}
        return min(online, key=lambda w: (w.id in holding, self.load(w.id) / w.slots,
                                          w.id)).id

    # typologies

    def put(self, spec, snapshot):
        """Record a typology to run (a new one, or a changed one replacing its nodes)."""
        name = spec['name']
        old = self.typologies.get(name)
        schedule = spec.get('schedule') or {}
        if schedule.get('interval') is None and not schedule.get('cron'):
            spec = dict(spec, run_id=one_shot_id())                     # one run, named
        t = Typology(name, spec, snapshot, STARTING)
        self.typologies[name] = t
        self.state.put_typology(name, spec, snapshot, STARTING)
        if old is not None:
            for p in self.of(name):
                stage = next((s for s in t.stages if s.name == p.stage), None)
                same = (stage is not None and old.snapshot == snapshot
                        and p.base == self._base(t, stage, p) and p.idx < stage.count)
                if not same:
                    self._stop(p)
        return t

    def _base(self, t, stage, p):
        worker = self.workers.get(p.worker_id)
        address = worker.address if worker else '127.0.0.1'
        return plan.base_argv(t.spec, stage, address, t.spec.get('run_id'))

    def _generation(self):
        """A generation no node has had: the time in ms, rising."""
        self._last_generation = max(int(time.time() * 1000),
                                    getattr(self, '_last_generation', 0) + 1)
        return self._last_generation

    def stop(self, name, staged=True):
        """Stop a typology's nodes: staged, a stage at a time from its sources, as a
        shell pipeline ends, so that each stage stops once its producers have ended and
        has nothing left to wait for (nodes on two workers, told at once, do not stop at
        the same instant); else all at once (a restart, which replaces them all)."""
        t = self.get(name)
        if t.state not in (STOPPED, COMPLETE):
            self._set_state(t, STOPPING)
        if staged:
            self._stop_next_stage(t, self.of(name))
        else:
            for p in self.of(name):
                self._stop(p)
        return t

    def _stop_next_stage(self, t, placements):
        """Stop the nodes of the first level that has any left."""
        level_of = {s.name: s.level for s in t.stages}
        left = [p for p in placements if p.typology == t.name]
        if not left:
            return
        first = min(level_of.get(p.stage, 0) for p in left)
        for p in left:
            if level_of.get(p.stage, 0) == first:
                self._stop(p)

    def start(self, name):
        t = self.get(name)
        if t.state in ACTIVE:
            raise UsageError(f"typology {name} is running already ({t.state})")
        if any(p.want == 'stop' for p in self.of(name)):
            raise UsageError(f"typology {name} is still stopping; start it once it has "
                             f"stopped")
        for p in list(self.of(name)):
            self.forget(p)
        if t.spec.get('run_id'):
            t.spec = dict(t.spec, run_id=one_shot_id())
            self.state.put_typology(name, t.spec, t.snapshot, t.state)
        self._set_state(t, STARTING)
        return t

    def scale(self, name, which, n):
        t = self.get(name)
        stage = plan.find_stage(t.spec, which)
        if stage.kind == plan.HYDRANT:
            raise UsageError(f"typology {name}: stage {stage.name} is a hydrant, which has "
                             f"one node per source")
        if stage.kind == plan.BOCCA and t.spec['bocca'].get('remote'):
            raise UsageError(f"typology {name}: its bocca runs in the submitting process")
        if n < 1:
            raise UsageError(f"scale {name} {stage.name} {n}: expected at least 1 node")
        slots = sum(w.slots for w in self.workers.values()) or 1
        if n > NODES_PER_SLOT * slots and n > stage.count:
            raise UsageError(f"scale {name} {stage.name} {n}: more than {NODES_PER_SLOT} "
                             f"nodes a slot of the workers ({slots} slots, so at most "
                             f"{NODES_PER_SLOT * slots} nodes a stage): add workers or "
                             f"give them more --slots")
        was = stage.count
        counts = dict(t.spec.get('counts') or {})
        counts[stage.name] = n
        t.spec = dict(t.spec, counts=counts)
        t.stages = plan.stages(t.spec)
        self.state.put_typology(name, t.spec, t.snapshot, t.state)
        log.info("typology %s: stage %s scaled from %d to %d nodes", name, stage.name, was, n)
        return {'typology': name, 'stage': stage.name, 'nodes': n, 'was': was}

    def remove(self, name):
        """Forget a typology, at once if it has no nodes, else once they have stopped;
        its runs stay. Returns its state: REMOVED or STOPPING."""
        t = self.get(name)
        if t.state not in (STOPPED, COMPLETE) or self.of(name):
            self.stop(name)
            t.removing = True
            if self.of(name):
                return STOPPING
        del self.typologies[name]
        self.state.remove_typology(name)
        log.info("typology %s removed", name)
        return 'REMOVED'

    def _stopped(self, t):
        self._set_state(t, STOPPED)
        if t.removing:
            self.remove(t.name)

    def get(self, name):
        t = self.typologies.get(name)
        if t is None:
            raise UsageError(f"unknown typology {name!r}")
        return t

    def of(self, name):
        return [p for p in self.placements.values() if p.typology == name]

    def _set_state(self, t, state):
        if t.state != state:
            log.info("typology %s: %s", t.name, state)
            t.state = state
            self.state.set_typology_state(t.name, state)

    # placements

    def reconcile(self):
        """Place what is missing, move what sits on offline workers, stop what is scaled
        away, and bring each typology's state up to date."""
        for t in list(self.typologies.values()):
            if t.state in ACTIVE:
                self._place(t)
            placements = self.of(t.name)
            if t.state == STOPPING and placements:
                self._stop_next_stage(t, placements)
            if t.state == STOPPING and not self.of(t.name):
                self._stopped(t)
            elif t.state in ACTIVE:
                if not plan.periodic(t.spec):
                    self._end_orphans(t, placements)
                running = [p for p in placements if p.want == 'run']
                if any(p.state == FAILED for p in running):
                    self._set_state(t, DEGRADED)
                elif running and all(p.state == DONE for p in running):
                    self._set_state(t, COMPLETE)
                    for p in running:
                        self._stop(p)
                elif running and all(p.state in (RUNNING, DONE) for p in running):
                    self._set_state(t, RUNNING)

    def _end_orphans(self, t, placements):
        """In a one-shot typology, a node whose producers have all ended has nothing
        left to do (a producer ends only once its items are stored), though one restarted
        after a crash would wait for them forever: it is DONE, and is stopped."""
        for stage in t.stages:
            names = {s.name for s in plan.producers_of(t.stages, stage)}
            producers = [p for p in placements if p.stage in names and p.want == 'run']
            if not producers or any(p.state != DONE for p in producers):
                continue
            for p in placements:
                if p.stage == stage.name and p.want == 'run' and p.state != DONE:
                    log.info("node %s: its producers have ended: done", p.node_id)
                    p.state = DONE
                    self.save(p)

    def _place(self, t):
        for stage in t.stages:
            for idx in range(stage.count):
                nid = plan.node_id(t.name, stage.name, idx)
                p = self.placements.get(nid)
                if p is None:
                    p = Placement(nid, t.name, stage.name, idx,
                                  generation=self._generation())
                    self.placements[nid] = p
                    self._assign(t, stage, p, first=True)
                elif p.want == 'run' and p.state != DONE:
                    w = self.workers.get(p.worker_id)
                    if w is None or w.state != ONLINE:
                        self._assign(t, stage, p)
            for p in self.of(t.name):
                if p.stage == stage.name and p.idx >= stage.count and p.want == 'run':
                    self._stop(p)
        for p in self.of(t.name):
            if p.want == 'run' and all(s.name != p.stage for s in t.stages):
                self._stop(p)

    def _assign(self, t, stage, p, first=False):
        worker_id = self.choose(t.name, stage.name, exclude=(p.worker_id,) if not first
                                else ())
        if worker_id is None:
            if first:
                self.save(p)
            return
        if p.worker_id is not None:
            log.warning("node %s: moved from %s (offline) to %s", p.node_id, p.worker_id,
                        worker_id)
        if not first:
            p.generation = self._generation()
        p.worker_id, p.state, p.endpoint, p.argv, p.sent_at = worker_id, WAITING, None, None, None
        p.status, p.pid = {}, None
        p.base = self._base(t, stage, p)
        self.save(p)

    def _stop(self, p):
        if p.want != 'stop':
            p.want = 'stop'
            self.save(p)
        w = self.workers.get(p.worker_id)
        if p.worker_id is None or w is None or w.state != ONLINE:
            self.forget(p)

    def forget(self, p):
        self.placements.pop(p.node_id, None)
        self.state.remove_placement(p.node_id)

    def save(self, p):
        self.state.put_placement(p.node_id, p.typology, p.stage, p.idx, p.worker_id,
                                 p.generation, p.saved(), p.state, p.restarts, p.last_error,
                                 p.endpoint)

    def producers(self, p):
        """The endpoints the node of placement p reads from (those known so far)."""
        t = self.typologies.get(p.typology)
        if t is None:
            return []
        stage = next((s for s in t.stages if s.name == p.stage), None)
        if stage is None or stage.kind == plan.HYDRANT:
            return []
        names = {s.name for s in plan.producers_of(t.stages, stage)}
        return sorted(q.endpoint for q in self.placements.values()
                      if q.typology == p.typology and q.stage in names and q.endpoint
                      and q.want == 'run')
