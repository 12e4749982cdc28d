"""rz-hydrant: the source stage. Calls MOD:FUNC once or on a schedule; every element of
what it returns is one item, pulled only as downstream credit allows.

Usage:
  rz-hydrant [options] [--path=DIR]... MOD:FUNC [--] [ARG...]
  rz-hydrant (-h | --help | --version)

Each ARG is passed to FUNC as its JSON value where it parses as JSON, else as a string;
after --, an ARG may start with '-'.

Options:
  -o, --out=ENDPOINT     Where items go: '-' (stdout) or a ZeroMQ address, tcp://HOST:PORT
                         or ipc://PATH; binds unless prefixed with '>' [default: -].
  --consumers=N          With a bound --out: end only once N consumers have been heard
                         from [default: 0].
  --kwargs=JSON          Keyword arguments for FUNC, as a JSON object.
  --name=NAME            The source's name in item ids (by default MOD.FUNC, with a hash of
                         the arguments when there are any).
  --run-id=ID            Name a one-shot run (its ids are NAME/ID:SEQ), so that running
                         it again is stored once; not with --every or --cron.
  --every=SECONDS        Run every SECONDS, on the grid of the epoch or of --start.
  --cron=EXPR            Run at the times of the cron expression EXPR, in local time.
  --start=TIME           First run at TIME, local, as 'YYYY-MM-DD HH:MM:SS', or in
                         epoch seconds.
  --overlap=POLICY       A tick that comes while the previous run is in flight: skip it,
                         queue it (one at most) or allow it to run beside [default: skip].
  --format=FORMAT        On stdout: msgpack (for rz commands) or json (JSON lines)
                         [default: msgpack].
  --ids                  With --format json, write each item as {"id": ID, "item": ITEM}.
  --errors=SINK          Where failed items go, as records (any SINK of rz-bocca but
                         stdout); by default a line each on stderr.
  --path=DIR             Also import from DIR (after the current directory).
  --control-fd=N         For rz-worker: the fd of a socketpair that carries the node's
                         status and the worker's requests.
  --max-item-bytes=N     The largest item, encoded, that goes out: a larger one fails
                         [default: 67108864].
  --curve-key=FILE       This process's CURVE secret key file (see rz keygen): every
                         socket is encrypted and authenticated (or REZINA_CURVE_KEY).
  --curve-allow=DIR      The public key files (*.key) of the peers let in, besides our
                         own (or REZINA_CURVE_ALLOW).
  --insecure             Bind an address outside loopback without CURVE keys.
  --log-level=LEVEL      debug, info, warning or error [default: info].
  -h, --help             Show this help.
  --version              Show the version.
"""

import datetime
import hashlib
import json
import logging
import sys
import time
from collections import deque
from itertools import repeat

from rezina import defaults, exitcodes
from rezina.cli import int_option, run_command, set_max_item_bytes
from rezina.errors import UsageError
from rezina.security import Security
from rezina.nodes.node import Node, one_shot_label, output_endpoint
from rezina.nodes.failures import Failures
from rezina.nodes.overlap import POLICIES, Overlap
from rezina.nodes.runner import Chunk, Permits, Puller, Run, RunMark, Scheduler
from rezina.pipe import codec, protocol
from rezina.pipe.outbox import split_batch
from rezina.schedule import Schedule, parse_every, parse_start
from rezina.target import add_search_path, parse_arg, parse_json, resolve_callable

log = logging.getLogger(__name__)
PROG = 'rz-hydrant'


def default_name(spec, args, kwargs):
    """MOD.FUNC, and a short hash of the arguments so that other arguments are another
    source."""
    name = spec.replace(':', '.')
    if args or kwargs:
        text = json.dumps([args, kwargs], sort_keys=True, default=str)
        name += '-' + hashlib.sha1(text.encode()).hexdigest()[:6]
    return name


class Hydrant(Node):
    """The main thread of rz-hydrant: fires runs on the scheduler's ticks, batches the
    pullers' items and sends them."""

    def __init__(self, name, func, args, kwargs, schedule, run_id, overlap='skip',
                 failures=None):
        super().__init__(name, failures)
        self.func = (func, args, kwargs)
        self.schedule = schedule
        self.run_id = run_id
        self.runs = {}
        self.overlap = Overlap(overlap, name)
        self.permits = Permits()
        self.pullers = []
        self.ticks = deque()             # posted by the scheduler; None at its end
        self.schedule_done = False
        self.given = 0
        self.drained = 0                 # items taken from the pullers' handoffs
        self.failed_runs = 0
        self.failed_items = 0
        self.finished = False
        self.last_emit = 0.0
        self.scheduler = Scheduler(schedule, self._post)

    def _post(self, tick):
        """Called in the scheduler thread."""
        self.ticks.append(tick)
        self.loop.wake()

    # firing

    def _take_ticks(self):
        while self.ticks:
            tick = self.ticks.popleft()
            if tick is None:
                self.schedule_done = True
            elif not self.stop_requested and self.overlap.tick(tick):
                self._fire(tick)

    def _fire(self, tick):
        if self.run_id:
            run_id = f"{self.name}/{self.run_id}"
        elif self.schedule.periodic:
            run_id = f"{self.name}/{tick.label}"
        else:
            run_id = f"{self.name}/{one_shot_label()}"
        run = Run(run_id, tick.label)
        self.runs[run_id] = run
        puller = next((p for p in self.pullers if not p.busy), None)
        if puller is None:
            puller = Puller(*self.func, self.permits, self.loop.wake)
            self.pullers.append(puller)
            puller.start()
        puller.give(run)

    # moving items

    def step(self):
        """Send what the pullers handed over: at once when the last batch left more than
        COALESCE ago, else when that much time has passed or a full batch is waiting, so
        that a busy source sends full batches and an idle one sends each item at once."""
        if self.ticks:
            self._take_ticks()
        wanted = [p for p in self.pullers if p.handoff or p.woken]
        if not wanted:
            return None
        now = time.monotonic()
        wait = self.last_emit + defaults.COALESCE - now
        if wait > 0 and not any(len(p.handoff) >= defaults.WIRE_BATCH_ITEMS or p.bulk
                                for p in wanted):
            return wait
        self.last_emit = now
        for puller in wanted:
            self._drain(puller)
        return None

    def pump(self):
        super().pump()
        if not self.stop_requested:
            self._give_permits()

    def _drain(self, puller):
        """Take everything a puller handed over and send it as batches of each run."""
        puller.woken = False
        puller.bulk = False
        handoff = puller.handoff
        popleft = handoff.popleft
        pending = []
        while handoff:
            # the count of Chunks and RunMarks is read after the length: one already in
            # the handoff is then counted (the puller counts before it appends)
            count = len(handoff)
            specials = puller.specials
            taken = [popleft() for _ in repeat(None, count)]
            if specials == puller.specials_seen:
                pending.extend(taken)
                continue
            for thing in taken:
                kind = type(thing)
                if kind is Chunk:
                    pending.extend(thing)
                elif kind is RunMark:
                    puller.specials_seen += 1
                    self._emit_all(puller.current, pending)
                    pending = []
                    self._mark(puller, thing)
                    continue
                else:
                    pending.append(thing)
                    continue
                puller.specials_seen += 1
        self._emit_all(puller.current, pending)

    def _emit_all(self, run, items):
        full = defaults.WIRE_BATCH_ITEMS
        for start in range(0, len(items), full):
            self._emit(run, items[start:start + full])

    def _mark(self, puller, mark):
        run = mark.run
        if not mark.end:
            puller.current = run
            log.debug("%s: run %s started", self.name, run.id)
            return
        run.exhausted = True
        run.error = mark.error
        run.cut = mark.cut
        self._check_complete(run)

    def _emit(self, run, items):
        self.drained += len(items)
        first = run.next_seq
        run.next_seq += len(items)
        payload, bad = codec.encode_items(items)
        ids = first
        if bad:
            for index, reason in bad:
                self.failures.report(f"{run.id}:{first + index}", repr(items[index]),
                                     'ItemNotEncodable', f"cannot be sent: {reason}",
                                     attempts=0)
            run.failed += len(bad)
            self.failed_items += len(bad)
            ids = protocol.compact_ids(
                protocol.seqs_without(range(first, first + len(items)), bad))
        count = len(items) - len(bad)
        if not count:
            return
        run.items += count
        # the run's size, for a progress line downstream; not under rz-worker, whose
        # consumers may be older rezinas (and show no progress line)
        total = run.total if self.control is None else None
        batch = protocol.Batch(run.id, ids, count, payload, total=total)
        for part in _within_bytes(batch):
            self.output.offer(part)

    def _give_permits(self):
        output = self.output
        # permits not yet used, items in the handoffs, items not yet sent
        outstanding = self.given - self.drained + output.pending_items
        want = output.capacity() - outstanding
        if want > 0:
            self.given += want
            self.permits.give(want)

    def _unwritable(self, item_id, reason):
        """An item --format json could not write: it counts in its run's failures."""
        super()._unwritable(item_id, reason)
        run = self.runs.get(item_id.rpartition(':')[0])
        if run is not None:
            run.failed += 1
            self.failed_items += 1

    def on_acked(self, batch):
        run = self.runs.get(batch.run)
        if run is not None:
            run.acked += batch.count
            self._check_complete(run)

    def _check_complete(self, run):
        if not run.complete or run.ended:
            return
        run.ended = time.monotonic()
        del self.runs[run.id]
        seconds = run.ended - run.started
        if run.error:
            self.failed_runs += 1
            log.error("%s: run %s failed after %d items in %.2f s: %s", self.name, run.id,
                      run.items, seconds, run.error)
        elif run.cut:
            log.warning("%s: run %s stopped after %d items in %.2f s", self.name, run.id,
                        run.items, seconds)
        else:
            log.info("%s: run %s complete: %d items in %.2f s, %d failed", self.name,
                     run.id, run.items, seconds, run.failed)
        if self.control is not None:
            state = 'failed' if run.error else 'stopped' if run.cut else 'complete'
            self.control.send({'op': 'run', 'run': run.id, 'state': state,
                               'items': run.items, 'failed': run.failed,
                               'seconds': round(seconds, 3), 'error': run.error})
        tick = self.overlap.run_ended()
        if tick is not None and not self.stop_requested:
            self._fire(tick)

    def counters(self):
        return {'items_out': self.drained, 'runs_in_flight': len(self.runs),
                'fired': self.overlap.fired, 'skipped': self.overlap.skipped,
                'missed': self.schedule.missed,
                'busy_seconds': round(sum(p.seconds for p in self.pullers), 3)}

    # ending

    @property
    def pulling(self):
        return any(p.busy or p.handoff for p in self.pullers)

    def done(self):
        if self.finished:
            return self.output.idle or self.drain_expired()
        if self.stop_requested:
            self._stop_threads()
            drained = self.output.idle or self.drain_expired()
        else:
            drained = (self.schedule_done and not self.ticks and not self.runs
                       and self.overlap.waiting is None and self.output.idle)
        if drained and (self.stop_requested or self.output.ready_to_finish()):
            self.output.finish()
            self.output.pump()          # the end record, now rather than at the next tick
            self.finished = True
            for run in self.runs.values():
                log.warning("%s: run %s stopped after %d items", self.name, run.id,
                            run.items)
            return self.output.idle
        return False

    def _stop_threads(self):
        if self.permits.closed:
            return
        self.scheduler.stop.set()
        self.permits.close()
        self.overlap.drop_waiting()
        for puller in self.pullers:
            puller.finish()

    def serve(self):
        if self.schedule.periodic or self.schedule.first > time.time() + 1:
            first = datetime.datetime.fromtimestamp(self.schedule.first)
            log.info("%s: first run at %s (local time)", self.name,
                     first.isoformat(sep=' ', timespec='seconds'))
        self.scheduler.start()
        try:
            self.run()
        finally:
            self._stop_threads()
            self.failures.close()
            if self.schedule.periodic:
                log.info("%s: ticks: %d fired, %d skipped, %d missed", self.name,
                         self.overlap.fired, self.overlap.skipped, self.schedule.missed)
        if self.scheduler.crashed:
            log.error("%s: the schedule stopped: %s", self.name, self.scheduler.crashed)
        failed = self.failed_runs or self.failed_items or self.scheduler.crashed
        return exitcodes.FAILED if failed else exitcodes.OK


def _within_bytes(batch):
    """batch, split in halves until each part is under the wire batch size in bytes."""
    if len(batch.payload) <= defaults.WIRE_BATCH_BYTES or batch.count == 1:
        return [batch]
    head, tail = split_batch(batch, batch.count // 2)
    head.total = tail.total = batch.total
    return _within_bytes(head) + _within_bytes(tail)


def build(args):
    """The Hydrant that args (docopt's) describe."""
    add_search_path(args['--path'])
    set_max_item_bytes(args)
    spec = args['MOD:FUNC']
    func_args = [parse_arg(a) for a in args['ARG']]
    kwargs = parse_json(args['--kwargs'], '--kwargs', dict)
    out = output_endpoint(args, PROG)
    for option in ('--name', '--run-id'):
        text = args[option]
        if text is not None and (not text or not text.isprintable() or ':' in text
                                 or '/' in text):
            # ids are NAME/RUN:SEQ: a ':' or '/' inside would let two sources share ids
            raise UsageError(f"{option} {text!r}: expected printable text without ':' or "
                             f"'/'")
    if args['--overlap'] not in POLICIES:
        raise UsageError(f"--overlap {args['--overlap']!r}: expected skip, queue or allow")
    schedule = build_schedule(args)
    if args['--run-id'] and schedule.periodic:
        raise UsageError("--run-id names a one-shot run: it cannot be used with --every or "
                         "--cron")
    func = resolve_callable(spec)
    name = args['--name'] or default_name(spec, func_args, kwargs)
    hydrant = Hydrant(name, func, func_args, kwargs, schedule, args['--run-id'],
                      args['--overlap'], Failures(name, args['--errors']))
    hydrant.security = Security.from_args(args)
    hydrant.attach_control(args['--control-fd'])
    hydrant.open_output(out, int_option(args, '--consumers', 0))
    return hydrant


def build_schedule(args):
    """The Schedule or CronSchedule of --every, --cron and --start."""
    start = parse_start(args['--start']) if args['--start'] else None
    if args['--cron'] is not None:
        from rezina.cron import CronSchedule, parse_cron    # croniter costs 20 ms to import
        if args['--every'] is not None:
            raise UsageError("--cron and --every are two schedules: give one of them")
        return CronSchedule(parse_cron(args['--cron']), start)
    interval = parse_every(args['--every']) if args['--every'] else None
    return Schedule(interval, start)


def _serve(args):
    hydrant = build(args)
    try:
        return hydrant.serve()
    finally:
        hydrant.close()


def main(argv=None):
    return run_command(PROG, __doc__, sys.argv[1:] if argv is None else argv, _serve)
