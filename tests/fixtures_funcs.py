"""User functions that the command tests run (imported by name, as MOD:FUNC)."""

import datetime
import os
import signal
import time

CITIES = ['São Paulo', 'Zürich', '東京', 'Île-de-France', 'Kraków', 'Москва',
          'القاهرة', 'Reykjavík', 'Ōsaka', 'İstanbul']


def numbers(n, start=0):
    return range(start, start + n)


def records(n):
    for i in range(n):
        yield {'n': i, 'square': i * i, 'name': f"item {i}"}


def cities():
    return [{'city': name, 'rank': rank} for rank, name in enumerate(CITIES)]


def identity(item):
    return item


def double(item):
    return item * 2


def evens_only(item):
    return item if item % 2 == 0 else None


def repeat_by_mod3(item):
    """Yield item (item % 3) times: 0, 1 or 2 results."""
    for _ in range(item % 3):
        yield item


def fail_on_multiples_of_five(item):
    if item % 5 == 0:
        raise ValueError(f"{item} is a multiple of five")
    return item


def fail_after(n):
    """Yield n items, then raise."""
    yield from range(n)
    raise RuntimeError(f"source broke after {n} items")


def not_iterable():
    return 42


def awkward_items():
    """One item of every kind the wire must carry or refuse, in a known order."""
    return [
        {'kind': 'naive', 'value': datetime.datetime(2024, 3, 1, 12, 30, 5)},
        {'kind': 'aware', 'value': datetime.datetime(
            2024, 3, 1, 12, 30, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=5.5)))},
        {'kind': 'bytes', 'value': b'\x00\xffraw'},
        {'kind': 'str', 'value': 'text'},
        {'kind': 'too big', 'value': 2 ** 70},
        {'kind': 'surrogate', 'value': 'bad \udc80 text'},
        {'kind': 'int keys', 'value': {1: 'one', 2: 'two'}},
        {'kind': 'tuple key', 'value': {(1, 2): 'pair'}},
        {'kind': 'set', 'value': {1, 2}},
        {'kind': 'last', 'value': 'still here'},
    ]


def describe(item):
    """What arrived, in plain JSON types: the kind and the Python type of the value."""
    value = item['value']
    shown = value.isoformat() if isinstance(value, datetime.datetime) else repr(value)
    return {'kind': item['kind'], 'type': type(value).__name__, 'shown': shown}


def one_then_wait(flag_path, timeout=20.0):
    """Yield one item, wait until flag_path exists, then yield a second."""
    yield 'first'
    deadline = time.monotonic() + timeout
    while not os.path.exists(flag_path) and time.monotonic() < deadline:
        time.sleep(0.01)
    yield 'second'


def slow_identity(item):
    time.sleep(0.002)
    return item


def die_on_poison(item):
    """Kill the worker process running the poison item 13."""
    if item == 13:
        os.kill(os.getpid(), signal.SIGKILL)
    return item


def sleepy_sorter(item):
    """Take 20 ms, then: kill the worker process on 13, fail multiples of 5, drop (return
    None for) the items one above them, and pass the others."""
    time.sleep(0.02)
    if item == 13:
        os.kill(os.getpid(), signal.SIGKILL)
    if item % 5 == 0:
        raise ValueError(f"{item} is a multiple of five")
    return None if item % 5 == 1 else item


class Scaler:
    """A class whose method the notch calls; built once per worker process."""

    def __init__(self):
        self.factor = 10
        self.pid = os.getpid()

    def scale(self, item):
        return {'value': item * self.factor, 'pid': self.pid}


def exit_on_poison(item):
    """Leave the worker process with os._exit while running item 13."""
    if item == 13:
        os._exit(3)
    return item


def segfault_on_poison(item):
    """Crash the worker process with a segmentation fault while running item 13."""
    if item == 13:
        import ctypes
        ctypes.string_at(0)
    return item


def unsendable_on_seven(item):
    """A result the wire cannot carry, for item 7 only."""
    return {item} if item == 7 else item


def big_strings(count, kib):
    """count strings of kib KiB each, every one different."""
    return [f"{i:08d}" + 'x' * (kib * 1024 - 8) for i in range(count)]


def length(item):
    return len(item)



def blobs(limit):
    """Items around a --max-item-bytes limit: small, just under it, over it, small; each
    with the sha256 of its bytes."""
    import hashlib
    for size in (10, limit - 200, limit + 10, 1000):
        data = os.urandom(size)
        yield {'data': data, 'sha': hashlib.sha256(data).hexdigest()}


def abort_always(item):
    """Every item kills the worker process running it."""
    os.abort()
