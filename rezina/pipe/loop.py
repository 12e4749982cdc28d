"""The one-thread event loop of a node: ZeroMQ sockets, file descriptors and a wake-up pipe
that threads and signal handlers write to."""

import math
import os
import signal
import time

import zmq


class Interrupted(Exception):
    """A second stop signal: leave without draining."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


class Loop:
    """Polls sockets and fds and calls their handlers."""

    def __init__(self):
        self.poller = zmq.Poller()
        self.handlers = {}
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.watch(self._wake_r, self._drain_wake)
        self.signalled = None
        self._signalled_at = 0.0

    def watch(self, target, handler, events=zmq.POLLIN):
        """Call handler(target, events) when target is ready; target is a socket or fd."""
        self.handlers[target] = handler
        self.poller.register(target, events)

    def modify(self, target, events):
        self.poller.modify(target, events)

    def unwatch(self, target):
        self.handlers.pop(target, None)
        self.poller.unregister(target)

    def private_fds(self):
        return (self._wake_r, self._wake_w)

    def wake(self):
        """Make the current or next poll return; safe from any thread."""
        try:
            os.write(self._wake_w, b'w')
        except OSError:
            pass        # full (a wake-up is already pending) or closed (the node is ending)

    def _drain_wake(self, fd, events):
        try:
            while os.read(fd, 4096):
                pass
        except BlockingIOError:
            pass

    def catch_signals(self, signums=(signal.SIGTERM, signal.SIGINT)):
        """Record the last of signums received in self.signalled and wake the loop."""
        def record(signum, frame):
            now = time.monotonic()
            # a second signal stops at once; one sent twice at once (to the process and to
            # its group, as timeout(1) does) is still one
            if self.signalled and now - self._signalled_at > 0.5:
                raise Interrupted(signum)
            if not self.signalled:
                self.signalled, self._signalled_at = signum, now
        for signum in signums:
            signal.signal(signum, record)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

    def request_stop(self, signum):
        """A stop asked for in other ways than a signal (rz-worker's control channel),
        taken as if signum had arrived."""
        if not self.signalled:
            self.signalled, self._signalled_at = signum, time.monotonic()
            self.wake()

    def poll(self, timeout):
        """Wait up to timeout seconds (None: forever) and dispatch what is ready."""
        ms = None if timeout is None else max(0, math.ceil(timeout * 1000))
        for target, events in self.poller.poll(ms):
            handler = self.handlers.get(target)
            if handler is not None:
                handler(target, events)

    def close(self):
        signal.set_wakeup_fd(-1)
        os.close(self._wake_r)
        os.close(self._wake_w)
