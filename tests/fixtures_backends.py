"""User backends that tests/test_backends.py names as MODULE:CLASS sinks."""

import json
import os
import time

from rezina.backends import StorageBackend


class CallLog(StorageBackend):
    """Append one JSON line per call (open, write with its message, close) to `path`."""

    def __init__(self, logger, path, label='calls'):
        super().__init__(logger, path, label=label)
        self.path = path
        self.label = label

    def _log(self, call, **fields):
        with open(self.path, 'a', encoding='utf-8') as log_file:
            log_file.write(json.dumps({'call': call, **fields}) + '\n')

    def open(self):
        self._log('open', label=self.label, logger=self.logger.name)

    def write(self, message):
        self._log('write', message=message)

    def close(self):
        self._log('close')


class FailingWrite(StorageBackend):
    """A backend whose write() always raises TypeError."""

    def write(self, message):
        raise TypeError(f"cannot store {type(message).__name__}")


class FailingOpen(StorageBackend):
    """A backend whose open() cannot reach its store."""

    def open(self):
        raise ConnectionRefusedError("store at 127.0.0.1:9 refused the connection")

    def write(self, message):
        pass


class NeedsAnArgument(StorageBackend):
    """A backend built with one required argument after the logger."""

    def __init__(self, logger, where):
        super().__init__(logger, where)

    def write(self, message):
        pass


class NotABackend:
    """Has write() but does not derive from StorageBackend."""

    def write(self, message):
        pass


def not_a_class(message):
    """A function, not a backend class."""


class FailOnThree(StorageBackend):
    """Appends each item to `path` as a line; the item 3 can never be written."""

    def __init__(self, logger, path):
        super().__init__(logger, path)
        self.path = path

    def write(self, message):
        for item in message if isinstance(message, list) else [message]:
            if item == 3:
                raise ValueError("three is not welcome")
            with open(self.path, 'a') as out:
                out.write(f"{item}\n")


class SlowFirstWrite(StorageBackend):
    """Its first write takes longer than a peer may stay silent (3 s)."""

    def __init__(self, logger, path):
        super().__init__(logger, path)
        self.path = path
        self.slow = True

    def write(self, message):
        if self.slow:
            self.slow = False
            time.sleep(4.0)      # the slow backend under test, not a synchronisation
        with open(self.path, 'a') as out:
            for item in message if isinstance(message, list) else [message]:
                out.write(f"{item}\n")


class WaitForFile(StorageBackend):
    """Each write waits (up to 60 s) for the file `gate` ($WAIT_GATE) to exist, then
    appends the items to `path` ($WAIT_PATH) as JSON lines."""

    def __init__(self, logger, gate=None, path=None):
        super().__init__(logger, gate, path)
        self.gate = gate or os.environ['WAIT_GATE']
        self.path = path or os.environ['WAIT_PATH']

    def write(self, message):
        deadline = time.monotonic() + 60
        while not os.path.exists(self.gate) and time.monotonic() < deadline:
            time.sleep(0.01)
        with open(self.path, 'a') as out:
            out.write(json.dumps(message) + '\n')
