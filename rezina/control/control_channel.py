"""The worker's end of a node's `--control-fd` channel: the msgpack records a node sends
(status, bound, run) and the ones the worker sends it (connect).

Runs in the rz-worker process, in the Agent's one thread (rezina/control/agent.py); the
socketpair is made by the Supervisor at each start of a node with `control=True`.
"""

import logging

import msgpack

from rezina.nodes.control import write_some

log = logging.getLogger(__name__)


class Channel:
    """The worker's end of one node process's `--control-fd` socketpair."""

    def __init__(self, sock):
        self.sock = sock
        self.unpacker = msgpack.Unpacker(raw=False, max_buffer_size=1 << 20)
        self.out = bytearray()
        self.status = None          # the last status record, without its op
        self.bound = []             # the endpoints the node bound
        self.connected = set()      # the endpoints sent in connect records
        self.ended = False          # the node closed its end (poll would wake at once)

    def read(self):
        """The records the node has sent since the last read."""
        records = []
        for _ in range(64):         # bounded, so a chatty node cannot hold the loop
            try:
                data = self.sock.recv(1 << 16)
            except (BlockingIOError, OSError):
                break
            if not data:
                self.ended = True
                break
            self.unpacker.feed(data)
            try:
                records.extend(r for r in self.unpacker if isinstance(r, dict))
            except (ValueError, msgpack.UnpackException) as exc:
                log.warning("control: a record that does not decode (%s): ignored", exc)
                self.unpacker = msgpack.Unpacker(raw=False, max_buffer_size=1 << 20)
        return records

    def send(self, record):
        self.out += msgpack.packb(record, use_bin_type=True)
        self.flush()

    def flush(self):
        """Send what waits, without blocking; the rest goes on a later step."""
        write_some(self.sock, self.out)
