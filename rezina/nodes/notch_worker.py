"""A worker child of rz-notch: calls the user's function on units of items.

Runs in the forked children of an rz-notch process. It speaks to its parent over a
socketpair, as a msgpack stream of records:

    parent -> child   ['U', unit_no, run, ids, count, payload]   a unit of work
    child -> parent   ['R']                                       ready to work
                      ['X', message]                              cannot start (then exits)
                      ['D', unit_no, ids, count, payload, failures, seconds, dropped]

A child has `lanes` lanes, each working through whole units, one item after another: in
mode 'threads' a lane is a thread calling FUNC(item); in mode 'async' it is a task on the
child's one event loop awaiting FUNC(item), an `async def` function or an async generator
function (each value it yields is one output, with id SEQ.K, as for a generator).

`seconds` is the time the lane spent on the unit, `dropped` how many of its items FUNC
returned None for, and `failures` lists [seq, error type, message, traceback, item,
attempts] of the items that raised or whose result cannot be encoded: item is the input
item (None when it did not decode), attempts the calls made on it (0 when it did not
decode, 1 for a result that cannot be encoded); rezina.nodes.unit_record builds the
record. With retries=N an item that raises is called up to N more times, after a
backoff. While an item runs, its lane's two slots in memory shared with the parent hold
(unit_no + 1, index), so that if the child dies the parent knows which items were
running, as opposed to only queued. A lane's `retried` counter, also shared, goes up as
a backoff before a call made again starts (odd) and as the call starts (even), so that
the parent, which times the calls (--timeout) by watching these, sees each call start
and does not time the waits. In mode 'async' a call that runs past `timeout` is
cancelled here and fails as a TimeoutError; other calls are timed out by the parent,
which kills the child. The child exits once the parent's end of file has come and the
units it had are done.
"""

import ctypes
import inspect
import os
import queue
import random
import signal
import socket
import threading
import time
import traceback
import types

import msgpack

from rezina import defaults
from rezina.errors import RezinaError
from rezina.nodes.unit_record import (HOLE, decode_unit, done_record, failure_entry, fan_out,
                                      fan_out_async, pack_record, timed_out)
from rezina.target import resolve_callable

MODES = ('threads', 'async')
PR_SET_PDEATHSIG = 1
_GENERATOR = types.GeneratorType
_ASYNC_GENERATOR = types.AsyncGeneratorType
_FAILED = object()          # an item whose calls all raised


def die_with_parent():
    """Ask Linux to kill this process when its parent dies (no-op elsewhere)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def retry_delay(attempts):
    """Seconds to wait before the next call of an item already called `attempts` times."""
    ceiling = min(defaults.RETRY_MAX, defaults.RETRY_BASE * 2 ** (attempts - 1))
    return random.uniform(0, ceiling)        # full jitter: retries of many items spread out


def process_unit(func, unit_no, run, ids, count, payload, slot, retries=0, retried=None):
    """Call func on every item of a unit; return the 'D' record."""
    started = time.perf_counter()
    seqs, items, failures = decode_unit(ids, count, payload)
    outputs = []
    append = outputs.append
    # None while every output so far is its input's one result; then the outputs' seqs,
    # and in spans (first output, end, input index) of each fan-out
    out_seqs = spans = None
    if failures:
        out_seqs, spans = [], []
    dropped = 0
    slot[0] = unit_no + 1
    for index, item in enumerate(items):
        slot[1] = index
        if item is HOLE:
            continue
        try:
            result = func(item)
        except Exception as exc:
            result = _call_again(func, item, retries, exc, seqs[index], failures, retried)
            if result is _FAILED:
                if out_seqs is None:
                    out_seqs, spans = list(seqs[:index]), []
                continue
        if result is None or type(result) is _GENERATOR:
            if out_seqs is None:
                out_seqs, spans = list(seqs[:index]), []
            if result is not None:
                fan_out(result, seqs[index], index, item, outputs, out_seqs, spans,
                        failures)
            else:
                dropped += 1
            continue
        append(result)
        if out_seqs is not None:
            out_seqs.append(seqs[index])
    slot[0] = 0
    return done_record(unit_no, ids, seqs, items, outputs, out_seqs, spans, failures,
                       started, dropped)


async def process_unit_async(func, unit_no, run, ids, count, payload, slot, retries=0,
                             timeout=None, retried=None):
    """Await func on every item of a unit, one after another; return the 'D' record. A
    call (or an async generator's whole fan-out) longer than timeout s is cancelled."""
    started = time.perf_counter()
    seqs, items, failures = decode_unit(ids, count, payload)
    outputs, out_seqs, spans = [], [], []
    dropped = 0
    slot[0] = unit_no + 1
    for index, item in enumerate(items):
        slot[1] = index
        if item is HOLE:
            continue
        result = await _await_call(func, item, retries, seqs[index], failures, timeout,
                                   retried)
        if result is None or result is _FAILED:
            dropped += result is None
            continue
        if type(result) is _ASYNC_GENERATOR:
            await fan_out_async(result, seqs[index], index, item, outputs, out_seqs,
                                spans, failures, timeout)
        elif type(result) is _GENERATOR:
            fan_out(result, seqs[index], index, item, outputs, out_seqs, spans, failures)
        else:
            outputs.append(result)
            out_seqs.append(seqs[index])
    slot[0] = 0
    return done_record(unit_no, ids, seqs, items, outputs, out_seqs, spans, failures,
                       started, dropped)


def _call_again(func, item, retries, exc, seq, failures, retried=None):
    """After a first call raised exc: func(item) once it succeeds within the retries, or
    _FAILED with a failure entry added."""
    attempts = 1
    while attempts <= retries:
        _count(retried)         # odd: a wait, not a call
        time.sleep(retry_delay(attempts))
        _count(retried)
        attempts += 1
        try:
            return func(item)
        except Exception as again:
            if again.__context__ is exc:     # called in the handling of the last attempt:
                again.__context__ = None     # its traceback is not this one's cause
            exc = again
    failures.append(failure_entry(seq, exc, item, attempts))
    return _FAILED


async def _await_call(func, item, retries, seq, failures, timeout=None, retried=None):
    """The awaited result of func(item), retried as _call_again does, or _FAILED; a call
    cancelled at timeout s fails as one that raised TimeoutError does."""
    import asyncio
    attempts = 1
    while True:
        limit = None if timeout is None else asyncio.timeout(timeout)
        try:
            if limit is not None:
                async with limit:
                    return await _call(func, item)
            result = func(item)         # _call, inline: every untimed item comes here
            if inspect.isawaitable(result):
                result = await result
            return result
        except Exception as exc:
            if limit is not None and limit.expired():
                exc = TimeoutError(timed_out(timeout))
            if attempts > retries:
                failures.append(failure_entry(seq, exc, item, attempts))
                return _FAILED
        _count(retried)
        await asyncio.sleep(retry_delay(attempts))
        _count(retried)
        attempts += 1


def _count(retried):
    if retried is not None:
        retried[0] += 1


async def _call(func, item):
    result = func(item)
    if inspect.isawaitable(result):
        result = await result
    return result


class Worker:
    """The loop of one child: read units, run them in its lanes, send results."""

    def __init__(self, sock, spec, lanes, slots, mode='threads', retries=0, timeout=None,
                 retried=None):
        self.sock = sock
        self.spec = spec
        self.lanes = lanes
        self.slots = slots
        self.mode = mode
        self.retries = retries
        self.timeout = timeout
        self.retried = retried
        self.send_lock = threading.Lock()

    def lane_retried(self, t):
        """Lane t's counter of calls made again, or None when the parent does not time
        calls."""
        return None if self.retried is None else self.retried[t:t + 1]

    def send(self, record):
        data = pack_record(record)
        with self.send_lock:
            self.sock.sendall(data)

    def units(self):
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=0)
        while True:
            data = self.sock.recv(1 << 20)
            if not data:
                return
            unpacker.feed(data)
            for record in unpacker:
                yield record

    def serve(self):
        if self.mode not in MODES:
            self.send(['X', f"unknown worker mode {self.mode!r}"])
            return
        try:
            func = resolve_callable(self.spec)
        except RezinaError as exc:
            self.send(['X', str(exc)])
            return
        self.send(['R'])
        if self.mode == 'async':
            import asyncio      # here only: it costs a plain function's workers 17 ms
            asyncio.run(self._serve_async(func))
        elif self.lanes == 1:
            slot, retried = self.slots[0:2], self.lane_retried(0)
            for _, unit_no, run, ids, count, payload in self.units():
                self.send(process_unit(func, unit_no, run, ids, count, payload, slot,
                                       self.retries, retried))
        else:
            self._serve_threads(func)

    # mode 'threads'

    def _serve_threads(self, func):
        work = queue.SimpleQueue()
        pool = [threading.Thread(target=self._thread, args=(func, work, t), daemon=True)
                for t in range(self.lanes)]
        for thread in pool:
            thread.start()
        for record in self.units():
            work.put(record)
        for _ in pool:
            work.put(None)
        for thread in pool:
            thread.join()

    def _thread(self, func, work, t):
        slot, retried = self.slots[2 * t:2 * t + 2], self.lane_retried(t)
        while True:
            record = work.get()
            if record is None:
                return
            _, unit_no, run, ids, count, payload = record
            self.send(process_unit(func, unit_no, run, ids, count, payload, slot,
                                   self.retries, retried))

    # mode 'async': one event loop in the main thread reads the socket (loop.sock_recv,
    # which waits with add_reader), runs the lanes and writes (loop.sock_sendall)

    async def _serve_async(self, func):
        import asyncio
        self.sock.setblocking(False)
        work = asyncio.Queue()          # the parent holds it to lanes + 1 units
        write_lock = asyncio.Lock()     # one record's bytes at a time on the socket
        tasks = [asyncio.create_task(self._read(work))]
        tasks += [asyncio.create_task(self._lane(func, work, t, write_lock))
                  for t in range(self.lanes)]
        await asyncio.gather(*tasks)

    async def _read(self, work):
        import asyncio
        loop = asyncio.get_running_loop()
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=0)
        while data := await loop.sock_recv(self.sock, 1 << 20):
            unpacker.feed(data)
            for record in unpacker:
                work.put_nowait(record)
        for _ in range(self.lanes):     # after the queued units: end of work for each lane
            work.put_nowait(None)

    async def _lane(self, func, work, t, write_lock):
        import asyncio
        loop = asyncio.get_running_loop()
        slot, retried = self.slots[2 * t:2 * t + 2], self.lane_retried(t)
        while (record := await work.get()) is not None:
            _, unit_no, run, ids, count, payload = record
            done = await process_unit_async(func, unit_no, run, ids, count, payload, slot,
                                            self.retries, self.timeout, retried)
            data = pack_record(done)
            async with write_lock:
                await loop.sock_sendall(self.sock, data)


def child_main(sock, spec, lanes, slots, close_fds, mode='threads', retries=0, timeout=None,
               retried=None):
    """Entry point of a freshly forked child; never returns."""
    status = 0
    try:
        die_with_parent()
        signal.set_wakeup_fd(-1)
        # a Ctrl-C, or a SIGTERM to the process group (timeout(1), systemd), is the
        # parent's to handle: it drains, then ends its workers by closing their sockets
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        for fd in close_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)            # the stream is the parent's, never ours
        os.dup2(2, 1)                  # a print() in user code goes to stderr
        os.close(devnull)
        sock.setblocking(True)
        Worker(sock, spec, lanes, slots, mode, retries, timeout, retried).serve()
    except (BrokenPipeError, ConnectionResetError):
        pass
    except BaseException:
        traceback.print_exc()
        status = 1
    finally:
        os._exit(status)


def make_socketpair():
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
