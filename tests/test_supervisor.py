"""The node supervisor of rz-worker: restarts with backoff, FAILED, stop and close, stderr,
and children that die with it; real processes, timing driven by a fake clock."""

import os
import select
import signal
import subprocess
import sys

import pytest

from conftest import wait_for
from fakeclock import FakeClock
from fixtures_supervised import HERE, argv
from rezina.control.supervisor import (BACKOFF, FAILED, RUNNING, STARTING, STOPPED,
                                       NodeAlreadyRunning, NodeSpec, Supervisor,
                                       UnknownNode)


class Recorded(Supervisor):
    """A Supervisor that remembers the pid of every child it starts, for the finaliser."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.pids = set()

    def start(self, spec):
        node = super().start(spec)
        self._record()
        return node

    def poll(self):
        super().poll()
        self._record()

    def _record(self):
        self.pids.update(entry['pid'] for entry in self.report() if entry['pid'])


def reaped(pid):
    """True once our child pid has been reaped (so it is gone)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def stop_child(pid):
    """Kill and reap our child pid unless it was reaped already."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return
    if not done:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def gone(pid):
    """True once pid (not our child) has exited: no such process, or a zombie."""
    try:
        with open(f'/proc/{pid}/stat') as stat:
            return stat.read().rpartition(')')[2].split()[0] == 'Z'
    except FileNotFoundError:
        return True


def ours(pid):
    """True if pid still runs a program of fixtures_supervised.py."""
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as cmdline:
            return HERE.encode() in cmdline.read()
    except FileNotFoundError:
        return False


@pytest.fixture
def clock():
    return FakeClock(wall=0.0, mono=100.0)


@pytest.fixture
def make_supervisor(clock):
    made = []

    def make(**kwargs):
        kwargs.setdefault('clock', clock.monotonic)
        supervisor = Recorded(**kwargs)
        made.append(supervisor)
        return supervisor

    yield make
    for supervisor in made:
        try:
            supervisor.close(timeout=1.0)
        finally:
            for pid in supervisor.pids:
                stop_child(pid)


@pytest.fixture
def strays():
    """Pids of grandchildren to kill at the end if they are still there."""
    pids = []
    yield pids
    for pid in pids:
        if not gone(pid) and ours(pid):
            os.kill(pid, signal.SIGKILL)


def poll_until(supervisor, predicate, what):
    def check():
        supervisor.poll()
        return predicate()
    wait_for(check, what=what)


def poll_until_state(supervisor, node, state):
    poll_until(supervisor, lambda: node.state == state, f"node {node.node_id} {state}")


def poll_until_ready(supervisor, node):
    poll_until(supervisor, lambda: 'ready' in node.tail, f"node {node.node_id} ready")


def test_abnormal_exits_restart_after_1_then_2_then_4_s(make_supervisor, clock):
    supervisor = make_supervisor()
    node = supervisor.start(NodeSpec('n', argv('exit', 3)))

    for restarts, delay in enumerate([1.0, 2.0, 4.0], start=1):
        exited_at = clock.mono              # the clock stands still while we wait
        poll_until_state(supervisor, node, BACKOFF)
        assert node.last_error == 'exited with status 3'
        assert node.pid is None

        clock.mono = exited_at + delay - 0.01
        supervisor.poll()
        assert node.state == BACKOFF
        assert node.restarts == restarts - 1

        clock.mono = exited_at + delay
        supervisor.poll()
        assert node.state == STARTING
        assert node.pid is not None
        assert node.restarts == restarts


def test_five_abnormal_exits_within_a_minute_mark_the_node_failed(make_supervisor, clock):
    supervisor = make_supervisor()
    node = supervisor.start(NodeSpec('n', argv('exit', 3, 30)))

    for _ in range(4):
        poll_until_state(supervisor, node, BACKOFF)
        clock.mono = node.restart_at
        supervisor.poll()
    poll_until_state(supervisor, node, FAILED)
    assert clock.mono - 100.0 == 1 + 2 + 4 + 8

    lines = node.last_error.split('\n')
    assert lines[0] == 'exited with status 3'
    assert lines[1:] == [f'line {number}' for number in range(10, 30)]

    clock.mono += 3600.0
    supervisor.poll()
    assert supervisor.report() == [{'node_id': 'n', 'pid': None, 'state': FAILED,
                                    'restarts': 4, 'last_error': node.last_error}]


def test_a_run_that_lasted_a_minute_restarts_after_1_s_again(make_supervisor, clock):
    supervisor = make_supervisor()
    node = supervisor.start(NodeSpec('n', argv('exit', 3)))
    for _ in range(3):
        poll_until_state(supervisor, node, BACKOFF)
        clock.mono = node.restart_at
        supervisor.poll()

    # by the clock, the fourth run lasts 60 s before its exit is seen
    clock.mono += 60.0
    poll_until_state(supervisor, node, BACKOFF)
    assert node.restart_at == clock.mono + 1.0
    assert node.restarts == 3


def test_a_node_that_exits_0_is_done_and_not_restarted(make_supervisor, clock):
    supervisor = make_supervisor()
    node = supervisor.start(NodeSpec('n', argv('exit', 0)))
    poll_until_state(supervisor, node, STOPPED)

    clock.mono += 3600.0
    supervisor.poll()
    assert node.state == STOPPED
    assert (node.pid, node.restarts, node.last_error) == (None, 0, None)


def test_a_node_killed_by_sigkill_is_restarted(make_supervisor, clock):
    supervisor = make_supervisor()
    node = supervisor.start(NodeSpec('n', argv('sleep')))
    assert node.state == STARTING
    poll_until_ready(supervisor, node)
    clock.mono += 1.0
    supervisor.poll()
    assert node.state == RUNNING

    first = node.pid
    os.kill(first, signal.SIGKILL)
    poll_until_state(supervisor, node, BACKOFF)
    assert node.last_error == 'was killed by SIGKILL\nready'
    assert reaped(first)

    clock.mono = node.restart_at
    supervisor.poll()
    assert supervisor.report() == [{'node_id': 'n', 'pid': node.pid, 'state': STARTING,
                                    'restarts': 1, 'last_error': node.last_error}]
    assert node.pid not in (None, first)


def test_a_stopped_node_is_not_restarted(make_supervisor, clock):
    supervisor = make_supervisor()
    node = supervisor.start(NodeSpec('n', argv('sleep')))
    pid = node.pid

    assert supervisor.stop('n', timeout=10.0) == 'was killed by SIGTERM'
    assert reaped(pid)
    clock.mono += 3600.0
    supervisor.poll()
    assert (node.state, node.pid, node.restarts) == (STOPPED, None, 0)


def test_stop_falls_back_to_sigkill_when_sigterm_is_ignored(make_supervisor):
    supervisor = make_supervisor()
    node = supervisor.start(NodeSpec('n', argv('ignore-sigterm')))
    poll_until_ready(supervisor, node)
    pid = node.pid

    assert supervisor.stop('n', timeout=0.3) == 'was killed by SIGKILL'
    assert reaped(pid)
    assert (node.state, node.pid) == (STOPPED, None)


def test_on_lines_gets_the_childs_stderr_lines(make_supervisor):
    got = []
    supervisor = make_supervisor(on_lines=lambda node_id, lines: got.append((node_id, lines)))
    node = supervisor.start(NodeSpec('talker', argv('lines')))
    poll_until_state(supervisor, node, STOPPED)

    assert {node_id for node_id, _ in got} == {'talker'}
    assert [line for _, lines in got for line in lines] == ['one', 'two', 'three']
    assert list(node.tail) == ['one', 'two', 'three']


def test_only_the_last_200_stderr_lines_are_kept(make_supervisor):
    supervisor = make_supervisor()
    node = supervisor.start(NodeSpec('n', argv('exit', 0, 250)))
    poll_until_state(supervisor, node, STOPPED)
    assert list(node.tail) == [f'line {number}' for number in range(50, 250)]


def test_env_and_cwd_of_the_spec_reach_the_child(make_supervisor, tmp_path):
    supervisor = make_supervisor()
    spec = NodeSpec('n', argv('where', 'RZ_TEST_VALUE'), env={'RZ_TEST_VALUE': 'x y'},
                    cwd=str(tmp_path))
    node = supervisor.start(spec)
    poll_until_state(supervisor, node, STOPPED)
    assert list(node.tail) == [os.path.realpath(tmp_path), 'x y']


def test_a_command_that_cannot_start_backs_off_with_the_reason(make_supervisor):
    supervisor = make_supervisor()
    node = supervisor.start(NodeSpec('n', ['/nonexistent/rz-nothing']))
    assert node.state == BACKOFF
    assert node.last_error.startswith("cannot start '/nonexistent/rz-nothing': ")


def test_node_ids_are_checked(make_supervisor):
    supervisor = make_supervisor()
    supervisor.start(NodeSpec('n', argv('sleep')))
    with pytest.raises(NodeAlreadyRunning):
        supervisor.start(NodeSpec('n', argv('sleep')))
    with pytest.raises(UnknownNode):
        supervisor.stop('other')


def test_a_removed_node_is_stopped_and_leaves_the_report(make_supervisor):
    supervisor = make_supervisor()
    node = supervisor.start(NodeSpec('n', argv('sleep')))
    pid = node.pid
    supervisor.remove('n', timeout=10.0)
    assert reaped(pid)
    assert supervisor.report() == []


def test_close_leaves_no_child_running(make_supervisor):
    supervisor = make_supervisor()
    nodes = [supervisor.start(NodeSpec('stubborn', argv('ignore-sigterm'))),
             supervisor.start(NodeSpec('sleeper', argv('sleep'))),
             supervisor.start(NodeSpec('done', argv('exit', 0)))]
    pids = [node.pid for node in nodes]
    for node in nodes[:2]:
        poll_until_ready(supervisor, node)

    supervisor.close(timeout=0.3)
    assert [node.state for node in nodes] == [STOPPED] * 3
    for pid in pids:
        assert reaped(pid)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='PR_SET_PDEATHSIG is Linux')
def test_nodes_die_with_a_supervisor_killed_by_sigkill(procs, strays):
    worker = procs.start([sys.executable, HERE, 'supervise'], stdout=subprocess.PIPE)
    readable, _, _ = select.select([worker.stdout], [], [], 20.0)
    assert readable, "the supervisor printed no pid within 20 s"
    child = int(worker.stdout.readline())
    strays.append(child)
    assert not gone(child)

    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    wait_for(lambda: gone(child), what=f"node pid {child} to die with its supervisor")
