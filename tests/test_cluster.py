"""rz-master and two rz-workers on loopback (127.0.0.2, 127.0.0.3), running typologies
given by TypologyBuilder: schedules on the grid, placement, restarts and moves."""

import datetime
import os
import socket
import signal
import subprocess
import time

import pytest

import fixtures_cluster as ws
from cluster import rows, time_until
from conftest import stderr_of, wait_for
from rezina import TypologyBuilder
from rezina.errors import RezinaError

pytestmark = pytest.mark.timeout(180)



def builder(cluster, name, n=10, processes=2, notch=ws.record, db=None):
    return (TypologyBuilder('127.0.0.1', cluster.port, name)
            .add_hydrant(ws.numbers, args=(n,))
            .add_notch(notch, processes, 2)
            .add_bocca(f"sqlite:{db}"))


def runs_stored(db):
    """{run id: items stored} of a sink database."""
    counts = {}
    for _, run in rows(db):
        counts[run] = counts.get(run, 0) + 1
    return counts


def test_a_periodic_typology_runs_every_2_s_on_the_grid_across_both_workers(cluster,
                                                                           tmp_path):
    db = tmp_path / 'out.db'
    answer = builder(cluster, 'grid', db=db).start(interval=2)
    assert answer['typology'] == 'grid'
    nodes = cluster.wait_running('grid', count=4)
    notches = [n for n in nodes if n['stage'] == 'record']
    assert {n['worker'].split(':')[-1] for n in notches} == {'127.0.0.2', '127.0.0.3'}

    wait_for(lambda: len([r for r in cluster.request('runs', typology='grid')
                          if r['state'] == 'complete']) >= 3, timeout=30, what='3 runs')
    runs = [r for r in cluster.request('runs', typology='grid') if r['state'] == 'complete']
    for run in runs:
        # the run id names its tick: the wall time is a multiple of 2 s
        stamp = run['run_id'].rsplit('/', 1)[1]
        assert int(stamp[-3:-1]) % 2 == 0, run
        assert run['items'] == 10
    # consecutive ticks of the grid, 2 s apart (4 s where one was skipped, its run still
    # in flight); their recorded starts follow the ticks
    ticks = sorted(datetime.datetime.strptime(r['run_id'].rsplit('/', 1)[1], '%Y%m%dT%H%M%SZ')
                   .replace(tzinfo=datetime.timezone.utc).timestamp() for r in runs)
    assert all(b - a in (2, 4) for a, b in zip(ticks, ticks[1:])), ticks
    assert all(abs(r['started'] - tick) < 1.5
               for r, tick in zip(sorted(runs, key=lambda r: r['run_id']), ticks))
    wait_for(lambda: all(runs_stored(db).get(r['run_id']) == 10 for r in runs),
             what='the runs stored')

    [typology] = cluster.request('ls')
    assert typology['state'] == 'RUNNING' and typology['schedule']['interval'] == 2.0
    assert typology['next_run'] > time.time() - 0.5
    assert 'grid.numbers: first run at' in cluster.log('grid')

    assert cluster.request('stop', typology='grid')['state'] == 'STOPPING'
    # its consumers (--follow) drain with their producers, not after DRAIN_TIMEOUT
    took = time_until(lambda: cluster.request('ls')[0]['state'] == 'STOPPED', 40)
    assert took is not None and took < 10, took
    assert 'exited with status 143' not in cluster.log('grid')
    assert cluster.request('ps', typology='grid') == []
    assert cluster.request('remove', typology='grid')['state'] == 'REMOVED'
    assert cluster.request('ls') == []


def test_a_killed_notch_node_is_restarted_within_5_s_and_its_run_loses_nothing(cluster,
                                                                             tmp_path):
    db = tmp_path / 'out.db'
    builder(cluster, 'kill', n=40, processes=1, notch=ws.slow_record, db=db).start(interval=3)
    [notch] = cluster.wait_running('kill', 'slow_record', count=1)
    wait_for(lambda: len(rows(db)) > 0, timeout=30, what='items stored')
    os.kill(notch['pid'], signal.SIGKILL)
    back = time_until(lambda: any(n['pid'] not in (None, notch['pid'])
                                  and n['state'] == 'RUNNING'
                                  for n in cluster.nodes('kill', 'slow_record')), 10)
    assert back is not None and back < 5, back
    assert cluster.nodes('kill', 'slow_record')[0]['restarts'] == 1

    # every run that began before the kill and after it is stored whole
    wait_for(lambda: len([r for r in cluster.request('runs', typology='kill')
                          if r['state'] == 'complete']) >= 3, timeout=60, what='3 runs')
    done = [r['run_id'] for r in cluster.request('runs', typology='kill')
            if r['state'] == 'complete']
    wait_for(lambda: all(runs_stored(db).get(run) == 40 for run in done), timeout=30,
             what='every complete run stored whole')
    assert set(runs_stored(db)) >= set(done)


def test_a_killed_worker_has_its_nodes_moved_to_the_other_within_5_s(cluster, tmp_path):
    db = tmp_path / 'out.db'
    builder(cluster, 'move', n=5, processes=2, db=db).start(interval=1)
    nodes = cluster.wait_running('move', count=4)
    victim = '127.0.0.3'
    moved = [n['node_id'] for n in nodes if n['worker'].endswith(victim)]
    assert moved, nodes
    os.kill(cluster.workers[victim].pid, signal.SIGKILL)
    offline = time_until(lambda: cluster.worker_state(victim) == 'OFFLINE', 15)
    assert offline is not None and offline < 5, offline
    placed = time_until(lambda: all(
        n['worker'].endswith('127.0.0.2') and n['state'] == 'RUNNING'
        for n in cluster.nodes('move')), 15)
    assert placed is not None and placed < 5, placed
    before = len(rows(db))
    wait_for(lambda: len(rows(db)) > before + 10, timeout=30, what='runs after the move')


def test_a_function_that_does_not_import_fails_its_node_and_the_master_answers(cluster,
                                                                               tmp_path):
    # in the workspace and compiles, but needs what the workers do not have
    (cluster.workspace / 'needs_more.py').write_text(
        "import no_such_dependency\n\n\ndef numbers():\n    return [1]\n")
    spec = builder(cluster, 'broken', db=tmp_path / 'out.db').spec(interval=5)
    spec['sources'][0]['target'] = 'needs_more:numbers'
    cluster.request('start', spec=spec)
    answers = []

    def failed():
        began = time.monotonic()
        nodes = cluster.nodes('broken', 'numbers')
        answers.append(time.monotonic() - began)
        return nodes and nodes[0]['state'] == 'FAILED'

    wait_for(failed, timeout=60, what='the hydrant node FAILED')
    node = cluster.nodes('broken', 'numbers')[0]
    assert node['restarts'] == 4
    assert "No module named 'no_such_dependency'" in node['last_error'], node
    assert max(answers) < 1.0
    [typology] = cluster.request('ls')
    assert typology['state'] == 'DEGRADED' and typology['failed_nodes'] == 1
    assert cluster.nodes('broken', 'numbers')[0]['state'] == 'FAILED'
    # its consumers wait for a producer to read from; nothing else is started
    assert {n['state'] for n in cluster.nodes('broken', 'record')} == {'WAITING'}
    assert "No module named 'no_such_dependency'" in cluster.log('broken')


def test_a_killed_master_leaves_the_items_flowing_and_reattaches_when_restarted(
        cluster, tmp_path):
    db = tmp_path / 'out.db'
    builder(cluster, 'steady', n=5, db=db).start(interval=1)
    before = {n['node_id']: n['pid'] for n in cluster.wait_running('steady', count=4)}
    wait_for(lambda: runs_stored(db), timeout=30, what='a run stored')

    os.kill(cluster.master.pid, signal.SIGKILL)
    cluster.master.wait(timeout=10)
    stored = set(runs_stored(db))
    wait_for(lambda: len(set(runs_stored(db)) - stored) >= 3, timeout=30,
             what='runs stored with the master down')

    cluster.start_master()
    wait_for(lambda: cluster.running('steady', count=4), timeout=20, what='re-attached')
    after = {n['node_id']: n['pid'] for n in cluster.nodes('steady')}
    assert after == before                              # the same processes, adopted
    assert all(n['restarts'] == 0 for n in cluster.nodes('steady'))
    assert cluster.request('ls')[0]['state'] == 'RUNNING'

    # the runs made while it was down are recorded once, each stored whole, on the grid
    wait_for(lambda: set(runs_stored(db)) <= {r['run_id'] for r in cluster.request(
        'runs', typology='steady', limit=1000)}, timeout=20, what='the runs recorded')
    runs = cluster.request('runs', typology='steady', limit=1000)
    ids = [r['run_id'] for r in runs]
    assert len(ids) == len(set(ids))
    stamps = sorted(int(r['started'] + 0.5) for r in runs)
    assert len(stamps) == len(set(stamps))              # no tick ran twice
    counts = runs_stored(db)
    assert all(counts[r['run_id']] == 5 for r in runs if r['state'] == 'complete')


def test_scale_up_and_down_mid_run_stores_every_item_once(cluster, tmp_path):
    out = tmp_path / 'out.jsonl'
    (TypologyBuilder('127.0.0.1', cluster.port, 'scaled')
     .add_hydrant(ws.numbers, args=(3000,))
     .add_notch(ws.slowish, 1, 2)
     .add_bocca(f"jsonl:{out}")).start()
    cluster.wait_running('scaled', 'slowish', count=1)

    def stored():
        return out.read_text().count('\n') if out.exists() else 0

    wait_for(lambda: stored() > 100, timeout=30, what='items stored')
    answer = cluster.request('scale', typology='scaled', stage='slowish', n=3)
    assert answer == {'typology': 'scaled', 'stage': 'slowish', 'nodes': 3, 'was': 1}
    nodes = cluster.wait_running('scaled', 'slowish', count=3)
    assert len({n['worker'] for n in nodes}) == 2
    wait_for(lambda: sum(n['items_in'] or 0 for n in cluster.nodes('scaled', 'slowish')
                         if n['index'] > 0) > 0, timeout=30, what='the new nodes at work')
    # a typo of a count (two workers of 4 slots: at most 32 nodes a stage) is refused
    with pytest.raises(RezinaError, match=r'scale scaled slowish 1000: .* at most 32 nodes'):
        cluster.request('scale', typology='scaled', stage='slowish', n=1000)
    cluster.request('scale', typology='scaled', stage=1, n=1)
    # one node left, or none once the run is over (it may end before a look sees one)
    wait_for(lambda: len(cluster.nodes('scaled', 'slowish')) == 1
             or cluster.request('ls')[0]['state'] == 'COMPLETE', timeout=40,
             what='scaled down')
    wait_for(lambda: cluster.request('ls')[0]['state'] == 'COMPLETE', timeout=90,
             what='the run complete')
    wait_for(lambda: all(f'scaled::slowish::{i}: stopped' in ''.join(
        stderr_of(w) for w in cluster.workers.values()) for i in (1, 2)), timeout=40,
        what='the two added nodes stopped by the scale-down')
    import json
    xs = [json.loads(line)['x'] for line in out.read_text().splitlines()]
    assert sorted(xs) == list(range(3000))              # each once: none lost, none twice
    assert len({json.loads(line)['pid'] for line in out.read_text().splitlines()}) >= 2


def test_a_second_worker_with_the_same_address_is_refused(cluster, procs, tmp_path):
    second = procs.start(['rz-worker', '-P', str(cluster.port), '--worker-ip', '127.0.0.2',
                          '--root', str(tmp_path / 'second')], stdin=subprocess.DEVNULL)
    assert second.wait(timeout=20) == 1
    assert stderr_of(second).splitlines()[-1].endswith(
        "refused this worker: another rz-worker is online as "
        f"{socket.gethostname()}:127.0.0.2 (same host and --worker-ip): give this one "
        "another --worker-ip")
    assert cluster.worker_state('127.0.0.2') == 'ONLINE'


def test_a_worker_stopped_by_sigterm_says_goodbye_and_its_nodes_move_at_once(cluster,
                                                                             tmp_path):
    builder(cluster, 'bye', n=3, processes=2, db=tmp_path / 'o.db').start(interval=1)
    nodes = cluster.wait_running('bye', count=4)
    assert any(n['worker'].endswith('127.0.0.3') for n in nodes)
    worker = cluster.workers['127.0.0.3']
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=40) == 0, stderr_of(worker)
    stopped = time.monotonic()
    assert cluster.worker_state('127.0.0.3') == 'OFFLINE'
    wait_for(lambda: all(n['worker'].endswith('127.0.0.2') and n['state'] == 'RUNNING'
                         for n in cluster.nodes('bye')), timeout=10, what='nodes moved')
    assert time.monotonic() - stopped < 3.0        # not the 3 s of a silent worker


def test_a_runs_failed_items_count_those_of_every_stage(cluster, tmp_path):
    builder(cluster, 'picky', n=7, processes=1, notch=ws.picky,
            db=tmp_path / 'o.db').start(interval=1)

    def complete():
        return [r for r in cluster.request('runs', typology='picky')
                if r['state'] == 'complete']

    wait_for(lambda: any(r['failed'] == 3 for r in complete()), timeout=30,
             what='a run with its 3 failed items')
    run = next(r for r in complete() if r['failed'] == 3)
    assert run['items'] == 7
    wait_for(lambda: len(rows(tmp_path / 'o.db', f"SELECT x FROM items WHERE rz_run = "
                                                 f"'{run['run_id']}'")) == 4,
             what='the 4 good items stored')


def test_a_one_shot_notch_that_failed_some_items_is_done_not_restarted(cluster, tmp_path):
    # it exits 1 (its items failed), having ended its stream: no crash to restart
    builder(cluster, 'once', n=7, processes=1, notch=ws.picky, db=tmp_path / 'o.db').start()
    wait_for(lambda: cluster.request('ls')[0]['state'] == 'COMPLETE', timeout=30,
             what='the run complete')
    wait_for(lambda: 'some items failed' in ''.join(stderr_of(w)
                                                    for w in cluster.workers.values()),
             timeout=10, what="the notch's end in its worker's log")
    logs = ''.join(stderr_of(w) for w in cluster.workers.values())
    assert 'once::picky::0: done (exited with status 1: some items failed)' in logs, logs
    assert 'restart in' not in logs, logs


def test_the_nodes_of_a_silent_worker_with_nowhere_to_move_show_as_unknown(procs, tmp_path):
    from cluster import Cluster
    lone = Cluster(procs, tmp_path)
    lone.start_master()
    worker = lone.start_worker('127.0.0.2')
    builder(lone, 'alone', n=3, processes=1, db=tmp_path / 'o.db').start(interval=1)
    lone.wait_running('alone', count=3)
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: lone.worker_state('127.0.0.2') == 'OFFLINE', timeout=15,
                 what='the worker offline')
        assert {n['state'] for n in lone.nodes('alone')} == {'UNKNOWN'}
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    wait_for(lambda: {n['state'] for n in lone.nodes('alone')} == {'RUNNING'}, timeout=15,
             what='its nodes heard from again')
