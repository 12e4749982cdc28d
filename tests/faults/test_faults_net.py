"""Fault scenarios 5 and 8 (the others are in test_faults.py): an edge between two test
hosts cut for a while, and a slow sink under a fast source. Each checks the sink with the
set checker and prints its row of the table; short by default, full size with --long."""

import json
import subprocess
import time

import pytest

from cluster import rows
from conftest import stderr_of, wait_for
from faults import checker
from faults.netns import two_hosts
from faults.test_faults import descendants
from fixtures_slow import count_of
from rezina import defaults
from test_edges import free_port

pytestmark = [pytest.mark.timeout(600)]

PORT = 7700                 # on host A: a namespace of its own, so any port is free
RATE = 2500                 # items a second from the source of scenario 5
PAD = 1000                  # bytes of padding in each of its items
RSS_BOUND = 32              # MiB: the credit window's items (8192 of ~1 KiB) and slack


def rss_mib(pid):
    """The resident memory of a process, in MiB."""
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for pid {pid}")


def stored(db):
    """Items in the SQLite sink so far (0 before its table exists)."""
    counted = rows(db, 'SELECT count(*) FROM items')
    return counted[0][0] if counted else 0


@pytest.fixture
def hosts(procs):
    with two_hosts(procs) as made:
        yield made


def test_5_one_edge_between_two_hosts_cut_for_a_while(hosts, tmp_path, long_run):
    """Every packet between a source on host A and its sink on host B is dropped for a
    while, with no reset, as a pulled cable; the heartbeats notice, the source holds at
    most its credit window meanwhile, and items are stored again within 2 s of the heal.
    An unbounded sender would hold the 50,000 items of the 20 s cut (over 50 MiB)."""
    cut = 20 if long_run else 5
    n = RATE * (cut + 4)
    db = tmp_path / 'out.db'
    endpoint = f'tcp://{hosts.address(0)}:{PORT}'
    source = hosts.start(0, ['rz-hydrant', '--insecure', '--out', endpoint,
                             '--kwargs', json.dumps({'pad': PAD}), 'fixtures_slow:steady',
                             str(n), str(RATE)], stdout=subprocess.DEVNULL)
    sink = hosts.start(1, ['rz-bocca', '--in', endpoint, f'sqlite:{db}'])
    wait_for(lambda: stored(db) >= RATE, timeout=60, what='items flowing')

    before = rss_mib(source.pid)
    hosts.cut()
    time.sleep(cut)                              # the edge stays cut this long
    grown = rss_mib(source.pid) - before
    hosts.heal()
    healed, at_heal = time.monotonic(), stored(db)
    wait_for(lambda: stored(db) > at_heal, timeout=120, what='items stored after the heal')
    recovery = time.monotonic() - healed
    for proc in (source, sink):
        assert proc.wait(timeout=120) == 0, stderr_of(proc)

    counts = checker.check(range(n), [x for (x,) in rows(db, 'SELECT x FROM items')])
    checker.record(f"5 an edge between 2 hosts cut {cut} s (sender RSS +{grown:.0f} MiB)",
                   counts, [recovery])
    assert 'silent for' in stderr_of(sink)       # the cut was one: the heartbeat saw it
    assert grown < RSS_BOUND
    assert recovery <= 2.0
    assert counts['lost'] == 0 and counts['unexpected'] == 0


def stage_rss(proc):
    """The resident memory of a stage: its process and every child, in MiB."""
    total = 0.0
    for pid in descendants(proc.pid):
        try:
            total += rss_mib(pid)
        except (OSError, ValueError):         # a child that has just gone
            pass
    return total


def start_slow_pipeline(procs, where, tmp_path, n, progress, marker):
    """hydrant -> a stage of 10 ms an item while `marker` exists -> the sink; returns
    (processes, the sink's count of items so far, what the sink's items are)."""
    port = free_port()
    env = {'RZ_TEST_SLOW_WHILE': str(marker)}
    source = procs.start(['rz-hydrant', '--out', f'tcp://127.0.0.1:{port}',
                          'fixtures_slow:steady', str(n), '1000', str(progress)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env)
    if where == 'bocca':
        out = tmp_path / 'out.jsonl'
        sink = procs.start(['rz-bocca', '--in', f'tcp://127.0.0.1:{port}',
                            '--args', json.dumps([str(out)]), 'fixtures_slow:SlowSink'],
                           stdin=subprocess.DEVNULL, env=env)
        return [source, sink], lambda: len(checker.jsonl_values(out)), \
            lambda: checker.jsonl_values(out)
    db = tmp_path / 'out.db'
    notch = procs.start(['rz-notch', '--in', f'tcp://127.0.0.1:{port}',
                         'fixtures_slow:slow_store'], stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE, env=env)
    sink = procs.start(['rz-bocca', f'sqlite:{db}'], stdin=notch.stdout)
    notch.stdout.close()
    return [source, notch, sink], lambda: stored(db), \
        lambda: [x for (x,) in rows(db, 'SELECT x FROM items')]


@pytest.mark.parametrize('where', ['notch', 'bocca'])
def test_8_a_slow_sink_under_a_source_ten_times_faster(procs, tmp_path, long_run, where):
    """The sink takes 10 ms an item (a user backend of rz-bocca, or an rz-notch before
    SQLite), the source could give 1000 items a second: the source's rate follows the
    sink's, every stage's memory stays flat, nothing is lost. Then the sink is made fast,
    and the rest of the items drain."""
    if where == 'bocca' and not long_run:
        pytest.skip(f"rz-bocca's window of {defaults.CREDIT_MAX} items fills only after "
                    f"9 s at 1000 items/s: --long")
    seconds = 60 if long_run else 6
    n = 1000 * seconds                           # the source never runs out while slow
    progress, marker = tmp_path / 'progress', tmp_path / 'slow'
    marker.touch()
    chain, sink_count, sink_items = start_slow_pipeline(procs, where, tmp_path, n,
                                                        progress, marker)
    wait_for(lambda: sink_count() > 0, timeout=60, what='items flowing')

    began, samples = time.monotonic(), []
    for _ in range(4 * seconds):                 # (t, source's count, sink's, RSS each)
        samples.append((time.monotonic() - began, count_of(progress), sink_count(),
                        [stage_rss(p) for p in chain]))
        if samples[-1][0] >= seconds:
            break
        time.sleep(0.5)                          # the sampling period
    marker.unlink()                              # the minute of slow sink is over
    for proc in chain:
        assert proc.wait(timeout=300) == 0, stderr_of(proc)

    warm = next(s for s in samples if s[0] >= seconds / 3)
    last = samples[-1]
    ratio = (last[1] - warm[1]) / max(1, last[2] - warm[2])
    grown = max(b - a for a, b in zip(warm[3], last[3]))
    counts = checker.check(range(n), sink_items())
    checker.record(f"8 slow {where} 10 ms/item, source 10x, {seconds} s "
                   f"(rate {ratio:.2f}x, RSS +{grown:.1f} MiB)", counts, [])
    assert 0.8 <= ratio <= 1.25, (f"in the last {last[0] - warm[0]:.0f} s the source gave "
                                  f"{last[1] - warm[1]} items, the sink stored "
                                  f"{last[2] - warm[2]}")
    assert grown < 4, f"RSS (MiB) of each stage after warm-up {warm[3]}, at the end {last[3]}"
    assert counts['lost'] == 0 and counts['unexpected'] == 0
