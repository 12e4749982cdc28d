"""The hydrant's threads: a scheduler that posts ticks, and pullers that pull the items of
a run from the user's iterable (sync or async), only as far as the main thread has given
permits (downstream credit).

The main thread decides what a tick does (see overlap.py) and gives runs to pullers; each
puller hands its items over in a deque of its own, with RunMarks between runs.
"""

import inspect
import logging
import queue
import threading
import time
import traceback
from collections import deque

log = logging.getLogger(__name__)


class RunMark:
    """A run's start or end, in the stream of items a puller hands to the main thread."""

    __slots__ = ('run', 'end', 'error', 'cut')

    def __init__(self, run, end=False, error=None, cut=False):
        self.run = run
        self.end = end
        self.error = error
        self.cut = cut          # the end came from a stop, not from the source's end


class Chunk(list):
    """Items of a list, tuple or range handed over at once."""


class Run:
    """One firing of the source."""

    __slots__ = ('id', 'label', 'started', 'next_seq', 'items', 'failed', 'acked',
                 'exhausted', 'error', 'ended', 'cut', 'total')

    def __init__(self, run_id, label):
        self.id = run_id
        self.label = label
        self.started = time.monotonic()
        self.next_seq = 0      # items pulled from the user's iterable
        self.items = 0         # items sent
        self.failed = 0        # items that could not be encoded
        self.acked = 0
        self.exhausted = False
        self.error = None
        self.ended = None
        self.cut = False       # stopped before the source's end
        self.total = None      # items the source yields, when it said (a list's len)

    @property
    def complete(self):
        return self.exhausted and self.acked == self.items


class Permits:
    """How many more items the pullers may pull; given by the main thread and shared
    fairly between the pullers that are in a run."""

    def __init__(self):
        self._cond = threading.Condition()
        self._available = 0
        self.active = 0          # pullers in a run
        self.closed = False

    def give(self, count):
        with self._cond:
            self._available += count
            self._cond.notify_all()

    def take(self):
        """A share of the permits available, waiting for at least one; 0 once closed."""
        with self._cond:
            while not self._available and not self.closed:
                self._cond.wait()
            if self.closed:
                return 0
            share = -(-self._available // max(1, self.active))
            self._available -= share
            return share

    def enter(self, delta):
        with self._cond:
            self.active += delta

    def close(self):
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class Scheduler(threading.Thread):
    """Posts each tick of the schedule to the main thread, then None when there are no
    more. It never runs the user's function, so it sees every tick on time."""

    def __init__(self, schedule, post):
        super().__init__(name='rz-scheduler', daemon=True)
        self.schedule = schedule
        self.post = post
        self.stop = threading.Event()
        self.crashed = None

    def run(self):
        try:
            for tick in self.schedule.ticks(self.stop):
                self.post(tick)
        except Exception as exc:         # a bug of ours: the node must not end as if done
            self.crashed = f"{type(exc).__name__}: {exc}"
            log.debug("the scheduler crashed:\n%s", traceback.format_exc())
        finally:
            self.post(None)


class Puller(threading.Thread):
    """Pulls the items of the runs it is given, one run at a time."""

    def __init__(self, func, args, kwargs, permits, wake):
        super().__init__(name='rz-puller', daemon=True)
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.permits = permits
        self.wake = wake                  # wakes the main thread
        self.runs = queue.SimpleQueue()
        self.handoff = deque()
        self.bulk = False             # a Chunk is waiting in the handoff
        self.specials = 0             # Chunks and RunMarks handed over so far
        self.woken = False
        self.busy = False             # given a run it has not finished pulling
        self.seconds = 0.0            # spent pulling: in the source, not waiting for permits
        self._since = None            # when the time not yet in seconds began
        # read and written by the main thread only
        self.current = None
        self.specials_seen = 0

    def give(self, run):
        self.busy = True
        self.runs.put(run)

    def finish(self):
        self.runs.put(None)

    def _hand(self, thing):
        """Hand over a Chunk or RunMark: counted first, then appended, so that the main
        thread never takes one for an item (see Hydrant._drain)."""
        self.specials += 1
        self.handoff.append(thing)
        if not self.woken:
            self.woken = True
            self.wake()

    def run(self):
        while True:
            run = self.runs.get()
            if run is None:
                return
            self.permits.enter(1)
            self._since = time.perf_counter()
            try:
                self._pull(run)
            finally:
                self.permits.enter(-1)
                self._count_time()

    def _pull(self, run):
        self._hand(RunMark(run))
        error = None
        exhausted = True
        try:
            source = self.func(*self.args, **self.kwargs)
            if inspect.iscoroutine(source) or inspect.isasyncgen(source):
                import asyncio          # only for async sources: the import costs 15 ms
            if inspect.iscoroutine(source):                 # async def returning an iterable
                source = asyncio.run(source)
            if type(source) in (list, tuple, range):
                run.total = len(source)     # set before its items are handed over
            if inspect.isasyncgen(source):
                exhausted = asyncio.run(self._pull_async(source))
            else:
                exhausted = self._pull_sync(source)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.debug("run %s raised:\n%s", run.id, traceback.format_exc())
        self.busy = False       # before the end mark: the main thread may give another run
        self._hand(RunMark(run, end=True, error=error, cut=not exhausted))

    def _count_time(self):
        now = time.perf_counter()
        self.seconds += now - self._since
        self._since = now

    def _take_permits(self):
        """permits.take(), its wait left out of the time spent pulling."""
        self._count_time()
        try:
            return self.permits.take()
        finally:
            self._since = time.perf_counter()

    def _hand_sequence(self, sequence):
        """Hand a sequence over in slices as large as the permits: it cannot block.
        True once all of it is handed over; False if a stop came first."""
        position = 0
        while position < len(sequence):
            budget = self._take_permits()
            if not budget:
                return False
            chunk = Chunk(sequence[position:position + budget])
            position += len(chunk)
            self.bulk = True
            self._hand(chunk)
            if budget > len(chunk):
                self.permits.give(budget - len(chunk))
        return True

    def _pull_sync(self, iterable):
        """Pull the items of iterable against permits: True once it is exhausted, False
        if a stop came first."""
        if iterable is None:
            return True
        if type(iterable) in (list, tuple, range):
            return self._hand_sequence(iterable)
        iterator = iter(iterable)
        hand = self.handoff.append
        budget = 0
        try:
            while True:
                if not budget:
                    budget = self._take_permits()
                    if not budget:
                        return False
                try:
                    item = next(iterator)
                except StopIteration:
                    return True
                budget -= 1
                hand(item)
                if not self.woken:
                    self.woken = True
                    self.wake()
        finally:
            if budget:
                self.permits.give(budget)    # unused: another run may pull them

    async def _pull_async(self, generator):
        """The same for an async generator; waiting for permits does not stop its loop."""
        from asyncio import to_thread
        hand = self.handoff.append
        budget = 0
        try:
            while True:
                if not budget:
                    budget = await to_thread(self._take_permits)
                    if not budget:
                        return False
                try:
                    item = await generator.__anext__()
                except StopAsyncIteration:
                    return True
                budget -= 1
                hand(item)
                if not self.woken:
                    self.woken = True
                    self.wake()
        finally:
            if budget:
                self.permits.give(budget)
            await generator.aclose()
