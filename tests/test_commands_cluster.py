"""rz, rezina-cli and the -D and -R options against a real rz-master and rz-workers."""

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request

import pytest

import fixtures_cluster as ws
from cluster import Cluster
from conftest import finish, stderr_of, wait_for
from rezina import TypologyBuilder
from rezina.control.daemon import read_pid

pytestmark = pytest.mark.timeout(180)


def rz(procs, cluster, *args):
    proc = procs.start(['rz', '-P', str(cluster.port), *args], stdout=subprocess.PIPE,
                       stdin=subprocess.DEVNULL)
    status, out, err = finish(proc, timeout=30)
    return status, out.decode(), err


def test_rz_shows_and_steers_a_running_typology(cluster, procs, tmp_path):
    (TypologyBuilder('127.0.0.1', cluster.port, 'shown')
     .add_hydrant(ws.numbers, args=(5,)).add_notch(ws.record)
     .add_bocca(f"sqlite:{tmp_path / 'o.db'}")).start(interval=1)
    cluster.wait_running('shown', count=3)

    status, out, _ = rz(procs, cluster, 'workers')
    assert status == 0 and '127.0.0.2' in out and '127.0.0.3' in out and 'ONLINE' in out
    status, out, _ = rz(procs, cluster, 'ls')
    assert status == 0 and 'shown' in out and 'every 1s' in out
    status, out, _ = rz(procs, cluster, 'ps', 'shown', '--json')
    assert [n['stage'] for n in json.loads(out)] == ['numbers', 'record', 'sqlite']

    status, out, _ = rz(procs, cluster, 'scale', 'shown', 'record', '2')
    assert (status, out.strip()) == (0, 'shown: record: 2 nodes (was 1)')
    cluster.wait_running('shown', 'record', count=2)
    wait_for(lambda: len(cluster.request('runs', typology='shown')) >= 2, timeout=20,
             what='two runs')
    status, out, _ = rz(procs, cluster, 'runs', 'shown')
    assert status == 0 and 'shown.numbers/' in out
    status, out, _ = rz(procs, cluster, 'logs', 'shown', '-n', '5')
    assert status == 0 and len(out.splitlines()) == 5 and 'shown::' in out

    status, out, _ = rz(procs, cluster, 'stop', 'shown')
    assert (status, out.strip()) == (0, 'shown: STOPPING')
    status, out, err = rz(procs, cluster, 'remove', 'shown')    # goes once it has stopped
    assert status == 0 and out.strip() in ('shown: STOPPING', 'shown: REMOVED'), err
    wait_for(lambda: cluster.request('ls') == [], timeout=40, what='removed')
    status, _, err = rz(procs, cluster, 'ps', 'shown')
    assert status == 1 and err.strip() == "rz: unknown typology 'shown'"
    status, out, _ = rz(procs, cluster, 'runs', 'shown', '--json')
    assert status == 0 and len(json.loads(out)) >= 2     # its history stays


def test_daemons_write_their_pid_files_and_stop_on_sigterm(procs, tmp_path):
    c = Cluster(procs, tmp_path)
    started = procs.start(['rezina-cli', 'runmaster', '-H', '127.0.0.1', '-P', str(c.port),
                           '-D', '-L', str(c.logs), '-W', str(c.workspace), '-HP', '0',
                           '--state-dir', str(c.state)], stdin=subprocess.DEVNULL)
    assert started.wait(timeout=30) == 0, stderr_of(started)
    master = read_pid(c.state / 'master.pid')
    worker = None
    try:
        assert master and master != started.pid
        assert c.answers()
        root = tmp_path / 'root'
        w = procs.start(['rz-worker', '-P', str(c.port), '--worker-ip', '127.0.0.2', '-D',
                         '--root', str(root)], stdin=subprocess.DEVNULL)
        assert w.wait(timeout=30) == 0, stderr_of(w)
        worker = read_pid(root / 'worker-127.0.0.2.pid')
        wait_for(lambda: c.worker_state('127.0.0.2') == 'ONLINE', what='the worker online')
        assert 'rz-master listening' in (c.logs / 'master.log').read_text()
    finally:
        for pid in (worker, master):
            if pid:
                os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not (c.state / 'master.pid').exists()
             and not (tmp_path / 'root' / 'worker-127.0.0.2.pid').exists(), timeout=40,
             what='the daemons gone')


def test_reset_forgets_the_saved_state(procs, tmp_path):
    c = Cluster(procs, tmp_path)
    c.start_master()
    c.start_worker('127.0.0.2')
    (TypologyBuilder('127.0.0.1', c.port, 'kept')
     .add_hydrant(ws.numbers).add_bocca('null')).start(interval=60)
    os.kill(c.master.pid, signal.SIGTERM)
    assert c.master.wait(timeout=20) == 0
    c.start_master()
    assert [t['name'] for t in c.request('ls')] == ['kept']
    os.kill(c.master.pid, signal.SIGTERM)
    assert c.master.wait(timeout=20) == 0
    c.start_master('-R')
    assert c.request('ls') == []
    assert 'forgot the saved state' in stderr_of(c.master)
    # the worker's node of the forgotten typology is stopped: nothing wants it
    wait_for(lambda: [w['nodes'] for w in c.request('workers')] == [0], what='no nodes')


def test_the_http_api_answers_as_rz_and_acts_only_with_the_token(cluster, tmp_path):
    (TypologyBuilder('127.0.0.1', cluster.port, 'web')
     .add_hydrant(ws.numbers).add_notch(ws.record).add_bocca('null')).start(interval=1)
    cluster.wait_running('web', count=3)
    assert f'HTTP API on http://127.0.0.1:{cluster.http_port}' in stderr_of(cluster.master)
    base = f'http://127.0.0.1:{cluster.http_port}'

    def call(method, path, body=None, token=None):
        headers = {'Content-Type': 'application/json'}
        if token:
            headers['Authorization'] = f'Bearer {token}'
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(base + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    status, body = call('GET', '/api/typologies')
    assert status == 200 and [t['name'] for t in body['result']] == ['web']
    status, body = call('GET', '/api/typologies/web')
    assert status == 200 and [s['stage'] for s in body['result']['stages']] == \
        ['numbers', 'record', 'null']
    status, _ = call('POST', '/api/typologies/web/scale', {'stage': 'record', 'n': 2})
    assert status == 401
    assert len(cluster.nodes('web', 'record')) == 1
    token = (cluster.state / 'token').read_text().strip()
    status, body = call('POST', '/api/typologies/web/scale', {'stage': 'record', 'n': 2},
                        token=token)
    assert status == 200 and body['result']['nodes'] == 2
    cluster.wait_running('web', 'record', count=2)
