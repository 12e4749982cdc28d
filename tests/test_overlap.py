"""--overlap on an injectable clock: a source whose runs overrun the interval, under each
policy, driven by the real Schedule; runs are simulated to end a fixed time after they
start, and the policy is told in time order."""

import heapq
import threading

import pytest

from fakeclock import FakeClock

from rezina.nodes.overlap import Overlap
from rezina.schedule import Schedule

INTERVAL = 10.0
EPOCH = 1_800_000_000.0          # a multiple of the interval: the grid starts here


def simulate(policy, run_seconds, ticks=12):
    """Fire ticks of a 10 s schedule through Overlap; every run lasts run_seconds.
    Returns (policy, [(tick index, start time, end time)])."""
    clock = FakeClock(EPOCH)
    schedule = Schedule(INTERVAL, clock=clock)
    overlap = Overlap(policy)
    ends = []                    # heap of (end time, tick index)
    runs = []

    def start(tick, now):
        heapq.heappush(ends, (now + run_seconds, tick.index))
        runs.append([tick.index, now, now + run_seconds])

    stop = threading.Event()
    for tick in schedule.ticks(stop):
        now = clock.time()
        while ends and ends[0][0] <= now:          # runs that ended before this tick
            ended_at, _ = heapq.heappop(ends)
            waiting = overlap.run_ended()
            if waiting is not None:
                start(waiting, ended_at)
        if overlap.tick(tick) is not None:
            start(tick, now)
        if tick.index + 1 >= ticks:
            stop.set()
    return overlap, runs


def test_skip_fires_on_the_grid_and_counts_the_skipped_ticks():
    overlap, runs = simulate('skip', run_seconds=25.0)
    # a run lasts 2.5 intervals: ticks 0, 3, 6, 9 fire, the two after each are skipped
    assert [index for index, _, _ in runs] == [0, 3, 6, 9]
    assert all(start == EPOCH + index * INTERVAL for index, start, _ in runs)
    assert overlap.fired == 4
    assert overlap.skipped == 8
    assert overlap.fired + overlap.skipped == 12


def test_queue_holds_one_tick_and_fires_it_when_the_run_ends():
    overlap, runs = simulate('queue', run_seconds=25.0)
    # tick 0 runs 0..25; tick 1 waits and runs 25..50 (tick 2 skipped: one waits at most);
    # tick 3 waits and runs 50..75; tick 5 (at 50, just after run 1 ended) waits and runs
    # 75..100; tick 8 waits and runs from 100; tick 10 is waiting at the end
    starts = [(index, start - EPOCH) for index, start, _ in runs]
    assert starts == [(0, 0.0), (1, 25.0), (3, 50.0), (5, 75.0), (8, 100.0)]
    assert overlap.waiting is not None and overlap.waiting.index == 10
    assert overlap.skipped == 12 - len(runs) - 1
    overlap.drop_waiting()
    assert overlap.skipped == 12 - len(runs)


def test_allow_fires_every_tick_beside_the_runs_in_flight():
    overlap, runs = simulate('allow', run_seconds=25.0)
    assert [index for index, _, _ in runs] == list(range(12))
    assert all(start == EPOCH + index * INTERVAL for index, start, _ in runs)
    assert overlap.skipped == 0
    assert overlap.in_flight == 3           # 2.5 intervals long: three at once at the end


@pytest.mark.parametrize('policy', ['skip', 'queue', 'allow'])
def test_runs_shorter_than_the_interval_never_overlap(policy):
    overlap, runs = simulate(policy, run_seconds=4.0)
    assert [index for index, _, _ in runs] == list(range(12))
    assert overlap.skipped == 0


def test_an_unknown_policy_is_refused():
    with pytest.raises(ValueError):
        Overlap('sometimes')
