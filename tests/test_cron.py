"""CronSchedule: cron times in a zone, DST changes, missed ticks, clock steps, stop, errors."""

import calendar
import datetime
import os
import threading
import time
import zoneinfo

import pytest

from fakeclock import FakeClock

from rezina import cron
from rezina.cron import CronSchedule, local_zone, parse_cron
from rezina.errors import UsageError
from rezina.schedule import ScheduleError, Tick

UTC = zoneinfo.ZoneInfo('UTC')
BERLIN = zoneinfo.ZoneInfo('Europe/Berlin')


def utc(*fields):
    return float(calendar.timegm(fields))


def berlin(*fields, fold=0):
    return datetime.datetime(*fields, tzinfo=BERLIN, fold=fold).timestamp()


def local(wall):
    """Return a tick's Berlin wall time with its zone name, which tells a repeated hour apart."""
    return datetime.datetime.fromtimestamp(wall, BERLIN).strftime('%m-%d %H:%M %Z')


def take(sched, count, stop=None):
    return [tick for _, tick in zip(range(count), sched.ticks(stop or threading.Event()))]


@pytest.fixture
def process_tz(monkeypatch):
    """Set the process time zone (TZ and tzset) for one test, and restore it after."""
    def set_tz(name):
        monkeypatch.setenv('TZ', name)
        time.tzset()
    yield set_tz
    monkeypatch.undo()
    time.tzset()


# parsing

@pytest.mark.parametrize('text, message', [
    ('61 * * * *', "--cron '61 * * * *': minute field '61': out of range"),
    ('a b c', "--cron 'a b c': expected 5 fields 'MIN HOUR DOM MON DOW', "
              "or 6 with seconds last, got 3"),
    ('', "--cron '': expected 5 fields 'MIN HOUR DOM MON DOW', or 6 with seconds last, got 0"),
    ('* * * *', "--cron '* * * *': expected 5 fields 'MIN HOUR DOM MON DOW', "
                "or 6 with seconds last, got 4"),
    ('* 24 * * *', "--cron '* 24 * * *': hour field '24': out of range"),
    ('*/0 * * * *', "--cron '*/0 * * * *': minute field '*/0': step '0' is not acceptable"),
    ('0 0 30 2 *', "--cron '0 0 30 2 *': day(s) [30] can never occur in month(s) [2]"),
    ('H * * * *', "--cron 'H * * * *': minute field 'H': hashed 'H' and random 'R' values "
                  "are not supported"),
])
def test_bad_expression_message_names_cron_the_expression_and_the_reason(text, message):
    with pytest.raises(ScheduleError) as caught:
        parse_cron(text)
    assert str(caught.value) == message
    assert isinstance(caught.value, UsageError)


@pytest.mark.parametrize('text', [
    '61 * * * *', 'a b c', '', '* * * *', '* * * * * * 2026', 'x * * * *', '1-70 * * * *',
    '* * * * MON#6', '* * * * 1#2,3', 'R * * * *', '@every', '0 0 31 4 *', '*\n* * 13 *', None])
def test_bad_expression_raises_a_one_line_usage_error(text):
    with pytest.raises(ScheduleError) as caught:
        CronSchedule(text, clock=FakeClock(utc(2026, 1, 5, 10, 0, 0)), zone=UTC)
    message = str(caught.value)
    assert message.startswith(f'--cron {text!r}: ')
    assert len(message) > len(f'--cron {text!r}: ')
    assert '\n' not in message


@pytest.mark.parametrize('text, expr', [
    ('  */15   * * * * ', '*/15 * * * *'),
    ('0 9 * * MON-FRI', '0 9 * * MON-FRI'),
    ('0\t0 L * *', '0 0 L * *'),
    ('* * * * * */10', '* * * * * */10'),
    ('@daily', '@daily'),
    ('0 0 31 2 1', '0 0 31 2 1'),      # day-of-month OR day-of-week: the Mondays of February
])
def test_good_expression_is_returned_with_single_spaces(text, expr):
    assert parse_cron(text) == expr


# the ticks

def test_quarter_hours_from_a_known_utc_time():
    clock = FakeClock(utc(2026, 1, 5, 10, 7, 30))
    mono0 = clock.mono
    sched = CronSchedule('*/15 * * * *', clock=clock, zone=UTC)

    assert sched.periodic
    assert sched.first == utc(2026, 1, 5, 10, 15, 0)
    ticks = sched.ticks(threading.Event())
    first = next(ticks)
    assert first == Tick(0, utc(2026, 1, 5, 10, 15, 0), '20260105T101500Z')
    assert clock.mono == mono0 + 450

    rest = [next(ticks) for _ in range(4)]
    assert [tick.index for tick in rest] == [1, 2, 3, 4]
    assert [tick.label for tick in rest] == [
        '20260105T103000Z', '20260105T104500Z', '20260105T110000Z', '20260105T111500Z']
    assert clock.mono == mono0 + 450 + 4 * 900
    assert sched.missed == 0


def test_a_cron_time_at_now_fires_at_once():
    clock = FakeClock(utc(2026, 1, 5, 10, 15, 0))
    sched = CronSchedule('*/15 * * * *', clock=clock, zone=UTC)

    assert next(sched.ticks()).wall == utc(2026, 1, 5, 10, 15, 0)
    assert clock.waits == []


def test_future_start_is_honoured():
    clock = FakeClock(utc(2026, 1, 5, 10, 7, 30))
    sched = CronSchedule('*/15 * * * *', start=utc(2026, 1, 5, 12, 5, 0), clock=clock, zone=UTC)

    assert sched.first == utc(2026, 1, 5, 12, 15, 0)
    assert [tick.wall for tick in take(sched, 2)] == [
        utc(2026, 1, 5, 12, 15, 0), utc(2026, 1, 5, 12, 30, 0)]
    assert clock.wall == utc(2026, 1, 5, 12, 30, 0)


def test_start_on_a_cron_time_fires_then_and_a_past_start_fires_after_now():
    now = utc(2026, 1, 5, 10, 7, 30)
    on_time = CronSchedule('*/15 * * * *', start=utc(2026, 1, 5, 12, 0, 0),
                           clock=FakeClock(now), zone=UTC)
    past = CronSchedule('*/15 * * * *', start=utc(2025, 6, 1, 0, 0, 0),
                        clock=FakeClock(now), zone=UTC)

    assert on_time.first == utc(2026, 1, 5, 12, 0, 0)
    assert past.first == utc(2026, 1, 5, 10, 15, 0)


def test_six_fields_tick_on_seconds():
    clock = FakeClock(utc(2026, 1, 5, 10, 7, 3))
    sched = CronSchedule('* * * * * */10', clock=clock, zone=UTC)

    assert [tick.label for tick in take(sched, 3)] == [
        '20260105T100710Z', '20260105T100720Z', '20260105T100730Z']


# missed ticks

def test_busy_consumer_gets_the_latest_due_tick_and_the_rest_are_missed():
    clock = FakeClock(utc(2026, 1, 5, 10, 7, 30))
    sched = CronSchedule('*/15 * * * *', clock=clock, zone=UTC)
    ticks = sched.ticks(threading.Event())
    assert next(ticks).index == 0

    clock.advance(3 * 900 + 100)                    # the run took three intervals and more
    waits_before = len(clock.waits)
    late = next(ticks)

    assert late[:2] == (3, utc(2026, 1, 5, 11, 0, 0))
    assert len(clock.waits) == waits_before         # yielded at once, not after a wait
    assert sched.missed == 2

    following = next(ticks)
    assert following[:2] == (4, utc(2026, 1, 5, 11, 15, 0))
    assert clock.wall == utc(2026, 1, 5, 11, 15, 0)
    assert sched.missed == 2


def test_an_hour_late_on_a_ten_second_cron_coalesces_360_ticks():
    clock = FakeClock(utc(2026, 1, 5, 10, 0, 0))
    sched = CronSchedule('* * * * * */10', clock=clock, zone=UTC)
    ticks = sched.ticks(threading.Event())

    clock.advance(3600)
    tick = next(ticks)

    assert tick[:2] == (360, utc(2026, 1, 5, 11, 0, 0))
    assert sched.missed == 360


# wall-clock steps

def test_cron_times_follow_the_wall_clock_after_a_step_forward():
    """A suspend or a clock step forward: the due times are coalesced into the latest, as
    cron would run a job once after the machine wakes, and counted as missed."""
    clock = FakeClock(utc(2026, 1, 5, 10, 7, 30))
    sched = CronSchedule('*/15 * * * *', clock=clock, zone=UTC)
    ticks = sched.ticks(threading.Event())
    next(ticks)                                     # 10:15
    mono_at_first = clock.mono

    clock.step_wall(3600)                           # the wall clock now says 11:15
    second, third = next(ticks), next(ticks)

    assert (second[:2], third[:2]) == (
        (4, utc(2026, 1, 5, 11, 15, 0)), (5, utc(2026, 1, 5, 11, 30, 0)))
    assert sched.missed == 3                        # 10:30, 10:45, 11:00
    assert clock.mono == mono_at_first + 900        # 11:15 at once, then 15 minutes


def test_cron_times_follow_the_wall_clock_after_a_step_back():
    """A clock set back an hour: 10:30 fires when the wall clock says 10:30 again, and no
    wait goes longer than RECHECK without looking at it."""
    clock = FakeClock(utc(2026, 1, 5, 10, 7, 30))
    sched = CronSchedule('*/15 * * * *', clock=clock, zone=UTC)
    ticks = sched.ticks(threading.Event())
    next(ticks)
    mono_at_first = clock.mono

    clock.step_wall(-3600)
    second = next(ticks)

    assert second[:2] == (1, utc(2026, 1, 5, 10, 30, 0))
    assert clock.mono == mono_at_first + 900 + 3600
    assert max(clock.waits) <= cron.RECHECK
    assert sched.missed == 0


# time zones and DST (Europe/Berlin 2026: spring 03-29 02:00 -> 03:00, fall 10-25 03:00 -> 02:00)

@pytest.mark.parametrize('process_zone', ['UTC', 'Europe/Berlin', 'America/New_York'])
def test_spring_forward_hourly_fires_the_missing_half_hour_once(process_tz, process_zone):
    process_tz(process_zone)                        # croniter must not read the process zone
    sched = CronSchedule('30 * * * *', clock=FakeClock(berlin(2026, 3, 29, 0, 0)), zone=BERLIN)

    ticks = take(sched, 4)
    walls = [tick.wall for tick in ticks]

    # 02:30 does not exist: it fires at 03:30 summer time, and 03:30 itself does not again
    assert [local(wall) for wall in walls] == [
        '03-29 00:30 CET', '03-29 01:30 CET', '03-29 03:30 CEST', '03-29 04:30 CEST']
    assert [b - a for a, b in zip(walls, walls[1:])] == [3600, 3600, 3600]
    assert [tick.index for tick in ticks] == [0, 1, 2, 3]
    assert sched.missed == 0                        # no second tick at 03:30 to coalesce


def test_half_hourly_across_spring_forward_fires_each_instant_once():
    sched = CronSchedule('*/30 * * * *', clock=FakeClock(berlin(2026, 3, 29, 1, 0)),
                         zone=BERLIN)

    ticks = take(sched, 5)

    assert [local(tick.wall) for tick in ticks] == [
        '03-29 01:00 CET', '03-29 01:30 CET', '03-29 03:00 CEST', '03-29 03:30 CEST',
        '03-29 04:00 CEST']
    assert [tick.index for tick in ticks] == [0, 1, 2, 3, 4]
    assert sched.missed == 0


def test_spring_forward_daily_in_the_gap_fires_each_time_once():
    sched = CronSchedule('0,30 2 * * *', clock=FakeClock(berlin(2026, 3, 28, 0, 0)),
                         zone=BERLIN)

    assert [local(tick.wall) for tick in take(sched, 6)] == [
        '03-28 02:00 CET', '03-28 02:30 CET',
        '03-29 03:00 CEST', '03-29 03:30 CEST',
        '03-30 02:00 CEST', '03-30 02:30 CEST']


def test_fall_back_hourly_fires_the_repeated_half_hour_once():
    sched = CronSchedule('30 * * * *', clock=FakeClock(berlin(2026, 10, 25, 0, 0)),
                         zone=BERLIN)

    walls = [tick.wall for tick in take(sched, 5)]

    assert [local(wall) for wall in walls] == [
        '10-25 00:30 CEST', '10-25 01:30 CEST', '10-25 02:30 CEST',
        '10-25 03:30 CET', '10-25 04:30 CET']
    assert walls[3] - walls[2] == 7200              # the second 02:30 (CET) is not fired


def test_fall_back_daily_in_the_repeated_hour_fires_each_time_once():
    sched = CronSchedule('0,30 2 * * *', clock=FakeClock(berlin(2026, 10, 24, 0, 0)),
                         zone=BERLIN)

    assert [local(tick.wall) for tick in take(sched, 6)] == [
        '10-24 02:00 CEST', '10-24 02:30 CEST',
        '10-25 02:00 CEST', '10-25 02:30 CEST',
        '10-26 02:00 CET', '10-26 02:30 CET']


def test_half_hourly_across_fall_back_has_no_duplicate_local_time():
    sched = CronSchedule('*/30 * * * *', clock=FakeClock(berlin(2026, 10, 25, 1, 0)),
                         zone=BERLIN)

    walls = [tick.wall for tick in take(sched, 8)]
    naive = [datetime.datetime.fromtimestamp(wall, BERLIN).replace(tzinfo=None)
             for wall in walls]

    assert all(a < b for a, b in zip(walls, walls[1:]))
    assert len(set(naive)) == len(naive)
    assert [local(wall) for wall in walls] == [
        '10-25 01:00 CEST', '10-25 01:30 CEST', '10-25 02:00 CEST', '10-25 02:30 CEST',
        '10-25 03:00 CET', '10-25 03:30 CET', '10-25 04:00 CET', '10-25 04:30 CET']


def test_start_inside_the_repeated_hour_does_not_fire_its_times_again():
    now = berlin(2026, 10, 25, 2, 10, fold=1)      # 02:10 CET, the second pass
    sched = CronSchedule('30 * * * *', clock=FakeClock(now), zone=BERLIN)

    assert local(sched.first) == '10-25 03:30 CET'


def test_start_just_after_spring_forward_still_fires_the_moved_gap_time():
    moved = CronSchedule('30 2 * * *', clock=FakeClock(berlin(2026, 3, 29, 3, 10)),
                         zone=BERLIN)
    passed = CronSchedule('30 2 * * *', clock=FakeClock(berlin(2026, 3, 29, 3, 40)),
                          zone=BERLIN)

    assert local(moved.first) == '03-29 03:30 CEST'
    assert local(passed.first) == '03-30 02:30 CEST'


def test_cron_fields_are_local_time_in_the_zone():
    clock = FakeClock(utc(2026, 1, 5, 3, 0, 0))     # 12:00 in Tokyo
    tokyo = CronSchedule('0 9 * * *', clock=clock, zone=zoneinfo.ZoneInfo('Asia/Tokyo'))

    assert tokyo.first == utc(2026, 1, 6, 0, 0, 0)  # 09:00 in Tokyo is 00:00 UTC
    assert next(tokyo.ticks()).label == '20260106T000000Z'


# the default zone

@pytest.mark.parametrize('tz, key', [('Europe/Berlin', 'Europe/Berlin'),
                                     (':Asia/Tokyo', 'Asia/Tokyo')])
def test_default_zone_is_the_one_tz_names(monkeypatch, tz, key):
    monkeypatch.setenv('TZ', tz)
    assert local_zone().key == key
    assert CronSchedule('0 9 * * *', clock=FakeClock(0.0)).zone.key == key


@pytest.fixture
def berlin_file():
    """Return the path of the system's Europe/Berlin zone file."""
    for root in zoneinfo.TZPATH:
        path = os.path.join(root, 'Europe', 'Berlin')
        if os.path.isfile(path):
            return path
    pytest.skip('no system zone files')


def test_default_zone_reads_a_tz_file_path(monkeypatch, berlin_file):
    monkeypatch.setenv('TZ', berlin_file)
    winter = datetime.datetime(2026, 1, 5, tzinfo=local_zone())
    assert winter.utcoffset() == datetime.timedelta(hours=1)


def test_default_zone_is_localtime_when_tz_names_no_zone(monkeypatch, berlin_file):
    monkeypatch.setenv('TZ', 'IST-5:30')            # a POSIX rule, not a zone name
    monkeypatch.setattr(cron, 'LOCALTIME', berlin_file)
    winter = datetime.datetime(2026, 1, 5, tzinfo=local_zone())
    assert winter.utcoffset() == datetime.timedelta(hours=1)


def test_default_zone_is_utc_without_a_zone_or_localtime(monkeypatch, tmp_path):
    monkeypatch.setattr(cron, 'LOCALTIME', str(tmp_path / 'missing'))
    monkeypatch.setenv('TZ', 'IST-5:30')
    assert local_zone() is datetime.timezone.utc
    monkeypatch.delenv('TZ')
    assert local_zone() is datetime.timezone.utc


# stop

def test_stop_during_a_wait_ends_the_ticks_at_once():
    clock = FakeClock(utc(2026, 1, 5, 10, 7, 30))
    stop = threading.Event()
    sched = CronSchedule('*/15 * * * *', clock=clock, zone=UTC)
    ticks = sched.ticks(stop)
    next(ticks)
    mono_at_first = clock.mono

    clock.stop_during_wait = True

    with pytest.raises(StopIteration):
        next(ticks)
    assert clock.mono == mono_at_first + cron.RECHECK / 3
    assert clock.waits[-1] == cron.RECHECK


def test_stop_before_the_first_tick_yields_nothing():
    clock = FakeClock(utc(2026, 1, 5, 10, 7, 30))
    clock.stop_during_wait = True
    sched = CronSchedule('*/15 * * * *', clock=clock, zone=UTC)

    assert list(sched.ticks(threading.Event())) == []
    assert clock.wall < sched.first


def test_stop_set_between_ticks_ends_without_waiting():
    clock = FakeClock(utc(2026, 1, 5, 10, 7, 30))
    stop = threading.Event()
    ticks = CronSchedule('*/15 * * * *', clock=clock, zone=UTC).ticks(stop)
    next(ticks)
    waits = len(clock.waits)

    stop.set()

    assert list(ticks) == []
    assert len(clock.waits) == waits
