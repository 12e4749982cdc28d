"""Edges over OS pipes: a msgpack stream of batch records, read and written as they come.

A record is the msgpack array [run, ids, count, payload]; a stream that ends cleanly ends
with a nil record, so that end of file without it tells the reader its writer died. There
is no back channel: the pipe's buffer is the window, and a batch counts as acknowledged
once it is written whole into the pipe.
"""

import errno
import fcntl
import logging
import os
import stat
from collections import deque

import msgpack

from rezina import defaults
from rezina.errors import BadStream
from rezina.pipe import protocol

log = logging.getLogger(__name__)

READ_SIZE = 1 << 20
END_RECORD = msgpack.packb(None)


class DownstreamClosed(Exception):
    """The reader of our output went away (EPIPE)."""


class PipeWriter:
    """Writes batches to an fd without blocking the node, when the fd is a pipe."""

    role = 'producer'
    redelivered = 0         # a pipe has one reader: nothing to give to another

    def __init__(self, fd, on_acked):
        self.fd = fd
        self.on_acked = on_acked
        self.buffer = bytearray()
        self.written = 0          # bytes written since the start
        self.queued = 0           # bytes queued since the start
        self.marks = deque()      # (end offset, batch) of records not fully written
        self.pending_items = 0
        self.eos_sent = False
        self._flags = None
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            # only a pipe is ours alone; a tty or file is shared with the shell
            self._flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, self._flags | os.O_NONBLOCK)

    def offer(self, batch):
        record = record_of(batch)
        self.buffer += record
        self.queued += len(record)
        self.marks.append((self.queued, batch))
        self.pending_items += batch.count

    def capacity(self):
        """Items to take now: a window's worth while the buffer is short of a read."""
        return defaults.CREDIT_MAX if len(self.buffer) < READ_SIZE else 0

    @property
    def idle(self):
        return not self.buffer

    @property
    def wants_write(self):
        return bool(self.buffer)

    def pump(self):
        """Write what the pipe takes now; report the batches that are now whole in it."""
        while self.buffer:
            try:
                n = os.write(self.fd, self.buffer)
            except BlockingIOError:
                break
            except BrokenPipeError:
                raise DownstreamClosed() from None
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    raise DownstreamClosed() from None
                raise
            del self.buffer[:n]
            self.written += n
        while self.marks and self.marks[0][0] <= self.written:
            batch = self.marks.popleft()[1]
            self.pending_items -= batch.count
            self.on_acked(batch)

    def ready_to_finish(self):
        return True

    def finish(self, clean=True):
        """End the stream: with the end-of-stream record unless it is not clean (then the
        reader knows, as if this writer had died)."""
        if not self.eos_sent and clean:
            self.buffer += END_RECORD
            self.queued += len(END_RECORD)
        self.eos_sent = True

    def close(self):
        if self._flags is not None:
            try:
                fcntl.fcntl(self.fd, fcntl.F_SETFL, self._flags)
            except OSError:
                pass


class PipeReader:
    """Reads batch records from an fd as they arrive."""

    role = 'consumer'

    def __init__(self, fd, name='stdin'):
        self.fd = fd
        self.name = name
        self.unpacker = msgpack.Unpacker(raw=False, max_buffer_size=0)
        self.eos = False
        self.fed = 0
        self.ended_cleanly = False    # the end-of-stream record arrived

    def read(self):
        """Batches whole in what the fd holds now; sets eos at end of file."""
        data = os.read(self.fd, READ_SIZE)
        if not data:
            self.eos = True
            if self.unpacker.tell() < self.fed:
                raise BadStream(f"{self.name} ended in the middle of a record")
            return []
        self.unpacker.feed(data)
        self.fed += len(data)
        batches = []
        try:
            for record in self.unpacker:
                if record is None:
                    self.ended_cleanly = True
                    continue
                batches.append(_batch_of_record(record))
        except (TypeError, ValueError):
            raise BadStream(f"{self.name} is not a rezina record stream (pipe rz commands "
                            f"together, or read text with --in-format json or lines)") from None
        return batches

    def ack(self, batch):
        """Nothing to do: a pipe has no back channel."""

    def ended(self):
        return self.eos

    @property
    def truncated(self):
        """End of file came without the end-of-stream record: the writer stopped early."""
        return self.eos and not self.ended_cleanly


def _batch_of_record(record):
    if not isinstance(record, list) or len(record) not in (4, 5):
        raise ValueError("not a batch record")
    run, ids, count, payload = record[:4]
    total = record[4] if len(record) == 5 else None
    if total is not None and (type(total) is not int or total < 0):
        raise ValueError("not a batch record")
    if not (isinstance(run, str) and type(count) is int and isinstance(payload, bytes)
            and (type(ids) is int or (isinstance(ids, list) and len(ids) == count))):
        raise ValueError("not a batch record")
    return protocol.Batch(run, ids, count, payload, total=total)


def record_of(batch):
    """The pipe record of a batch: [run, ids, count, payload(, total)]."""
    fields = [batch.run, batch.ids, batch.count, batch.payload]
    if batch.total is not None:
        fields.append(batch.total)
    return msgpack.packb(fields, use_bin_type=True)
