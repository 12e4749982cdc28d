"""The master's state: round trips of every table, runs merged, the state-dir lock held
against other processes, -R, readers, and state that survives a reopen; real SQLite files."""

import logging
import os
import sqlite3
import subprocess
import sys
import threading

import pytest

from conftest import finish
from rezina.control.state import NotRecorded, State
from rezina.errors import RezinaError

# opens the state dir given as argv[1]; prints "opened" and holds it until stdin closes,
# or prints the one-line error
OPENER = """
import sys
from rezina.control.state import State
from rezina.errors import RezinaError
try:
    state = State.open(sys.argv[1])
except RezinaError as exc:
    print(exc, flush=True)
    sys.exit(1)
print('opened', flush=True)
sys.stdin.read()
state.close()
"""


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def state(tmp_path, clock):
    state = State.open(tmp_path / 'state', clock=clock)
    yield state
    state.close()


def opener(procs, state_dir):
    """Start a process that opens `state_dir`; return it once it has said how it went."""
    proc = procs.start([sys.executable, '-c', OPENER, str(state_dir)],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    proc.said = proc.stdout.readline().strip()
    return proc


def test_workers_round_trip_and_upsert_replaces(state, clock):
    state.upsert_worker('w1', 'alpha', '127.0.0.2', 4, 's1', 'ONLINE', last_heartbeat=5.5)
    state.upsert_worker('w0', 'beta', '127.0.0.3', 2, 's9', 'ONLINE')
    state.upsert_worker('w1', 'alpha', '127.0.0.2', 8, 's2', 'ONLINE', last_heartbeat=7.0)
    state.set_worker_state('w0', 'OFFLINE')

    assert state.workers() == [
        {'id': 'w0', 'host': 'beta', 'address': '127.0.0.3', 'slots': 2, 'session': 's9',
         'state': 'OFFLINE', 'last_heartbeat': clock.now},
        {'id': 'w1', 'host': 'alpha', 'address': '127.0.0.2', 'slots': 8, 'session': 's2',
         'state': 'ONLINE', 'last_heartbeat': 7.0}]
    with pytest.raises(NotRecorded, match='worker w7'):
        state.set_worker_state('w7', 'OFFLINE')


def test_typologies_round_trip_keep_created_and_track_changed(state, clock):
    spec = {'stages': [{'name': 'fetch', 'target': 'weather:fetch', 'lanes': 2}]}
    state.put_typology('weather', spec, 'snap1', 'SUBMITTED')
    clock.now = 2000.0
    state.put_typology('weather', {**spec, 'every': 60}, 'snap2', 'STARTING')
    state.put_typology('census', {}, None, 'SUBMITTED')
    clock.now = 3000.0
    state.set_typology_state('weather', 'RUNNING')

    assert state.typology('weather') == {
        'name': 'weather', 'spec': {**spec, 'every': 60}, 'snapshot': 'snap2',
        'state': 'RUNNING', 'created': 1000.0, 'changed': 3000.0}
    assert [t['name'] for t in state.typologies()] == ['census', 'weather']
    assert state.typology('nothing') is None
    with pytest.raises(NotRecorded, match='typology nothing'):
        state.set_typology_state('nothing', 'STOPPED')


def test_placements_round_trip_filter_update_and_remove(state):
    state.put_placement('weather/fetch#0', 'weather', 'fetch', 0, 'w1', 1,
                        {'argv': ['rz-notch']}, 'PENDING')
    state.put_placement('weather/fetch#1', 'weather', 'fetch', 1, 'w2', 1, None, 'PENDING')
    state.put_placement('census/load#0', 'census', 'load', 0, 'w1', 3, {}, 'RUNNING',
                        restarts=2, last_error='boom', endpoint='tcp://127.0.0.2:4000')

    assert state.placements(typology='census') == [{
        'node_id': 'census/load#0', 'typology': 'census', 'stage': 'load', 'idx': 0,
        'worker_id': 'w1', 'generation': 3, 'spec': {}, 'state': 'RUNNING', 'restarts': 2,
        'last_error': 'boom', 'endpoint': 'tcp://127.0.0.2:4000'}]
    assert [p['node_id'] for p in state.placements(worker_id='w1')] == [
        'census/load#0', 'weather/fetch#0']
    assert [p['node_id'] for p in state.placements('weather', 'w2')] == ['weather/fetch#1']
    assert len(state.placements()) == 3

    state.update_placement('weather/fetch#1', worker_id='w3', generation=2, state='STARTING',
                           spec={'argv': ['rz-notch', '-n', '2']})
    moved = state.placements(worker_id='w3')[0]
    assert (moved['generation'], moved['state'], moved['spec'], moved['restarts']) == (
        2, 'STARTING', {'argv': ['rz-notch', '-n', '2']}, 0)

    with pytest.raises(ValueError, match='unknown field colour'):
        state.update_placement('weather/fetch#1', state='RUNNING', colour='red')
    assert state.placements(worker_id='w3')[0]['state'] == 'STARTING'
    with pytest.raises(NotRecorded, match='placement weather/fetch#9'):
        state.update_placement('weather/fetch#9', state='RUNNING')

    assert state.remove_placement('weather/fetch#0') is True
    assert state.remove_placement('weather/fetch#0') is False
    assert [p['node_id'] for p in state.placements('weather')] == ['weather/fetch#1']


def test_runs_round_trip_newest_first_with_limit(state):
    for n in range(5):
        state.record_run('weather', f'weather-{n}', started=100.0 + n, ended=101.0 + n,
                         items=10, failed=n, state='COMPLETE')
    state.record_run('census', 'census-0', started=500.0)

    runs = state.runs('weather', limit=3)
    assert [run['run_id'] for run in runs] == ['weather-4', 'weather-3', 'weather-2']
    assert runs[0] == {'typology': 'weather', 'run_id': 'weather-4', 'started': 104.0,
                       'ended': 105.0, 'items': 10, 'failed': 4, 'state': 'COMPLETE'}
    assert len(state.runs('weather')) == 5


def test_a_run_reported_twice_is_one_row_with_fields_merged(state):
    state.record_run('weather', 'weather-7', started=100.0, state='RUNNING')
    state.record_run('weather', 'weather-7', ended=110.0, items=42, failed=1,
                     state='COMPLETE')
    state.record_run('weather', 'weather-7', started=100.0)

    assert state.runs('weather') == [
        {'typology': 'weather', 'run_id': 'weather-7', 'started': 100.0, 'ended': 110.0,
         'items': 42, 'failed': 1, 'state': 'COMPLETE'}]


def test_removing_a_typology_drops_its_placements_and_keeps_its_runs(state):
    state.put_typology('weather', {'stages': []}, 'snap', 'STOPPED')
    state.put_placement('weather/fetch#0', 'weather', 'fetch', 0, 'w1', 1, {}, 'STOPPING')
    state.put_placement('census/load#0', 'census', 'load', 0, 'w1', 1, {}, 'RUNNING')
    state.record_run('weather', 'weather-1', started=1.0, ended=2.0, items=3)

    assert state.remove_typology('weather') is True
    assert state.typology('weather') is None
    assert [p['node_id'] for p in state.placements()] == ['census/load#0']
    assert [run['run_id'] for run in state.runs('weather')] == ['weather-1']
    assert state.remove_typology('weather') is False


def test_state_dir_is_created_private(tmp_path):
    state = State.open(tmp_path / 'a' / 'state')
    try:
        assert os.stat(tmp_path / 'a' / 'state').st_mode & 0o777 == 0o700
        assert (tmp_path / 'a' / 'state' / 'master.lock').read_text() == f"{os.getpid()}\n"
    finally:
        state.close()


def test_second_master_in_another_process_fails_naming_the_holder(tmp_path, procs):
    state_dir = tmp_path / 'state'
    state = State.open(state_dir)
    try:
        second = opener(procs, state_dir)
        status, _, _ = finish(second, timeout=10)
        assert second.said == f"another rz-master (pid {os.getpid()}) is using {state_dir}"
        assert status == 1
    finally:
        state.close()

    third = opener(procs, state_dir)
    assert third.said == 'opened'
    assert finish(third, timeout=10)[0] == 0       # its stdin closed, it closes the state


def test_lock_held_by_another_process_is_released_when_it_dies(tmp_path, procs):
    state_dir = tmp_path / 'state'
    holder = opener(procs, state_dir)
    assert holder.said == 'opened'

    with pytest.raises(RezinaError) as failed:
        State.open(state_dir)
    assert str(failed.value) == f"another rz-master (pid {holder.pid}) is using {state_dir}"

    holder.kill()
    holder.wait(timeout=10)
    State.open(state_dir).close()


def test_close_releases_the_lock_for_a_reopen_in_this_process(tmp_path):
    state = State.open(tmp_path)
    with pytest.raises(RezinaError, match=f"pid {os.getpid()}"):
        State.open(tmp_path)
    state.close()
    State.open(tmp_path).close()


def test_state_survives_close_and_reopen(tmp_path):
    state = State.open(tmp_path)
    state.upsert_worker('w1', 'alpha', '127.0.0.2', 4, 's1', 'ONLINE', 1.0)
    state.put_typology('weather', {'every': 60}, 'snap', 'RUNNING')
    state.put_placement('weather/fetch#0', 'weather', 'fetch', 0, 'w1', 1, {}, 'RUNNING')
    state.record_run('weather', 'weather-1', started=1.0)
    state.close()

    state = State.open(tmp_path)
    try:
        assert [w['id'] for w in state.workers()] == ['w1']
        assert state.typology('weather')['spec'] == {'every': 60}
        assert [p['node_id'] for p in state.placements()] == ['weather/fetch#0']
        assert [r['run_id'] for r in state.runs('weather')] == ['weather-1']
    finally:
        state.close()


def test_forget_moves_the_old_database_aside_and_starts_empty(tmp_path, caplog):
    state = State.open(tmp_path)
    state.put_typology('weather', {}, 'snap', 'RUNNING')
    state.close()

    with caplog.at_level(logging.INFO, logger='rezina.control.state'):
        state = State.open(tmp_path, forget=True)
    try:
        assert state.typologies() == []
    finally:
        state.close()

    aside = [name for name in os.listdir(tmp_path)
             if name.startswith('state.db.forgotten-') and '-wal' not in name
             and '-shm' not in name]
    assert len(aside) == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"forgot the saved state: moved {tmp_path / 'state.db'} to {tmp_path / aside[0]}"]
    old = sqlite3.connect(tmp_path / aside[0])
    try:
        assert old.execute('SELECT name FROM typologies').fetchall() == [('weather',)]
    finally:
        old.close()


def test_a_reader_in_another_thread_sees_committed_writes(state):
    reader = state.reader()
    seen = []

    def read():
        seen.append([w['id'] for w in reader.workers()])

    try:
        for worker in ('w1', 'w2'):
            state.upsert_worker(worker, 'alpha', '127.0.0.2', 4, 's1', 'ONLINE')
            thread = threading.Thread(target=read)
            thread.start()
            thread.join(timeout=10)
        with pytest.raises(sqlite3.OperationalError, match='readonly'):
            reader._conn.execute("DELETE FROM workers")
    finally:
        reader.close()
    assert seen == [['w1'], ['w1', 'w2']]


def test_a_newer_schema_is_refused_naming_the_file(tmp_path):
    db = sqlite3.connect(tmp_path / 'state.db')
    db.execute('CREATE TABLE schema_version (version INTEGER NOT NULL)')
    db.execute('INSERT INTO schema_version VALUES (2)')
    db.commit()
    db.close()

    with pytest.raises(RezinaError) as failed:
        State.open(tmp_path)
    assert str(failed.value) == (
        f"cannot use state database {tmp_path / 'state.db'}: its schema version is 2, "
        f"newer than 1, which this rz-master knows")
    State.open(tmp_path, forget=True).close()     # the lock was released
