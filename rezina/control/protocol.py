"""Messages on the master's control socket, and the client end that `rz`, `rezina-cli` and
TypologyBuilder use (see docs/control-plane.md, "Messages").

A message is one frame, a kind byte then a msgpack header; BLOB adds the file's bytes as
a second frame. The master binds a ROUTER; workers and clients connect DEALERs.

    REGISTER  worker -> master   {worker, host, address, slots, session, nodes}
    HEARTBEAT worker -> master   {worker, session, nodes, runs}
    WANT      master -> worker   {start, stop, connect}      the answer to a heartbeat
    FETCH     worker -> master   {hash}
    BLOB      master -> worker   {hash}, bytes
    LOG       worker -> master   {node_id, lines}
    REQUEST   client -> master   {rid, op, args}
    REPLY     master -> client   {rid, ok, result | error}
    GOODBYE   worker -> master   {worker, session}           it is stopping
"""

import os
import time

import msgpack
import zmq

from rezina import defaults
from rezina.errors import RezinaError
from rezina.security import Security, handshake_failure, master_key, unwatch_handshake, \
    watch_handshake

REGISTER = b'R'
HEARTBEAT = b'H'
WANT = b'W'
FETCH = b'F'
BLOB = b'B'
LOG = b'L'
REQUEST = b'Q'
REPLY = b'A'
GOODBYE = b'G'

KINDS = frozenset((REGISTER, HEARTBEAT, WANT, FETCH, BLOB, LOG, REQUEST, REPLY, GOODBYE))
MAX_HEADER = 16 << 20       # a control header larger than this is not rezina's


class BadMessage(ValueError):
    """A control message that is not rezina's protocol."""


def encode(kind, header, blob=None):
    """The frames of one message."""
    frames = [kind + msgpack.packb(header, use_bin_type=True)]
    if blob is not None:
        frames.append(blob)
    return frames


def decode(frames):
    """(kind, header, blob or None) of one message's frames; BadMessage if it is not
    one."""
    if not frames or len(frames) > 2 or not frames[0]:
        raise BadMessage("not one or two frames")
    kind, raw = frames[0][:1], frames[0][1:]
    if kind not in KINDS:
        raise BadMessage(f"unknown kind {kind!r}")
    if len(raw) > MAX_HEADER:
        raise BadMessage("a header over 16 MiB")
    try:
        header = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise BadMessage(f"a header that does not decode: {exc}") from None
    if not isinstance(header, dict):
        raise BadMessage("a header that is not a map")
    return kind, header, frames[1] if len(frames) == 2 else None


class Client:
    """Requests to rz-master, each answered within `timeout` seconds or an error that
    names the master's host and port."""

    def __init__(self, host='127.0.0.1', port=defaults.CONTROL_PORT,
                 timeout=defaults.MASTER_ANSWER_TIMEOUT, context=None, security=None,
                 server_key=None):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.context = context or zmq.Context.instance()
        # by default the keys of REZINA_CURVE_KEY and REZINA_MASTER_KEY, if set
        self.security = security if security is not None else Security.from_options()
        self.server_key = server_key if server_key is not None else master_key()
        self.socket = self.monitor = None
        self.next_rid = 0

    def _connect(self):
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        self.security.connect(sock, self.server_key)
        self.monitor = watch_handshake(sock)
        sock.connect(f"tcp://{self.host}:{self.port}")
        return sock

    def request(self, op, **args):
        """The master's result of op, or RezinaError with its error or the timeout."""
        if self.socket is None:
            self.socket = self._connect()
        self.next_rid += 1
        rid = f"{os.getpid()}-{self.next_rid}"
        self.socket.send_multipart(encode(REQUEST, {'rid': rid, 'op': op, 'args': args}))
        deadline = time.monotonic() + self.timeout
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)
        while True:
            left = deadline - time.monotonic()
            ready = dict(poller.poll(max(1, int(left * 1000)))) if left > 0 else {}
            refused = handshake_failure(self.monitor) if self.monitor in ready else None
            if refused or not ready:
                self._reset()
                if refused:     # libzmq may try again, but the answer will be the same
                    raise RezinaError(f"rz-master at {self.host}:{self.port}: {refused}")
                raise RezinaError(f"no answer from rz-master at {self.host}:{self.port} "
                                  f"within {self.timeout:g} s")
            if self.socket not in ready:
                continue
            try:
                kind, header, _ = decode(self.socket.recv_multipart())
            except BadMessage:
                continue
            if kind != REPLY or header.get('rid') != rid:
                continue            # a late answer to a request that timed out
            if header.get('ok'):
                return header.get('result')
            raise RezinaError(str(header.get('error') or 'the master refused the request'))

    def _reset(self):
        """A request went unanswered: a new socket, so its answer, if it comes, is not
        taken for the next request's."""
        unwatch_handshake(self.socket, self.monitor)
        self.socket.close(linger=0)
        self.socket = self.monitor = None

    def close(self):
        if self.socket is not None:
            self._reset()
