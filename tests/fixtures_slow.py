"""User functions of the fault scenarios 5 and 8 (tests/faults): a steady source that says
how far it got, and a sink that takes 10 ms an item while the test keeps it slow."""

import json
import os
import time

from rezina.backends import StorageBackend

SLOW_WHILE = 'RZ_TEST_SLOW_WHILE'   # the env var naming the file that keeps the sink slow
SINK_SECONDS = 0.01                 # the slow sink's time for one item
PACE_EVERY = 10                     # the source sleeps to its pace once every this many


def steady(n, rate, progress=None, pad=0):
    """Yield {'x': 0} .. {'x': n - 1} at `rate` items a second at most; write the count
    yielded so far into the file `progress` (as text, overwritten in place)."""
    fd = os.open(progress, os.O_WRONLY | os.O_CREAT, 0o644) if progress else None
    filler = 'x' * pad
    began = time.monotonic()
    try:
        for x in range(n):
            if x % PACE_EVERY == 0:
                ahead = began + x / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            yield {'x': x, 'pad': filler} if pad else {'x': x}
            if fd is not None:
                os.pwrite(fd, b'%12d' % (x + 1), 0)
    finally:
        if fd is not None:
            os.close(fd)


def count_of(progress):
    """The count a steady() source wrote into `progress` (0 before it wrote any)."""
    try:
        with open(progress, 'rb') as f:
            text = f.read().strip()
    except FileNotFoundError:
        return 0
    return int(text) if text else 0


def _slow():
    marker = os.environ.get(SLOW_WHILE)
    return marker is not None and os.path.exists(marker)


def slow_store(item):
    """A notch that takes SINK_SECONDS an item while the marker file exists."""
    if _slow():
        time.sleep(SINK_SECONDS)
    return {'x': item['x']}


class SlowSink(StorageBackend):
    """A backend that takes SINK_SECONDS an item while the marker file exists, and
    appends each item as a JSON line to the file its first argument names."""

    def open(self):
        self.file = open(self.args[0], 'a', encoding='utf-8')

    def write(self, message):
        for item in message if isinstance(message, list) else [message]:
            if _slow():
                time.sleep(SINK_SECONDS)
            self.file.write(json.dumps(item) + '\n')
            self.file.flush()

    def close(self):
        self.file.close()
