"""A stand-in for rz-master in tests of its clients: a real ROUTER on loopback, in a
thread, that answers REQUESTs as the test says."""

import threading

import zmq

from rezina.control import protocol
from rezina.control.protocol import decode, encode


class Master(threading.Thread):
    """A ROUTER that answers REQUESTs with answer(header) -> reply header, or not at all
    when it returns None."""

    def __init__(self, answer):
        super().__init__(daemon=True)
        self.context = zmq.Context()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.port = self.router.bind_to_random_port('tcp://127.0.0.1')
        self.answer = answer
        self.stop = threading.Event()
        self.seen = []

    def run(self):
        while not self.stop.is_set():
            if not self.router.poll(20):
                continue
            peer, *frames = self.router.recv_multipart()
            kind, header, _ = decode(frames)
            self.seen.append(header)
            reply = self.answer(header)
            if reply is not None:
                self.router.send_multipart([peer, *encode(protocol.REPLY, reply)])

    def close(self):
        self.stop.set()
        self.join(timeout=5)
        self.router.close()
        self.context.term()
