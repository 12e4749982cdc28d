"""rz-notch worker children that die: restarted, their items redelivered or quarantined."""

import os
import re
import random
import signal
import sqlite3
import subprocess
import time

import pytest

from conftest import stderr_of, wait_for
from test_edges import free_port, stored

from rezina import exitcodes


def children_of(pid):
    """Pids of the live children of pid, from /proc."""
    kids = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat') as stat:
                fields = stat.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != 'Z':
            kids.append(int(entry))
    return kids


def count(db):
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute('SELECT COUNT(*) FROM items').fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_killed_children_items_are_redelivered_and_stored_once(procs, tmp_path):
    db = tmp_path / 'kills.db'
    n = 20000
    chain = procs.pipeline(
        ['rz-hydrant', '--name', 't', '--run-id', 'kk', 'fixtures_funcs:numbers', str(n)],
        ['rz-notch', '-p', '4', 'fixtures_funcs:slow_identity'],
        ['rz-bocca', f'sqlite:{db}'])
    notch = chain[1]
    rng = random.Random(7)
    kills = 0
    deadline = time.monotonic() + 90
    while kills < 12 and chain[-1].poll() is None and time.monotonic() < deadline:
        wait_for(lambda: len(children_of(notch.pid)) == 4 or chain[-1].poll() is not None,
                 what='four live workers')
        kids = children_of(notch.pid)
        if kids and count(db) < n * 0.9:
            os.kill(rng.choice(kids), signal.SIGKILL)
            kills += 1
        time.sleep(0.15)       # spread the kills over the run; not a synchronisation
    assert kills >= 5, "the run ended before the children could be killed"
    assert [p.wait(timeout=120) for p in chain] == [0, 0, 0], stderr_of(notch)
    with sqlite3.connect(db) as conn:
        ids = [r[0] for r in conn.execute('SELECT rz_id FROM items')]
    assert len(ids) == n and set(ids) == {f't/kk:{i}' for i in range(n)}
    log = stderr_of(notch)
    assert log.count('was killed by SIGKILL; restarting it') == kills


@pytest.mark.parametrize('poison', ['die_on_poison', 'exit_on_poison', 'segfault_on_poison'])
def test_an_item_that_kills_its_worker_is_quarantined(procs, poison):
    chain = procs.pipeline(
        ['rz-hydrant', '--name', 't', '--run-id', 'p', 'fixtures_funcs:numbers', '40'],
        ['rz-notch', '-p', '2', f'fixtures_funcs:{poison}'], ['rz-bocca'])
    out, _ = chain[-1].communicate(timeout=60)
    codes = [p.wait(timeout=30) for p in chain]
    assert codes == [0, exitcodes.FAILED, 0]
    assert sorted(int(x) for x in out.split()) == [i for i in range(40) if i != 13]
    log = stderr_of(chain[1])
    assert "item t/p:13 failed: Quarantined: its worker died running it 3 times" in log
    assert log.count('restarting it') == 3


def test_max_deliveries_sets_the_quarantine_threshold(procs):
    chain = procs.pipeline(
        ['rz-hydrant', '--name', 't', '--run-id', 'q', 'fixtures_funcs:numbers', '20'],
        ['rz-notch', '--max-deliveries', '1', 'fixtures_funcs:die_on_poison'], ['rz-bocca'])
    out, _ = chain[-1].communicate(timeout=60)
    assert [p.wait(timeout=30) for p in chain] == [0, exitcodes.FAILED, 0]
    assert len(out.split()) == 19
    assert "died running it 1 time (the last" in stderr_of(chain[1])


def test_a_notch_whose_every_item_kills_its_worker_gives_up(procs):
    """Five items quarantined in a row with none finished: the node fails (exit 1) rather
    than fork for ever; under rz-worker, backoff and FAILED follow."""
    chain = procs.pipeline(
        ['rz-hydrant', '--name', 't', '--run-id', 'a', 'fixtures_funcs:numbers', '1000'],
        ['rz-notch', '-p', '2', 'fixtures_funcs:abort_always'], ['rz-bocca'])
    out, _ = chain[-1].communicate(timeout=60)
    codes = [p.wait(timeout=60) for p in chain]
    assert codes[1] == exitcodes.FAILED and out == b''
    log = stderr_of(chain[1])
    assert "rz-notch: worker processes died 15 times in a row with no item finished " \
           "between (the last was killed by SIGABRT): every item seems to kill them" in log
    assert log.count('restarting it') == 14


def test_periodic_source_runs_on_the_grid_until_stopped(procs):
    source = procs.start(['rz-hydrant', '--every', '1', '--name', 't', '--run-id', 'x',
                          'fixtures_funcs:numbers', '2'], stdout=subprocess.PIPE)
    assert source.wait(timeout=10) == exitcodes.USAGE
    source = procs.start(['rz-hydrant', '--every', '1', '--name', 'tick',
                          'fixtures_funcs:numbers', '2'], stdout=subprocess.PIPE)
    sink = procs.start(['rz-bocca', '--mode', 'stream'], stdin=source.stdout,
                       stdout=subprocess.PIPE)
    source.stdout.close()
    lines = [sink.stdout.readline() for _ in range(6)]     # three runs of two items
    source.send_signal(signal.SIGTERM)
    assert source.wait(timeout=10) == 0
    rest, _ = sink.communicate(timeout=10)
    assert sink.returncode == 0
    assert [int(x) for x in lines] == [0, 1, 0, 1, 0, 1]
    log = stderr_of(source)
    runs = [line.split('run ')[1].split(' ')[0] for line in log.splitlines()
            if 'complete:' in line]
    assert len(runs) >= 3 and len(set(runs)) == len(runs)
    labels = [run.split('/')[1] for run in runs]
    assert all(label.startswith('20') and label.endswith('Z') for label in labels)
    seconds = [int(label[13:15]) for label in labels]
    assert all((b - a) % 60 == 1 for a, b in zip(seconds, seconds[1:]))


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_a_shell_pipeline_drains_it_within_two_seconds(procs, signum):
    """What a terminal's Ctrl-C does (SIGINT), or timeout(1) and systemd (SIGTERM): the
    signal reaches the whole process group, the notch's workers included."""
    stages = [['rz-hydrant', '--every', '0.05', 'fixtures_funcs:numbers', '100'],
              ['rz-notch', '-p', '2', 'fixtures_funcs:slow_identity'], ['rz-bocca']]
    chain, upstream = [], subprocess.DEVNULL
    for index, args in enumerate(stages):
        group = {'process_group': 0} if not chain else {'process_group': chain[0].pid}
        proc = procs.start(args, stdin=upstream, stdout=subprocess.PIPE, **group)
        if chain:
            chain[-1].stdout.close()
        upstream = proc.stdout
        chain.append(proc)
    sink = chain[-1]
    assert sink.stdout.readline()            # items are flowing
    os.killpg(chain[0].pid, signum)
    stopped = time.monotonic()
    codes = [proc.wait(timeout=10) for proc in chain]
    assert time.monotonic() - stopped < 2.0
    rest = sink.stdout.read()        # not communicate(): it would miss what readline buffered
    # every stage drains: what the source sent on its way out is stored, nothing is lost
    assert codes == [0, 0, 0], [stderr_of(proc) for proc in chain]
    log = stderr_of(chain[0])
    sent = sum(int(n) for n in re.findall(r'complete: (\d+) items', log))
    sent += sum(int(n) for n in re.findall(r'stopped after (\d+) items', log))
    assert 1 + len(rest.splitlines()) == sent
    assert 'was killed by' not in stderr_of(chain[1])     # the workers drained too
    for proc in chain:
        assert 'Traceback' not in stderr_of(proc)


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_a_pipeline_over_zeromq_drains_it_too(procs, signum, tmp_path):
    """The same signal to stages joined by endpoints: each producer says it is stopping
    (DRAIN), so each consumer reads on to its producers' end instead of leaving them
    with items no one takes."""
    first, second = free_port(), free_port()
    db = tmp_path / 'out.db'
    stages = [['rz-hydrant', '--every', '0.05', '--out', f'tcp://127.0.0.1:{first}',
               'fixtures_funcs:numbers', '100'],
              ['rz-notch', '-t', '2', '--in', f'tcp://127.0.0.1:{first}', '--out',
               f'tcp://127.0.0.1:{second}', 'fixtures_options:quarter_second'],
              ['rz-bocca', '--in', f'tcp://127.0.0.1:{second}', f'sqlite:{db}']]
    chain = []
    for args in stages:
        group = {'process_group': 0} if not chain else {'process_group': chain[0].pid}
        chain.append(procs.start(args, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, **group))
    wait_for(lambda: len(stored(db)) >= 10, timeout=30, what='items at the sink')
    os.killpg(chain[0].pid, signum)     # the notch holds more than DRAIN_GRACE of work
    codes = [proc.wait(timeout=30) for proc in chain]
    assert codes == [0, 0, 0], [stderr_of(proc) for proc in chain]
    log = stderr_of(chain[0])
    sent = sum(int(n) for n in re.findall(r'complete: (\d+) items', log))
    sent += sum(int(n) for n in re.findall(r'stopped after (\d+) items', log))
    assert len(stored(db)) == sent
