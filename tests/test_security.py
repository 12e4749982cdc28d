"""CURVE on every socket: key files, edges that let in only allowed keys, a master and
workers that refuse unknown peers, and no plain bind outside loopback without --insecure."""

import json
import os
import stat
import subprocess

import pytest
import zmq.auth

import fixtures_cluster as ws
from cluster import Cluster, rows
from conftest import command, stderr_of, wait_for
from rezina import TypologyBuilder
from rezina.backends import PlainFile
from rezina.errors import RezinaError
from rezina.security import write_key_pair
from test_edges import free_port

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def keys(tmp_path):
    """Key pairs a, b and c in tmp/keys; tmp/keys/allow holds b's public key only."""
    directory = tmp_path / 'keys'
    (directory / 'allow').mkdir(parents=True)
    for name in 'abc':
        write_key_pair(str(directory), name)
    os.link(directory / 'b.key', directory / 'allow' / 'b.key')
    return directory


def test_rz_keygen_writes_a_pair_zmq_auth_reads_and_keeps_the_secret_private(tmp_path):
    done = subprocess.run([command('rz'), 'keygen', 'host1', '--dir', str(tmp_path)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    public, secret = zmq.auth.load_certificate(tmp_path / 'host1.key')
    assert secret is None and len(public) == 40
    public2, secret2 = zmq.auth.load_certificate(tmp_path / 'host1.key_secret')
    assert public2 == public and len(secret2) == 40
    assert stat.S_IMODE(os.stat(tmp_path / 'host1.key_secret').st_mode) == 0o600
    again = subprocess.run([command('rz'), 'keygen', 'host1', '--dir', str(tmp_path)],
                           capture_output=True, text=True, timeout=30)
    assert again.returncode != 0 and 'host1.key: already exists' in again.stderr
    assert zmq.auth.load_certificate(tmp_path / 'host1.key')[0] == public   # untouched


def hydrant(procs, keys, port, *options):
    return procs.start(['rz-hydrant', '--out', f'tcp://127.0.0.1:{port}',
                        '--curve-key', str(keys / 'a.key_secret'), *options,
                        'fixtures_funcs:numbers', '50'], stdout=subprocess.DEVNULL)


def bocca(procs, port, *options, key=None, env=None):
    return procs.start(['rz-bocca', '--in', f'tcp://127.0.0.1:{port}{key or ""}', *options,
                        'stdout'], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       text=True, env=env or {})


def test_an_edge_lets_in_an_allowed_key_and_refuses_others_logging_each_once(procs, keys):
    port = free_port()
    source = hydrant(procs, keys, port, '--curve-allow', str(keys / 'allow'))
    stranger = bocca(procs, port, '--curve-key', str(keys / 'c.key_secret'),
                     key=f"#{keys / 'a.key'}")
    plain = bocca(procs, port)
    wait_for(lambda: 'refused a CURVE peer' in stderr_of(source), timeout=20,
             what='the refusal')
    # the allowed key, given in the environment, gets every item
    friend = bocca(procs, port, key=f"#{keys / 'a.key'}",
                   env={'REZINA_CURVE_KEY': str(keys / 'b.key_secret')})
    out, _ = friend.communicate(timeout=30)
    assert friend.returncode == 0
    assert sorted(int(line) for line in out.split()) == list(range(50))
    assert source.wait(timeout=30) == 0
    for proc in (stranger, plain):
        proc.terminate()
        out, err = proc.communicate(timeout=30)
        assert out == ''
    assert 'it refused us' in stderr_of(stranger)
    assert 'one side uses CURVE and the other not' in stderr_of(plain)
    c_public = zmq.auth.load_certificate(keys / 'c.key')[0].decode()
    assert stderr_of(source).count(c_public) == 1


def test_a_connection_to_the_wrong_server_key_fails_with_a_clear_error(procs, keys):
    port = free_port()
    source = hydrant(procs, keys, port)
    wrong = bocca(procs, port, '--curve-key', str(keys / 'a.key_secret'),
                  key=f"#{keys / 'c.key'}")
    wait_for(lambda: 'handshake failed' in stderr_of(wrong), timeout=20,
             what='the error')
    wrong.terminate()
    assert wrong.wait(timeout=30) in (0, 1)
    source.terminate()
    source.wait(timeout=30)


@pytest.mark.parametrize('argv, what', [
    (['rz-hydrant', '--out', 'tcp://0.0.0.0:{port}', 'fixtures_funcs:numbers', '3'],
     'tcp://0.0.0.0:{port}'),
    (['rz-bocca', '--in', '@tcp://*:{port}', 'stdout'], 'tcp://*:{port}'),
    (['rz-master', '-H', '0.0.0.0', '-P', '{port}', '--http-port', '0'],
     'tcp://0.0.0.0:{port}'),
    (['rz-worker', '--worker-ip', '10.9.8.7', '-P', '{port}'], 'tcp://10.9.8.7:*'),
])
def test_a_bind_outside_loopback_without_keys_is_refused(procs, tmp_path, argv, what):
    port = free_port()
    argv = [a.format(port=port) for a in argv]
    if argv[0] == 'rz-master':
        argv += ['--state-dir', str(tmp_path / 's'), '-L', str(tmp_path), '-W', str(tmp_path)]
    if argv[0] == 'rz-worker':
        argv += ['--root', str(tmp_path / 'w')]
    proc = procs.start(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    assert proc.wait(timeout=30) == 2
    err = stderr_of(proc)
    assert f"cannot bind {what.format(port=port)} without CURVE keys" in err
    assert '--insecure' in err and len(err.strip().splitlines()) == 1


def test_an_http_api_outside_loopback_needs_insecure_even_with_keys(procs, tmp_path):
    keys = tmp_path / 'keys'
    keys.mkdir()
    subprocess.run([command('rz'), 'keygen', 'master', '--dir', str(keys)], check=True,
                   capture_output=True, timeout=30)
    argv = ['rz-master', '-P', str(free_port()), '--http-port', str(free_port()),
            '--http-host', '0.0.0.0', '--curve-key', str(keys / 'master.key_secret'),
            '--state-dir', str(tmp_path / 's'), '-L', str(tmp_path), '-W', str(tmp_path)]
    proc = procs.start(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    assert proc.wait(timeout=30) == 2
    err = stderr_of(proc)
    assert err.startswith('rz-master: --http-host 0.0.0.0: the HTTP API is plain HTTP')
    assert '--insecure' in err and len(err.strip().splitlines()) == 1


def test_insecure_allows_it_with_a_warning(procs):
    port = free_port()
    source = procs.start(['rz-hydrant', '--out', f'tcp://0.0.0.0:{port}', '--insecure',
                          'fixtures_funcs:numbers', '5'], stdout=subprocess.DEVNULL)
    sink = bocca(procs, port)
    out, _ = sink.communicate(timeout=30)
    assert sorted(map(int, out.split())) == list(range(5))
    assert source.wait(timeout=30) == 0
    assert 'bound without CURVE keys (--insecure)' in stderr_of(source)


def test_a_missing_or_bad_key_file_is_a_one_line_error(procs, tmp_path):
    bad = tmp_path / 'bad.key_secret'
    bad.write_text('not a key\n')
    for key, words in ((tmp_path / 'none', 'no such file'),
                       (bad, 'not a CURVE key file (no public-key line)')):
        proc = procs.start(['rz-hydrant', '--curve-key', str(key), '--out',
                            f'tcp://127.0.0.1:{free_port()}', 'fixtures_funcs:numbers', '3'],
                           stdout=subprocess.DEVNULL)
        assert proc.wait(timeout=30) == 2
        err = stderr_of(proc).strip()
        assert err == f"rz-hydrant: --curve-key {key}: {words}"


@pytest.fixture
def secure(procs, tmp_path, monkeypatch):
    """A master and two workers, each with its own key; the client's key is allowed."""
    c = Cluster(procs, tmp_path, curve=True)
    c.add_key('stranger', allowed=False)
    c.start_master()
    c.start_worker('127.0.0.2')
    c.start_worker('127.0.0.3')
    monkeypatch.setenv('REZINA_CURVE_KEY', str(c.keys / 'client.key_secret'))
    monkeypatch.setenv('REZINA_MASTER_KEY', str(c.keys / 'master.key'))
    return c


def sealed(secure, tmp_path):
    """A periodic typology across both workers of the secure cluster; its database."""
    db = tmp_path / 'out.db'
    TypologyBuilder('127.0.0.1', secure.port, 'sealed') \
        .add_hydrant(ws.numbers, args=(40,)).add_notch(ws.record, 2, 1) \
        .add_bocca(f"sqlite:{db}").start(interval=1)
    nodes = secure.wait_running('sealed', count=4)
    assert {n['worker'].split(':')[-1] for n in nodes} == {'127.0.0.2', '127.0.0.3'}
    return db


def test_a_periodic_typology_over_curve_stores_its_runs_on_time(secure, tmp_path):
    # a bocca that joins its second producer late once starved it of credit: runs took
    # about 29 s instead of one
    db = sealed(secure, tmp_path)
    wait_for(lambda: len(rows(db)) >= 80, timeout=20, what='two runs stored')
    ended = [r for r in secure.request('runs', typology='sealed') if r['ended']]
    assert ended and all(r['ended'] - r['started'] < 5 for r in ended), ended


def test_strangers_are_refused_by_the_master_of_a_running_typology(secure, tmp_path):
    sealed(secure, tmp_path)

    # a client with a key the master does not list: refused, nothing it asks is done
    stranger = secure.client('stranger')
    with pytest.raises(RezinaError, match='it refused us'):
        stranger.request('stop', typology='sealed')
    stranger.close()
    argv = [command('rz'), '-P', str(secure.port), '--curve-key',
            str(secure.keys / 'stranger.key_secret'), 'stop', 'sealed']
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and 'it refused us' in done.stderr
    assert [t['state'] for t in secure.request('ls')] == ['RUNNING']
    log = stderr_of(secure.master)
    stranger_key = zmq.auth.load_certificate(secure.keys / 'stranger.key')[0].decode()
    assert log.count(stranger_key) == 1        # twice refused, logged once
    # a worker with that key never joins
    worker = secure.procs.start(
        ['rz-worker', '-P', str(secure.port), '--worker-ip', '127.0.0.4', '--root',
         str(tmp_path / 'w4'), '--curve-key', str(secure.keys / 'stranger.key_secret'),
         '--master-key', str(secure.keys / 'master.key')],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    wait_for(lambda: 'it refused us' in stderr_of(worker), timeout=20,
             what='the worker to hear it is refused')
    assert '127.0.0.4' not in {w['address'] for w in secure.request('workers')}


def test_results_come_back_to_the_submitter_over_curve(secure, tmp_path, monkeypatch):
    # the submitter's local rz-bocca lets in the workers' nodes by their keys
    monkeypatch.setenv('REZINA_CURVE_ALLOW', str(secure.keys / 'allowed'))
    out = tmp_path / 'cities.jsonl'
    TypologyBuilder('127.0.0.1', secure.port, 'back') \
        .add_hydrant(ws.get_cities).add_notch(ws.Forecaster.forecast) \
        .add_bocca(PlainFile, args=(str(out),)).start()
    assert sorted(json.loads(line)['city'] for line in out.read_text().splitlines()) == \
        ['Koper', 'Ljubljana', 'Maribor']
