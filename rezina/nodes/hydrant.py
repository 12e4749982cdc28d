"""rz-hydrant: the source stage. Calls MOD:FUNC once or on a schedule; every element of
what it returns is one item, pulled only as downstream credit allows.

Usage:
  rz-hydrant [options] [--path=DIR]... MOD:FUNC [ARG...]
  rz-hydrant (-h | --help | --version)

Each ARG is passed to FUNC as its JSON value where it parses as JSON, else as a string.

Options:
  -o, --out=ENDPOINT     Where items go: '-' (stdout) or a ZeroMQ address, tcp://HOST:PORT
                         or ipc://PATH; binds unless prefixed with '>' [default: -].
  --kwargs=JSON          Keyword arguments for FUNC, as a JSON object.
  --name=NAME            The source's name in item ids (by default MOD.FUNC, with a hash of
                         the arguments when there are any).
  --run-id=ID            Name a one-shot run (its ids are NAME/ID:SEQ), so that running
                         it again is stored once; not with --every.
  --every=SECONDS        Run every SECONDS, on the grid of the epoch or of --start.
  --start=TIME           First run at TIME, local, as 'YYYY-MM-DD HH:MM:SS'.
  --path=DIR             Also import from DIR (after the current directory).
  --log-level=LEVEL      debug, info, warning or error [default: info].
  -h, --help             Show this help.
  --version              Show the version.
"""

import datetime
import hashlib
import json
import logging
import os
import sys
import time
from itertools import repeat

from rezina import defaults, exitcodes
from rezina.cli import run_command
from rezina.errors import UsageError
from rezina.nodes.node import Node, refuse_terminal_output, take_stdout
from rezina.nodes.runner import Chunk, Run, RunMark, Runner
from rezina.pipe import codec, protocol
from rezina.pipe.endpoint import parse_endpoint
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


def one_shot_label():
    now = datetime.datetime.now(datetime.timezone.utc)
    return f"{now:%Y%m%dT%H%M%S.%f}Z-{os.urandom(2).hex()}"


class Hydrant(Node):
    """The main thread of rz-hydrant: batches the runner's items and sends them."""

    def __init__(self, name, func, args, kwargs, schedule, run_id):
        super().__init__(name)
        self.run_id = run_id
        self.runs = {}
        self.current = None
        self.fired = 0
        self.completed = 0
        self.given = 0
        self.failed_runs = 0
        self.failed_items = 0
        self.runner_done = False
        self.finished = False
        self.last_emit = 0.0
        self.drained = 0          # items taken from the runner's handoff
        self.specials_seen = 0    # Chunks and RunMarks taken from it
        self.runner = Runner(func, args, kwargs, schedule, self.name_run, self.loop.wake,
                             lambda: self.fired > self.completed)
        self.runner.name = name

    def name_run(self, tick):
        """The Run of a tick (called in the runner thread)."""
        if self.run_id:
            run_id = f"{self.name}/{self.run_id}"
        elif self.runner.schedule.periodic:
            run_id = f"{self.name}/{tick.label}"
        else:
            run_id = f"{self.name}/{one_shot_label()}"
        self.fired += 1
        return Run(run_id, tick.label)

    # moving items

    def step(self):
        """Send what the runner handed over: at once when the last batch left more than
        COALESCE ago, else when that much time has passed or a full batch is waiting, so
        that a busy source sends full batches and an idle one sends each item at once."""
        runner = self.runner
        if not (runner.handoff or runner.woken):
            return None
        now = time.monotonic()
        wait = self.last_emit + defaults.COALESCE - now
        if wait > 0 and len(runner.handoff) < defaults.WIRE_BATCH_ITEMS and not runner.bulk:
            return wait
        self.last_emit = now
        self._drain()
        return None

    def pump(self):
        super().pump()
        if not self.stop_requested:
            self._give_permits()

    def _drain(self):
        """Take everything the runner handed over and send it as batches of each run."""
        runner = self.runner
        runner.woken = False
        runner.bulk = False
        handoff = runner.handoff
        popleft = handoff.popleft
        pending = []
        while handoff:
            # the count of Chunks and RunMarks is read after the length: one already in
            # the handoff is then counted (the runner counts before it appends)
            count = len(handoff)
            specials = runner.specials
            taken = [popleft() for _ in repeat(None, count)]
            if specials == self.specials_seen:
                pending.extend(taken)
                continue
            for thing in taken:
                kind = type(thing)
                if kind is Chunk:
                    pending.extend(thing)
                elif kind is RunMark or thing is None:
                    self.specials_seen += 1
                    self._emit_all(pending)
                    pending = []
                    self._mark(thing)
                    continue
                else:
                    pending.append(thing)
                    continue
                self.specials_seen += 1
        self._emit_all(pending)

    def _emit_all(self, items):
        full = defaults.WIRE_BATCH_ITEMS
        for start in range(0, len(items), full):
            self._emit(items[start:start + full])

    def _mark(self, mark):
        if mark is None:
            self.runner_done = True
            return
        run = mark.run
        if not mark.end:
            self.runs[run.id] = self.current = run
            log.debug("%s: run %s started", self.name, run.id)
            return
        run.exhausted = True
        run.error = mark.error
        if mark.error:
            self.failed_runs += 1
            log.error("%s: run %s failed after %d items: %s", self.name, run.id,
                      run.next_seq, mark.error)
        self._check_complete(run)

    def _emit(self, items):
        self.drained += len(items)
        run = self.current
        first = run.next_seq
        run.next_seq += len(items)
        payload, bad = codec.encode_items(items)
        ids = first
        if bad:
            for index, reason in bad:
                log.error("%s: item %s:%d cannot be sent: %s", self.name, run.id,
                          first + index, reason)
            run.failed += len(bad)
            self.failed_items += len(bad)
            ids = protocol.compact_ids(
                protocol.seqs_without(range(first, first + len(items)), bad))
        count = len(items) - len(bad)
        if not count:
            return
        run.items += count
        batch = protocol.Batch(run.id, ids, count, payload)
        for part in _within_bytes(batch):
            self.output.offer(part)

    def _give_permits(self):
        output = self.output
        # permits not yet used, items in the handoff, items not yet sent
        outstanding = self.given - self.drained + output.pending_items
        want = output.capacity() - outstanding
        if want > 0:
            self.given += want
            self.runner.permits.give(want)

    def on_acked(self, batch):
        run = self.runs.get(batch.run)
        if run is not None:
            run.acked += batch.count
            self._check_complete(run)

    def _check_complete(self, run):
        if not run.complete or run.ended:
            return
        run.ended = time.monotonic()
        self.completed += 1
        del self.runs[run.id]
        if run.error:
            return       # its failure is already reported
        failures = f", {run.failed} failed" if run.failed else ""
        log.info("%s: run %s complete: %d items in %.2f s%s", self.name, run.id,
                 run.items, run.ended - run.started, failures)

    # ending

    def done(self):
        if self.finished:
            return self.output.idle or self.drain_expired()
        if self.stop_requested:
            self.runner.stop.set()
            self.runner.permits.close()
            drained = self.output.idle or self.drain_expired()
        else:
            drained = self.runner_done and not self.runs and self.output.idle
        if drained and (self.output.ready_to_finish() or self.stop_requested):
            self.output.finish()
            self.output.pump()          # the end record, now rather than at the next tick
            self.finished = True
            for run in self.runs.values():
                log.warning("%s: run %s stopped after %d items", self.name, run.id,
                            run.items)
            return self.output.idle
        return False

    def serve(self):
        self.runner.start()
        try:
            self.run()
        finally:
            self.runner.stop.set()
            self.runner.permits.close()
        if self.runner.skipped:
            log.info("%s: %d ticks skipped", self.name, self.runner.skipped)
        if self.runner.crashed:
            log.error("%s: the schedule stopped: %s", self.name, self.runner.crashed)
        failed = self.failed_runs or self.failed_items or self.runner.crashed
        return exitcodes.FAILED if failed else exitcodes.OK


def _within_bytes(batch):
    """batch, split in halves until each part is under the wire batch size in bytes."""
    if len(batch.payload) <= defaults.WIRE_BATCH_BYTES or batch.count == 1:
        return [batch]
    head, tail = split_batch(batch, batch.count // 2)
    return _within_bytes(head) + _within_bytes(tail)


def build(args):
    """The Hydrant that args (docopt's) describe."""
    add_search_path(args['--path'])
    spec = args['MOD:FUNC']
    func_args = [parse_arg(a) for a in args['ARG']]
    kwargs = parse_json(args['--kwargs'], '--kwargs', dict)
    out = parse_endpoint(args['--out'], '--out', bind_by_default=True)
    if out.is_stdio:
        refuse_terminal_output(PROG)
        take_stdout()            # before the user's module can print at import
    interval = parse_every(args['--every']) if args['--every'] else None
    start = parse_start(args['--start']) if args['--start'] else None
    for option in ('--name', '--run-id'):
        text = args[option]
        if text is not None and (not text or not text.isprintable() or ':' in text):
            raise UsageError(f"{option} {text!r}: expected printable text without ':'")
    if args['--run-id'] and interval:
        raise UsageError("--run-id names a one-shot run: it cannot be used with --every")
    func = resolve_callable(spec)
    name = args['--name'] or default_name(spec, func_args, kwargs)
    hydrant = Hydrant(name, func, func_args, kwargs, Schedule(interval, start),
                      args['--run-id'])
    hydrant.open_output(out)
    return hydrant


def _serve(args):
    hydrant = build(args)
    try:
        return hydrant.serve()
    finally:
        hydrant.close()


def main(argv=None):
    return run_command(PROG, __doc__, sys.argv[1:] if argv is None else argv, _serve)
