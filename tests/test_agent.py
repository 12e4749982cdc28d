"""The rz-worker agent against a scripted rz-master: REGISTER, HEARTBEAT and WANT, nodes
started, adopted, restarted and stopped, their stderr as LOG, and code from a snapshot;
real processes and sockets, the agent's clock a fake one moved by the test."""

import os
import signal
import threading
import time

import pytest
import zmq

from conftest import TESTS, command
from fakeclock import FakeClock
from rezina.control import protocol, snapshot
from rezina.control.agent import STARTS_PER_STEP, Agent
from rezina.control.protocol import decode, encode

EMPTY_WANT = {'start': [], 'stop': [], 'connect': {}}


class ScriptedMaster(threading.Thread):
    """A ROUTER on loopback that answers each REGISTER or HEARTBEAT with the next WANT the
    test planned (an empty one when none is), FETCH from a snapshot store, and keeps every
    message. It has a thread because the agent blocks in a FETCH until the BLOB comes."""

    def __init__(self, store=None):
        super().__init__(daemon=True)
        self.context = zmq.Context()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.port = self.router.bind_to_random_port('tcp://127.0.0.1')
        self.store = store
        self.wants = []
        self.seen = []              # (kind, header)
        self.lock = threading.Lock()
        self.done = threading.Event()

    def plan(self, **want):
        with self.lock:
            self.wants.append({**EMPTY_WANT, **want})

    def of(self, kind):
        with self.lock:
            return [header for seen_kind, header in self.seen if seen_kind == kind]

    def run(self):
        while not self.done.is_set():
            if not self.router.poll(20):
                continue
            peer, *frames = self.router.recv_multipart()
            kind, header, _ = decode(frames)
            with self.lock:
                self.seen.append((kind, header))
                beat = kind in (protocol.REGISTER, protocol.HEARTBEAT)
                want = self.wants.pop(0) if beat and self.wants else EMPTY_WANT
            if beat:
                self.router.send_multipart([peer, *encode(protocol.WANT, want)])
            elif kind == protocol.FETCH:
                self.router.send_multipart([peer, *self._blob(header)])

    def _blob(self, header):
        sha = header['hash']
        if header['what'] == 'manifest':
            return encode(protocol.BLOB, {'hash': sha}, snapshot.manifest_bytes(self.store, sha))
        return encode(protocol.BLOB, {'hash': sha}, snapshot.blob(self.store, sha))

    def close(self):
        self.done.set()
        self.join(timeout=5)
        self.router.close()
        self.context.term()


class Driver:
    """Steps one agent, moving its fake clock, and remembers every pid it ran."""

    def __init__(self, agent, clock):
        self.agent = agent
        self.clock = clock
        self.pids = set()

    def until(self, predicate, what, timeout=30.0):
        """Step the agent until predicate() is true; its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.clock.mono += 0.25
            self.agent.step(0.05)
            self.pids.update(n.pid for n in self.agent.supervisor.nodes.values() if n.pid)
            value = predicate()
            if value:
                return value
        pytest.fail(f"timed out after {timeout} s waiting for {what}")


def gone(pid):
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


@pytest.fixture
def make(tmp_path):
    """make(store=None) -> (master, driver): a scripted master and an agent connected to
    it; both closed, and every node pid checked gone, at the end."""
    made = []

    def start(store=None):
        master = ScriptedMaster(store)
        master.start()
        clock = FakeClock(wall=0.0, mono=100.0)
        agent = Agent('127.0.0.1', master.port, '127.0.0.1', 4, str(tmp_path / 'root'),
                      clock=clock.monotonic)
        driver = Driver(agent, clock)
        made.append((master, driver))
        return master, driver

    yield start
    for master, driver in made:
        try:
            driver.agent.close(timeout=5.0)
        finally:
            master.close()
            for pid in driver.pids:
                if not gone(pid):
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
    assert all(gone(pid) for _, driver in made for pid in driver.pids)


def hydrant(node_id, generation=1, out='tcp://127.0.0.1:*', *args):
    return {'node_id': node_id, 'generation': generation, 'snapshot': None, 'env': {},
            'argv': ['rz-hydrant', '--every', '0.2', '--out', out, '--path', TESTS, *args,
                     'fixtures_funcs:numbers', '3']}


def reported(master, node_id, **want):
    """The last heartbeat's entry for node_id if it has every field of want, else None."""
    beats = master.of(protocol.HEARTBEAT)
    for entry in beats[-1]['nodes'] if beats else ():
        if entry['node_id'] == node_id and all(entry.get(k) == v for k, v in want.items()):
            return entry
    return None


def test_the_agent_registers_then_heartbeats(make):
    master, driver = make()
    driver.until(lambda: master.of(protocol.HEARTBEAT), 'a heartbeat')
    register, = master.of(protocol.REGISTER)
    assert register['worker'].endswith(':127.0.0.1')
    assert (register['address'], register['slots'], register['nodes']) == ('127.0.0.1', 4, [])
    beat = master.of(protocol.HEARTBEAT)[0]
    assert (beat['worker'], beat['session']) == (register['worker'], register['session'])
    assert beat['nodes'] == [] and beat['runs'] == []


def test_a_started_node_is_reported_with_its_counters_runs_and_log_then_stopped(make):
    master, driver = make()
    driver.until(lambda: master.of(protocol.HEARTBEAT), 'a heartbeat')
    master.plan(start=[hydrant('src')])
    entry = driver.until(lambda: reported(master, 'src', state='RUNNING')
                         if (reported(master, 'src') or {}).get('bound') else None,
                         'src RUNNING with a bound endpoint')
    assert entry['generation'] == 1 and entry['restarts'] == 0 and entry['pid']
    endpoint, = entry['bound']
    assert endpoint.startswith('tcp://127.0.0.1:') and not endpoint.endswith('*')
    driver.until(lambda: (reported(master, 'src') or {}).get('status'), 'a status')
    assert reported(master, 'src')['status']['pid'] == entry['pid']

    # a consumer lets the hydrant's runs complete
    sink = {'node_id': 'sink', 'generation': 1, 'snapshot': None, 'env': None,
            'argv': ['rz-bocca', '--in', endpoint, 'null']}
    master.plan(start=[sink, hydrant('src')])       # src again: adopted, not restarted
    runs = driver.until(lambda: [r for h in master.of(protocol.HEARTBEAT) for r in h['runs']],
                        'run records')
    assert runs[0]['node_id'] == 'src' and runs[0]['state'] == 'complete'
    assert runs[0]['items'] == 3
    assert reported(master, 'src')['pid'] == entry['pid']

    def logged():
        return [line for h in master.of(protocol.LOG) if h['node_id'] == 'src'
                for line in h['lines'] if 'complete: 3 items' in line]
    driver.until(logged, "the run's log line")

    master.plan(stop=['src', 'sink'])
    driver.until(lambda: [entry for h in master.of(protocol.HEARTBEAT) for entry in h['nodes']
                          if entry['node_id'] == 'src' and entry['state'] == 'STOPPED'],
                 'src reported STOPPED')
    assert gone(entry['pid'])
    driver.until(lambda: master.of(protocol.HEARTBEAT)[-1]['nodes'] == [], 'nodes forgotten')


def test_a_node_killed_by_a_signal_is_restarted_and_reported_so(make):
    master, driver = make()
    driver.until(lambda: master.of(protocol.HEARTBEAT), 'a heartbeat')
    master.plan(start=[hydrant('src')])
    first = driver.until(lambda: reported(master, 'src', state='RUNNING'), 'src RUNNING')
    os.kill(first['pid'], signal.SIGKILL)

    entry = driver.until(lambda: reported(master, 'src', state='RUNNING', restarts=1),
                         'src restarted')
    assert entry['pid'] not in (None, first['pid'])
    assert entry['last_error'].startswith('was killed by SIGKILL')
    assert gone(first['pid'])
    # the new process binds again and has its own channel
    driver.until(lambda: (reported(master, 'src') or {}).get('bound'), 'a bound endpoint')


def test_many_starts_are_spread_over_steps_so_the_loop_keeps_its_beat(make):
    master, driver = make()
    driver.until(lambda: master.of(protocol.HEARTBEAT), 'a heartbeat')
    master.plan(start=[hydrant(f'src{i}') for i in range(STARTS_PER_STEP + 2)])
    started = driver.until(lambda: len(driver.agent.supervisor.nodes), 'the first starts')
    assert started == STARTS_PER_STEP and driver.agent.more_to_start
    driver.agent.step(0.05)
    assert len(driver.agent.supervisor.nodes) == STARTS_PER_STEP + 2
    assert not driver.agent.more_to_start
    driver.pids.update(n.pid for n in driver.agent.supervisor.nodes.values() if n.pid)


def test_a_failing_nodes_stderr_reaches_the_master_as_log(make):
    master, driver = make()
    driver.until(lambda: master.of(protocol.HEARTBEAT), 'a heartbeat')
    spec = {'node_id': 'bad', 'generation': 1, 'snapshot': None, 'env': None,
            'argv': [command('rz-hydrant'), '--path', TESTS, 'fixtures_nowhere:f']}
    master.plan(start=[spec])
    entry = driver.until(lambda: reported(master, 'bad', state='BACKOFF'), 'bad BACKOFF')
    assert entry['last_error'].startswith('exited with status')
    driver.until(lambda: [line for h in master.of(protocol.LOG) if h['node_id'] == 'bad'
                          for line in h['lines'] if 'fixtures_nowhere' in line],
                 'its stderr line as LOG')
    assert any('fixtures_nowhere' in line for line in entry['last_error'].split('\n')[1:])


def test_a_node_runs_from_a_snapshot_fetched_from_the_master(make, tmp_path):
    workspace = tmp_path / 'ws'
    (workspace / 'pkg').mkdir(parents=True)
    (workspace / 'snapmod.py').write_text("from pkg.three import THREE\n\n\n"
                                          "def numbers():\n    return range(THREE)\n")
    (workspace / 'pkg' / '__init__.py').write_text('')
    (workspace / 'pkg' / 'three.py').write_text('THREE = 3\n')
    store = str(tmp_path / 'store')
    snapshot_id = snapshot.take(str(workspace), store)

    master, driver = make(store)
    driver.until(lambda: master.of(protocol.HEARTBEAT), 'a heartbeat')
    spec = {'node_id': 'snap', 'generation': 1, 'snapshot': snapshot_id, 'env': None,
            'argv': ['rz-hydrant', '--every', '0.2', '--format', 'json', '--name', 'snap',
                     'snapmod:numbers']}
    master.plan(start=[spec])
    driver.until(lambda: [r for h in master.of(protocol.HEARTBEAT) for r in h['runs']
                          if r['node_id'] == 'snap' and r['items'] == 3], 'a run of 3 items')

    fetched = master.of(protocol.FETCH)
    assert fetched[0] == {'hash': snapshot_id, 'what': 'manifest'}
    assert sorted(f['what'] for f in fetched[1:]) == ['blob'] * 3
    entry = reported(master, 'snap')
    where = os.path.join(str(tmp_path / 'root'), snapshot_id)
    assert os.readlink(f"/proc/{entry['pid']}/cwd") == where


def test_connect_reaches_a_running_consumer_through_its_channel(make):
    master, driver = make()
    driver.until(lambda: master.of(protocol.HEARTBEAT), 'a heartbeat')
    master.plan(start=[hydrant('a', 1, 'tcp://127.0.0.1:*', '--name', 'a'),
                       hydrant('b', 1, 'tcp://127.0.0.1:*', '--name', 'b')])
    first = driver.until(lambda: (reported(master, 'a') or {}).get('bound'), 'a bound')[0]
    second = driver.until(lambda: (reported(master, 'b') or {}).get('bound'), 'b bound')[0]
    master.plan(start=[{'node_id': 'sink', 'generation': 1, 'snapshot': None, 'env': None,
                        'argv': ['rz-bocca', '--in', first, 'null']}])

    def runs_of(node_id):
        return [r for h in master.of(protocol.HEARTBEAT) for r in h['runs']
                if r['node_id'] == node_id and r['items'] == 3]
    driver.until(lambda: runs_of('a'), "a's runs")
    assert not runs_of('b')         # nobody reads b yet

    master.plan(connect={'sink': [second]})
    driver.until(lambda: runs_of('b'), "b's runs, once the sink connects to it")
