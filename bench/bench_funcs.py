"""The functions every contender of the benchmark runs: a source of integers, an identity
filter, and a filter that waits like an I/O-bound call.

Imported by rz-hydrant and rz-notch (the bench runs them with bench/ as the current
directory), by the bare pyzmq reference and by the multiprocessing peer.
"""

import time

SLEEP_SECONDS = 0.2


def items(n):
    """The integers 0 .. n-1, one by one, from a generator."""
    yield from range(int(n))


def identity(item):
    """The item itself: the cheapest work a filter can do."""
    return item


def sleepy(item):
    """The item, after SLEEP_SECONDS of waiting (stands in for a network call)."""
    time.sleep(SLEEP_SECONDS)
    return item
