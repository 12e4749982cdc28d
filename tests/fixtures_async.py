"""User functions the notch worker tests run: async ones, and ones that fail, then succeed.

Calls are counted per item in this process (a forked worker counts its own).
"""

import asyncio

MEET_TIMEOUT = 10.0         # seconds meet() waits for the others before it gives up

calls = {}
_meeting = {'in flight': 0, 'all here': None, 'given up': False}


def reset():
    calls.clear()
    _meeting.update({'in flight': 0, 'all here': None, 'given up': False})


def _call_no(item):
    calls[item] = calls.get(item, 0) + 1
    return calls[item]


def fail_twice(item):
    """Raise on the first two calls for each item, then return it doubled."""
    n = _call_no(item)
    if n <= 2:
        raise ConnectionError(f"call {n} for {item} failed")
    return item * 2


def always_fails(item):
    _call_no(item)
    raise ValueError(f"{item} is no good")


def as_set(item):
    """A result the wire cannot carry."""
    return {item}


def pair_then_set(item):
    """Fan out to a list, then a set the wire cannot carry."""
    _call_no(item)
    yield [item]
    yield {item}


def two_then_break(item):
    """Fan out to two results, then raise."""
    _call_no(item)
    yield item
    yield item + 1
    raise RuntimeError(f"{item} broke")


async def nap(item):
    await asyncio.sleep(0.05)
    return item * 2


async def fail_seven_once(item):
    """Double item; the first call for 7 raises."""
    await asyncio.sleep(0)
    if item == 7 and _call_no(item) == 1:
        raise TimeoutError("7 timed out")
    return item * 2


async def async_always_fails(item):
    await asyncio.sleep(0)
    _call_no(item)
    raise KeyError(item)


async def spread(item):
    """Yield item * 10 + k for k below item % 3: 0, 1 or 2 results."""
    for k in range(item % 3):
        await asyncio.sleep(0)
        yield item * 10 + k


async def meet(item):
    """item is [value, n]: return value once n calls are in flight at once."""
    value, together = item
    if _meeting['all here'] is None:
        _meeting['all here'] = asyncio.Event()
    all_here = _meeting['all here']
    _meeting['in flight'] += 1
    if _meeting['in flight'] >= together:
        all_here.set()
    try:
        await asyncio.wait_for(all_here.wait(), MEET_TIMEOUT)
    except TimeoutError:
        _meeting['given up'] = True         # the others fail at once, not after a wait each
        all_here.set()
    if _meeting['given up']:
        raise TimeoutError(f"only {_meeting['in flight']} of {together} calls came")
    return value
