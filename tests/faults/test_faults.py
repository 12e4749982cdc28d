"""The fault-injection suite: each scenario runs real processes on loopback, injects its
faults, and checks the sink like a set checker (checker.py). Each prints one row of the
table at the end of the run. The default run has a short version of each; `--long` runs
them at full size (100,000 items, a minute of slow sink ...)."""

import calendar
import os
import re
import signal
import subprocess
import time

import pytest
import zmq

import fixtures_cluster as ws
from cluster import rows
from conftest import stderr_of, wait_for
from faults import checker
from rezina import TypologyBuilder
from test_hostile import garbage, hello

pytestmark = [pytest.mark.timeout(600)]


def one_shot(cluster, name, n, notch, processes, out):
    (TypologyBuilder('127.0.0.1', cluster.port, name)
     .add_hydrant(ws.numbers, args=(n,)).add_notch(notch, processes, 1)
     .add_bocca(f"jsonl:{out}")).start()


def complete(cluster, name):
    return any(t['name'] == name and t['state'] == 'COMPLETE' for t in cluster.request('ls'))


def restarted(cluster, name, node_id, old_pid, timeout=30):
    """Seconds until node_id runs again with a new pid (or its run is over)."""
    began = time.monotonic()

    def back():
        return complete(cluster, name) or any(
            n['node_id'] == node_id and n['pid'] not in (None, old_pid)
            and n['state'] in ('RUNNING', 'DONE') for n in cluster.nodes(name))

    wait_for(back, timeout=timeout, what=f'{node_id} back')
    return time.monotonic() - began


def test_1_a_notch_node_killed_every_2_s(cluster, tmp_path, long_run):
    n = 100000 if long_run else 20000
    out = tmp_path / 'out.jsonl'
    one_shot(cluster, 'kill-notch', n, ws.paced, 4, out)
    cluster.wait_running('kill-notch', 'paced', count=4)
    recoveries = []
    for _ in range(200):                        # bounded: one kill every 2 s at most
        if complete(cluster, 'kill-notch'):
            break
        time.sleep(2)                            # the fault's period, not a wait for it
        nodes = [n for n in cluster.nodes('kill-notch', 'paced') if n['pid']]
        if not nodes or complete(cluster, 'kill-notch'):
            continue
        victim = nodes[len(recoveries) % len(nodes)]
        try:
            os.kill(victim['pid'], signal.SIGKILL)
        except ProcessLookupError:      # it ended with the run since the master heard
            continue
        recoveries.append(restarted(cluster, 'kill-notch', victim['node_id'],
                                    victim['pid']))
    wait_for(lambda: complete(cluster, 'kill-notch'), timeout=300, what='the run complete')
    counts = checker.check(range(n), checker.jsonl_values(out))
    checker.record(f"1 kill 1 of 4 notches every 2 s ({len(recoveries)} kills)", counts,
                   recoveries)
    assert recoveries and max(recoveries) < 5
    assert counts['lost'] == 0 and counts['unexpected'] == 0


def test_2_the_sink_killed_three_times(cluster, tmp_path, long_run):
    n = 100000 if long_run else 20000      # long enough for three kills and their restarts
    out = tmp_path / 'out.jsonl'
    one_shot(cluster, 'kill-sink', n, ws.paced, 2, out)
    cluster.wait_running('kill-sink', count=4)
    recoveries = []
    for _ in range(3):
        size = out.stat().st_size if out.exists() else 0
        wait_for(lambda: out.exists() and out.stat().st_size > size, timeout=60,
                 what='the sink writing')
        [sink] = cluster.nodes('kill-sink', 'jsonl')
        if complete(cluster, 'kill-sink'):
            break
        os.kill(sink['pid'], signal.SIGKILL)
        recoveries.append(restarted(cluster, 'kill-sink', sink['node_id'], sink['pid']))
    wait_for(lambda: complete(cluster, 'kill-sink'), timeout=300, what='the run complete')
    counts = checker.check(range(n), checker.jsonl_values(out))
    checker.record(f"2 kill the sink {len(recoveries)} times", counts, recoveries)
    # a node that dies again soon waits longer each time: 1, 2, 4 s (the restart backoff)
    assert len(recoveries) == 3
    assert all(took < 2 ** i + 3 for i, took in enumerate(recoveries)), recoveries
    assert counts['lost'] == 0 and counts['unexpected'] == 0


def test_3_the_master_killed_mid_run_and_restarted(cluster, tmp_path, long_run):
    n = 100000 if long_run else 10000
    out = tmp_path / 'out.jsonl'
    one_shot(cluster, 'kill-master', n, ws.paced, 2, out)
    cluster.wait_running('kill-master', count=4)
    wait_for(lambda: len(checker.jsonl_values(out)) > n // 10, timeout=60, what='a tenth')
    os.kill(cluster.master.pid, signal.SIGKILL)
    cluster.master.wait(timeout=10)
    began = time.monotonic()
    cluster.start_master()
    wait_for(lambda: complete(cluster, 'kill-master') or cluster.running('kill-master'),
             timeout=30, what='re-attached')
    recovery = time.monotonic() - began
    wait_for(lambda: complete(cluster, 'kill-master'), timeout=300, what='the run complete')
    counts = checker.check(range(n), checker.jsonl_values(out))
    checker.record("3 kill the master mid-run, restart it", counts, [recovery])
    assert counts['lost'] == 0 and counts['unexpected'] == 0 and counts['duplicated'] == 0


def cpu_seconds(pid):
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def test_6_a_function_that_aborts_on_every_item(cluster, tmp_path, long_run):
    n = 20000 if long_run else 2000
    out = tmp_path / 'out.jsonl'
    (TypologyBuilder('127.0.0.1', cluster.port, 'aborts')
     .add_hydrant(ws.numbers, args=(10,)).add_notch(ws.aborts)
     .add_bocca(f"jsonl:{tmp_path / 'never.jsonl'}")).start(interval=5)
    cpu_before, began = cpu_seconds(cluster.master.pid), time.monotonic()
    one_shot(cluster, 'bystander', n, ws.record, 2, out)
    wait_for(lambda: complete(cluster, 'bystander'), timeout=120, what='the bystander')
    wait_for(lambda: [x['state'] for x in cluster.nodes('aborts', 'aborts')] == ['FAILED'],
             timeout=120, what='the aborting node FAILED')
    cpu = (cpu_seconds(cluster.master.pid) - cpu_before) / (time.monotonic() - began)
    counts = checker.check(range(n), checker.jsonl_values(out))
    checker.record(f"6 os.abort() on every item (master CPU {cpu:.0%})", counts, [])
    assert counts['lost'] == 0 and counts['duplicated'] == 0
    assert cluster.nodes('aborts', 'aborts')[0]['restarts'] == 4
    assert cpu < 0.25


def test_7_one_poison_item_goes_to_the_error_sink(procs, tmp_path, long_run):
    n = 100000 if long_run else 20000
    out, errors = tmp_path / 'out.jsonl', tmp_path / 'errors.db'
    chain = procs.pipeline(['rz-hydrant', 'fixtures_cluster:numbers', str(n)],
                           ['rz-notch', '--retries', '2', '--errors', f'sqlite:{errors}',
                            'fixtures_cluster:poison'],
                           ['rz-bocca', f'jsonl:{out}'])
    for proc in chain:
        proc.wait(timeout=300)
    assert [p.returncode for p in chain] == [0, 1, 0], [stderr_of(p) for p in chain]
    counts = checker.check(set(range(n)) - {777}, checker.jsonl_values(out))
    [(error, attempts, traceback)] = rows(errors, 'SELECT error, attempts, traceback '
                                                  'FROM items')
    checker.record("7 one poison item in the run", counts, [])
    assert (error, attempts) == ('ValueError', 3) and 'item 777 is poison' in traceback
    assert counts == {'attempted': n - 1, 'stored': n - 1, 'lost': 0, 'duplicated': 0,
                      'unexpected': 0}


def test_9_a_garbage_flood_on_a_stage_socket_during_a_run(procs, tmp_path, long_run):
    import random
    from test_edges import free_port
    n = 100000 if long_run else 5000
    src = free_port()
    out = tmp_path / 'out.jsonl'
    notch = procs.start(['rz-notch', '--in', f'@tcp://127.0.0.1:{src}', '--producers', '1',
                         'fixtures_cluster:paced'], stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE)
    sink = procs.start(['rz-bocca', f'jsonl:{out}'], stdin=notch.stdout)
    notch.stdout.close()
    source = procs.start(['rz-hydrant', '--out', f'>tcp://127.0.0.1:{src}',
                          'fixtures_cluster:numbers', str(n)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL)
    wait_for(lambda: len(checker.jsonl_values(out)) > 100, timeout=60, what='items flowing')
    context = zmq.Context()
    intruder = context.socket(zmq.DEALER)
    intruder.setsockopt(zmq.LINGER, 0)
    intruder.connect(f'tcp://127.0.0.1:{src}')
    try:
        rng = random.Random(9)
        for _ in range(10000):
            intruder.send_multipart(garbage(rng))
        intruder.send_multipart([hello(version=2)])
    finally:
        intruder.close()
        context.term()
    for proc in (source, notch, sink):
        assert proc.wait(timeout=300) == 0, stderr_of(proc)
    counts = checker.check(range(n), checker.jsonl_values(out))
    checker.record("9 10,000 garbage frames on a stage socket", counts, [])
    assert 'dropped' in stderr_of(notch)
    assert counts == {'attempted': n, 'stored': n, 'lost': 0, 'duplicated': 0,
                      'unexpected': 0}


def test_10_a_periodic_typology_with_its_master_down_for_a_while(cluster, tmp_path,
                                                                 long_run):
    """Every tick that fires runs once and is stored whole; while the master is down the
    hydrant keeps the grid, so no tick is missed, and the runs made then are recorded
    when it is back."""
    seconds, down = (120, 10) if long_run else (12, 4)
    db = tmp_path / 'out.db'
    # stream mode: each run is stored well within its second, so no tick is skipped
    (TypologyBuilder('127.0.0.1', cluster.port, 'ticks')
     .add_hydrant(ws.numbers, args=(5,)).add_notch(ws.record)
     .add_bocca(f"sqlite:{db}", persistent_mode='stream')).start(interval=1)
    cluster.wait_running('ticks', count=3)
    began = time.monotonic()
    time.sleep((seconds - down) / 2)             # the schedule runs: the fault's timing
    os.kill(cluster.master.pid, signal.SIGKILL)
    cluster.master.wait(timeout=10)
    time.sleep(down)                              # the master is down this long
    restarting = time.monotonic()
    cluster.start_master()
    wait_for(lambda: cluster.running('ticks', count=3), timeout=30, what='re-attached')
    recovery = time.monotonic() - restarting
    time.sleep(max(0.0, seconds - (time.monotonic() - began)))
    cluster.request('stop', typology='ticks')
    wait_for(lambda: cluster.request('ls')[0]['state'] == 'STOPPED', timeout=40,
             what='stopped')

    recorded = cluster.request('runs', typology='ticks', limit=1000)
    runs = [r for r in recorded if r['state'] == 'complete']
    ticks = {r['run_id'] for r in runs}
    attempted = [(run, x) for run in ticks for x in range(5)]
    # a run cut short by the stop at the end is neither attempted whole nor unexpected
    cut = {r['run_id'] for r in recorded} - ticks
    stored = [row for row in rows(db, 'SELECT rz_run, x FROM items') if row[0] not in cut]
    counts = checker.check(attempted, stored)
    stamps = sorted(int(r['started'] + 0.5) for r in runs)
    # a tick that comes while the run before is in flight is skipped, as the overlap
    # policy says, and logged (a loaded machine can make a first run slower than 1 s)
    skipped = {tick_of(stamp) for stamp in
               re.findall(r"tick (\d{8}T\d{6}Z) skipped", cluster.log('ticks'))}
    missed = sum(1 for a, b in zip(stamps, stamps[1:]) for t in range(a + 1, b)
                 if t not in skipped)
    checker.record(f"10 every 1 s, master down {down} s ({len(runs)} runs, "
                   f"{len(skipped)} skipped, {missed} missed)", counts, [recovery])
    assert len(runs) >= seconds - 3 - len(skipped)
    assert len(set(stamps)) == len(stamps) and missed == 0
    assert counts['lost'] == 0 and counts['unexpected'] == 0


def descendants(pid):
    """pid and every process under it."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            with open(f'/proc/{current}/task/{current}/children') as f:
                todo.extend(int(p) for p in f.read().split())
        except OSError:
            pass
    return found


def test_4_a_whole_worker_stopped_for_a_while(cluster, tmp_path, long_run):
    """SIGSTOP a worker and all its nodes; their nodes are placed on the other worker
    within 5 s; on SIGCONT the old nodes are stopped, and no item is stored twice."""
    paused = 30 if long_run else 6
    db = tmp_path / 'out.db'
    (TypologyBuilder('127.0.0.1', cluster.port, 'paused')
     .add_hydrant(ws.numbers, args=(5,)).add_notch(ws.record, 2, 1)
     .add_bocca(f"sqlite:{db}", persistent_mode='stream')).start(interval=1)
    nodes = cluster.wait_running('paused', count=4)
    victim = '127.0.0.3'
    moved = {n['node_id'] for n in nodes if n['worker'].endswith(victim)}
    frozen = descendants(cluster.workers[victim].pid)
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        wait_for(lambda: all(n['worker'].endswith('127.0.0.2') and n['state'] == 'RUNNING'
                             for n in cluster.nodes('paused')), timeout=30,
                 what='nodes placed on the other worker')
        replaced = time.monotonic() - stopped_at
        time.sleep(max(0.0, paused - replaced))   # the worker stays stopped this long
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    old = [pid for pid in frozen[1:]]
    wait_for(lambda: not any(os.path.exists(f'/proc/{pid}') and
                             open(f'/proc/{pid}/stat').read().split()[2] != 'Z'
                             for pid in old), timeout=60, what='the old nodes gone')
    wait_for(lambda: cluster.worker_state(victim) == 'ONLINE', what='the worker back')
    cluster.request('stop', typology='paused')
    wait_for(lambda: cluster.request('ls')[0]['state'] == 'STOPPED', timeout=40,
             what='stopped')

    recorded = cluster.request('runs', typology='paused', limit=1000)
    complete = {r['run_id'] for r in recorded if r['state'] == 'complete'}
    cut = {r['run_id'] for r in recorded} - complete
    stored = [row for row in rows(db, 'SELECT rz_run, x FROM items') if row[0] not in cut]
    counts = checker.check([(run, x) for run in complete for x in range(5)], stored)
    checker.record(f"4 a worker stopped {paused} s ({len(moved)} nodes moved)", counts,
                   [replaced])
    assert moved and replaced < 8.5               # 3 s to notice, 5 s to place
    assert counts['lost'] == 0 and counts['unexpected'] == 0


def tick_of(stamp):
    """Epoch seconds of a tick as the hydrant logs it (UTC, 20261205T022420Z)."""
    return calendar.timegm(time.strptime(stamp, '%Y%m%dT%H%M%SZ'))

