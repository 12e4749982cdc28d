"""When a hydrant fires: resolve --start/--every to a first run, then tick on a monotonic grid.

Runs inside rz-hydrant. The rules are those of DESIGN.md "Schedules":

- interval without start: the next multiple of the interval since the epoch;
- neither: once, now;
- start older than the last epoch-grid tick: that tick (old runs are not replayed);
- otherwise the start as given;
- start without interval: once at that time, or once now if it has passed.

Tick k is due at ``first + k * interval`` on the wall clock. Every deadline is turned into a
monotonic time from one reading of both clocks taken at construction, so ticks never drift
and a step of the wall clock neither bursts nor stalls them.
"""

import datetime
import logging
import math
import re
import threading
import time
from typing import NamedTuple

from rezina.errors import UsageError

log = logging.getLogger(__name__)

START_FORMAT = '%Y-%m-%d %H:%M:%S'
START_FORMAT_SHOWN = 'YYYY-MM-DD HH:MM:SS'
LABEL_FORMAT = '%Y%m%dT%H%M%S'
MAX_LABEL_DIGITS = 6            # microseconds: the precision of an epoch float


MIN_YEAR, MAX_YEAR = 1970, 9000
MIN_INTERVAL = 0.001               # finer ticks could not be told apart by their names
MAX_INTERVAL = 100 * 365.25 * 86400


class ScheduleError(UsageError):
    """A --start or --every value that does not parse or cannot be a schedule."""


def parse_start(value):
    """Return the epoch seconds of a local 'YYYY-MM-DD HH:MM:SS' string, or of a number of
    epoch seconds (as rz-master passes it, so the grid does not depend on the zone)."""
    if isinstance(value, str) and re.fullmatch(r'\d+(\.\d+)?', value.strip()):
        return check_start(float(value))
    try:
        moment = datetime.datetime.strptime(value, START_FORMAT)
    except (TypeError, ValueError):
        raise ScheduleError(
            f"--start {value!r}: expected {START_FORMAT_SHOWN!r}") from None
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        raise ScheduleError(f"--start {value!r}: expected a year from {MIN_YEAR} to {MAX_YEAR}")
    return moment.timestamp()   # a naive datetime is local time


def parse_every(value):
    """Return the seconds of an --every value, a number above 0."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ScheduleError(
            f"--every {value!r}: expected a number of seconds above 0") from None
    return check_interval(seconds, shown=value)


def check_interval(seconds, shown=None):
    """Return seconds as a float if it is a finite number above 0, else raise ScheduleError."""
    shown = seconds if shown is None else shown
    try:
        seconds = float(seconds)
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ScheduleError(f"--every {str(shown)!r}: expected a finite number of seconds "
                            f"above 0")
    if seconds < MIN_INTERVAL:
        raise ScheduleError(f"--every {str(shown)!r}: expected at least {MIN_INTERVAL} seconds")
    if seconds > MAX_INTERVAL:
        raise ScheduleError(f"--every {str(shown)!r}: expected at most {MAX_INTERVAL:.0f} "
                            f"seconds (100 years)")
    return seconds


def check_start(start):
    """Epoch seconds of a start given as a 'YYYY-MM-DD HH:MM:SS' string or a number; None
    stays None."""
    if isinstance(start, str):
        start = parse_start(start)
    if start is not None:
        start = float(start)
        if not math.isfinite(start):
            raise ScheduleError(f"--start {start!r}: expected {START_FORMAT_SHOWN!r}")
    return start


class SystemClock:
    """The real clocks: wall time for the grid, monotonic time for waiting."""

    def time(self):
        return time.time()

    def monotonic(self):
        return time.monotonic()

    def wait(self, seconds, stop_event):
        """Wait up to seconds, or less if stop_event is set; True if it was set."""
        # at most a day at a time: a far deadline would overflow the wait (ticks() waits again)
        return stop_event.wait(min(max(0.0, seconds), 86400.0))


def wait_until(clock, deadline, stop_event):
    """Wait on the clock's monotonic time until deadline; False if stop_event was set
    first."""
    while not stop_event.is_set():
        remaining = deadline - clock.monotonic()
        if remaining <= 0:
            return True
        if clock.wait(remaining, stop_event):
            return False
    return False


class Tick(NamedTuple):
    """One firing: its index on the grid, its wall-clock time and a UTC label for its run."""

    index: int
    wall: float
    label: str


def label_digits(interval):
    """Return how many decimal places labels need so that ticks interval apart differ."""
    if interval is None:
        return 0
    for digits in range(MAX_LABEL_DIGITS + 1):
        scaled = interval * 10 ** digits
        if abs(scaled - round(scaled)) < 1e-6 * max(1.0, scaled):
            return digits
    return MAX_LABEL_DIGITS


def format_label(wall, digits=0):
    """Return the UTC label 'YYYYmmddTHHMMSS[.f]Z' of an epoch time, to digits places."""
    # rounding to microseconds first removes float noise such as 10.4999999 for 10.5
    micros = round(wall * 1_000_000)
    units = micros // 10 ** (MAX_LABEL_DIGITS - digits)
    seconds, fraction = divmod(units, 10 ** digits)
    label = time.strftime(LABEL_FORMAT, time.gmtime(seconds))
    if digits:
        label += '.' + str(fraction).zfill(digits)
    return label + 'Z'


def grid_index(now, interval):
    """Return the smallest k with k * interval >= now: ceil(now / interval), float-safe."""
    k = math.ceil(now / interval)
    if k * interval < now:
        k += 1
    elif (k - 1) * interval >= now:
        k -= 1
    return k


def resolve_first(now, interval=None, start=None):
    """Return the wall time of the first tick by the rules of DESIGN.md "Schedules"."""
    if interval is None:
        if start is None or start < now:
            return now
        return start

    k = grid_index(now, interval)
    if start is None:
        return k * interval
    last_grid_tick = (k - 1) * interval
    if start < last_grid_tick:
        return last_grid_tick
    return start


class Schedule:
    """The ticks of one hydrant: a one-shot, or a grid of interval seconds from first."""

    def __init__(self, interval=None, start=None, clock=None):
        if interval is not None:
            interval = check_interval(interval)
        start = check_start(start)
        self.interval = interval
        self.start = start
        self.clock = clock if clock is not None else SystemClock()
        self.missed = 0

        # one reading of both clocks ties the wall-clock grid to monotonic deadlines
        wall0 = self.clock.time()
        self._mono0 = self.clock.monotonic()
        self.first = resolve_first(wall0, interval, start)
        self._offset = self.first - wall0
        self._digits = label_digits(interval)

    @property
    def periodic(self):
        return self.interval is not None

    def __repr__(self):
        return (f'Schedule(interval={self.interval!r}, start={self.start!r}, '
                f'first={format_label(self.first)})')

    def wall(self, index):
        """Return the wall-clock time tick index is due: first + index * interval."""
        if index == 0:
            return self.first
        return self.first + index * self.interval

    def deadline(self, index):
        """Return the monotonic time tick index is due."""
        step = 0.0 if index == 0 else index * self.interval
        return self._mono0 + self._offset + step

    def tick(self, index):
        """Return the Tick of an index."""
        wall = self.wall(index)
        return Tick(index, wall, format_label(wall, self._digits))

    def ticks(self, stop_event=None):
        """Yield each Tick when it is due, until stop_event is set (once for a one-shot).

        A tick whose deadline passed while the consumer was busy is not yielded late in a
        burst: the latest due tick is yielded and the ones before it are added to missed.
        """
        if stop_event is None:
            stop_event = threading.Event()
        index = 0
        while True:
            if not wait_until(self.clock, self.deadline(index), stop_event):
                return
            latest = self._latest_due(index)
            if latest > index:
                self.missed += latest - index
                log.debug('schedule %s: skipped %d missed ticks before tick %d',
                          self, latest - index, latest)
                index = latest
            yield self.tick(index)
            if not self.periodic:
                return
            index += 1


    def _latest_due(self, index):
        """Return the highest tick index >= index whose deadline has passed."""
        if not self.periodic:
            return index
        now = self.clock.monotonic()
        base = self.deadline(0)
        latest = max(index, math.floor((now - base) / self.interval))
        while self.deadline(latest + 1) <= now:
            latest += 1
        while latest > index and self.deadline(latest) > now:
            latest -= 1
        return latest
