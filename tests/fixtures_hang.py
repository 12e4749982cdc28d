"""User functions that hang on one item, for the rz-notch --timeout tests."""

import asyncio
import os
import time

HANG = 7                # the item that hangs
FOREVER = 3600.0        # seconds: longer than any test waits


def hang_on_seven(item):
    """Sleep for ever on item 7; return the others."""
    if item == HANG:
        time.sleep(FOREVER)
    return item


def hang_once_on_seven(item):
    """Sleep for ever on the first call of item 7 only: the file $RZ_HANG_MARK says it
    has hung once (worker processes share no memory)."""
    if item == HANG:
        try:
            os.close(os.open(os.environ['RZ_HANG_MARK'], os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return item
        time.sleep(FOREVER)
    return item


async def await_forever_on_seven(item):
    """Await for ever on item 7: the coroutine can be cancelled."""
    if item == HANG:
        await asyncio.sleep(FOREVER)
    await asyncio.sleep(0)
    return item


async def block_on_seven(item):
    """Block the event loop on item 7: the coroutine cannot be cancelled."""
    if item == HANG:
        time.sleep(FOREVER)
    await asyncio.sleep(0)
    return item
