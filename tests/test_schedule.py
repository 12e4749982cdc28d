"""Schedule: start-time rules, the monotonic tick grid, missed ticks, stop and labels."""

import calendar
import math
import re
import threading
import time

import pytest

from fakeclock import FakeClock

from rezina.errors import UsageError
from rezina.schedule import (
    Schedule, ScheduleError, SystemClock, Tick, format_label, parse_every, parse_start)

LABEL = re.compile(r'^\d{8}T\d{6}(\.\d+)?Z$')


@pytest.fixture
def india_time(monkeypatch):
    """Run the test in local time UTC+05:30, so local, UTC and the grid all differ."""
    monkeypatch.setenv('TZ', 'IST-5:30')
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def utc(*fields):
    return float(calendar.timegm(fields))


# parsing

def test_parse_start_reads_local_time(india_time):
    assert parse_start('2016-12-03 20:18:10') == utc(2016, 12, 3, 14, 48, 10)


@pytest.mark.parametrize('value', [
    '2016-13-03', '2016-13-03 20:18:10', '2016-02-30 00:00:00', 'tomorrow', '20:18:10', ''])
def test_parse_start_refuses_value_naming_option_and_format(value):
    with pytest.raises(ScheduleError) as caught:
        parse_start(value)
    assert str(caught.value) == f"--start {value!r}: expected 'YYYY-MM-DD HH:MM:SS'"
    assert isinstance(caught.value, UsageError)


def test_parse_start_message_matches_the_documented_example():
    with pytest.raises(ScheduleError, match=re.escape(
            "--start '2016-13-03': expected 'YYYY-MM-DD HH:MM:SS'")):
        parse_start('2016-13-03')


@pytest.mark.parametrize('interval', [0, -1, -0.5, math.nan, math.inf])
def test_interval_not_above_zero_is_refused_naming_every(interval):
    with pytest.raises(ScheduleError,
                       match=r"^--every '.*': expected a (finite )?number of seconds"):
        Schedule(interval=interval, clock=FakeClock(1000.0))


@pytest.mark.parametrize('text', ['0', '-3', 'ten', '', 'nan'])
def test_parse_every_refuses_text_naming_every(text):
    with pytest.raises(ScheduleError) as caught:
        parse_every(text)
    assert str(caught.value).startswith(f'--every {text!r}: ')
    assert isinstance(caught.value, UsageError)


def test_parse_every_reads_seconds():
    assert parse_every('10') == 10.0
    assert parse_every('0.5') == 0.5


# start-time rules

def test_interval_without_start_begins_at_next_epoch_multiple(india_time):
    clock = FakeClock(parse_start('2016-12-03 20:18:03'))
    sched = Schedule(interval=10, clock=clock)

    assert sched.periodic
    assert sched.first == parse_start('2016-12-03 20:18:10')


def test_interval_without_start_on_raw_epochs():
    assert Schedule(interval=10, clock=FakeClock(1_000_003.0)).first == 1_000_010.0
    assert Schedule(interval=10, clock=FakeClock(1_000_010.0)).first == 1_000_010.0


@pytest.mark.parametrize('interval', [10, 7, 0.5])
@pytest.mark.parametrize('now', [1480774683.0, 1480774683.25, 1480774690.9, 1480774683.5])
def test_interval_grid_is_multiples_since_the_epoch(interval, now):
    clock = FakeClock(now)
    sched = Schedule(interval=interval, clock=clock)

    k = round(sched.first / interval)
    assert sched.first == k * interval
    assert now <= sched.first < now + interval

    walls = [tick.wall for _, tick in zip(range(20), sched.ticks(threading.Event()))]
    assert walls == [(k + i) * interval for i in range(20)]


def test_neither_runs_once_now():
    clock = FakeClock(1480774683.7)
    sched = Schedule(clock=clock)

    ticks = list(sched.ticks(threading.Event()))

    assert not sched.periodic
    assert sched.first == 1480774683.7
    assert [tick[:2] for tick in ticks] == [(0, 1480774683.7)]
    assert clock.waits == []


def test_start_older_than_last_grid_tick_gives_that_tick(india_time):
    clock = FakeClock(parse_start('2016-12-03 20:18:03'))
    mono0 = clock.mono
    sched = Schedule(interval=10, start=parse_start('2016-11-03 20:18:03'), clock=clock)
    ticks = sched.ticks(threading.Event())

    assert sched.first == parse_start('2016-12-03 20:18:00')
    assert next(ticks).wall == parse_start('2016-12-03 20:18:00')
    assert clock.waits == []                        # it runs at once
    assert next(ticks).wall == parse_start('2016-12-03 20:18:10')
    assert clock.mono == mono0 + 7
    assert sched.missed == 0


def test_start_older_than_last_grid_tick_on_raw_epochs():
    sched = Schedule(interval=10, start=1_000.0, clock=FakeClock(1_000_003.0))
    assert sched.first == 1_000_000.0


def test_start_at_now_runs_then_and_every_interval_after(india_time):
    clock = FakeClock(parse_start('2016-12-03 20:18:03'))
    sched = Schedule(interval=10, start=parse_start('2016-12-03 20:18:03'), clock=clock)

    walls = [tick.wall for _, tick in zip(range(3), sched.ticks(threading.Event()))]

    assert walls == [parse_start(f'2016-12-03 20:18:{s}') for s in ('03', '13', '23')]


def test_start_after_last_grid_tick_is_kept_and_runs_at_once():
    clock = FakeClock(1_000_003.0)
    sched = Schedule(interval=10, start=1_000_001.0, clock=clock)
    ticks = sched.ticks(threading.Event())

    assert sched.first == 1_000_001.0
    assert next(ticks)[:2] == (0, 1_000_001.0)
    assert clock.waits == []
    assert next(ticks)[:2] == (1, 1_000_011.0)
    assert clock.wall == 1_000_011.0


def test_future_start_with_interval_waits_for_it(india_time):
    clock = FakeClock(parse_start('2016-12-03 20:18:03'))
    sched = Schedule(interval=10, start='2016-12-03 20:30:00', clock=clock)
    ticks = sched.ticks(threading.Event())

    assert next(ticks).wall == parse_start('2016-12-03 20:30:00')
    assert clock.wall == parse_start('2016-12-03 20:30:00')
    assert next(ticks).wall == parse_start('2016-12-03 20:30:10')


def test_future_start_without_interval_runs_once_at_that_time(india_time):
    clock = FakeClock(parse_start('2016-12-03 20:18:03'))
    mono0 = clock.mono
    sched = Schedule(start=parse_start('2016-12-03 20:20:00'), clock=clock)

    ticks = list(sched.ticks(threading.Event()))

    assert [tick[:2] for tick in ticks] == [(0, parse_start('2016-12-03 20:20:00'))]
    assert clock.mono == mono0 + 117
    assert ticks[0].label == '20161203T145000Z'


def test_past_start_without_interval_runs_once_now(india_time):
    now = parse_start('2016-12-03 20:18:03')
    clock = FakeClock(now)
    sched = Schedule(start=parse_start('2016-12-01 08:00:00'), clock=clock)

    ticks = list(sched.ticks(threading.Event()))

    assert sched.first == now
    assert [tick[:2] for tick in ticks] == [(0, now)]
    assert clock.waits == []


# the tick grid

@pytest.mark.parametrize('interval', [10, 7, 0.5, 0.1])
def test_no_drift_over_10000_ticks(interval):
    clock = FakeClock(1480774683.3)
    mono0, wall0 = clock.mono, clock.wall
    sched = Schedule(interval=interval, clock=clock)
    first = sched.first

    ticks = sched.ticks(threading.Event())
    for k in range(10_000):
        tick = next(ticks)
        assert tick.index == k
        assert tick.wall == first + k * interval
        assert clock.mono == pytest.approx(mono0 + (first - wall0) + k * interval, abs=1e-6)
        clock.advance(interval * 0.3)               # the run takes time; ticks do not slide

    assert sched.missed == 0
    assert clock.mono == pytest.approx(
        mono0 + (first - wall0) + 9_999.3 * interval, abs=1e-6)


def test_wall_clock_step_forward_does_not_burst():
    clock = FakeClock(1_000_003.0)
    sched = Schedule(interval=10, clock=clock)
    ticks = sched.ticks(threading.Event())
    assert next(ticks).wall == 1_000_010.0
    mono_at_first = clock.mono

    clock.step_wall(3600)
    second, third = next(ticks), next(ticks)

    assert (second.index, third.index) == (1, 2)
    assert (second.wall, third.wall) == (1_000_020.0, 1_000_030.0)
    assert clock.mono == mono_at_first + 20
    assert sched.missed == 0


def test_wall_clock_step_backward_does_not_stall():
    clock = FakeClock(1_000_003.0)
    sched = Schedule(interval=10, clock=clock)
    ticks = sched.ticks(threading.Event())
    next(ticks)
    mono_at_first = clock.mono

    clock.step_wall(-3600)
    second = next(ticks)

    assert second[:2] == (1, 1_000_020.0)
    assert clock.mono == mono_at_first + 10
    assert sum(clock.waits) == pytest.approx(17)


def test_slow_consumer_skips_missed_ticks_and_counts_them():
    clock = FakeClock(1_000_000.0)
    sched = Schedule(interval=10, clock=clock)
    ticks = sched.ticks(threading.Event())
    assert next(ticks).index == 0

    clock.advance(35)                               # the run took three and a half intervals
    waits_before = len(clock.waits)
    late = next(ticks)

    assert late[:2] == (3, 1_000_030.0)
    assert len(clock.waits) == waits_before         # yielded at once, not after a wait
    assert sched.missed == 2

    following = next(ticks)
    assert following[:2] == (4, 1_000_040.0)
    assert clock.wall == 1_000_040.0
    assert sched.missed == 2


def test_late_start_skips_to_the_latest_due_tick():
    clock = FakeClock(1_000_000.0)
    sched = Schedule(interval=10, clock=clock)
    ticks = sched.ticks(threading.Event())

    clock.advance(100)                              # nobody asked for a tick for 100 s
    tick = next(ticks)

    assert tick[:2] == (10, 1_000_100.0)
    assert sched.missed == 10


def test_stop_between_ticks_ends_the_generator():
    clock = FakeClock(1_000_003.0)
    stop = threading.Event()
    sched = Schedule(interval=10, clock=clock)
    ticks = sched.ticks(stop)
    next(ticks)
    mono_at_first = clock.mono

    stop.set()

    with pytest.raises(StopIteration):
        next(ticks)
    assert clock.mono == mono_at_first


def test_stop_during_wait_ends_the_generator_at_once():
    clock = FakeClock(1_000_003.0)
    stop = threading.Event()
    sched = Schedule(interval=60, clock=clock)
    ticks = sched.ticks(stop)
    next(ticks)
    mono_at_first = clock.mono

    clock.stop_during_wait = True

    with pytest.raises(StopIteration):
        next(ticks)
    assert clock.mono == pytest.approx(mono_at_first + 20)
    assert len(clock.waits) == 2


def test_stop_before_a_future_one_shot_yields_nothing():
    clock = FakeClock(1_000_000.0)
    clock.stop_during_wait = True
    sched = Schedule(start=1_000_600.0, clock=clock)

    assert list(sched.ticks(threading.Event())) == []
    assert clock.mono < 5000.0 + 600


# labels

def test_labels_are_utc(india_time):
    clock = FakeClock(parse_start('2016-12-03 20:18:03'))
    sched = Schedule(interval=10, clock=clock)

    labels = [tick.label for _, tick in zip(range(2), sched.ticks(threading.Event()))]

    assert labels == ['20161203T144810Z', '20161203T144820Z']


def test_fractional_interval_labels_carry_the_fraction():
    clock = FakeClock(utc(2016, 12, 3, 14, 48, 3))
    sched = Schedule(interval=0.5, clock=clock)

    labels = [tick.label for _, tick in zip(range(3), sched.ticks(threading.Event()))]

    assert labels == ['20161203T144803.0Z', '20161203T144803.5Z', '20161203T144804.0Z']


@pytest.mark.parametrize('interval', [1, 10, 7, 0.5, 0.1, 0.25, 1 / 3])
def test_labels_are_unique_and_well_formed(interval):
    clock = FakeClock(1480774683.3)
    sched = Schedule(interval=interval, clock=clock)

    labels = [tick.label for _, tick in zip(range(10_000), sched.ticks(threading.Event()))]

    assert len(set(labels)) == len(labels)
    assert labels == sorted(labels)
    assert all(LABEL.match(label) for label in labels)


def test_whole_interval_labels_have_no_fraction():
    start = utc(2016, 12, 3, 14, 48, 3) + 0.7
    clock = FakeClock(start)
    tick = next(Schedule(interval=10, start=start, clock=clock).ticks(threading.Event()))
    assert tick == Tick(0, start, '20161203T144803Z')


def test_label_rounds_float_noise_before_cutting():
    assert format_label(utc(2016, 12, 3, 14, 48, 10) + 0.4999999999, 1) == '20161203T144810.5Z'
    assert format_label(utc(2016, 12, 3, 14, 48, 10) - 1e-9) == '20161203T144810Z'


# the real clock

def test_system_clock_wait_returns_at_once_when_stopped():
    stop = threading.Event()
    stop.set()
    assert SystemClock().wait(3600, stop) is True
    assert SystemClock().wait(0, threading.Event()) is False


def test_real_clock_ticks_arrive_on_the_grid():
    sched = Schedule(interval=0.5)
    stop = threading.Event()
    arrivals = []

    for tick in sched.ticks(stop):
        arrivals.append((tick, time.monotonic()))
        if len(arrivals) == 4:
            break

    k0 = arrivals[0][0].index
    for i, (tick, arrived) in enumerate(arrivals):
        assert tick.index == k0 + i
        assert tick.wall == pytest.approx(round(tick.wall / 0.5) * 0.5, abs=1e-6)
        late = arrived - sched.deadline(tick.index)
        assert 0 <= late < 0.25, f'tick {tick.index} arrived {late:.3f} s after its due time'
