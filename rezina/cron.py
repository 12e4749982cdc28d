"""When a --cron hydrant fires: the times of a cron expression, ticked on the monotonic clock.

Runs inside rz-hydrant, in place of rezina.schedule.Schedule when --cron is given, with the
same interface. Cron fields are local wall time in a zone (TZ, else /etc/localtime, else UTC).
croniter walks naive local times, so its own DST handling never applies; each time is then
placed in the zone, so across a DST change every local time fires once:

- a time in the fall-back hour fires once, at its first (summer time) instant;
- a time in the spring-forward gap fires at the instant zoneinfo gives it with fold=0 (as
  if the clocks had not changed yet: 02:30 fires at 03:30 summer time), unless a tick
  already fired at that instant.

Unlike the --every grid, cron times are wall-clock times, as in cron(8): the wait for a
tick looks at the wall clock at least every RECHECK seconds, so after a suspend or a step of
the clock "0 6 * * *" still fires at 06:00. Ticks that fell due meanwhile (or while the
consumer was busy) are coalesced into the latest one and counted in missed.
"""

import datetime
import logging
import math
import os
import re
import threading
import time
import zoneinfo

try:
    from croniter import CroniterBadDateError, croniter
except ImportError:         # a broken install: say what is missing, in one line
    from rezina.errors import UsageError
    raise UsageError("--cron needs croniter, a dependency of rezina that is missing: "
                     "pip install 'croniter>=2.0'") from None

from rezina.schedule import (
    ScheduleError, SystemClock, Tick, check_start, format_label)

log = logging.getLogger(__name__)

RECHECK = 60.0          # seconds: the longest a wait goes without looking at the wall clock

FIELD_NAMES = ('minute', 'hour', 'day-of-month', 'month', 'day-of-week', 'second')
CRON_SHAPE = "5 fields 'MIN HOUR DOM MON DOW', or 6 with seconds last"
ALIASES = ('@yearly', '@annually', '@monthly', '@weekly', '@daily', '@midnight', '@hourly')
LOCALTIME = '/etc/localtime'
DST_LOOKBACK = 86400.0      # seconds: how far back an offset change can move a gap time

FIELD = re.compile(r'\S+', re.ASCII)                # croniter splits on ASCII blanks only
HASHED_OR_RANDOM = re.compile(r'^[hr](\(\d+-\d+\))?(/\d+)?$', re.IGNORECASE)
EPOCH = datetime.datetime(1970, 1, 1)


def parse_cron(text):
    """Return the cron expression with its fields one space apart; ScheduleError if bad.

    Supported: 5 fields (minute hour day-of-month month day-of-week, minute resolution),
    croniter's 6-field form with seconds as the LAST field, and the aliases @hourly,
    @daily, @midnight, @weekly, @monthly, @yearly, @annually. Not supported: croniter's
    7th (year) field and its hashed 'H' and random 'R' values.
    """
    if not isinstance(text, str):
        raise ScheduleError(f'--cron {text!r}: expected a cron expression')
    fields = FIELD.findall(text)
    expr = ' '.join(fields)

    if len(fields) == 1 and expr.startswith('@'):
        if expr.lower() not in ALIASES:
            raise _bad(text, f"expected one of {', '.join(ALIASES)}")
        return expr
    if len(fields) not in (5, 6):
        raise _bad(text, f'expected {CRON_SHAPE}, got {len(fields)}')
    for name, field in zip(FIELD_NAMES, fields):
        if HASHED_OR_RANDOM.match(field):
            raise _bad(text, f"{name} field {field!r}: hashed 'H' and random 'R' values "
                             f"are not supported")

    try:
        croniter.expand(expr)
    except (ValueError, TypeError) as exc:
        raise _bad(text, _diagnose(fields, exc)) from None
    try:
        croniter(expr, _utc_naive(time.time())).get_next(datetime.datetime)
    except CroniterBadDateError:
        raise _bad(text, _never_reason(expr)) from None
    return expr


def _bad(text, reason):
    return ScheduleError(f'--cron {text!r}: {reason}')


def _diagnose(fields, exc):
    """Return why croniter refused fields, naming the first field that fails on its own."""
    for index, field in enumerate(fields):
        probe = ['*'] * len(fields)
        probe[index] = field
        probe = ' '.join(probe)
        try:
            croniter.expand(probe)
        except (ValueError, TypeError) as field_exc:
            return f'{FIELD_NAMES[index]} field {field!r}: {_shorten(field_exc, probe)}'
    return _shorten(exc, ' '.join(fields))


def _never_reason(expr):
    """Return why expr matches no date: croniter's strict check says, if it can."""
    try:
        croniter.expand(expr, strict=True)
    except ValueError as exc:
        return _shorten(exc, expr)
    return 'matches no date'


def _shorten(exc, expr):
    """Return croniter's reason in a few words, without its echo of the expression."""
    lines = str(exc).strip().splitlines()
    reason = lines[-1] if lines else ''         # an unexpected error arrives as a traceback
    for echo in (f'[{expr}]', expr):
        reason = re.sub(re.escape(echo), '', reason, flags=re.IGNORECASE)
    reason = reason.split('  ')[0]              # details follow two spaces
    reason = re.sub(r' in field \d+', '', reason).strip(' .,:')
    reason = re.sub(r'^(is )?not acceptable[.,]?\s*', '', reason)
    reason = re.sub(r'^(is |day-of-week field )', '', reason)
    reason = reason.replace('out of bands', 'out of range')
    if not reason:
        return 'not a valid value'
    return reason[0].lower() + reason[1:]


def _utc_naive(epoch):
    """Return the naive UTC datetime of an epoch time (no local-time conversion)."""
    return EPOCH + datetime.timedelta(seconds=epoch)


def local_zone():
    """Return the zone cron fields are read in: TZ if it names one, /etc/localtime, or UTC."""
    name = os.environ.get('TZ', '').removeprefix(':')
    if name:
        try:
            if os.path.isabs(name):
                with open(name, 'rb') as tzfile:
                    return zoneinfo.ZoneInfo.from_file(tzfile, key=name)
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            log.debug('TZ=%r names no zone: reading cron times in %s', name, LOCALTIME)
    try:
        with open(LOCALTIME, 'rb') as tzfile:
            return zoneinfo.ZoneInfo.from_file(tzfile, key='localtime')
    except (OSError, ValueError):
        return datetime.timezone.utc


class CronSchedule:
    """The ticks of a --cron hydrant: each time of a cron expression in a zone, from start."""

    periodic = True

    def __init__(self, expr, start=None, clock=None, zone=None):
        self.expr = parse_cron(expr)
        start = check_start(start)
        self.start = start
        self.zone = zone if zone is not None else local_zone()
        self.clock = clock if clock is not None else SystemClock()
        self.missed = 0

        now = self.clock.time()
        self._since = now if start is None else max(start, now)
        self.first = next(self._walls(), None)
        if self.first is None:
            raise _bad(expr, f'matches no time after {format_label(self._since)}')

    def __repr__(self):
        zone = getattr(self.zone, 'key', None) or str(self.zone)
        return f'CronSchedule({self.expr!r}, zone={zone}, first={format_label(self.first)})'

    def _wait_for(self, wall, stop_event):
        """Wait until the wall clock reaches wall; False if stop_event was set first."""
        while not stop_event.is_set():
            remaining = wall - self.clock.time()
            if remaining <= 0:
                return True
            if self.clock.wait(min(remaining, RECHECK), stop_event):
                return False
        return False

    def ticks(self, stop_event=None):
        """Yield each Tick when it is due, until stop_event is set or no cron time is left.

        A tick whose deadline passed while the consumer was busy is not yielded late in a
        burst: the latest due tick is yielded and the ones before it are added to missed.
        """
        if stop_event is None:
            stop_event = threading.Event()
        walls = self._walls()
        index, wall = 0, next(walls)
        upcoming = next(walls, None)
        while True:
            if not self._wait_for(wall, stop_event):
                return

            now = self.clock.time()
            skipped = 0
            while upcoming is not None and upcoming <= now:
                index, wall, upcoming = index + 1, upcoming, next(walls, None)
                skipped += 1
            if skipped:
                self.missed += skipped
                log.debug('schedule %s: skipped %d missed ticks before tick %d',
                          self, skipped, index)

            yield Tick(index, wall, format_label(wall))
            if upcoming is None:
                log.warning('schedule %s: no cron time after %s', self, format_label(wall))
                return
            index, wall, upcoming = index + 1, upcoming, next(walls, None)

    def _walls(self):
        """Yield the epoch times of the cron times at or after since, strictly increasing."""
        # a gap time maps forward past its naive time, so begin early by any offset change
        since = math.ceil(self._since)
        offsets = [datetime.datetime.fromtimestamp(moment, self.zone).utcoffset()
                   for moment in (since - DST_LOOKBACK, since)]
        begin = _utc_naive(since) + min(offsets) - datetime.timedelta(seconds=1)

        times = croniter(self.expr, begin, ret_type=datetime.datetime)
        previous = None
        while True:
            try:
                naive = times.get_next(datetime.datetime)
                wall = naive.replace(tzinfo=self.zone).timestamp()     # fold=0
            except (ValueError, OverflowError):                       # past year 9999
                return
            if wall < self._since or (previous is not None and wall <= previous):
                continue
            previous = wall
            yield wall
