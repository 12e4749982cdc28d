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

from rezina import defaults, exitcodes
from rezina.backends import open_sink
from rezina.cli import float_option, int_option, run_command, set_max_item_bytes
from rezina.errors import UsageError
from rezina.nodes.failures import Failures
from rezina.nodes.node import Node, input_endpoints, take_stdout
from rezina.nodes.progress import Progress, wanted as progress_wanted
from rezina.nodes.sink_writer import SinkWriter
from rezina.pipe import codec, protocol
from rezina.target import add_search_path, parse_json
from rezina.security import Security

log = logging.getLogger(__name__)
PROG = 'rz-bocca'


class Bocca(Node):
    """Writes what arrives to the sink, in stream or batch mode."""

    def __init__(self, name, sink, mode, batch_size, flush_interval, failures=None,
                 drain_timeout=defaults.DRAIN_TIMEOUT):
        super().__init__(name, failures)
        self.drain_timeout = drain_timeout
        self.mode = mode
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.first_at = None
        self.ended_at = None       # when the input was first seen to have ended
        # the sink is written from a thread of its own; `lock` guards failed_items, which
        # both threads change
        self.writer = SinkWriter(name, sink, batch_size, self.loop.wake, self._failed)
        self.lock = threading.Lock()
        self.failed_items = []           # (id, item, type, reason, attempts, batch)
        self.held = {}                   # id(batch) -> [batch, ticket, written]
        self.progress = None             # a Progress: the line on stderr, if shown

    def load(self):
        return self.writer.pending_items

    def counters(self):
        writer = self.writer
        counters = {'stored': writer.stored, 'in_flight': writer.pending_items,
                    'sink_failing_for': 0.0, 'busy_seconds': round(writer.write_seconds, 3)}
        since = writer.failing_since
        if since is not None:
            counters['sink_failing_for'] = round(time.monotonic() - since, 1)
            counters['sink_error'] = writer.last_error
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
        if self.first_at is None:
            self.first_at = time.monotonic()
        self.writer.add(batch, items, ids)

    def _failed(self, item_id, item, kind, reason, attempts=0, batch=None):
        """Called in either thread; the report is made in the main thread."""
        with self.lock:
            self.failed_items.append((item_id, item, kind, reason, attempts, batch))
        self.loop.wake()

    def step(self):
        self._input_ended()         # noted as it happens: the drain timeout runs from then
        writer = self.writer
        if self.failed_items:
            self._report_failures()
        if self.progress is not None:
            self.progress.update(writer.stored, self.failures.count)
        if self.held:
            self._release_held()
        while writer.written_batches:
            batch = writer.written_batches.popleft()
            hold = self.held.get(id(batch))
            if hold is None:
                self.input.ack(batch)
            else:
                hold[2] = True      # acknowledged once its error records are stored
        if writer.error is not None:
            raise writer.error
        if not writer.pending or writer.writing or self._giving_up() is not None:
            return None
        now = time.monotonic()
        retry_at = writer.retry_at
        if writer.failing_since is not None and self._input_ended():
            retry_at = min(retry_at, self._last_try_at())
        if now < retry_at:
            return retry_at - now
        if self.mode == 'batch' and not self.stop_requested and not self.input_finished():
            due = writer.oldest + self.flush_interval
            if writer.pending_items < self.batch_size and now < due:
                return due - now
        writer.write_now()
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

    def on_acked(self, batch):
        """A bocca has no output."""

    def done(self):
        if self.held and not self.drain_expired():
            return False                # error records still on their way to --errors
        writer = self.writer
        if writer.writing or writer.written_batches:
            if not self.drain_expired():
                return False
        if writer.pending:
            why = self._giving_up()
            if why is None:
                return False
            log.warning("%s: giving up on %d items, not written and not acknowledged: %s",
                        self.name, writer.pending_items, why)
            return True
        # everything that came in is written: a drain that outlasts the input is done
        return self.input_finished() or self.drain_expired()

    def _giving_up(self):
        """Why the items still held are given up now; None while they may yet be written."""
        if self.drain_expired():
            return f"the stop waited {self.drain_timeout:g} s for them"
        writer = self.writer
        if writer.failing_since is None:
            return None
        if self.stop_requested:
            return f"stopping while the sink fails ({writer.last_error})"
        if self._input_ended() and writer.failed_at >= self._last_try_at():
            return (f"the input has ended and the sink has failed for longer than "
                    f"--drain-timeout ({self.drain_timeout:g} s): {writer.last_error}")
        return None

    def _input_ended(self):
        if self.ended_at is None and self.input_finished():
            self.ended_at = time.monotonic()
        return self.ended_at is not None

    def _last_try_at(self):
        """When a failing sink is tried for the last time, once the input has ended."""
        return max(self.ended_at, self.writer.failing_since) + self.drain_timeout

    def drain_expired(self):
        """True once a stop has waited the drain timeout for the items in flight."""
        return (self.stop_requested
                and time.monotonic() - self.stop_requested_at > self.drain_timeout)

    def serve(self):
        writer = self.writer
        writer.start()
        try:
            self.run()
        finally:
            writer.stop()
            self._report_failures()
            self.failures.close()
        truncated = self.input_truncated()
        # what is still held was never acknowledged: over ZeroMQ, it goes to another sink
        unwritten = writer.pending_items
        if self.progress is not None:
            self.progress.finish(writer.stored, self.failures.count,
                                 complete=not (unwritten or truncated or self.stop_requested))
        last_at, stored = writer.last_at, writer.stored
        span = last_at - self.first_at if last_at and self.first_at else 0.0
        rate = stored / span if span > 0 else 0.0
        text = "%s: stored %d items in %.3f s first to last (%.0f items/s), %d failed"
        values = [self.name, stored, span, rate, self.failures.count]
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
            bocca.progress.finish(bocca.writer.stored, bocca.failures.count, complete=False)
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

