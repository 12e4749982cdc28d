"""The channel between a stage command and the rz-worker that runs it: `--control-fd N`,
one end of a socketpair, carrying msgpack records both ways (see docs/control-plane.md).

    node -> worker   {'op': 'status', 'node', 'pid', 'stopping', ...the node's counters}
                     {'op': 'bound', 'endpoint'}            an output bound, its real port
                     {'op': 'run', 'run', 'state', 'items', 'failed', 'seconds'}
    worker -> node   {'op': 'connect', 'endpoints': [...]}   more producers to read from
                     {'op': 'stop'}                           as SIGTERM: drain, then exit

Writes never block the node: what the worker has not read waits in a buffer, and status
records, which the next one replaces, are not queued behind one not yet sent.
"""

import logging
import os
import socket
import stat

import msgpack
import zmq

from rezina.errors import UsageError

log = logging.getLogger(__name__)


def control_socket(text):
    """The socket of `--control-fd N`, or a UsageError naming the option."""
    try:
        fd = int(text)
        if fd < 3:
            raise ValueError
        mode = os.fstat(fd).st_mode
    except (ValueError, OSError):
        raise UsageError(f"--control-fd {text!r}: expected an open socket fd above 2 "
                         f"(it is for rz-worker)") from None
    if not stat.S_ISSOCK(mode):
        raise UsageError(f"--control-fd {text!r}: fd {fd} is not a socket")
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return sock


def write_some(sock, out):
    """Send what the bytearray out holds, as far as the non-blocking sock takes it now,
    removing what went; False if the peer is gone (out is then cleared)."""
    while out:
        try:
            sent = sock.send(out)
        except BlockingIOError:
            return True
        except OSError:
            out.clear()
            return False
        del out[:sent]
    return True


class Control:
    """One node's end of the channel, served from the node's loop."""

    def __init__(self, sock, loop, on_record):
        self.sock = sock
        self.loop = loop
        self.on_record = on_record
        self.out = bytearray()
        self.unpacker = msgpack.Unpacker(raw=False, max_buffer_size=1 << 20)
        self.closed = False
        self.writing = False
        loop.watch(sock.fileno(), self._ready)

    def send(self, record, replaceable=False):
        """Send record; a replaceable one (a status) is dropped while others wait."""
        if self.closed or (replaceable and self.out):
            return
        self.out += msgpack.packb(record, use_bin_type=True)
        self._flush()

    def _flush(self):
        if not write_some(self.sock, self.out):
            self._lost()
            return
        want = bool(self.out)
        if want != self.writing:
            self.writing = want
            self.loop.modify(self.sock.fileno(), zmq.POLLIN | (zmq.POLLOUT if want else 0))

    def _ready(self, fd, events):
        if events & zmq.POLLOUT:
            self._flush()
        if not events & zmq.POLLIN or self.closed:
            return
        try:
            data = self.sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b''
        if not data:
            self._lost()
            return
        self.unpacker.feed(data)
        try:
            for record in self.unpacker:
                if isinstance(record, dict):
                    self.on_record(record)
                else:
                    log.warning("control: a record that is not a map: ignored")
        except (ValueError, msgpack.UnpackException) as exc:
            log.warning("control: a record that does not decode (%s): ignored", exc)
            self.unpacker = msgpack.Unpacker(raw=False, max_buffer_size=1 << 20)

    def _lost(self):
        """The worker closed its end: the node goes on, as it does without a master."""
        if not self.closed:
            self.closed = True
            self.out.clear()
            self.loop.unwatch(self.sock.fileno())
            log.warning("control: the channel closed (rz-worker, or the process that "
                        "started this node, is gone); going on without it")

    def close(self):
        if not self.closed:
            self.closed = True
            self.loop.unwatch(self.sock.fileno())
        self.sock.close()
