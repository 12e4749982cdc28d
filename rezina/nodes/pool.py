"""The worker children of one rz-notch: fork them, feed them units, read their results,
restart a child that dies, redelivering its units, and kill one whose call has run past
--timeout.

Runs in the rz-notch parent process.
"""

import logging
import mmap
import os
import signal
import time
import warnings
from collections import deque

import zmq

from rezina.errors import RezinaError
from rezina.nodes import notch_worker
from rezina.nodes.unit import Unit
from rezina.nodes.unit_record import timed_out
from rezina.pipe import codec

log = logging.getLogger(__name__)

FAILING_START = 3       # children that die before they are ready, in a row, fail the node
KILLING_ITEMS = 5       # items quarantined in a row, none finished between: fail the node
CHECKS_PER_TIMEOUT = 10     # looks at the running calls in each --timeout ...
CHECK_EVERY = (0.01, 0.1)   # ... but no more often, nor less often, than these (seconds)
ASYNC_GRACE = 1.0       # an async call not cancelled after timeout + max(this, timeout)
                        # blocks its event loop: its worker is killed


class Child:
    """One forked worker process and the parent's end of its socketpair."""

    def __init__(self, index, lanes):
        self.index = index
        self.lanes = lanes
        self.pid = None
        self.sock = None
        self.fd = None
        self.ready = False
        self.alone = False        # running a suspect unit: it gets no other
        self.units = {}
        self.items = 0
        self.out = bytearray()
        self.unpacker = None
        self.shared = mmap.mmap(-1, 24 * lanes)      # MAP_SHARED | MAP_ANONYMOUS
        self.slots = memoryview(self.shared)[:16 * lanes].cast('q')
        self.retried = memoryview(self.shared)[16 * lanes:].cast('q')
        self.calls = [None] * lanes     # per lane: (what it runs, seen since) or None
        self.expired = {}         # killed for --timeout: unit no -> indexes of the calls


class Pool:
    """P children of L lanes each (threads, or coroutines for an async function), fed from
    one queue of units."""

    def __init__(self, spec, processes, lanes, max_deliveries, name, on_result,
                 on_failed, loop, mode='threads', retries=0, timeout=None):
        self.spec = spec
        self.lanes = lanes
        self.mode = mode
        self.retries = retries
        self.max_deliveries = max_deliveries
        self.timeout = timeout              # seconds a call may run, or None
        self.name = name
        self.on_result = on_result          # (unit, ids, count, payload, failures, seconds)
        self.on_failed = on_failed          # (unit, seq, item, kind, message, attempts)
        self.loop = loop
        self.children = [Child(i, lanes) for i in range(processes)]
        self.queue = deque()
        self.queued_items = 0
        self.assigned_items = 0
        self.next_unit = 0
        self.next_order = 0
        self.unit_size = 1
        self.per_item = None        # seconds, a moving average
        self.redelivered = 0
        self.dropped = 0            # items FUNC returned None for
        self.busy_seconds = 0.0     # the lanes' time on units, summed
        self.failing_starts = 0
        self.deaths_in_row = 0      # deaths of children since a unit last finished
        self.private_fds = []       # the parent's fds a child must not hold open
        if timeout is not None:
            # a coroutine is cancelled in its worker at the timeout; the parent steps in
            # only when its event loop is blocked
            grace = max(ASYNC_GRACE, timeout) if mode == 'async' else 0.0
            self.kill_after = timeout + grace
            self.check_every = min(max(timeout / CHECKS_PER_TIMEOUT, CHECK_EVERY[0]),
                                   CHECK_EVERY[1])

    # children

    def start(self):
        for child in self.children:
            self._fork(child)

    def _fork(self, child):
        parent_end, child_end = notch_worker.make_socketpair()
        others = [c.fd for c in self.children if c.fd is not None and c is not child]
        close_fds = [parent_end.fileno(), *others, *self.private_fds]
        child.shared[:] = bytes(len(child.shared))
        child.calls = [None] * child.lanes
        child.expired = {}
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            notch_worker.child_main(child_end, self.spec, child.lanes, child.slots,
                                    close_fds, self.mode, self.retries, self.timeout,
                                    child.retried)
        child_end.close()
        parent_end.setblocking(False)
        child.pid, child.sock, child.fd = pid, parent_end, parent_end.fileno()
        child.ready = False
        child.alone = False
        child.out = bytearray()
        child.unpacker = codec.stream_unpacker()
        self.loop.watch(child.fd, lambda fd, events, c=child: self._ready(c, events))
        log.debug("%s: worker %d started (pid %d)", self.name, child.index, pid)

    def capacity(self, child):
        """Units a child may hold: one per lane and one more waiting."""
        return child.lanes + 1

    # feeding

    def add(self, batch):
        """Queue the items of an input batch as one unit, cut to size when assigned."""
        self.queue.append(Unit(self._unit_no(), batch, batch.ids, batch.count,
                               batch.payload))
        self.queued_items += batch.count
        batch.parts += 1

    def _unit_no(self):
        self.next_unit += 1
        return self.next_unit

    def assign(self):
        """Give queued units to the ready children with room, least loaded first."""
        while self.queue:
            unit = self.queue[0]
            if unit.deaths:
                # a suspect (running when a child died) runs alone on an idle child, so a
                # death then blames only the item that caused it, not its neighbours
                room = [c for c in self.children
                        if c.ready and not c.units and not c.expired]
            else:
                room = [c for c in self.children if c.ready and not c.alone
                        and not c.expired and len(c.units) < self.capacity(c)]
            if not room:
                return
            child = min(room, key=lambda c: len(c.units))
            child.alone = bool(unit.deaths)
            # a unit given back by a dead child goes whole: it keeps its place in the order
            if unit.count > self.unit_size and unit.order is None:
                unit = unit.cut(self.unit_size, self._unit_no())
            else:
                self.queue.popleft()
                unit.settle()
            if unit.order is None:
                unit.order = self.next_order
                self.next_order += 1
            self.queued_items -= unit.count
            self.assigned_items += unit.count
            unit.child = child
            child.units[unit.no] = unit
            child.items += unit.count
            child.out += unit.record()
            self._write(child)

    def _write(self, child):
        if child.out:
            try:
                sent = child.sock.send(child.out)
                del child.out[:sent]
            except BlockingIOError:
                pass
            except OSError:
                return      # it died; its end of file will tell
        self.loop.modify(child.fd, zmq.POLLIN | (zmq.POLLOUT if child.out else 0))

    @property
    def idle(self):
        return not self.queue and not self.assigned_items

    # results

    def _ready(self, child, events):
        if events & zmq.POLLOUT:
            self._write(child)
        if not events & zmq.POLLIN:
            return
        try:
            data = child.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b''
        if not data:
            self._died(child)
            return
        child.unpacker.feed(data)
        for record in child.unpacker:
            self._record(child, record)

    def _record(self, child, record):
        kind = record[0]
        if kind == 'D':
            _, unit_no, ids, count, payload, failures, seconds, dropped = record
            self.dropped += dropped
            self.busy_seconds += seconds
            unit = child.units.pop(unit_no)
            child.alone = False
            self.deaths_in_row = 0
            child.items -= unit.count
            self.assigned_items -= unit.count
            self._learn(unit.count, seconds)
            self.on_result(unit, ids, count, payload, failures, seconds)
        elif kind == 'R':
            child.ready = True
            self.failing_starts = 0
        elif kind == 'X':
            raise RezinaError(record[1])

    def _learn(self, count, seconds):
        """Size units so one takes about 20 ms of the function's time."""
        if not count:
            return
        per_item = seconds / count
        self.per_item = per_item if self.per_item is None else (
            0.8 * self.per_item + 0.2 * per_item)
        self.unit_size = max(1, min(1000, int(0.02 / max(self.per_item, 1e-7))))

    # timeouts

    def check_timeouts(self):
        """Kill each worker running a call that has gone on past --timeout (its end of
        file then restarts it); seconds until the next look, or None when there is
        nothing to time."""
        if self.timeout is None or not self.assigned_items:
            return None
        now = time.monotonic()
        for child in self.children:
            if child.ready and child.units and not child.expired:
                self._time_calls(child, now)
        return self.check_every

    def _time_calls(self, child, now):
        """Note when each lane's call was first seen; kill the child if one is too old.
        A call is seen when it has started, so it is never timed out early, and at most
        one look late."""
        slots, retried, calls = child.slots, child.retried, child.calls
        expired = {}
        for t in range(child.lanes):
            running = (slots[2 * t], slots[2 * t + 1], retried[t])
            seen = calls[t]
            if not running[0] or running[2] & 1:       # no call, or a retry's backoff
                calls[t] = None
            elif seen is None or seen[0] != running:
                calls[t] = (running, now)
            elif now - seen[1] >= self.kill_after:
                expired.setdefault(running[0] - 1, set()).add(running[1])
        if expired:
            child.expired = expired         # it gets no more units
            try:
                os.kill(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _time_out(self, unit, index):
        """Item index of unit ran past --timeout; it fails once it has had the calls a
        raising item has (1 + retries), or killed its worker max_deliveries times.
        Returns True if it failed."""
        times = unit.timeouts[index] = unit.timeouts.get(index, 0) + 1
        if times <= self.retries and times < self.max_deliveries:
            return False        # called again, as an item that raised is
        seq, item = unit.drop(index)
        self.on_failed(unit, seq, item, 'TimeoutError', timed_out(self.timeout), times)
        return True

    # death

    def _died(self, child):
        self.loop.unwatch(child.fd)
        child.sock.close()
        child.fd = None
        pid, child.pid = child.pid, None    # reaped below: stop() must not wait for it
        _, status = os.waitpid(pid, 0)
        how = describe_status(status)
        expired, child.expired = child.expired, {}
        if expired:
            running = {}        # killed for a call too long: the others are not to blame
        else:
            self._count_death(child, how)
            running = self._running(child)
        units = sorted(child.units.values(), key=lambda u: u.no)
        items = child.items
        self.assigned_items -= items
        child.units.clear()
        child.items = 0
        failed = 0
        for unit in reversed(units):
            unit.child = None
            for index in sorted(running.get(unit.no, ()), reverse=True):
                unit.deaths[index] = unit.deaths.get(index, 0) + 1
                if unit.deaths[index] >= self.max_deliveries:
                    self._quarantine(unit, index, how)
                    failed += 1
            for index in sorted(expired.get(unit.no, ()), reverse=True):
                failed += self._time_out(unit, index)
            if unit.count:
                self.queue.appendleft(unit)
                self.queued_items += unit.count
            else:
                self.on_result(unit, [], 0, None, [], 0.0)
        self.redelivered += items - failed
        if expired:
            log.warning("%s: worker %d (pid %d) killed: a call ran over --timeout %g s; "
                        "restarting it, %d items redelivered", self.name, child.index, pid,
                        self.timeout, items - failed)
        else:
            log.warning("%s: worker %d (pid %d) %s; restarting it, %d items redelivered",
                        self.name, child.index, pid, how, items - failed)
        self._fork(child)

    def _count_death(self, child, how):
        """Give up when children keep dying before they start, or at every item."""
        if not child.ready:
            self.failing_starts += 1
            if self.failing_starts >= FAILING_START:
                raise RezinaError(f"worker processes keep dying before they start "
                                  f"(the last {how})")
        self.deaths_in_row += 1
        if self.deaths_in_row >= KILLING_ITEMS * self.max_deliveries:
            # every item kills its worker: stop here, and let rz-worker's backoff (or
            # the user) decide, rather than fork for ever
            raise RezinaError(f"worker processes died {self.deaths_in_row} times in a row "
                              f"with no item finished between (the last {how}): every "
                              f"item seems to kill them")

    def _running(self, child):
        """unit no -> indexes of the items the dead child's threads were running."""
        running = {}
        slots = child.slots
        for t in range(child.lanes):
            unit_plus_one, index = slots[2 * t], slots[2 * t + 1]
            if unit_plus_one:
                running.setdefault(unit_plus_one - 1, set()).add(index)
        return running

    def _quarantine(self, unit, index, how):
        deaths = unit.deaths[index]
        seq, item = unit.drop(index)
        self.on_failed(unit, seq, item, 'Quarantined', f"its worker died running it {deaths} "
                       f"time{'s' if deaths > 1 else ''} (the last {how})", deaths)

    def stop(self):
        """End every child: close its socket (it exits at end of file), then reap it."""
        for child in self.children:
            if child.fd is not None:
                self.loop.unwatch(child.fd)
                child.sock.close()
                child.fd = None
        deadline = time.monotonic() + 2.0
        for child in self.children:
            if child.pid is None:
                continue
            while time.monotonic() < deadline:
                pid, _ = os.waitpid(child.pid, os.WNOHANG)
                if pid:
                    break
                time.sleep(0.01)
            else:
                os.kill(child.pid, signal.SIGKILL)
                os.waitpid(child.pid, 0)


def describe_status(status):
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        return f"was killed by {signal.Signals(signum).name}"
    return f"exited with status {os.WEXITSTATUS(status)}"
