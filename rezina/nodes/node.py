"""What every stage process shares: its event loop, its edges, signals and the heartbeat.

Runs in every rz-hydrant, rz-notch and rz-bocca process (not in notch worker children).
"""

import dataclasses
import datetime
import logging
import os
import signal
import sys
import time
from collections import deque

import zmq

from rezina import defaults, notify
from rezina.errors import RezinaError, UsageError
from rezina.nodes.control import Control, control_socket
from rezina.nodes.failures import Failures
from rezina.pipe.endpoint import parse_endpoint
from rezina.pipe.inbox import Inbox
from rezina.pipe.links import Network
from rezina.pipe.loop import Interrupted, Loop
from rezina.pipe.outbox import Outbox
from rezina.pipe.port import Port
from rezina.pipe.stream import PipeReader, PipeWriter
from rezina.pipe.textio import TextReader, TextWriter, read_format, write_format
from rezina.security import Security

log = logging.getLogger(__name__)

STDIN, STDOUT = 0, 1


_stdout_fd = None


def refuse_terminal_output(prog):
    """Refuse to write the binary record stream to a terminal, as gzip refuses to."""
    if os.isatty(STDOUT):
        raise UsageError(f"stdout is a terminal: pipe {prog} into rz-notch or rz-bocca, "
                         f"give --out an endpoint, or --format json for JSON lines")


def take_stdout():
    """A private fd for the stream on stdout; fd 1 then goes to stderr, so that a print()
    in the user's code cannot corrupt the stream. Call it before importing user code."""
    global _stdout_fd
    if _stdout_fd is None:
        sys.stdout.flush()
        _stdout_fd = os.dup(STDOUT)
        os.dup2(2, STDOUT)
    return _stdout_fd


def one_shot_label():
    """A fresh, sortable label for a run that has no tick: UTC time and 2 random bytes."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return f"{now:%Y%m%dT%H%M%S.%f}Z-{os.urandom(2).hex()}"


def output_endpoint(args, prog):
    """The --out endpoint with --format and --ids; takes stdout when it is the output."""
    out = parse_endpoint(args['--out'], '--out', bind_by_default=True)
    fmt = write_format(args['--format'])
    if args['--ids'] and fmt != 'json':
        raise UsageError("--ids wraps JSON lines: give it with --format json")
    if not out.is_stdio:
        if fmt != 'msgpack':
            raise UsageError(f"--format {fmt} is for stdout, not --out {args['--out']}")
        return out
    if fmt == 'msgpack':
        refuse_terminal_output(prog)
    take_stdout()            # before the user's module can print at import
    return dataclasses.replace(out, fmt=fmt, ids=bool(args['--ids']))


def input_endpoints(args):
    """The --in endpoints, with --in-format for stdin."""
    inputs = [parse_endpoint(e, '--in', bind_by_default=False) for e in args['--in']]
    fmt = read_format(args['--in-format'])
    if fmt == 'msgpack':
        return inputs
    if not any(e.is_stdio for e in inputs):
        raise UsageError(f"--in-format {fmt} is for stdin, not --in {args['--in'][0]}")
    return [dataclasses.replace(e, fmt=fmt) for e in inputs]


class Node:
    """A stage's event loop; subclasses do the stage's work in step()."""

    paced_input = False      # take batches from stdin only as far as the window allows

    def __init__(self, name, failures=None):
        self.name = name
        self.failures = failures if failures is not None else Failures(name)
        self.loop = Loop()
        self.failures.wake = self.loop.wake
        self.network = Network(name)
        self.context = None
        self.security = Security()   # the command's --curve-key, --curve-allow, --insecure
        self._refused_by = set()     # addresses whose CURVE handshake failed, logged
        self.output = None
        self.input = None
        self.backlog = deque()     # batches read from stdin, not yet taken
        self.stop_requested = False
        self.ended = False         # run() returned: the node's work is done
        self.stop_requested_at = None
        self.control = None        # the channel to rz-worker, with --control-fd
        self.notifier = notify.default()    # systemd's, for a stage run as a unit
        self._next_status = 0.0
        self._next_tick = 0.0
        self._writing = False

    # wiring

    def _context(self):
        if self.context is None:
            self.context = zmq.Context()
        return self.context

    def _add_port(self, endpoint, edge):
        port = Port(self._context(), endpoint, self.name, self.security)
        self.network.add_port(port, edge)
        self.loop.watch(port.socket, lambda sock, events: self.network.receive(port))
        if port.monitor is not None:
            self.loop.watch(port.monitor, lambda sock, events: self._handshake(port))
        if port.bound and self.control is not None:
            self.control.send({'op': 'bound', 'endpoint': port.advertised})

    def _handshake(self, port):
        reason = port.refused()
        if reason and port.address not in self._refused_by:
            self._refused_by.add(port.address)      # once: libzmq may retry
            log.error("%s: %s: %s", self.name, port.address, reason)

    # the channel to rz-worker

    def attach_control(self, text):
        """Serve `--control-fd` text, if given (before the edges are opened)."""
        if text is not None:
            self.control = Control(control_socket(text), self.loop, self._on_control)
            self.notifier = notify.SILENT   # rz-worker watches it, not the worker's systemd
            self.network.wait_level = logging.DEBUG     # the master knows what is not up

    def _on_control(self, record):
        op = record.get('op')
        if op == 'connect' and isinstance(self.input, Inbox):
            for text in record.get('endpoints') or ():
                try:
                    endpoint = parse_endpoint(str(text), '--in', bind_by_default=False)
                    self._add_port(endpoint, self.input)
                except RezinaError as exc:
                    log.warning("%s: control: cannot connect %r: %s", self.name, text, exc)
                    continue
                log.info("%s: connected to %s", self.name, endpoint.address)
        elif op == 'stop':
            self.loop.request_stop(signal.SIGTERM)
        else:
            log.warning("%s: control: %r is not an operation here: ignored", self.name, op)

    def status(self):
        """What the worker's heartbeat reports of this node."""
        status = {'op': 'status', 'node': self.name, 'pid': os.getpid(),
                  'stopping': self.stop_requested, 'ended': self.ended,
                  'failed': self.failures.count,
                  'rejected': self.network.rejected, **self.counters()}
        if self.failures.by_run:
            status['failed_by_run'] = dict(self.failures.by_run)
        recent = self.failures.for_status()
        if recent:
            status['recent_failures'] = recent
        if 'redelivered' not in status and self.output is not None:
            status['redelivered'] = self.output.redelivered
        return status

    def counters(self):
        return {}

    def open_output(self, endpoint, consumers=0):
        """The node's output: a PipeWriter on stdout or an Outbox on a ZeroMQ port."""
        if endpoint.is_stdio and endpoint.fmt == 'json':
            self.output = TextWriter(take_stdout(), self.on_acked, with_ids=endpoint.ids,
                                     on_failed=self._unwritable)
        elif endpoint.is_stdio:
            self.output = PipeWriter(take_stdout(), self.on_acked)
        else:
            self.output = Outbox(self.network, self.on_acked, consumers=consumers)
            self._add_port(endpoint, self.output)
        return self.output

    def open_inputs(self, endpoints, window, producers=0, follow=False):
        """The node's input: a PipeReader on stdin or an Inbox over ZeroMQ ports."""
        if any(e.is_stdio for e in endpoints):
            if len(endpoints) > 1:
                raise UsageError("--in '-' (stdin) cannot be given with other --in endpoints")
            endpoint, = endpoints
            if endpoint.fmt == 'msgpack':
                self.input = PipeReader(STDIN)
            else:
                self.input = TextReader(STDIN, endpoint.fmt, f"stdin/{one_shot_label()}",
                                        self._malformed)
            self.loop.watch(STDIN, self._stdin_ready)
        else:
            self.input = Inbox(self.network, self.on_batch, window, producers, follow)
            for endpoint in endpoints:
                self._add_port(endpoint, self.input)
        return self.input

    def _stdin_ready(self, fd, events):
        self.backlog.extend(self.input.read())
        self._take_backlog()
        if self.input.eos:
            self.loop.unwatch(STDIN)

    def _take_backlog(self):
        """Hand on what stdin brought: all of it, or with paced_input only as far as the
        window allows (one read of a pipe can hold far more items than a slow function
        should be given at once)."""
        backlog = self.backlog
        while backlog and (not self.paced_input or self.load() < self.window()):
            self.on_batch(backlog.popleft())

    def input_finished(self):
        """Nothing more will come in: the input ended, or a stop was asked over ZeroMQ. A
        pipe is read to its end even when stopping: the stage before it is stopping too,
        and what it sends on its way out must not meet a closed pipe."""
        if isinstance(self.input, Inbox):
            return self.input.ended() or (self.stop_requested and not self._reading_on())
        return self.input.ended() and not self.backlog

    def _reading_on(self):
        """Stopping over ZeroMQ: go on reading while every producer is stopping too, as
        when one Ctrl-C reaches a whole pipeline (their DRAIN may take DRAIN_GRACE to
        come); a consumer stopped alone leaves, and its producers give its share to
        others."""
        if self.input.all_draining():
            return True
        return time.monotonic() - self.stop_requested_at < defaults.DRAIN_GRACE

    def _malformed(self, item_id, reason, line=None):
        self.failures.report(item_id, line, 'MalformedLine', reason, attempts=0)

    def _unwritable(self, item_id, reason):
        self.failures.report(item_id, None, 'ItemNotEncodable', reason, attempts=0)

    # hooks for subclasses

    def on_batch(self, batch):
        raise NotImplementedError

    def on_acked(self, batch):
        raise NotImplementedError

    def step(self):
        """Do the stage's work; return seconds until it wants to run again (None: idle)."""
        return None

    def load(self):
        """Items the node holds, against its input window."""
        return 0

    def done(self):
        raise NotImplementedError

    # the loop

    def pump(self):
        """Move output, acknowledgements and credit; keep the heartbeat."""
        output = self.output
        if output is not None:
            output.pump()
            if isinstance(output, PipeWriter):
                self._watch_stdout(output.wants_write)
        inbox = self.input
        if isinstance(inbox, Inbox):
            taking = not self.stop_requested or self._reading_on()
            inbox.flush(self.load() if taking else inbox.window)
        elif isinstance(inbox, PipeReader):
            if self.backlog:
                self._take_backlog()
            if not inbox.eos:
                room = not self.backlog and self.load() < self.window()
                self.loop.modify(STDIN, zmq.POLLIN if room else 0)
        now = time.monotonic()
        if now >= self._next_tick:
            self.network.tick()
            self.notifier.watchdog()
            self._next_tick = now + defaults.HEARTBEAT_INTERVAL / 4
            if self.control is not None and now >= self._next_status:
                self.control.send(self.status(), replaceable=True)
                self._next_status = now + defaults.HEARTBEAT_INTERVAL

    def input_truncated(self):
        """True, after saying so, when stdin ended without its end-of-stream record."""
        if isinstance(self.input, PipeReader) and self.input.truncated:
            log.error("%s: stdin ended without end of stream: the stage before this one "
                      "stopped early", self.name)
            return True
        return False

    def drain_expired(self):
        """True once a stop has waited DRAIN_TIMEOUT for the items in flight."""
        return (self.stop_requested
                and time.monotonic() - self.stop_requested_at > defaults.DRAIN_TIMEOUT)

    def window(self):
        return self.input.window if isinstance(self.input, Inbox) else defaults.CREDIT_MAX

    def _watch_stdout(self, wanted):
        if wanted and not self._writing:
            self.loop.watch(self.output.fd, lambda fd, events: None, zmq.POLLOUT)
        elif not wanted and self._writing:
            self.loop.unwatch(self.output.fd)
        self._writing = wanted

    def private_fds(self):
        """fds of this process that a forked child must close."""
        fds = list(self.loop.private_fds())
        if isinstance(self.output, PipeWriter):
            fds.append(self.output.fd)
        return fds

    def run(self):
        """Loop until done(); returns when the node may exit."""
        self.loop.catch_signals()
        self.notifier.ready(f"{self.name}: running")     # the edges are open by now
        while True:
            wait = self.step()
            self.pump()
            if self.loop.signalled and not self.stop_requested:
                self.stop_requested = True
                self.stop_requested_at = time.monotonic()
                if isinstance(self.output, Outbox):
                    self.output.announce_drain()
                if isinstance(self.input, Inbox):
                    self.input.follow = False   # stopping: the producers' ends are the end
                log.info("%s: stopping: finishing the items in flight", self.name)
                self.notifier.stopping(f"{self.name}: finishing the items in flight")
                continue
            if self.done():
                self.ended = True
                return
            if self.stop_requested and self.drain_expired():
                log.warning("%s: stopping after %.0f s with items still in flight", self.name,
                            defaults.DRAIN_TIMEOUT)
                raise Interrupted(self.loop.signalled)
            now = time.monotonic()
            tick = max(0.0, self._next_tick - now)
            if isinstance(self.input, Inbox) and self.input.ack_due is not None:
                tick = min(tick, max(0.0, self.input.ack_due - now))
            self.loop.poll(tick if wait is None else min(wait, tick))

    def close(self):
        if self.control is not None:
            self.control.send(self.status())
            self.control.close()
        ended = None
        if isinstance(self.input, Inbox):
            self.input.leave()
            if self.input.ended():
                ended = self.input
        if isinstance(self.output, PipeWriter):
            self.output.close()
        self.network.close(ended=ended)
        self.security.close()
        if self.context is not None:
            self.context.term()
        self.loop.close()
