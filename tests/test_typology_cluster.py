"""TypologyBuilder against a real rz-master and rz-worker: the original example's start
time rules, and results that come back to the submitting process."""

import datetime
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import fixtures_cluster as ws
from cluster import Cluster
from conftest import TESTS, stderr_of, wait_for
from rezina import TypologyBuilder
from rezina.backends import PlainFile
from rezina.errors import RezinaError

pytestmark = pytest.mark.timeout(180)
EXAMPLE = os.path.join(os.path.dirname(TESTS), 'examples', 'typology')


@pytest.fixture
def cluster(procs, tmp_path):
    c = Cluster(procs, tmp_path)
    c.start_master()
    c.start_worker('127.0.0.2')
    return c


def first_run(cluster, name):
    wait_for(lambda: cluster.request('runs', typology=name), timeout=30,
             what=f'the first run of {name}')
    return cluster.request('runs', typology=name)[-1]


def stamp_of(run):
    """The wall time a run's id names (its tick), in epoch seconds."""
    text = run['run_id'].rsplit('/', 1)[1].rstrip('Z')
    return datetime.datetime.strptime(text, '%Y%m%dT%H%M%S').replace(
        tzinfo=datetime.timezone.utc).timestamp()


def test_restart_with_a_past_start_time_runs_at_once_on_its_grid(cluster, tmp_path):
    tb = (TypologyBuilder('127.0.0.1', cluster.port, 'past')
          .add_hydrant(ws.numbers, args=(3,)).add_bocca(f"sqlite:{tmp_path / 'o.db'}"))
    asked = time.time()
    tb.restart(start_time='2016-12-03 20:18:10', interval=4)
    run = first_run(cluster, 'past')
    tick = stamp_of(run)
    # the original rules (DESIGN.md, "Schedules"): a start older than the last tick of
    # the epoch's grid gives that tick, which runs at once; old runs are not replayed
    assert tick % 4 == 0
    assert asked - 4 <= tick <= asked + 1
    assert run['started'] - asked < 3


def test_restart_with_a_future_start_time_waits_for_it(cluster, tmp_path):
    tb = (TypologyBuilder('127.0.0.1', cluster.port, 'future')
          .add_hydrant(ws.numbers, args=(3,)).add_bocca(f"sqlite:{tmp_path / 'o.db'}"))
    start = int(time.time()) + 5
    text = datetime.datetime.fromtimestamp(start).strftime('%Y-%m-%d %H:%M:%S')
    tb.restart(start_time=text, interval=30)
    [typology] = cluster.request('ls')
    assert typology['next_run'] == start
    run = first_run(cluster, 'future')
    assert stamp_of(run) == start
    assert run['started'] >= start - 0.1


def test_restart_without_a_start_time_runs_on_the_epoch_grid(cluster, tmp_path):
    tb = (TypologyBuilder('127.0.0.1', cluster.port, 'epoch')
          .add_hydrant(ws.numbers, args=(3,)).add_bocca(f"sqlite:{tmp_path / 'o.db'}"))
    tb.restart(interval=3)
    assert stamp_of(first_run(cluster, 'epoch')) % 3 == 0


def submit_printed(cluster, procs, tmp_path):
    """A script that submits a typology into Stdout, printing here; (process, lines)."""
    script = tmp_path / 'submit.py'
    script.write_text(
        "import sys\n"
        "from rezina import TypologyBuilder\n"
        "from rezina.backends import Stdout\n"
        "import fixtures_cluster as ws\n"
        f"tb = TypologyBuilder('127.0.0.1', {cluster.port}, 'printed')\n"
        "tb.add_hydrant(ws.get_cities).add_notch(ws.get_city_weather, 1, 2)\n"
        "tb.add_bocca(Stdout, persistent_mode='stream')\n"
        "tb.restart(interval=2)\n"
        "print('returned', flush=True)\n")
    out = tmp_path / 'out.txt'
    with open(out, 'wb') as sink:
        proc = procs.start([sys.executable, str(script)], stdout=sink,
                           stdin=subprocess.DEVNULL, env={'PYTHONPATH': TESTS})

    def lines():
        return [json.loads(line) for line in out.read_text().splitlines()
                if line.startswith('{')]

    wait_for(lambda: len(lines()) >= 6, timeout=40, what='two runs printed')
    return proc, out, lines


def children(pid):
    path = f'/proc/{pid}/task/{pid}/children'
    with open(path) as f:
        return [int(p) for p in f.read().split()]


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_stdout_prints_in_the_submitting_process_until_ctrl_c(cluster, procs, tmp_path,
                                                              signum):
    proc, out, lines = submit_printed(cluster, procs, tmp_path)
    assert {line['city'] for line in lines()} == {'Ljubljana', 'Koper', 'Maribor'}
    assert all(line['weather'] == 'Sunny' for line in lines())
    nodes = cluster.nodes('printed')
    assert [n['stage'] for n in nodes] == ['get_cities', 'get_city_weather']

    proc.send_signal(signum)
    assert proc.wait(timeout=40) == 0, stderr_of(proc)
    assert out.read_text().splitlines()[-1] == 'returned'
    wait_for(lambda: cluster.request('ls')[0]['state'] == 'STOPPED', timeout=40,
             what='the typology stopped')


def test_the_submitter_ends_when_its_typology_is_stopped_elsewhere(cluster, procs,
                                                                   tmp_path):
    proc, out, _ = submit_printed(cluster, procs, tmp_path)
    cluster.request('stop', typology='printed')
    assert proc.wait(timeout=40) == 0, stderr_of(proc)
    assert 'the typology was stopped elsewhere' in stderr_of(proc)
    assert out.read_text().splitlines()[-1] == 'returned'


def test_the_local_sink_dies_with_a_killed_submitter(cluster, procs, tmp_path):
    proc, _, _ = submit_printed(cluster, procs, tmp_path)
    [bocca] = children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    wait_for(lambda: not os.path.exists(f'/proc/{bocca}') or
             open(f'/proc/{bocca}/stat').read().split()[2] == 'Z', timeout=40,
             what='the local rz-bocca gone')

def test_the_original_weather_example_prints_every_city_every_10_s(procs, tmp_path):
    service = procs.start([sys.executable, os.path.join(os.path.dirname(TESTS), 'examples',
                                                          'weather', 'weather_service.py'),
                           '--delay', '0.05'], stdout=subprocess.PIPE,
                          stdin=subprocess.DEVNULL)
    url = service.stdout.readline().decode().strip()
    assert url.startswith('http://127.0.0.1:'), stderr_of(service)
    cluster = Cluster(procs, tmp_path, files=[os.path.join(EXAMPLE, 'cityweather.py'),
                                              os.path.join(EXAMPLE, 'weathertypo.py')])
    cluster.start_master()
    cluster.start_worker('127.0.0.2', env={'REZINA_WEATHER_URL': url})
    cluster.start_worker('127.0.0.3', env={'REZINA_WEATHER_URL': url})

    out = tmp_path / 'out.txt'
    with open(out, 'wb') as sink:
        typo = procs.start([sys.executable, 'weathertypo.py'], cwd=cluster.workspace,
                           stdout=sink, stdin=subprocess.DEVNULL,
                           env={'REZINA_MASTER_PORT': str(cluster.port)})

    def lines():
        return [json.loads(line) for line in out.read_text().splitlines()]

    wait_for(lambda: len(lines()) >= 20, timeout=60, what='two runs of ten cities')
    cities = ['Beijing', 'Berlin', 'New York', 'London', 'Tokyo', 'Paris', 'Chicago',
              'washington', 'Venice', 'Houston']
    assert sorted(line['city'] for line in lines()[:20]) == sorted(cities * 2)
    assert all(line['weather'] for line in lines())
    runs = sorted(cluster.request('runs', typology='weather_typo2'),
                  key=lambda r: r['run_id'])
    assert all(stamp_of(r) % 10 == 0 for r in runs)            # on the 10 s grid
    assert all(stamp_of(b) - stamp_of(a) == 10 for a, b in zip(runs, runs[1:]))

    typo.send_signal(signal.SIGINT)
    assert typo.wait(timeout=40) == 0, stderr_of(typo)
    wait_for(lambda: cluster.request('ls')[0]['state'] == 'STOPPED', timeout=40,
             what='the typology stopped')


def test_a_one_shot_typology_into_plainfile_returns_once_its_run_is_written(cluster,
                                                                          tmp_path):
    out = tmp_path / 'cities.jsonl'
    tb = (TypologyBuilder('127.0.0.1', cluster.port, 'once')
          .add_hydrant(ws.get_cities).add_notch(ws.Forecaster.forecast)
          .add_bocca(PlainFile, args=(str(out),)))
    answer = tb.start()
    assert answer['typology'] == 'once'
    assert sorted((json.loads(line)['city'], json.loads(line)['weather'])
                  for line in out.read_text().splitlines()) == \
        [('Koper', 'Sunny'), ('Ljubljana', 'Sunny'), ('Maribor', 'Sunny')]
    wait_for(lambda: cluster.request('ls')[0]['state'] == 'COMPLETE', timeout=20,
             what='the typology complete')
    [run] = cluster.request('runs', typology='once')
    assert run['state'] == 'complete' and run['items'] == 3


def test_a_hydrant_straight_into_plainfile_writes_here_and_is_not_startable_by_name(
        cluster, tmp_path):
    out = tmp_path / 'numbers.jsonl'
    (TypologyBuilder('127.0.0.1', cluster.port, 'direct')
     .add_hydrant(ws.numbers, args=(4,)).add_bocca(PlainFile, args=(str(out),))).start()
    assert [json.loads(line) for line in out.read_text().splitlines()] == [0, 1, 2, 3]
    wait_for(lambda: cluster.request('ls')[0]['state'] == 'COMPLETE', timeout=20,
             what='complete')
    with pytest.raises(RezinaError) as caught:
        cluster.request('start', typology='direct')
    assert str(caught.value) == ("typology direct: its results went to the process that "
                                 "submitted it (PlainFile); start it again from there")
