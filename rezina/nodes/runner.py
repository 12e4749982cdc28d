"""The hydrant's runner thread: fires runs on schedule and pulls items from the user's
iterable, only as far as the main thread has given permits (downstream credit)."""

import logging
import threading
import time
import traceback
from collections import deque

log = logging.getLogger(__name__)


class RunMark:
    """A run's start or end, in the stream of items handed to the main thread."""

    __slots__ = ('run', 'end', 'error')

    def __init__(self, run, end=False, error=None):
        self.run = run
        self.end = end
        self.error = error


class Chunk(list):
    """Items of a list, tuple or range handed over at once."""


class Run:
    """One firing of the source."""

    __slots__ = ('id', 'label', 'started', 'next_seq', 'items', 'failed', 'acked',
                 'exhausted', 'error', 'ended')

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

    @property
    def complete(self):
        return self.exhausted and self.acked == self.items


class Permits:
    """How many more items the runner may pull; given by the main thread."""

    def __init__(self):
        self._cond = threading.Condition()
        self._available = 0
        self.closed = False

    def give(self, count):
        with self._cond:
            self._available += count
            self._cond.notify()

    def take(self):
        """All permits available, waiting for at least one; 0 once closed."""
        with self._cond:
            while not self._available and not self.closed:
                self._cond.wait()
            if self.closed:
                return 0
            count, self._available = self._available, 0
            return count

    def close(self):
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class Runner(threading.Thread):
    """Calls the source function on every tick and hands its items to the main thread."""

    def __init__(self, func, args, kwargs, schedule, name_run, wake, overlap_busy):
        super().__init__(name='rz-runner', daemon=True)
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.schedule = schedule
        self.name_run = name_run          # Tick -> Run
        self.wake = wake                  # wakes the main thread
        self.busy = overlap_busy          # () -> True while an earlier run is in flight
        self.handoff = deque()
        self.permits = Permits()
        self.stop = threading.Event()
        self.bulk = False             # a Chunk is waiting in the handoff
        self.specials = 0             # Chunks and RunMarks handed over so far
        self.woken = False
        self.skipped = 0
        self.crashed = None
        self.name = ''

    def _hand(self, thing):
        """Hand over a Chunk, RunMark or None (the end): counted first, then appended,
        so that the main thread never takes one for an item (see Hydrant._drain)."""
        self.specials += 1
        self.handoff.append(thing)
        if not self.woken:
            self.woken = True
            self.wake()

    def run(self):
        try:
            self._run_ticks()
        except Exception as exc:         # a bug of ours: the node must not end as if done
            self.crashed = f"{type(exc).__name__}: {exc}"
            log.debug("the runner crashed:\n%s", traceback.format_exc())
        finally:
            self._hand(None)     # the runner is done

    def _run_ticks(self):
        for tick in self.schedule.ticks(self.stop):
            if self.busy():
                self.skipped += 1
                log.warning("%s: tick %s skipped: the previous run is still in flight",
                            self.name, tick.label)
                continue
            self._fire(self.name_run(tick))
            if self.permits.closed:
                break

    def _hand_sequence(self, sequence):
        """Hand a sequence over in slices as large as the permits: it cannot block."""
        position = 0
        while position < len(sequence):
            budget = self.permits.take()
            if not budget:
                return
            chunk = Chunk(sequence[position:position + budget])
            position += len(chunk)
            self.bulk = True
            self._hand(chunk)
            if budget > len(chunk):
                self.permits.give(budget - len(chunk))

    def _fire(self, run):
        self._hand(RunMark(run))
        error = None
        budget = 0
        try:
            iterable = self.func(*self.args, **self.kwargs)
            if iterable is None:
                iterable = ()
            if type(iterable) in (list, tuple, range):
                self._hand_sequence(iterable)
                iterable = ()
            iterator = iter(iterable)
            hand = self.handoff.append
            while True:
                if not budget:
                    budget = self.permits.take()
                    if not budget:
                        break
                try:
                    item = next(iterator)
                except StopIteration:
                    break
                budget -= 1
                hand(item)
                if not self.woken:
                    self.woken = True
                    self.wake()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.debug("run %s raised:\n%s", run.id, traceback.format_exc())
        if budget:
            self.permits.give(budget)    # unused: the next run may pull them
        self._hand(RunMark(run, end=True, error=error))
