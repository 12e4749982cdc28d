"""One ZeroMQ socket of an edge: a ROUTER on the bound side, a DEALER on the connecting one.

A Port hides which of the two it is: messages go to and come from a peer key (the routing
id on a ROUTER, None on a DEALER, whose one peer is the endpoint it connects to).
"""

import errno
import logging
import os
import stat

import zmq

from rezina import defaults
from rezina.errors import AddressInUse, CannotBind, RezinaError
from rezina.pipe import codec
from rezina.security import Security, handshake_failure, unwatch_handshake, \
    watch_handshake

log = logging.getLogger(__name__)

FRAME_SLACK = 64 << 10          # bytes of headers around a batch's items
CONNECT_TIMEOUT_MS = 500       # a TCP connect not answered in this is tried again
RCVHWM = 1000                   # messages a peer may have waiting here before TCP holds it


class Port:
    """A bound ROUTER or a connected DEALER for one endpoint."""

    def __init__(self, context, endpoint, name, security=None):
        self.endpoint = endpoint
        self.bound = endpoint.bind
        self.socket = context.socket(zmq.ROUTER if self.bound else zmq.DEALER)
        sock = self.socket
        sock.setsockopt(zmq.LINGER, defaults.LINGER_MS)
        sock.setsockopt(zmq.SNDHWM, 0)   # credit bounds every queue; never drop silently
        # a peer that sends more than credit allows waits (TCP holds it back): what it
        # floods us with is held here, a bounded number of messages at most
        sock.setsockopt(zmq.RCVHWM, RCVHWM)
        if '://[' in endpoint.address:
            sock.setsockopt(zmq.IPV6, 1)     # an IPv6 address, tcp://[::1]:PORT
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        ivl = int(defaults.HEARTBEAT_INTERVAL * 1000)
        sock.setsockopt(zmq.HEARTBEAT_IVL, ivl)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(defaults.PEER_LOST_AFTER * 1000))
        # a frame larger than the largest item and a batch's worth more is not rezina's:
        # libzmq drops the connection that sends it before it is held in memory
        sock.setsockopt(zmq.MAXMSGSIZE, codec.max_item_bytes + defaults.WIRE_BATCH_BYTES
                        + FRAME_SLACK)
        security = security or Security()
        self.monitor = None          # a DEALER's handshake failures
        self.refusal = None          # why its handshake failed, once it has
        self.ipc_file = None         # (path, device, inode) of the socket file bound
        if self.bound:
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            try:
                security.bind(sock, endpoint.address, name)
            except RezinaError:
                sock.close(linger=0)
                raise
            self.address = self._bind(endpoint.address, name)
            self.advertised = security.advertised(self.address)
            self.ipc_file = _socket_file(self.address)
        else:
            self.address = self.advertised = endpoint.address
            # a connect left in the kernel's SYN backoff would wait out its next retry
            # (seconds, growing) after a network cut heals; zmq retries every 0.1-1 s
            sock.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS)
            security.connect(sock, endpoint.server_key)
            if endpoint.address.startswith('tcp://'):
                self.monitor = watch_handshake(sock)
            sock.connect(endpoint.address)

    def _bind(self, address, name):
        try:
            if address.startswith('tcp://') and address.endswith(':*'):
                port = self.socket.bind_to_random_port(address[:-2])
                address = f"{address[:-2]}:{port}"
            else:
                self.socket.bind(address)
        except zmq.ZMQError as exc:
            self.socket.close(linger=0)     # else the context could never terminate
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUse(f"cannot bind {address}: address already in use") from None
            raise CannotBind(f"cannot bind {address}: {os.strerror(exc.errno)}") from None
        if address.startswith('tcp://'):
            log.info("%s: bound %s", name, self.socket.getsockopt_string(zmq.LAST_ENDPOINT))
        return address

    def send(self, peer, frames):
        """Send frames to peer; False if a ROUTER no longer knows the peer, or if a DEALER
        whose server refused it cannot send (libzmq does not reconnect then, and a send
        would wait for ever)."""
        try:
            # copying is cheaper than pyzmq's zero-copy tracking for frames this small
            if self.bound:
                self.socket.send_multipart([peer, *frames])
            else:
                self.socket.send_multipart(frames, zmq.NOBLOCK if self.refusal else 0)
        except zmq.ZMQError as exc:
            if exc.errno in (zmq.EHOSTUNREACH, zmq.EAGAIN):
                return False
            raise
        return True

    def recv(self):
        """(peer, frames) of one waiting message, or None when none is waiting."""
        try:
            frames = self.socket.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return None
        if self.bound:
            return frames[0], frames[1:]
        return None, frames

    def refused(self):
        """A reason if the handshake with this DEALER's server failed, else None."""
        reason = handshake_failure(self.monitor) if self.monitor is not None else None
        self.refusal = reason or self.refusal
        return reason

    def close(self, linger=None):
        if self.monitor is not None:
            unwatch_handshake(self.socket, self.monitor)
            self.monitor = None
        self.socket.close(linger=defaults.LINGER_MS if linger is None else linger)
        if self.ipc_file is not None:
            _remove_socket_file(*self.ipc_file)
            self.ipc_file = None


def _socket_file(address):
    """(path, device, inode) of the socket file an ipc:// address was bound at, else
    None."""
    if not address.startswith('ipc://'):
        return None
    path = address[len('ipc://'):]
    try:
        st = os.lstat(path)
    except OSError:
        return None         # an abstract socket ('@name'): no file
    return (path, st.st_dev, st.st_ino) if stat.S_ISSOCK(st.st_mode) else None


def _remove_socket_file(path, device, inode):
    """Remove the socket file bound at path, unless another process has bound a new one
    there since (libzmq leaves it behind)."""
    try:
        st = os.lstat(path)
        if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == (device, inode):
            os.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log.debug("cannot remove the socket file %s: %s", path, exc)
