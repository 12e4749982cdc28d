"""--control-fd: the channel rz-worker will use to watch and steer a node (status, bound
endpoints, runs; connect and stop), with real processes and a real socketpair."""

import socket
import sqlite3
import subprocess

import msgpack
import pytest

from conftest import stderr_of, wait_for
from test_edges import free_port

from rezina import exitcodes


class Worker:
    """The worker's end of one node's channel: records read as they come."""

    def __init__(self):
        self.sock, self.child_end = socket.socketpair()
        self.sock.settimeout(0.05)
        self.unpacker = msgpack.Unpacker(raw=False)
        self.records = []

    @property
    def fd(self):
        return self.child_end.fileno()

    def started(self):
        self.child_end.close()          # the node holds its own copy now

    def read(self):
        try:
            data = self.sock.recv(1 << 16)
        except (socket.timeout, BlockingIOError):
            return self.records
        self.unpacker.feed(data)
        self.records.extend(self.unpacker)
        return self.records

    def of(self, op):
        return [r for r in self.read() if r.get('op') == op]

    def rest(self, op):
        """Every record of op, once the node has closed its end (it exited)."""
        self.sock.settimeout(10)
        while data := self.sock.recv(1 << 16):
            self.unpacker.feed(data)
            self.records.extend(self.unpacker)
        return [r for r in self.records if r.get('op') == op]

    def send(self, record):
        self.sock.sendall(msgpack.packb(record))

    def close(self):
        self.sock.close()


@pytest.fixture
def worker():
    channels = []

    def make():
        channel = Worker()
        channels.append(channel)
        return channel

    yield make
    for channel in channels:
        channel.close()


def start(procs, channel, argv, **kwargs):
    proc = procs.start([*argv, '--control-fd', str(channel.fd)], pass_fds=(channel.fd,),
                       stdin=subprocess.DEVNULL, **kwargs)
    channel.started()
    return proc


def test_a_notch_reports_its_status_and_its_bound_endpoint(procs, worker):
    channel = worker()
    src = free_port()
    source = procs.start(['rz-hydrant', '--out', f'tcp://127.0.0.1:{src}',
                          'fixtures_funcs:numbers', '50'],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    notch = start(procs, channel, ['rz-notch', '--in', f'tcp://127.0.0.1:{src}', '--out',
                                   'tcp://127.0.0.1:*', 'fixtures_funcs:double'],
                  stdout=subprocess.DEVNULL)
    wait_for(lambda: channel.of('bound'), what='the bound record')
    endpoint = channel.of('bound')[0]['endpoint']
    assert endpoint.startswith('tcp://127.0.0.1:') and not endpoint.endswith(':*')
    sink = procs.start(['rz-bocca', 'null', '--in', endpoint], stdin=subprocess.DEVNULL)
    wait_for(lambda: any(r['items_out'] == 50 for r in channel.of('status')), timeout=30,
             what='a status with the 50 items')
    status = channel.of('status')[-1]
    assert status['node'] == 'double' and status['pid'] == notch.pid
    assert status['items_in'] == 50 and status['failed'] == 0
    for proc in (source, notch, sink):
        assert proc.wait(timeout=30) == 0, stderr_of(proc)


def test_a_notch_reports_its_processing_time_dropped_redelivered_and_failed_items(
        procs, worker):
    """sleepy_sorter takes 20 ms an item, kills its worker process on 13 (quarantined
    after 3 deaths, redelivered before), fails multiples of 5 and drops those one above."""
    channel = worker()
    source = procs.start(['rz-hydrant', '--name', 't', '--run-id', 'r',
                          'fixtures_funcs:numbers', '30'],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    notch = procs.start(['rz-notch', '--control-fd', str(channel.fd),
                         'fixtures_funcs:sleepy_sorter'], pass_fds=(channel.fd,),
                        stdin=source.stdout, stdout=subprocess.DEVNULL)
    channel.started()
    source.stdout.close()
    assert notch.wait(timeout=60) == exitcodes.FAILED, stderr_of(notch)
    statuses = channel.rest('status')
    last = statuses[-1]
    assert (last['items_in'], last['items_out'], last['dropped'], last['failed']) == \
        (30, 17, 6, 7)
    assert last['busy_seconds'] >= 29 * 0.02        # every item but 13 ran to its end
    assert last['redelivered'] >= 2 and last['rejected'] == 0

    # each failure comes in a few statuses, numbered, without its item
    reported = {}
    for status in statuses:
        for record in status.get('recent_failures', ()):
            reported.setdefault(record['seq'], record)
    assert sorted(reported) == list(range(1, 8))
    failed = {r['id']: (r['error'], r['message'], r['attempts']) for r in reported.values()}
    assert failed == {
        **{f't/r:{n}': ('ValueError', f'{n} is a multiple of five', 1)
           for n in range(0, 30, 5)},
        't/r:13': ('Quarantined', 'its worker died running it 3 times (the last was '
                   'killed by SIGKILL)', 3)}
    assert all(r['run'] == 't/r' and 'item' not in r for r in reported.values())
    assert source.wait(timeout=30) == 0


def test_connect_adds_a_producer_to_a_running_notch(procs, worker, tmp_path):
    """A consumer learns a new producer endpoint while it runs, as a scaled-up stage
    needs."""
    channel = worker()
    first, second, out = free_port(), free_port(), free_port()
    db = tmp_path / 'out.db'
    procs.start(['rz-hydrant', '--every', '0.2', '--name', 'a', '--out',
                 f'tcp://127.0.0.1:{first}', 'fixtures_funcs:numbers', '2'],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    notch = start(procs, channel, ['rz-notch', '--in', f'tcp://127.0.0.1:{first}', '--out',
                                   f'tcp://127.0.0.1:{out}', 'fixtures_funcs:identity'],
                  stdout=subprocess.DEVNULL)
    sink = procs.start(['rz-bocca', '--in', f'tcp://127.0.0.1:{out}', f'sqlite:{db}'],
                       stdin=subprocess.DEVNULL)
    procs.start(['rz-hydrant', '--name', 'b', '--out', f'tcp://127.0.0.1:{second}',
                 'fixtures_funcs:numbers', '5'],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    def runs(prefix):
        if not db.exists():
            return 0
        try:
            with sqlite3.connect(db) as conn:
                return conn.execute('SELECT count(*) FROM items WHERE rz_run LIKE ?',
                                    (prefix + '/%',)).fetchone()[0]
        except sqlite3.OperationalError:
            return 0

    wait_for(lambda: runs('a') >= 2, timeout=30, what="the first source's items")
    assert runs('b') == 0
    channel.send({'op': 'connect', 'endpoints': [f'tcp://127.0.0.1:{second}']})
    wait_for(lambda: runs('b') == 5, timeout=30, what="the second source's items")
    assert f'connected to tcp://127.0.0.1:{second}' in stderr_of(notch)

    channel.send({'op': 'stop'})                 # drains and exits, as on SIGTERM
    assert notch.wait(timeout=30) == 0, stderr_of(notch)
    assert 'stopping: finishing the items in flight' in stderr_of(notch)
    sink.terminate()
    sink.wait(timeout=30)


def test_a_hydrant_reports_each_run(procs, worker):
    channel = worker()
    source = start(procs, channel, ['rz-hydrant', '--run-id', 'r1', '--name', 'n',
                                    '--format', 'json', 'fixtures_funcs:numbers', '7'],
                   stdout=subprocess.DEVNULL)
    assert source.wait(timeout=30) == 0
    wait_for(lambda: channel.of('run'), what='the run record')
    record, = channel.of('run')
    assert (record['run'], record['state'], record['items'], record['failed']) == \
        ('n/r1', 'complete', 7, 0)


def test_a_node_goes_on_when_the_worker_closes_the_channel(procs, worker):
    channel = worker()
    source = start(procs, channel, ['rz-hydrant', '--every', '0.1', '--format', 'json',
                                    'fixtures_funcs:numbers', '1'], stdout=subprocess.PIPE)
    wait_for(lambda: channel.of('run'), what='a first run')
    channel.close()
    before = len(stderr_of(source).splitlines())
    wait_for(lambda: len(stderr_of(source).splitlines()) > before + 2, what='more runs')
    assert 'control: the channel closed' in stderr_of(source)
    assert 'going on without it' in stderr_of(source)
    assert source.poll() is None
    source.terminate()
    assert source.wait(timeout=30) == 0


@pytest.mark.parametrize('value', ['1', 'x', '999'])
def test_a_control_fd_that_is_not_an_open_socket_is_a_usage_error(procs, value):
    proc = procs.start(['rz-notch', '--control-fd', value, 'fixtures_funcs:double'],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert f"--control-fd '{value}'" in stderr_of(proc)


def test_status_comes_about_once_a_second(procs, worker):
    channel = worker()
    source = start(procs, channel, ['rz-hydrant', '--every', '10', '--format', 'json',
                                    'fixtures_funcs:numbers', '1'], stdout=subprocess.PIPE)
    wait_for(lambda: len(channel.of('status')) >= 3, timeout=10, what='three statuses')
    statuses = channel.of('status')
    assert {'fired', 'skipped', 'missed', 'runs_in_flight'} <= set(statuses[-1])
    source.terminate()
    source.wait(timeout=30)
