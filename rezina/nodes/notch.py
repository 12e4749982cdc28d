"""rz-notch: the filter stage. Calls MOD:FUNC on every item, in worker processes and
threads (or coroutines); None drops the item, a generator fans it out, an exception fails
that item only.

Usage:
  rz-notch [options] [--in=ENDPOINT]... [--path=DIR]... MOD:FUNC
  rz-notch (-h | --help | --version)

MOD:FUNC may also be MOD:Class.method: Class() is built once in each worker process.

Options:
  -p, --processes=N      Worker processes [default: 1].
  -t, --threads=N        Threads in each worker process, for a plain function
                         (default 1).
  -c, --concurrency=N    Coroutines in each worker process, for an async def function
                         (default 1).
  -i, --in=ENDPOINT      Where items come from: '-' (stdin) or a ZeroMQ address,
                         tcp://HOST:PORT or ipc://PATH; connects unless prefixed with
                         '@'; may be given more than once [default: -].
  -o, --out=ENDPOINT     Where results go: '-' (stdout) or a ZeroMQ address; binds unless
                         prefixed with '>' [default: -].
  --producers=N          With a bound --in: wait for N producers before ending [default: 0].
  --consumers=N          With a bound --out: end only once N consumers have been heard
                         from [default: 0].
  --follow               Do not end when every producer has ended: wait for more
                         until stopped (rz-master's nodes of a periodic typology).
  --keep-order           Send results in the order their items came in.
  --retries=N            Call FUNC again on an item that raised, up to N more times,
                         with exponential backoff and jitter [default: 0].
  --max-deliveries=N     Quarantine an item once a worker died running it N times
                         [default: 3].
  --timeout=SECONDS      Fail an item whose call of FUNC runs longer than SECONDS: the
                         coroutine is cancelled, or the worker process of the thread
                         killed and replaced (by default a call may run for ever).
  --errors=SINK          Where failed items go, as records (any SINK of rz-bocca but
                         stdout); by default a line each on stderr.
  --in-format=FORMAT     On stdin: msgpack (from rz commands), json (JSON lines) or lines
                         (each line a string) [default: msgpack].
  --format=FORMAT        On stdout: msgpack (for rz commands) or json (JSON lines)
                         [default: msgpack].
  --ids                  With --format json, write each item as {"id": ID, "item": ITEM}.
  --name=NAME            The node's name in logs (by default FUNC).
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

import inspect
import logging
import sys
import time
from collections import deque

from rezina import defaults, exitcodes
from rezina.cli import float_option, int_option, run_command, set_max_item_bytes
from rezina.errors import UnknownFunction, UsageError
from rezina.nodes.failures import Failures
from rezina.nodes.node import Node, input_endpoints, output_endpoint
from rezina.nodes.pool import Pool
from rezina.pipe import protocol
from rezina.pipe.inbox import Inbox
from rezina.target import add_search_path, import_target, split_spec
from rezina.security import Security

log = logging.getLogger(__name__)
PROG = 'rz-notch'
MIN_TIMEOUT = 0.01      # seconds: the parent looks at the running calls this often at most


class Notch(Node):
    """The parent of rz-notch: moves units between the edges and the worker children."""

    paced_input = True

    def __init__(self, name, spec, processes, lanes, max_deliveries, mode='threads',
                 retries=0, keep_order=False, failures=None, timeout=None):
        super().__init__(name, failures)
        self.pool = Pool(spec, processes, lanes, max_deliveries, name, self.on_result,
                         self.on_failed, self.loop, mode, retries, timeout)
        self.processes = processes
        self.lanes = lanes
        self.keep_order = keep_order
        self.held = {}             # --keep-order: unit order -> result waiting its turn
        self.held_items = 0
        self.next_order = 0
        self.unreported = deque()      # (ticket, batch) of failures not yet stored
        self.open_batches = 0
        self.arrivals = {}         # id of each open input batch -> when it came (monotonic)
        self.items_in = 0
        self.items_out = 0
        self.finished = False
        self.first_at = None

    def window(self):
        """Input items to hold: enough to keep every lane busy over a round trip."""
        pool = self.pool
        floor = 2 * self.processes * self.lanes
        want = 4 * self.processes * pool.capacity(pool.children[0]) * pool.unit_size
        return max(floor, min(defaults.CREDIT_MAX, want))

    def load(self):
        pool = self.pool
        return (pool.queued_items + pool.assigned_items + self.held_items
                + self.output.pending_items)

    def counters(self):
        pool = self.pool
        return {'items_in': self.items_in, 'items_out': self.items_out,
                'in_flight': self.load(), 'oldest_age': self.oldest_age(),
                'dropped': pool.dropped, 'busy_seconds': round(pool.busy_seconds, 3),
                'redelivered': pool.redelivered + self.output.redelivered}

    def oldest_age(self):
        """Seconds since the oldest item not yet done came in, or None if none is held."""
        if not self.arrivals:
            return None
        return round(time.monotonic() - next(iter(self.arrivals.values())), 1)

    def on_batch(self, batch):
        now = time.monotonic()
        if self.first_at is None:
            self.first_at = now
        self.items_in += batch.count
        self.open_batches += 1
        self.arrivals[id(batch)] = now
        if batch.count:
            self.pool.add(batch)
        else:
            self._settle(batch)

    def step(self):
        if self.unreported:
            self._reported()
        if isinstance(self.input, Inbox):       # a pipe's window is the load check
            self.input.window = self.window()
        self.pool.assign()
        return self.pool.check_timeouts()

    def on_result(self, unit, ids, count, payload, failures, seconds):
        batch = unit.batch
        for seq, kind, message, trace, item, attempts in failures:
            self._report(batch, f"{batch.run}:{seq}", item, kind, message, trace, attempts)
        if not self.keep_order:
            self._send(batch, ids, count, payload)
            return
        self.held[unit.order] = (batch, ids, count, payload)
        self.held_items += count
        while self.next_order in self.held:
            batch, ids, count, payload = self.held.pop(self.next_order)
            self.held_items -= count
            self.next_order += 1
            self._send(batch, ids, count, payload)

    def _send(self, batch, ids, count, payload):
        if count:
            self.items_out += count
            batch.parts += 1
            self.output.offer(protocol.Batch(batch.run, ids, count, payload, origin=batch,
                                             total=batch.total))
        batch.parts -= 1
        if not batch.parts:
            self._settle(batch)

    def on_failed(self, unit, seq, item, kind, message, attempts):
        """An item the pool gave up on: quarantined, or timed out."""
        self._report(unit.batch, f"{unit.batch.run}:{seq}", item, kind, message, None,
                     attempts)

    def _report(self, batch, item_id, item, kind, message, trace, attempts):
        """Report a failed item; its batch is acknowledged only once the report is stored
        (with --errors), so a crash before then redelivers the item rather than lose it."""
        ticket = self.failures.report(item_id, item, kind, message, trace, attempts)
        if ticket is not None:
            batch.parts += 1
            self.unreported.append((ticket, batch))

    def _reported(self):
        settled = self.failures.settled
        while self.unreported and self.unreported[0][0] <= settled:
            batch = self.unreported.popleft()[1]
            batch.parts -= 1
            if not batch.parts:
                self._settle(batch)

    def on_acked(self, out_batch):
        batch = out_batch.origin
        batch.parts -= 1
        if not batch.parts:
            self._settle(batch)

    def _settle(self, batch):
        """Every output of batch is acknowledged downstream: acknowledge it upstream."""
        self.input.ack(batch)
        self.open_batches -= 1
        self.arrivals.pop(id(batch), None)

    def done(self):
        if self.finished:
            return self.output.idle or self.drain_expired()
        ended = self.input_finished()
        if ended and not self.open_batches and self.pool.idle and self.output.idle:
            if self.stop_requested or self.output.ready_to_finish():
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
            self.failures.close()
        elapsed = time.monotonic() - self.first_at if self.first_at else 0.0
        redelivered = self.pool.redelivered + self.output.redelivered
        log.info("%s: %d items in, %d out, %d failed, %d redelivered, in %.2f s", self.name,
                 self.items_in, self.items_out, self.failures.count, redelivered, elapsed)
        truncated = self.input_truncated()
        return exitcodes.FAILED if self.failures.count or truncated else exitcodes.OK


def lanes_of(args, spec, target):
    """(mode, lanes): threads for a plain function, coroutines for an async one."""
    is_async = inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)
    if is_async:
        if args['--threads'] is not None:
            raise UsageError(f"{spec} is an async function: give -c/--concurrency, "
                             f"not -t/--threads")
        return 'async', int_option(args, '--concurrency', 1) if args['--concurrency'] else 1
    if args['--concurrency'] is not None:
        raise UsageError(f"{spec} is not an async function: give -t/--threads, "
                         f"not -c/--concurrency")
    return 'threads', int_option(args, '--threads', 1) if args['--threads'] else 1


def _serve(args):
    add_search_path(args['--path'])
    set_max_item_bytes(args)
    spec = args['MOD:FUNC']
    out = output_endpoint(args, PROG)
    inputs = input_endpoints(args)
    target = import_target(spec)
    if not callable(target):    # fail here, once, rather than in every child
        raise UnknownFunction(f"cannot call {spec!r}: it is not a function")
    mode, lanes = lanes_of(args, spec, target)
    processes = int_option(args, '--processes', 1)
    max_deliveries = int_option(args, '--max-deliveries', 1)
    retries = int_option(args, '--retries', 0)
    timeout = None
    if args['--timeout'] is not None:
        timeout = float_option(args, '--timeout', MIN_TIMEOUT)
    producers = int_option(args, '--producers', 0)
    name = args['--name'] or split_spec(spec)[1][-1]
    notch = Notch(name, spec, processes, lanes, max_deliveries, mode, retries,
                  args['--keep-order'], Failures(name, args['--errors']), timeout)
    try:
        notch.security = Security.from_args(args)
        notch.attach_control(args['--control-fd'])
        notch.open_output(out, int_option(args, '--consumers', 0))
        notch.open_inputs(inputs, notch.window(), producers, args['--follow'])
        return notch.serve()
    finally:
        notch.close()


def main(argv=None):
    return run_command(PROG, __doc__, sys.argv[1:] if argv is None else argv, _serve)
