"""User functions for the tests of the stage options: schedules, async, order, retries."""

import asyncio
import os
import random
import time


def slow_run(seconds, items=3):
    """A source whose every run takes `seconds`, so that runs overrun a short interval."""
    for i in range(items):
        time.sleep(seconds / items)
        yield i


def tick_source():
    """One item per run: the time it ran."""
    return [time.time()]


async def async_numbers(n):
    """An async generator source."""
    for i in range(n):
        if i % 100 == 0:
            await asyncio.sleep(0)
        yield i


async def async_list(n):
    """An async def source that returns a list."""
    await asyncio.sleep(0)
    return list(range(n))


async def sleep_a_tenth(item):
    await asyncio.sleep(0.1)
    return item


async def async_double(item):
    await asyncio.sleep(0.001)
    return 2 * item


def jittery(item):
    """Takes 0 to 2 ms, at random, so that results come back out of order."""
    time.sleep(random.random() * 0.002)
    return item


def poison_13(item):
    """Fails for item 13 on every call."""
    if item == 13:
        raise ValueError(f"13 is poison (item {item})")
    return item


def shout(line):
    return line.upper()


def plus_one(item):
    return item + 1


def hold_first(item):
    """Item 0 waits (up to 60 s) for the file $HOLD_UNTIL to exist; the others pass at once."""
    if item == 0:
        deadline = time.monotonic() + 60
        while not os.path.exists(os.environ['HOLD_UNTIL']) and time.monotonic() < deadline:
            time.sleep(0.01)
    return item


def exit_on_five_slowly(item):
    """Every call takes 100 ms, so threads run items side by side; item 5 ends its worker
    process half way through, while the other threads are in the middle of theirs."""
    if item == 5:
        time.sleep(0.05)
        os._exit(3)
    time.sleep(0.1)
    return item


def quarter_second(item):
    """Takes 0.25 s: a stage that needs longer than DRAIN_GRACE to finish what it holds."""
    time.sleep(0.25)
    return item
