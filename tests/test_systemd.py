"""The units in systemd/ and the sd_notify messages the commands send: each test binds its
own AF_UNIX datagram socket, as systemd would, and runs the real commands with
NOTIFY_SOCKET naming it."""

import configparser
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from cluster import Cluster
from conftest import command, stderr_of
from test_edges import free_port
from rezina.notify import Notifier

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEMD = os.path.join(ROOT, 'systemd')
UNITS = ('rz-master.service', 'rz-worker.service', 'rz-stage@.service')
COMMANDS = sorted(os.listdir(os.path.join(ROOT, 'bin')))
DRAIN_TIMEOUT = 30


class NotifySocket:
    """A bound AF_UNIX SOCK_DGRAM socket that collects the messages sent to it."""

    def __init__(self, address):
        self.name = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b'\0' + address[1:].encode() if address.startswith('@') else address)
        self.messages = []

    def expect(self, field, timeout=20.0, count=1):
        """Read until `field` (READY=1 ...) has come count times; fail after timeout."""
        deadline = time.monotonic() + timeout
        while self.count(field) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"{self.name}: {field} came {self.count(field)} times, not "
                            f"{count}, in {timeout} s: {self.messages}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            self.messages.append(data.decode().split('\n'))

    def count(self, field):
        """How many messages had field; `STATUS=` counts every STATUS line."""
        return sum(any(line == field or field.endswith('=') and line.startswith(field)
                       for line in message) for message in self.messages)

    def statuses(self):
        return [line for message in self.messages for line in message
                if line.startswith('STATUS=')]

    def close(self):
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path):
    opened = []

    def bind(name):
        address = name if name.startswith('@') else str(tmp_path / name)
        opened.append(NotifySocket(address))
        return opened[-1]

    yield bind
    for sock in opened:
        sock.close()


def stop(proc, timeout=40):
    """SIGTERM proc and return its exit status."""
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=timeout)


# the notifier alone

def test_notifier_sends_nothing_without_a_socket_and_never_raises(tmp_path):
    assert not Notifier({}).ready('up')
    assert not Notifier({'WATCHDOG_USEC': '1000'}).watchdog()
    gone = Notifier({'NOTIFY_SOCKET': str(tmp_path / 'nobody-listens')})
    assert gone.enabled and not gone.ready() and not gone.stopping()


def test_watchdog_only_for_our_pid_and_every_half_interval(notify_socket):
    sock = notify_socket('notify')
    env = {'NOTIFY_SOCKET': sock.name, 'WATCHDOG_USEC': '60000000'}
    assert not Notifier({**env, 'WATCHDOG_PID': str(os.getpid() + 1)}).watchdog()
    notifier = Notifier({**env, 'WATCHDOG_PID': str(os.getpid())})
    assert notifier.watchdog()
    assert not notifier.watchdog()          # the next is due in 30 s
    assert notifier.status('a\nsecond line ' + 'x' * 500)
    sock.expect('WATCHDOG=1')
    sock.expect('STATUS=')
    status, = sock.statuses()
    assert status.startswith('STATUS=a second line x') and len(status) == 7 + 200
    assert sock.count('WATCHDOG=1') == 1


# the commands

def test_stages_notify_ready_watchdog_and_stopping(procs, notify_socket):
    """rz-hydrant --every | rz-bocca over ZeroMQ; the bocca's socket is abstract."""
    source_sock = notify_socket('hydrant')
    sink_sock = notify_socket(f'@rezina-test-{os.getpid()}-{time.monotonic_ns()}')
    address = f'tcp://127.0.0.1:{free_port()}'
    source = procs.start(
        ['rz-hydrant', '--every', '0.5', '--out', address, 'fixtures_funcs:numbers', '3'],
        env={'NOTIFY_SOCKET': source_sock.name, 'WATCHDOG_USEC': '200000'},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    sink = procs.start(['rz-bocca', '--in', address, '--follow'],
                       env={'NOTIFY_SOCKET': sink_sock.name}, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE)

    source_sock.expect('READY=1')
    assert f'bound {address}' in stderr_of(source)       # READY comes once it is bound
    sink_sock.expect('READY=1')
    source_sock.expect('WATCHDOG=1', count=3)
    assert sink_sock.count('WATCHDOG=1') == 0           # no WATCHDOG_USEC, no pings
    assert sink.stdout.readline()                       # items flow

    assert stop(source) == 0, stderr_of(source)
    source_sock.expect('STOPPING=1')
    assert stop(sink) == 0, stderr_of(sink)
    sink_sock.expect('STOPPING=1')
    assert source_sock.count('READY=1') == sink_sock.count('READY=1') == 1
    assert any('finishing' in line for line in source_sock.statuses())


def test_master_and_worker_notify_ready_watchdog_and_stopping(procs, tmp_path,
                                                               notify_socket):
    master_sock, worker_sock = notify_socket('master'), notify_socket('worker')
    cluster = Cluster(procs, tmp_path)
    master = procs.start(
        ['rz-master', '-P', str(cluster.port), '--http-port', str(cluster.http_port), '-W',
         str(cluster.workspace), '-L', str(cluster.logs), '--state-dir', str(cluster.state)],
        env={'NOTIFY_SOCKET': master_sock.name, 'WATCHDOG_USEC': '200000'},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    master_sock.expect('READY=1')
    assert cluster.answers(), stderr_of(master)         # both sockets bound by READY
    socket.create_connection(('127.0.0.1', cluster.http_port), timeout=5).close()
    master_sock.expect('WATCHDOG=1', count=3)

    worker = cluster.start_worker('127.0.0.2', env={'NOTIFY_SOCKET': worker_sock.name})
    worker_sock.expect('READY=1')
    assert worker_sock.count('WATCHDOG=1') == 0

    assert stop(worker) == 0, stderr_of(worker)
    worker_sock.expect('STOPPING=1')
    assert stop(master) == 0, stderr_of(master)
    master_sock.expect('STOPPING=1')
    assert any('127.0.0.1:%d' % cluster.port in s for s in master_sock.statuses())


# the unit files

def read_unit(path):
    parser = configparser.ConfigParser(strict=False, interpolation=None,
                                       comment_prefixes=('#', ';'), empty_lines_in_values=False)
    parser.optionxform = str
    parser.read(path, encoding='utf-8')
    return parser


def help_text(name):
    return subprocess.run([command(name), '--help'], capture_output=True, text=True,
                          timeout=30, check=True).stdout


def check_command_line(words):
    """The first word names an rz command, and every option it is given is in its help."""
    name = os.path.basename(words[0])
    assert name in COMMANDS, words
    text = help_text(name)
    for word in words[1:]:
        if word.startswith('-') and not word.startswith('$'):
            option = word.split('=', 1)[0]
            assert re.search(rf'(^|[\s,\[]){re.escape(option)}\b', text, re.M), \
                f"{name} has no option {option}"


def env_file(path):
    lines = open(path, encoding='utf-8').read().splitlines()
    return dict(line.split('=', 1) for line in lines if line and not line.startswith('#'))


@pytest.mark.parametrize('unit', UNITS)
def test_units_notify_restart_and_run_rezina_commands(unit):
    parser = read_unit(os.path.join(SYSTEMD, unit))
    service, head = parser['Service'], parser['Unit']
    assert service['Type'] == 'notify'
    assert service['Restart'] == 'on-failure'
    assert int(head['StartLimitIntervalSec']) > 0 and int(head['StartLimitBurst']) > 0
    assert int(service['TimeoutStopSec']) > DRAIN_TIMEOUT
    assert service['NoNewPrivileges'] == service['PrivateTmp'] == 'yes'
    assert service['User'] == 'rezina'

    words = service['ExecStart'].split()
    if words[0] == '/usr/bin/env':          # the template: the command is in its env file
        assert words[1:] == ['${RZ_COMMAND}', '$RZ_ARGS']
        assert service['EnvironmentFile'] == '/etc/rezina/stage-%i.env'
        examples = os.path.join(SYSTEMD, 'examples')
        for name in sorted(os.listdir(examples)):
            env = env_file(os.path.join(examples, name))
            check_command_line([env['RZ_COMMAND'], *env['RZ_ARGS'].split()])
    else:
        check_command_line(words)
        for option, directory in (('--state-dir', 'StateDirectory'), ('--root',
                                                                      'StateDirectory'),
                                  ('-L', 'LogsDirectory')):
            if option in service['ExecStart']:
                assert directory in service


def test_setup_installs_every_systemd_file():
    listed = open(os.path.join(ROOT, 'setup.cfg'), encoding='utf-8').read()
    for base, _, files in os.walk(SYSTEMD):
        for name in files:
            path = os.path.relpath(os.path.join(base, name), ROOT)
            assert re.search(rf'^\s+{re.escape(path)}$', listed, re.M), path


@pytest.mark.skipif(shutil.which('systemd-analyze') is None,
                    reason='systemd-analyze is not installed: the units are not verified')
@pytest.mark.parametrize('unit', UNITS)
def test_systemd_analyze_verify_accepts_the_unit(unit, tmp_path):
    """With ExecStart pointed at the commands this Python runs."""
    text = open(os.path.join(SYSTEMD, unit), encoding='utf-8').read()
    path = tmp_path / unit
    path.write_text(text.replace('/usr/local/bin/', os.path.dirname(command('rz')) + '/'))
    done = subprocess.run(['systemd-analyze', 'verify', '--man=no', str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_a_node_under_rz_worker_does_not_notify_systemd(procs, notify_socket):
    """With --control-fd the node reports to rz-worker, though it inherits NOTIFY_SOCKET."""
    sock = notify_socket('inherited')
    ours, theirs = socket.socketpair()
    try:
        node = procs.start(['rz-hydrant', '--format', 'json', '--control-fd',
                            str(theirs.fileno()), 'fixtures_funcs:numbers', '3'],
                           env={'NOTIFY_SOCKET': sock.name, 'WATCHDOG_USEC': '200000'},
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           pass_fds=(theirs.fileno(),))
        theirs.close()
        out, _ = node.communicate(timeout=30)
        assert node.returncode == 0 and len(out.splitlines()) == 3, stderr_of(node)
        assert ours.recv(4096)          # it did report, to the worker's end
    finally:
        ours.close()
    sock.sock.setblocking(False)
    with pytest.raises(BlockingIOError):    # every datagram it sent would be queued by now
        sock.sock.recv(4096)
