"""Going into the background (`rz-master -D`, `rz-worker -D`): a real script daemonizes in
a subprocess; its daemon is stopped by the pid in its pid file."""

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import wait_for
from rezina.control.daemon import is_alive, read_pid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# argv: pidfile logfile gate [break-pidfile]. The daemon says how it runs, then waits
# (at most 60 s) for the gate file; SIGTERM ends it as a normal exit.
SCRIPT = '''\
import os, signal, sys, time
from rezina.control.daemon import daemonize
from rezina.errors import RezinaError

pidfile, logfile, gate = sys.argv[1:4]
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
if sys.argv[4:] == ['break-pidfile']:
    def refuse(*_):
        raise PermissionError(13, 'Permission denied (as the test says)')
    os.replace = refuse
print('in the foreground', flush=True)
print('buffered before the fork', end='')
try:
    daemonize(pidfile, logfile)
except RezinaError as exc:
    print(f'refused: {exc}', file=sys.stderr)
    sys.exit(1)
umask = os.umask(0o022)
print(f'pid={os.getpid()} sid={os.getsid(0)} cwd={os.getcwd()} umask={umask:o} '
      f'stdin={sys.stdin.read()!r}')
print('to stderr', file=sys.stderr)
deadline = time.monotonic() + 60
while not os.path.exists(gate) and time.monotonic() < deadline:
    time.sleep(0.05)
'''


class Daemons:
    """Runs the script; every daemon it leaves is stopped by its pid at the end."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.script = tmp_path / 'daemon_script.py'
        self.script.write_text(SCRIPT)
        self.pids = []

    def run(self, pidfile, logfile, *extra):
        """(exit status, stdout, stderr) of the script's foreground process."""
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [ROOT, os.environ.get('PYTHONPATH')])))
        proc = subprocess.Popen(
            [sys.executable, str(self.script), str(pidfile), str(logfile),
             str(self.tmp_path / 'gate'), *extra],
            cwd=self.tmp_path, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self.proc_pid = proc.pid
        pid = read_pid(pidfile)
        if pid is not None and pid not in self.pids and self.is_ours(pid):
            self.pids.append(pid)
        return proc.returncode, out.decode(), err.decode()

    def is_ours(self, pid):
        """Whether pid still runs this test's script (and is not a recycled pid)."""
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as file:
                return str(self.script).encode() in file.read()
        except OSError:
            return False

    def stop_all(self):
        for pid in self.pids:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if not (is_alive(pid) and self.is_ours(pid)):
                    break
                os.kill(pid, sig)
                deadline = time.monotonic() + 5
                while is_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.02)


@pytest.fixture
def daemons(tmp_path):
    running = Daemons(tmp_path)
    yield running
    running.stop_all()


def test_the_daemon_writes_its_pid_before_the_foreground_exits_and_logs(tmp_path, daemons):
    pidfile = tmp_path / 'run' / 'master.pid'
    logfile = tmp_path / 'logs' / 'deep' / 'master.log'
    status, out, err = daemons.run(pidfile, logfile)
    assert (status, err) == (0, '')
    assert out == 'in the foreground\nbuffered before the fork'
    pid = read_pid(pidfile)         # there already: the foreground waited for it
    assert pid is not None and pid != daemons.proc_pid and is_alive(pid)
    assert pidfile.read_text() == f'{pid}\n'

    wait_for(lambda: 'to stderr' in logfile.read_text(), what='the daemon in its log')
    said = logfile.read_text()
    assert said.count('buffered before the fork') == 0
    first = said.splitlines()[0]
    assert first == (f"pid={pid} sid={os.getsid(pid)} cwd=/ umask=22 stdin=''")
    assert os.getsid(pid) != pid and os.getsid(pid) != os.getsid(0)

    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not is_alive(pid), what='the daemon to exit')
    assert not pidfile.exists()


def test_a_second_daemon_on_a_live_pid_file_is_refused(tmp_path, daemons):
    pidfile = tmp_path / 'master.pid'
    assert daemons.run(pidfile, tmp_path / 'one.log')[0] == 0
    pid = read_pid(pidfile)

    status, out, err = daemons.run(pidfile, tmp_path / 'two.log')
    assert (status, out) == (1, 'in the foreground\nbuffered before the fork')
    assert err == (f'refused: cannot start in the background: pid file {pidfile} names pid '
                   f'{pid}, which is running\n')
    assert read_pid(pidfile) == pid and is_alive(pid)
    assert not (tmp_path / 'two.log').exists()


def test_a_pid_file_of_a_process_that_is_gone_is_taken_over(tmp_path, daemons):
    gone = subprocess.Popen([sys.executable, '-c', 'pass'])
    gone.wait(30)
    pidfile = tmp_path / 'master.pid'
    pidfile.write_text(f'{gone.pid}\n')
    assert daemons.run(pidfile, tmp_path / 'master.log')[0] == 0
    pid = read_pid(pidfile)
    assert pid not in (None, gone.pid) and is_alive(pid)


def test_the_pid_file_stays_when_it_names_another_process(tmp_path, daemons):
    pidfile = tmp_path / 'master.pid'
    assert daemons.run(pidfile, tmp_path / 'master.log')[0] == 0
    pid = read_pid(pidfile)
    pidfile.write_text('1\n')       # a successor's, say
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not is_alive(pid), what='the daemon to exit')
    assert pidfile.read_text() == '1\n'


def test_a_daemon_that_cannot_write_its_pid_file_fails_in_the_foreground(tmp_path, daemons):
    pidfile = tmp_path / 'master.pid'
    status, _, err = daemons.run(pidfile, tmp_path / 'master.log', 'break-pidfile')
    assert status == 1
    assert err == ('refused: cannot start in the background: PermissionError: [Errno 13] '
                   f'Permission denied (as the test says) (pid file {pidfile})\n')
    assert not pidfile.exists()


def test_a_log_file_that_cannot_be_opened_fails_before_the_fork(tmp_path, daemons):
    (tmp_path / 'file').write_text('')
    logfile = tmp_path / 'file' / 'master.log'
    status, _, err = daemons.run(tmp_path / 'master.pid', logfile)
    assert (status, err) == (1, f'refused: cannot open log file {logfile}: '
                             f'{logfile.parent} is not a directory\n')
    assert not (tmp_path / 'master.pid').exists()


@pytest.mark.parametrize('text, pid', [('123\n', 123), ('  77 ', 77), ('', None),
                                       ('abc', None), ('-5', None), ('0', None),
                                       ('\u00b2', None)])
def test_read_pid(tmp_path, text, pid):
    pidfile = tmp_path / 'x.pid'
    pidfile.write_text(text)
    assert read_pid(pidfile) == pid
    assert read_pid(tmp_path / 'missing.pid') is None


def test_is_alive():
    assert is_alive(os.getpid())
    gone = subprocess.Popen([sys.executable, '-c', 'pass'])
    gone.wait(30)
    assert not is_alive(gone.pid)
