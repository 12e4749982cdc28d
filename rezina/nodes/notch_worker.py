"""A worker child of rz-notch: calls the user's function on units of items.

Runs in the forked children of an rz-notch process. It speaks to its parent over a
socketpair, as a msgpack stream of records:

    parent -> child   ['U', unit_no, run, ids, count, payload]   a unit of work
    child -> parent   ['R']                                       ready to work
                      ['X', message]                              cannot start (then exits)
                      ['D', unit_no, ids, count, payload, failures, seconds]

`failures` lists [seq, error type, message, traceback] of the items that raised or whose
result cannot be encoded. While an item runs, its thread's slot in memory shared with the
parent holds (unit_no + 1, index), so that if the child dies the parent knows which items
were running, as opposed to only queued.
"""

import ctypes
import os
import queue
import signal
import socket
import threading
import time
import traceback
import types

import msgpack

from rezina.errors import RezinaError
from rezina.pipe import codec, protocol
from rezina.target import resolve_callable

PR_SET_PDEATHSIG = 1
_GENERATOR = types.GeneratorType
_HOLE = object()


def die_with_parent():
    """Ask Linux to kill this process when its parent dies (no-op elsewhere)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def process_unit(func, unit_no, run, ids, count, payload, slot):
    """Call func on every item of a unit; return the 'D' record."""
    started = time.perf_counter()
    seqs = range(ids, ids + count) if isinstance(ids, int) else ids
    failures = []
    try:
        items, bad = codec.decode_items(payload)
    except ValueError as exc:
        items, bad = [], [(i, str(exc)) for i in range(count)]
    out_seqs = None            # None while every output so far is its input's one result
    if bad:
        # keep the items' indexes: a failed one is a hole the loop steps over
        holes = {i for i, _ in bad}
        failures = [[seqs[i], 'DecodeError', reason, ''] for i, reason in bad]
        kept = iter(items)
        items = [_HOLE if i in holes else next(kept) for i in range(count)]
        out_seqs = []
    outputs = []
    append = outputs.append
    slot[0] = unit_no + 1
    for index, item in enumerate(items):
        slot[1] = index
        if item is _HOLE:
            continue
        try:
            result = func(item)
        except Exception as exc:
            if out_seqs is None:
                out_seqs = list(seqs[:index])
            failures.append([seqs[index], type(exc).__name__, str(exc),
                             traceback.format_exc()])
            continue
        if result is None or type(result) is _GENERATOR:
            if out_seqs is None:
                out_seqs = list(seqs[:index])
            if result is not None:
                _fan_out(result, seqs[index], outputs, out_seqs, failures)
            continue
        append(result)
        if out_seqs is not None:
            out_seqs.append(seqs[index])
    slot[0] = 0
    out_payload, unencodable = codec.encode_items(outputs)
    if unencodable:
        if out_seqs is None:
            out_seqs = list(seqs[:len(outputs)])
        for i, reason in unencodable:
            failures.append([out_seqs[i], 'ItemNotEncodable', reason, ''])
        out_seqs = protocol.seqs_without(out_seqs, unencodable)
    out_ids = ids if out_seqs is None else protocol.compact_ids(out_seqs)
    out_count = len(outputs) - len(unencodable)
    return ['D', unit_no, out_ids, out_count, out_payload, failures,
            time.perf_counter() - started]


def _fan_out(generator, seq, outputs, out_seqs, failures):
    k = 0
    try:
        for value in generator:
            outputs.append(value)
            out_seqs.append(f"{seq}.{k}")
            k += 1
    except Exception as exc:
        failures.append([seq, type(exc).__name__, f"{exc} (after {k} results)",
                         traceback.format_exc()])


class Worker:
    """The loop of one child: read units, run them, send results."""

    def __init__(self, sock, spec, threads, slots):
        self.sock = sock
        self.spec = spec
        self.threads = threads
        self.slots = slots
        self.send_lock = threading.Lock()

    def send(self, record):
        data = msgpack.packb(record, use_bin_type=True)
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
        try:
            func = resolve_callable(self.spec)
        except RezinaError as exc:
            self.send(['X', str(exc)])
            return
        self.send(['R'])
        if self.threads == 1:
            slot = self.slots[0:2]
            for _, unit_no, run, ids, count, payload in self.units():
                self.send(process_unit(func, unit_no, run, ids, count, payload, slot))
            return
        work = queue.SimpleQueue()
        pool = [threading.Thread(target=self._thread, args=(func, work, t), daemon=True)
                for t in range(self.threads)]
        for thread in pool:
            thread.start()
        for record in self.units():
            work.put(record)
        for _ in pool:
            work.put(None)
        for thread in pool:
            thread.join()

    def _thread(self, func, work, t):
        slot = self.slots[2 * t:2 * t + 2]
        while True:
            record = work.get()
            if record is None:
                return
            _, unit_no, run, ids, count, payload = record
            self.send(process_unit(func, unit_no, run, ids, count, payload, slot))


def child_main(sock, spec, threads, slots, close_fds):
    """Entry point of a freshly forked child; never returns."""
    status = 0
    try:
        die_with_parent()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent drains on Ctrl-C
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
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
        Worker(sock, spec, threads, slots).serve()
    except (BrokenPipeError, ConnectionResetError):
        pass
    except BaseException:
        traceback.print_exc()
        status = 1
    finally:
        os._exit(status)


def make_socketpair():
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
