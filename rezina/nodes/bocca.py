"""rz-bocca: the sink stage. Writes every item to a backend and acknowledges it only once
the backend has it.

Usage:
  rz-bocca [options] [--in=ENDPOINT]... [--path=DIR]... [SINK]
  rz-bocca (-h | --help | --version)

SINK is one of:
  stdout                    JSON lines on stdout (the default)
  null                      discard (for measuring)
  jsonl:PATH                append JSON lines to PATH
  csv:PATH                  append rows to PATH, the header from the first item's keys
  sqlite:PATH[?table=NAME]  rows in SQLite, stored once per item id (table 'items')
  postgresql://USER@HOST[:PORT]/DB[?table=NAME]
                            rows in PostgreSQL (a libpq URI, also postgres://), stored
                            once per item id (table 'items'); needs psycopg
  MOD:CLASS                 a rezina.backends.StorageBackend subclass, built as
                            CLASS(logger, *ARGS, **KWARGS)

Options:
  -i, --in=ENDPOINT      Where items come from: '-' (stdin) or a ZeroMQ address,
                         tcp://HOST:PORT or ipc://PATH; connects unless prefixed with
                         '@'; may be given more than once [default: -].
  --mode=MODE            stream: write items as they arrive; batch: write lists of up
                         to the batch size, at least every flush interval [default: stream].
  --batch-size=N         Most items in one write [default: 1000].
  --flush-interval=SECONDS  Longest an item waits in batch mode [default: 1].
  --drain-timeout=SECONDS  How long the items held may wait to be written once a stop is
                         asked, or once the input has ended while the sink fails; then
                         they are given up, unacknowledged [default: 30].
  --args=JSON            Positional arguments for a MOD:CLASS sink, as a JSON array.
  --kwargs=JSON          Keyword arguments for a MOD:CLASS sink, as a JSON object.
  --producers=N          With a bound --in: wait for N producers before ending [default: 0].
  --follow               Do not end when every producer has ended: wait for more
                         until stopped (rz-master's nodes of a periodic typology).
  --in-format=FORMAT     On stdin: msgpack (from rz commands), json (JSON lines) or lines
                         (each line a string) [default: msgpack].
  --errors=SINK          Where failed items go, as records (any SINK but stdout); by
                         default a line each on stderr.
  --name=NAME            The node's name in logs (by default the SINK).
  --progress             Show the progress line on stderr even when stderr is not a
                         terminal (by default only on a terminal, and not with --follow
                         or --control-fd).
  --no-progress          Show no progress line.
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

import logging
import os
import sys
import threading
import time
from collections import deque
from itertools import repeat

from rezina import defaults, exitcodes
from rezina.backends import open_sink
from rezina.backends.base import BackendDown
from rezina.cli import float_option, int_option, run_command, set_max_item_bytes
from rezina.errors import SinkError, UsageError
from rezina.nodes.failures import Failures
from rezina.nodes.node import Node, input_endpoints, take_stdout
from rezina.nodes.progress import Progress, wanted as progress_wanted
from rezina.pipe import codec, protocol
from rezina.pipe.stream import DownstreamClosed
from rezina.target import add_search_path, parse_json
from rezina.security import Security

log = logging.getLogger(__name__)
PROG = 'rz-bocca'
ITEM_ATTEMPTS = defaults.SINK_ITEM_ATTEMPTS
REPORT_EVERY = 60.0         # seconds between warnings while the sink keeps failing


class Bocca(Node):
    """Writes what arrives to the sink, in stream or batch mode."""

    def __init__(self, name, sink, mode, batch_size, flush_interval, failures=None,
                 drain_timeout=defaults.DRAIN_TIMEOUT):
        super().__init__(name, failures)
        self.drain_timeout = drain_timeout
        self.sink = sink
        self.mode = mode
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.pending = []          # (batch, items) received, not yet written
        self.pending_items = 0
        self.oldest = None         # when the oldest pending item arrived
        self.stored = 0
        self.first_at = None
        self.last_at = None
        self.retry_at = 0.0
        self.retry_wait = 0.0
        self.ended_at = None       # when the input was first seen to have ended
        # an outage: a run of failed writes, ended by the next write that succeeds
        self.failing_since = None  # when the first failed write of it began
        self.failed_writes = 0
        self.write_began = 0.0
        self.write_seconds = 0.0   # spent in the sink's write
        self.failed_at = 0.0       # when the last write failed
        self.reported_at = None    # when the outage was last reported
        self.down = False          # the last failure was BackendDown: no item is to blame
        self.narrow = 0            # writes of one item left, to find a failing item
        self.head_attempts = 0     # failed writes of the first unwritten item alone
        self.last_error = ''
        self.partly_written = 0
        self.bad_item = False
        # the sink is written from a thread of its own, so that a slow backend cannot
        # stall this node's heartbeat; `lock` guards what both threads change
        self.lock = threading.Lock()
        self.written_batches = deque()   # wire batches now written, to acknowledge
        self.failed_items = []           # (id, item, type, reason, attempts, batch)
        self.held = {}                   # id(batch) -> [batch, ticket, written]
        self.writing = False
        self.writer_error = None
        self.write_wanted = threading.Event()
        self.writer = threading.Thread(target=self._writer, name='rz-writer', daemon=True)
        self.closing = False
        self.progress = None             # a Progress: the line on stderr, if shown

    def load(self):
        return self.pending_items

    def counters(self):
        counters = {'stored': self.stored, 'in_flight': self.pending_items,
                    'sink_failing_for': 0.0, 'busy_seconds': round(self.write_seconds, 3)}
        since = self.failing_since
        if since is not None:
            counters['sink_failing_for'] = round(time.monotonic() - since, 1)
            counters['sink_error'] = self.last_error
        return counters

    def on_batch(self, batch):
        if self.progress is not None and batch.total is not None:
            self.progress.saw_total(batch.run, batch.total)
        try:
            items, bad = codec.decode_items(batch.payload)
        except ValueError as exc:
            items, bad = [], [(i, str(exc)) for i in range(batch.count)]
        for index, reason in bad:
            self._failed(batch.item_id(index), None, 'DecodeError', reason, batch=batch)
        ids = protocol.seqs_without(batch.seqs(), bad) if bad else None
        now = time.monotonic()
        if self.first_at is None:
            self.first_at = now
        with self.lock:
            if self.oldest is None:
                self.oldest = now
            self.pending.append([batch, items, ids, 0])     # 0: items written so far
            self.pending_items += len(items)

    def _failed(self, item_id, item, kind, reason, attempts=0, batch=None):
        """Called in either thread; the report is made in the main thread."""
        with self.lock:
            self.failed_items.append((item_id, item, kind, reason, attempts, batch))
        self.loop.wake()

    def step(self):
        self._input_ended()         # noted as it happens: the drain timeout runs from then
        if self.failed_items:
            self._report_failures()
        if self.progress is not None:
            self.progress.update(self.stored, self.failures.count)
        if self.held:
            self._release_held()
        while self.written_batches:
            batch = self.written_batches.popleft()
            hold = self.held.get(id(batch))
            if hold is None:
                self.input.ack(batch)
            else:
                hold[2] = True      # acknowledged once its error records are stored
        if self.writer_error is not None:
            raise self.writer_error
        if not self.pending or self.writing or self._giving_up() is not None:
            return None
        now = time.monotonic()
        retry_at = self.retry_at
        if self.failing_since is not None and self._input_ended():
            retry_at = min(retry_at, self._last_try_at())
        if now < retry_at:
            return retry_at - now
        if self.mode == 'batch' and not self.stop_requested and not self.input_finished():
            due = self.oldest + self.flush_interval
            if self.pending_items < self.batch_size and now < due:
                return due - now
        self.writing = True
        self.write_wanted.set()
        return None

    def _report_failures(self):
        """Report failed items; with --errors, the wire batch of each is held back from
        acknowledgement until its error record is stored."""
        with self.lock:
            failed, self.failed_items = self.failed_items, []
        for item_id, item, kind, reason, attempts, batch in failed:
            ticket = self.failures.report(item_id, item, kind, reason, attempts=attempts)
            if ticket is not None and batch is not None:
                hold = self.held.setdefault(id(batch), [batch, ticket, False])
                hold[1] = ticket

    def _release_held(self):
        settled = self.failures.settled
        for key, (batch, ticket, written) in list(self.held.items()):
            if ticket <= settled:
                del self.held[key]
                if written:
                    self.input.ack(batch)

    def _writer(self):
        """The writer thread: one pass over the pending items each time it is asked."""
        while True:
            self.write_wanted.wait()
            self.write_wanted.clear()
            if self.closing:
                return
            try:
                self._write_pending()
            except BaseException as exc:      # handed to the main thread, which raises it
                self.writer_error = exc
            self.writing = False
            self.loop.wake()

    def _write_pending(self):
        """Write pending items, at most batch-size a write; acknowledge each wire batch
        once all its items are written."""
        while self.pending:
            # at most a batch a write in stream mode too: a slow sink acknowledges as it goes
            limit = 1 if self.narrow else self.batch_size
            parts, count = self._take(limit, skip=0)
            if not self._write(parts):
                if self.partly_written:         # its first items are in: move past them
                    done, self.partly_written = self.partly_written, 0
                    self._written(self._take(done, skip=0)[0], done)
                    count -= done
                if self.bad_item:
                    self._fail_head(self.last_error, 1)
                    continue
                self._write_failed(count)
                return
            self._written(parts, count)
            self._sink_back()
            self.head_attempts = 0
            self.narrow = max(0, self.narrow - 1)
        with self.lock:
            if not self.pending:
                self.oldest = None

    def _take(self, limit, skip):
        """(parts, count): up to limit unwritten items, after the first skip of them."""
        parts, count = [], 0
        for entry in self.pending:
            start = entry[3]
            left = len(entry[1]) - start
            passed = min(skip, left)
            skip -= passed
            start, left = start + passed, left - passed
            take = left if limit is None else min(left, limit - count)
            if take:
                parts.append((entry, start, start + take))
                count += take
            if limit is not None and count >= limit:
                break
        return parts, count

    def _written(self, parts, count, stored=True):
        for entry, _, end in parts:
            entry[3] = end
        with self.lock:
            while self.pending and self.pending[0][3] == len(self.pending[0][1]):
                self.written_batches.append(self.pending.pop(0)[0])
            self.pending_items -= count
        self.loop.wake()
        if stored:
            self.stored += count
            self.last_at = time.monotonic()

    def _write_failed(self, count):
        """Retry after a failed write. BackendDown blames the store: the same items wait for
        it. Otherwise find the item the write stumbles on: one item a write, and an item
        that fails ITEM_ATTEMPTS times while the one after it can be written fails alone."""
        self._note_failure()
        if self.down:
            self.narrow = 0
            self._say_retrying()
            return
        if count > 1:
            report = log.warning if self.failed_writes == 1 else log.debug
            report("%s: %s; writing its %d items one at a time to find the one that fails",
                   self.name, self.last_error, count)
            self.narrow = count
            self.retry_at = 0.0
            return
        self.head_attempts += 1
        if self.head_attempts < ITEM_ATTEMPTS or self.pending_items < 2:
            self._say_retrying()
            return
        probe, _ = self._take(1, skip=1)
        if not self._write(probe):
            # the items after it fail too: the sink is down; when it is back, whole writes
            self.head_attempts = self.narrow = 0
            self._note_failure()
            self._say_retrying()
            return
        self._fail_head(f"the sink failed to write it {ITEM_ATTEMPTS} times: "
                        f"{self.last_error}", ITEM_ATTEMPTS)
        self._written(probe, 1)
        self._sink_back()
        self.head_attempts = 0
        self.retry_at = 0.0

    def _note_failure(self):
        if self.failing_since is None:
            self.failing_since = self.write_began
        self.failed_writes += 1
        self.failed_at = time.monotonic()

    def _say_retrying(self):
        """A warning at the first failure of an outage, then one every REPORT_EVERY s."""
        now = time.monotonic()
        if self.reported_at is not None and now - self.reported_at < REPORT_EVERY:
            log.debug("%s: %s; retrying in %.0f s", self.name, self.last_error,
                      self.retry_wait)
            return
        self.reported_at = now
        log.warning("%s: %s; retrying in %.0f s (failing for %.0f s, %d writes; %d items "
                    "held, not acknowledged)", self.name, self.last_error, self.retry_wait,
                    now - self.failing_since, self.failed_writes, self.pending_items)

    def _sink_back(self):
        """A write succeeded: any outage is over."""
        if self.failing_since is None:
            return
        if self.reported_at is not None:
            log.info("%s: the sink writes again, after %.1f s and %d failed writes",
                     self.name, time.monotonic() - self.failing_since, self.failed_writes)
        self.failing_since, self.failed_writes, self.reported_at = None, 0, None

    def _fail_head(self, why, attempts):
        """The first unwritten item fails alone; the writing goes on after it."""
        head, _ = self._take(1, skip=0)
        (entry, index, _), = head
        self._failed(f"{entry[0].run}:{_seq_of(entry, index)}", entry[1][index], 'SinkError',
                     why, attempts, batch=entry[0])
        self._written(head, 1, stored=False)

    def _write(self, parts):
        records = []
        for (batch, items, ids, _), start, end in parts:
            run = batch.run
            if self.sink.wants_ids:
                seqs = (batch.seqs() if ids is None else ids)[start:end]
                records.extend((f"{run}:{seq}", run, item)
                               for seq, item in zip(seqs, items[start:end]))
            else:
                records.extend(zip(repeat(None), repeat(run), items[start:end]))
        self.write_began = time.monotonic()
        try:
            if records:
                self.sink.write(records)
        except BrokenPipeError:
            raise DownstreamClosed() from None
        except SinkError as exc:
            self.partly_written = exc.written
            self.last_error = str(exc)
            self.bad_item = exc.bad_item
            self.down = isinstance(exc, BackendDown)
            if exc.bad_item:
                return False
            self.retry_wait = min(defaults.SINK_RETRY_MAX, max(1.0, self.retry_wait * 2))
            self.retry_at = time.monotonic() + self.retry_wait
            return False
        finally:
            self.write_seconds += time.monotonic() - self.write_began
        self.retry_wait = 0.0
        return True

    def on_acked(self, batch):
        """A bocca has no output."""

    def done(self):
        if self.held and not self.drain_expired():
            return False                # error records still on their way to --errors
        if self.writing or self.written_batches:
            if not self.drain_expired():
                return False
        if self.pending:
            why = self._giving_up()
            if why is None:
                return False
            log.warning("%s: giving up on %d items, not written and not acknowledged: %s",
                        self.name, self.pending_items, why)
            return True
        # everything that came in is written: a drain that outlasts the input is done
        return self.input_finished() or self.drain_expired()

    def _giving_up(self):
        """Why the items still held are given up now; None while they may yet be written."""
        if self.drain_expired():
            return f"the stop waited {self.drain_timeout:g} s for them"
        if self.failing_since is None:
            return None
        if self.stop_requested:
            return f"stopping while the sink fails ({self.last_error})"
        if self._input_ended() and self.failed_at >= self._last_try_at():
            return (f"the input has ended and the sink has failed for longer than "
                    f"--drain-timeout ({self.drain_timeout:g} s): {self.last_error}")
        return None

    def _input_ended(self):
        if self.ended_at is None and self.input_finished():
            self.ended_at = time.monotonic()
        return self.ended_at is not None

    def _last_try_at(self):
        """When a failing sink is tried for the last time, once the input has ended."""
        return max(self.ended_at, self.failing_since) + self.drain_timeout

    def drain_expired(self):
        """True once a stop has waited the drain timeout for the items in flight."""
        return (self.stop_requested
                and time.monotonic() - self.stop_requested_at > self.drain_timeout)

    def serve(self):
        self.sink.open()
        self.writer.start()
        try:
            self.run()
        finally:
            self.closing = True
            self.write_wanted.set()
            self.writer.join(timeout=2.0)
            if not self.writer.is_alive():      # else a write hangs: leave the sink be
                self.sink.close()
            self._report_failures()
            self.failures.close()
        truncated = self.input_truncated()
        # what is still held was never acknowledged: over ZeroMQ, it goes to another sink
        unwritten = self.pending_items
        if self.progress is not None:
            self.progress.finish(self.stored, self.failures.count,
                                 complete=not (unwritten or truncated or self.stop_requested))
        span = self.last_at - self.first_at if self.last_at and self.first_at else 0.0
        rate = self.stored / span if span > 0 else 0.0
        text = "%s: stored %d items in %.3f s first to last (%.0f items/s), %d failed"
        values = [self.name, self.stored, span, rate, self.failures.count]
        if unwritten:
            log.warning(text + ", %d items not written (not acknowledged)", *values, unwritten)
        else:
            log.info(text, *values)
        failed = self.failures.count or unwritten or truncated
        return exitcodes.FAILED if failed else exitcodes.OK


def _serve(args):
    add_search_path(args['--path'])
    set_max_item_bytes(args)
    mode = args['--mode']
    if mode not in ('stream', 'batch'):
        raise UsageError(f"--mode {mode!r}: expected stream or batch")
    batch_size = int_option(args, '--batch-size', 1)
    flush_interval = float_option(args, '--flush-interval', 0.0)
    drain_timeout = float_option(args, '--drain-timeout', 0.0)
    producers = int_option(args, '--producers', 0)
    show_progress = _progress_choice(args)
    sink_args = parse_json(args['--args'], '--args', list)
    sink_kwargs = parse_json(args['--kwargs'], '--kwargs', dict)
    inputs = input_endpoints(args)
    spec = args['SINK'] or 'stdout'
    stdout = None
    if spec == 'stdout':
        stdout = os.fdopen(take_stdout(), 'wb')
    sink = open_sink(spec, sink_args, sink_kwargs, mode=mode, stdout=stdout)
    # a PostgreSQL URI may hold a password: the sink's name masks it
    masked = spec.startswith(('postgresql:', 'postgres:'))
    name = args['--name'] or (sink.name if masked else spec)
    bocca = Bocca(name, sink, mode, batch_size, flush_interval,
                  Failures(name, args['--errors']), drain_timeout)
    if show_progress:
        bocca.progress = Progress(PROG)
        bocca.progress.attach_logging()
    try:
        bocca.security = Security.from_args(args)
        bocca.attach_control(args['--control-fd'])
        window = max(defaults.CREDIT_MAX, 2 * batch_size)
        bocca.open_inputs(inputs, window, producers, args['--follow'])
        return bocca.serve()
    finally:
        if bocca.progress is not None:      # ended by an error: the line ends before it
            bocca.progress.finish(bocca.stored, bocca.failures.count, complete=False)
        bocca.close()


def _progress_choice(args):
    """Whether to show the progress line: --progress, --no-progress, or on a terminal for
    a one-shot pipeline (not --follow, not under rz-worker)."""
    if args['--progress'] and args['--no-progress']:
        raise UsageError("--progress and --no-progress: give one of them")
    if args['--progress']:
        return True
    if args['--no-progress'] or args['--follow'] or args['--control-fd'] is not None:
        return False
    return progress_wanted(None, sys.stderr)


def main(argv=None):
    return run_command(PROG, __doc__, sys.argv[1:] if argv is None else argv, _serve)


def _seq_of(entry, index):
    batch, _, ids, _ = entry
    return (batch.seqs() if ids is None else ids)[index]
