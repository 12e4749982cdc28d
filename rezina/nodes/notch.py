"""rz-notch: the filter stage. Calls MOD:FUNC on every item, in worker processes and
threads; None drops the item, a generator fans it out, an exception fails that item only.

Usage:
  rz-notch [options] [--in=ENDPOINT]... [--path=DIR]... MOD:FUNC
  rz-notch (-h | --help | --version)

MOD:FUNC may also be MOD:Class.method: Class() is built once in each worker process.

Options:
  -p, --processes=N      Worker processes [default: 1].
  -t, --threads=N        Threads in each worker process [default: 1].
  -i, --in=ENDPOINT      Where items come from: '-' (stdin) or a ZeroMQ address,
                         tcp://HOST:PORT or ipc://PATH; connects unless prefixed with
                         '@'; may be given more than once [default: -].
  -o, --out=ENDPOINT     Where results go: '-' (stdout) or a ZeroMQ address; binds unless
                         prefixed with '>' [default: -].
  --producers=N          With a bound --in: wait for N producers before ending [default: 0].
  --max-deliveries=N     Quarantine an item once a worker died running it N times
                         [default: 3].
  --name=NAME            The node's name in logs (by default FUNC).
  --path=DIR             Also import from DIR (after the current directory).
  --log-level=LEVEL      debug, info, warning or error [default: info].
  -h, --help             Show this help.
  --version              Show the version.
"""

import logging
import sys
import time

from rezina import defaults, exitcodes
from rezina.cli import int_option, run_command
from rezina.errors import UnknownFunction
from rezina.nodes.node import Node, refuse_terminal_output, take_stdout
from rezina.nodes.pool import Pool
from rezina.pipe import protocol
from rezina.pipe.inbox import Inbox
from rezina.pipe.endpoint import parse_endpoint
from rezina.target import add_search_path, import_target, split_spec

log = logging.getLogger(__name__)
PROG = 'rz-notch'
FAILURE_LINES = 20          # item failures logged one per line before only counting


class Notch(Node):
    """The parent of rz-notch: moves units between the edges and the worker children."""

    def __init__(self, name, spec, processes, threads, max_deliveries):
        super().__init__(name)
        self.pool = Pool(spec, processes, threads, max_deliveries, name, self.on_result,
                         self.on_quarantine, self.loop)
        self.processes = processes
        self.threads = threads
        self.open_batches = 0
        self.items_in = 0
        self.items_out = 0
        self.failed = 0
        self.finished = False
        self.first_at = None

    def window(self):
        """Input items to hold: enough to keep every thread busy over a round trip."""
        pool = self.pool
        floor = 2 * self.processes * self.threads
        want = 4 * self.processes * pool.capacity(pool.children[0]) * pool.unit_size
        return max(floor, min(defaults.CREDIT_MAX, want))

    def load(self):
        return self.pool.queued_items + self.pool.assigned_items + self.output.pending_items

    def on_batch(self, batch):
        if self.first_at is None:
            self.first_at = time.monotonic()
        self.items_in += batch.count
        self.open_batches += 1
        if batch.count:
            self.pool.add(batch)
        else:
            self._settle(batch)

    def step(self):
        if isinstance(self.input, Inbox):       # a pipe's window is the load check
            self.input.window = self.window()
        self.pool.assign()
        return None

    def on_result(self, unit, ids, count, payload, failures, seconds):
        batch = unit.batch
        for seq, kind, message, trace in failures:
            self._failed(f"{batch.run}:{seq}", f"{kind}: {message}", trace)
        if count:
            self.items_out += count
            batch.parts += 1
            self.output.offer(protocol.Batch(batch.run, ids, count, payload, origin=batch))
        batch.parts -= 1
        if not batch.parts:
            self._settle(batch)

    def on_quarantine(self, unit, seq, why):
        self._failed(f"{unit.batch.run}:{seq}", f"quarantined: {why}", None)

    def _failed(self, item_id, what, trace):
        self.failed += 1
        if self.failed <= FAILURE_LINES:
            log.warning("%s: item %s failed: %s", self.name, item_id, what)
            if trace:
                log.debug("%s: item %s:\n%s", self.name, item_id, trace)
        elif self.failed == FAILURE_LINES + 1:
            log.warning("%s: more items failed; counting them only", self.name)

    def on_acked(self, out_batch):
        batch = out_batch.origin
        batch.parts -= 1
        if not batch.parts:
            self._settle(batch)

    def _settle(self, batch):
        """Every output of batch is acknowledged downstream: acknowledge it upstream."""
        self.input.ack(batch)
        self.open_batches -= 1

    def done(self):
        if self.finished:
            return self.output.idle or self.drain_expired()
        ended = self.input.ended() or self.stop_requested
        if ended and not self.open_batches and self.pool.idle and self.output.idle:
            if self.output.ready_to_finish() or self.stop_requested:
                # a truncated input ends the output truncated too: the sink must know
                self.output.finish(clean=not self.input.truncated)
                self.output.pump()      # the end record, now rather than at the next tick
                self.finished = True
                return self.output.idle
        return False

    def serve(self):
        self.pool.private_fds = self.private_fds()
        self.pool.start()
        try:
            self.run()
        finally:
            self.pool.stop()
        elapsed = time.monotonic() - (self.first_at or time.monotonic())
        redelivered = self.pool.redelivered + self.output.redelivered
        log.info("%s: %d items in, %d out, %d failed, %d redelivered, in %.2f s", self.name,
                 self.items_in, self.items_out, self.failed, redelivered, elapsed)
        truncated = self.input_truncated()
        return exitcodes.FAILED if self.failed or truncated else exitcodes.OK


def _serve(args):
    add_search_path(args['--path'])
    spec = args['MOD:FUNC']
    out = parse_endpoint(args['--out'], '--out', bind_by_default=True)
    if out.is_stdio:
        refuse_terminal_output(PROG)
        take_stdout()            # before the user's module can print at import
    if not callable(import_target(spec)):    # fail here, once, rather than in every child
        raise UnknownFunction(f"cannot call {spec!r}: it is not a function")
    processes = int_option(args, '--processes', 1)
    threads = int_option(args, '--threads', 1)
    max_deliveries = int_option(args, '--max-deliveries', 1)
    producers = int_option(args, '--producers', 0)
    inputs = [parse_endpoint(e, '--in', bind_by_default=False) for e in args['--in']]
    name = args['--name'] or split_spec(spec)[1][-1]
    notch = Notch(name, spec, processes, threads, max_deliveries)
    try:
        notch.open_output(out)
        notch.open_inputs(inputs, notch.window(), producers)
        return notch.serve()
    finally:
        notch.close()


def main(argv=None):
    return run_command(PROG, __doc__, sys.argv[1:] if argv is None else argv, _serve)
