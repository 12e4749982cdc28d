"""Typologies changed while they and others run: a new schedule, new code, two at once;
and the state dir one master holds."""

import subprocess

import pytest

import fixtures_cluster as ws
from cluster import rows
from conftest import stderr_of, wait_for
from rezina import TypologyBuilder
from rezina.errors import RezinaError

pytestmark = pytest.mark.timeout(180)



def typology(cluster, name, db, notch=ws.version):
    return (TypologyBuilder('127.0.0.1', cluster.port, name)
            .add_hydrant(ws.numbers, args=(3,)).add_notch(notch)
            .add_bocca(f"sqlite:{db}"))


def pids(cluster, name):
    return {n['node_id']: n['pid'] for n in cluster.nodes(name)}


def test_a_schedule_change_replaces_only_the_hydrant(cluster, tmp_path):
    db = tmp_path / 'a.db'
    typology(cluster, 'a', db).start(interval=5)
    other = typology(cluster, 'b', tmp_path / 'b.db')
    other.start(interval=1)
    before = {n['node_id']: n['pid'] for n in cluster.wait_running('a', count=3)}
    others = {n['node_id']: n['pid'] for n in cluster.wait_running('b', count=3)}

    typology(cluster, 'a', db).restart(interval=1)
    wait_for(lambda: cluster.running('a', count=3) and pids(cluster, 'a')['a::numbers::0']
             != before['a::numbers::0'], timeout=40, what='a new hydrant')
    after = pids(cluster, 'a')
    assert after['a::version::0'] == before['a::version::0']
    assert after['a::sqlite::0'] == before['a::sqlite::0']
    assert pids(cluster, 'b') == others
    assert cluster.request('ls')[0]['schedule']['interval'] == 1.0
    runs = len(cluster.request('runs', typology='a'))
    wait_for(lambda: len(cluster.request('runs', typology='a')) >= runs + 3, timeout=20,
             what='runs every second')

    cluster.request('stop', typology='b')
    wait_for(lambda: cluster.request('ls')[1]['state'] == 'STOPPED', timeout=40,
             what='b stopped')
    assert pids(cluster, 'a') == after
    cluster.request('remove', typology='b')
    assert [t['name'] for t in cluster.request('ls')] == ['a']


def test_a_typology_runs_the_code_it_was_submitted_with_until_restarted(cluster, tmp_path):
    db = tmp_path / 'v.db'
    typology(cluster, 'v', db).start(interval=1)
    cluster.wait_running('v', count=3)
    code = (cluster.workspace / 'fixtures_cluster.py').read_text()
    (cluster.workspace / 'fixtures_cluster.py').write_text(
        code.replace("'version': 1", "'version': 2"))
    wait_for(lambda: len(rows(db, 'SELECT version FROM items')) >= 9, timeout=30,
             what='three runs')
    assert {v for v, in rows(db, 'SELECT version FROM items')} == {1}

    cluster.request('restart', typology='v')
    wait_for(lambda: (2,) in rows(db, 'SELECT version FROM items'), timeout=60,
             what='the edited code running')
    snapshots = {n['node_id'] for n in cluster.nodes('v')}
    assert snapshots == {'v::numbers::0', 'v::version::0', 'v::sqlite::0'}


def test_a_second_master_on_the_same_state_dir_refuses_to_start(cluster, procs):
    second = procs.start(['rz-master', '-P', '0', '--http-port', '0', '--state-dir',
                          str(cluster.state)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL)
    assert second.wait(timeout=20) == 1
    assert stderr_of(second).strip() == (
        f"rz-master: another rz-master (pid {cluster.master.pid}) is using "
        f"{cluster.state}")


def test_code_that_is_not_in_the_workspace_or_does_not_compile_is_refused_at_submit(
        cluster, tmp_path):
    module = cluster.workspace / 'fixtures_cluster.py'
    code = module.read_text()
    module.rename(cluster.workspace / 'elsewhere.py')
    with pytest.raises(RezinaError) as caught:
        typology(cluster, 'x', tmp_path / 'x.db').start(interval=1)
    assert str(caught.value) == (
        f"typology x: module 'fixtures_cluster' (of fixtures_cluster:numbers) is not in the "
        f"workspace {cluster.workspace}, nor installed where rz-master runs")
    assert cluster.request('ls') == []

    module.write_text(code)
    typology(cluster, 'x', tmp_path / 'x.db').start(interval=1)
    before = pids(cluster, 'x') if cluster.wait_running('x', count=3) else None
    module.write_text(code + "\ndef broken(:\n")
    with pytest.raises(RezinaError) as caught:
        cluster.request('restart', typology='x')
    assert str(caught.value).startswith(
        f"typology x: {cluster.workspace}/fixtures_cluster.py line ")
    assert pids(cluster, 'x') == before             # the running one was left alone
    assert cluster.request('ls')[0]['state'] == 'RUNNING'
