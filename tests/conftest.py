"""Shared test set-up: run the real commands as processes, and stop every one by pid."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from fakemaster import Master

TESTS = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)


def command(name):
    """The path of an installed rz command, beside this Python."""
    path = os.path.join(BIN, name)
    return path if os.path.exists(path) else name


class Processes:
    """Starts commands and stops each by its pid at the end of the test."""

    def __init__(self, tmp_path):
        self.started = []
        self.tmp_path = tmp_path

    def start(self, args, **kwargs):
        args = [command(args[0]), *args[1:]]
        kwargs.setdefault('cwd', TESTS)
        errfile = self.tmp_path / f"stderr-{len(self.started)}-{os.path.basename(args[0])}"
        env = dict(os.environ, **kwargs.pop('env', {}))
        with open(errfile, 'wb') as err:
            proc = subprocess.Popen(args, env=env, stderr=err, **kwargs)
        proc.errfile = errfile
        self.started.append(proc)
        return proc

    def pipeline(self, *stages, stdout=subprocess.PIPE, **kwargs):
        """Start stages joined by OS pipes, as a shell would; returns their Popens."""
        procs = []
        upstream = kwargs.pop('stdin', subprocess.DEVNULL)
        for index, args in enumerate(stages):
            last = index == len(stages) - 1
            proc = self.start(args, stdin=upstream, stdout=stdout if last else subprocess.PIPE,
                              **kwargs)
            if procs:
                procs[-1].stdout.close()    # only the next stage holds the read end
            upstream = proc.stdout
            procs.append(proc)
        return procs

    def stop_all(self):
        for proc in self.started:
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            for stream in (proc.stdout, proc.stderr, proc.stdin):
                if stream:
                    stream.close()


def pytest_addoption(parser):
    parser.addoption('--long', action='store_true',
                     help='run the full fault-injection suite (tests/faults)')


@pytest.fixture
def long_run(request):
    """True with --long: scenarios run at their full size."""
    return request.config.getoption('--long')


def pytest_terminal_summary(terminalreporter):
    """The fault-injection table, when scenarios ran."""
    from faults import checker
    if checker.ROWS:
        terminalreporter.section('fault injection')
        terminalreporter.write_line(checker.table())


@pytest.fixture
def procs(tmp_path):
    processes = Processes(tmp_path)
    yield processes
    processes.stop_all()


@pytest.fixture
def pipe():
    """A real os.pipe() as (read fd, write fd, open fds); closes what the test left open."""
    read_fd, write_fd = os.pipe()
    fds = {read_fd, write_fd}
    yield read_fd, write_fd, fds
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def close(fd, fds):
    """Close one end of a pipe fixture's pipe, so the fixture does not close it again."""
    os.close(fd)
    fds.discard(fd)


@pytest.fixture
def opened():
    """Open sinks through this, so each is closed after the test."""
    from rezina.backends import open_sink
    sinks = []

    def open_one(spec, **options):
        sink = open_sink(spec, **options)
        sink.open()
        sinks.append(sink)
        return sink

    yield open_one
    for sink in sinks:
        sink.close()


@pytest.fixture
def master():
    """A stand-in rz-master: master(answer) starts one; see fakemaster.py."""
    started = []

    def start(answer):
        server = Master(answer)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def cluster(procs, tmp_path):
    """A real rz-master with two rz-workers, on 127.0.0.2 and 127.0.0.3 (cluster.py)."""
    from cluster import Cluster
    c = Cluster(procs, tmp_path)
    c.start_master()
    c.start_worker('127.0.0.2')
    c.start_worker('127.0.0.3')
    return c


def finish_chain(chain, timeout=60):
    """Wait for every process of a chain; return (exit codes, stdout of the last, stderr
    texts)."""
    out, _ = chain[-1].communicate(timeout=timeout)
    for proc in chain[:-1]:
        proc.wait(timeout=timeout)
    return [p.returncode for p in chain], out, [stderr_of(p) for p in chain]


def json_lines(out):
    return [json.loads(line) for line in out.decode().splitlines()]


def finish(proc, timeout=60):
    """Wait for proc; return (exit status, stdout bytes, stderr text)."""
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out, stderr_of(proc)


def stderr_of(proc):
    return proc.errfile.read_text(encoding='utf-8', errors='replace')


def wait_for(predicate, timeout=20.0, what='condition'):
    """Poll predicate until true; fail the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
