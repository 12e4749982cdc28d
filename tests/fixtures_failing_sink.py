"""A user backend that tests/test_failures.py names as the MODULE:CLASS of --errors."""

import threading

from rezina.backends import StorageBackend


class AlwaysDown(StorageBackend):
    """A backend whose store is never reachable: every write raises ConnectionError."""

    def write(self, message):
        raise ConnectionError("error store at 127.0.0.1:9 is down")


class Held(StorageBackend):
    """Keeps every write waiting until the test sets `release`; records what it got."""

    entered = threading.Event()
    release = threading.Event()
    received = []

    def write(self, message):
        Held.entered.set()
        if not Held.release.wait(10):
            raise TimeoutError("the test never released the held write")
        Held.received.append(message)
