"""Keeps node processes running: the part of rz-worker that starts, watches and restarts
the stage commands placed on its machine (see docs/control-plane.md, "States").

Runs in the rz-worker process. A node is one child process started from a NodeSpec. Its
states:

    STARTING --lived 1 s--> RUNNING
    STARTING, RUNNING --exits abnormally--> BACKOFF (1, 2, 4 ... 60 s) --> STARTING
    BACKOFF --5 abnormal exits within 60 s--> FAILED (no more restarts)
    any --exits 0, or stop()--> STOPPED

An abnormal exit is a non-zero status or a signal that stop() did not send, except status
1 from a node whose last status said it had ended its work: it counts failed items. The backoff
doubles with each abnormal exit in a row; a run that lasted a whole FAIL_WINDOW starts
the count again.

A spec with `control=True` gets, at each start, one end of a fresh socketpair as
`--control-fd N` (appended to its argv); the other end is `node.control_sock` until the
process ends, when `on_exit(node)` may read its last records and the supervisor closes it.

Children get stdin and stdout on /dev/null (under a worker a node speaks through its
endpoints) and stderr on a pipe that poll() reads without blocking: the lines go to
`on_lines(node_id, lines)` (the worker ships them to the master's log) and the last 200
are kept per node, the last 20 of a failed run in its `last_error`.

Each child is started with PR_SET_PDEATHSIG=SIGTERM, so it stops when the supervisor
dies, even by SIGKILL: a worker restarted by systemd must not find orphans from its last
life still bound to its ports and running its nodes twice. Linux sends that signal when
the thread that forked the child ends, so call start() and poll() from one thread that
lives as long as the supervisor (they are not thread-safe anyway).

Every timing decision (RUNNING after 1 s, the backoff, the failure window) reads the
injected clock, so tests drive them with a fake clock. Only stop() and close() wait in
real time, for a real process to exit; terminate() does not wait: poll() reaps the node,
and sends SIGKILL if it is still there STOP_TIMEOUT s later by the clock.
"""

import collections
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass

from rezina import defaults, exitcodes
from rezina.control.child_process import (death_signal_preexec, describe_exit,
                                          exit_code, find_prctl, reap, send_signal)
from rezina.errors import RezinaError

log = logging.getLogger(__name__)

RESTART_BACKOFF = defaults.RESTART_BACKOFF
RESTART_BACKOFF_MAX = defaults.RESTART_BACKOFF_MAX
FAIL_AFTER = defaults.FAIL_AFTER
FAIL_WINDOW = defaults.FAIL_WINDOW
RUNNING_AFTER = 1.0             # seconds a node lives before it counts as RUNNING
STOP_TIMEOUT = defaults.DRAIN_TIMEOUT + 5.0     # SIGTERM drains; then SIGKILL
STDERR_TAIL_LINES = 200         # stderr lines kept per node
ERROR_TAIL_LINES = 20           # of those, the ones a failed run's last_error quotes

STARTING = 'STARTING'
RUNNING = 'RUNNING'
BACKOFF = 'BACKOFF'
FAILED = 'FAILED'
STOPPED = 'STOPPED'
LIVE = (STARTING, RUNNING)

_READ_SIZE = 1 << 16
_READS_PER_POLL = 16            # so one chatty child cannot hold up the others
_LONGEST_LINE = 1 << 16         # bytes: a longer line without a newline is cut here
_REAP_STEP = 0.01               # seconds between checks while stop() waits for an exit


class UnknownNode(RezinaError):
    """No node of the supervisor has this node_id."""


class NodeAlreadyRunning(RezinaError):
    """A node with this node_id is live or waiting to restart."""


@dataclass(frozen=True)
class NodeSpec:
    """What to run: argv is a full command line; env adds to the supervisor's own;
    control gives each start a `--control-fd` channel."""

    node_id: str
    argv: list
    env: dict = None
    cwd: str = None
    control: bool = False


class Node:
    """One supervised node: its spec, its current process and its history."""

    def __init__(self, spec):
        self.spec = spec
        self.state = STARTING
        self.proc = None
        self.started_at = None
        self.restart_at = None
        self.restarts = 0
        self.last_error = None
        self.stopping = False
        self.kill_at = None                     # clock time terminate() sends SIGKILL
        self.control_sock = None                # our end of the --control-fd socketpair
        self.streak = 0                         # abnormal exits in a row
        self.failures = collections.deque()     # clock times of recent abnormal exits
        self.tail = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.run_lines = 0                      # stderr lines of the current run
        self.partial = b''
        self.ended = False      # the process said it ended its work (then exit 1 is not a
                                # crash: it counts its failed items)

    @property
    def node_id(self):
        return self.spec.node_id

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    def report(self):
        return {'node_id': self.node_id, 'pid': self.pid, 'state': self.state,
                'restarts': self.restarts, 'last_error': self.last_error}


class Supervisor:
    """Starts nodes, restarts those that exit abnormally, with backoff, and stops them."""

    def __init__(self, clock=time.monotonic, on_lines=None, on_exit=None):
        self.clock = clock
        self.on_lines = on_lines
        self.on_exit = on_exit
        self.nodes = {}
        self._prctl = find_prctl()

    def start(self, spec):
        """Start a node; a STOPPED or FAILED node of the same node_id is replaced."""
        old = self.nodes.get(spec.node_id)
        if old is not None and old.state in LIVE + (BACKOFF,):
            raise NodeAlreadyRunning(f"node {spec.node_id} is {old.state}")
        node = self.nodes[spec.node_id] = Node(spec)
        self._spawn(node)
        return node

    def poll(self):
        """Read stderr, reap exited children and restart those due; never blocks."""
        for node in list(self.nodes.values()):
            if node.proc is not None:
                self._read_stderr(node)
                status = reap(node.proc.pid)
                if status is not None:
                    self._exited(node, status)
            now = self.clock()
            if node.proc is not None and node.kill_at is not None and now >= node.kill_at:
                log.warning("node %s: no exit %s s after SIGTERM; SIGKILL",
                            node.node_id, STOP_TIMEOUT)
                send_signal(node.proc.pid, signal.SIGKILL)
                node.kill_at = None
            if node.state == STARTING and now - node.started_at >= RUNNING_AFTER:
                node.state = RUNNING
            elif node.state == BACKOFF and now >= node.restart_at:
                node.restarts += 1
                self._spawn(node)

    def stop(self, node_id, timeout=STOP_TIMEOUT):
        """Stop a node: SIGTERM, then SIGKILL after timeout s; return how it ended.

        A node waiting to restart is STOPPED without a signal; a FAILED one stays FAILED.
        """
        node = self.nodes.get(node_id)
        if node is None:
            raise UnknownNode(f"no node {node_id}")
        return self._stop_all([node], timeout).get(node_id)

    def terminate(self, node_id, timeout=STOP_TIMEOUT):
        """Stop a node without waiting: SIGTERM now; poll() reaps it, or sends SIGKILL
        once timeout s have passed by the clock."""
        node = self.nodes.get(node_id)
        if node is None:
            raise UnknownNode(f"no node {node_id}")
        if node.proc is None:
            if node.state == BACKOFF:
                node.state = STOPPED
        elif not node.stopping:
            node.stopping = True
            node.kill_at = self.clock() + timeout
            send_signal(node.proc.pid, signal.SIGTERM)

    def remove(self, node_id, timeout=STOP_TIMEOUT):
        """Stop a node and forget it, so that reports no longer name it."""
        self.stop(node_id, timeout)
        del self.nodes[node_id]

    def close(self, timeout=STOP_TIMEOUT):
        """Stop every node, all at once: SIGTERM, then SIGKILL after timeout s."""
        self._stop_all(list(self.nodes.values()), timeout)

    def report(self):
        """[{node_id, pid, state, restarts, last_error}] of every node, for a heartbeat."""
        return [node.report() for node in self.nodes.values()]

    def _spawn(self, node):
        spec = node.spec
        env = dict(os.environ, **spec.env) if spec.env else None
        node.started_at = self.clock()
        node.restart_at = None
        node.run_lines = 0
        node.partial = b''
        argv, child_end = spec.argv, None
        if spec.control:
            node.control_sock, child_end = socket.socketpair()
            node.control_sock.setblocking(False)
            argv = [*argv, '--control-fd', str(child_end.fileno())]
        try:
            node.proc = subprocess.Popen(
                argv, env=env, cwd=spec.cwd, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                pass_fds=(child_end.fileno(),) if child_end else (),
                preexec_fn=death_signal_preexec(self._prctl, os.getpid()))
        except (OSError, subprocess.SubprocessError) as exc:
            node.proc = None
            self._close_control(node)
            self._failed_run(node, f"cannot start {spec.argv[0]!r}: {exc}")
            return
        finally:
            if child_end is not None:
                child_end.close()           # the child holds its own copy
        os.set_blocking(node.proc.stderr.fileno(), False)
        node.state = STARTING
        node.ended = False
        log.info("node %s: started, pid %s", node.node_id, node.proc.pid)

    def _exited(self, node, status):
        self._read_stderr(node, to_eof=True)
        node.proc.returncode = exit_code(status)   # so Popen never waits on a reused pid
        node.proc.stderr.close()
        node.proc = None
        if self.on_exit is not None:
            try:
                self.on_exit(node)
            except Exception as exc:            # as for on_lines: nodes come first
                log.warning("node %s: on_exit failed: %s", node.node_id, exc)
        self._close_control(node)
        how = describe_exit(status)
        if node.stopping:
            node.stopping = False
            node.kill_at = None
            node.state = STOPPED
            log.info("node %s: stopped (%s)", node.node_id, how)
        elif status == 0 or (node.ended and exit_code(status) == exitcodes.FAILED):
            node.state = STOPPED
            log.info("node %s: done (%s)", node.node_id,
                     how if status == 0 else f"{how}: some items failed")
        else:
            self._failed_run(node, how)
        return how

    def _failed_run(self, node, how):
        now = self.clock()
        count = min(ERROR_TAIL_LINES, node.run_lines, len(node.tail))
        lines = list(node.tail)[len(node.tail) - count:]
        node.last_error = '\n'.join([how, *lines])

        if node.started_at is not None and now - node.started_at >= FAIL_WINDOW:
            node.streak = 0
        node.streak += 1
        node.failures.append(now)
        while node.failures and node.failures[0] <= now - FAIL_WINDOW:
            node.failures.popleft()
        if len(node.failures) >= FAIL_AFTER:
            node.state = FAILED
            log.error("node %s: %s; FAILED after %s abnormal exits within %s s",
                      node.node_id, how, len(node.failures), FAIL_WINDOW)
            return

        delay = min(RESTART_BACKOFF_MAX, RESTART_BACKOFF * 2 ** (node.streak - 1))
        node.state = BACKOFF
        node.restart_at = now + delay
        log.warning("node %s: %s; restart in %s s", node.node_id, how, delay)

    def _stop_all(self, nodes, timeout):
        """SIGTERM every live node, SIGKILL those left after timeout s; reap each by pid."""
        for node in nodes:
            if node.proc is None:
                if node.state == BACKOFF:
                    node.state = STOPPED
                continue
            node.stopping = True
            send_signal(node.proc.pid, signal.SIGTERM)

        ended = {}
        waiting = [node for node in nodes if node.proc is not None]
        deadline = time.monotonic() + timeout
        killed = False
        # bounded: SIGKILL at the deadline, and a reap may wait 10 s more after it
        while waiting:
            for node in list(waiting):
                self._read_stderr(node)
                status = reap(node.proc.pid)
                if status is not None:
                    ended[node.node_id] = self._exited(node, status)
                    waiting.remove(node)
            if not waiting:
                break
            if not killed and time.monotonic() >= deadline:
                for node in waiting:
                    log.warning("node %s: no exit %s s after SIGTERM; SIGKILL",
                                node.node_id, timeout)
                    send_signal(node.proc.pid, signal.SIGKILL)
                killed = True
                deadline = time.monotonic() + 10.0
            elif killed and time.monotonic() >= deadline:
                for node in waiting:
                    log.error("node %s: pid %s still there 10 s after SIGKILL",
                              node.node_id, node.proc.pid)
                break
            time.sleep(_REAP_STEP)
        return ended

    def _close_control(self, node):
        if node.control_sock is not None:
            node.control_sock.close()
            node.control_sock = None

    def _read_stderr(self, node, to_eof=False):
        """Read what the child wrote to stderr, keep its tail and hand on whole lines."""
        fd = node.proc.stderr.fileno()
        chunks = []
        for _ in range(_READS_PER_POLL if not to_eof else 1 << 10):
            try:
                data = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                break
            if not data:
                break
            chunks.append(data)
        if not chunks and not (to_eof and node.partial):
            return

        text = node.partial + b''.join(chunks)
        *whole, node.partial = text.split(b'\n')
        if len(node.partial) > _LONGEST_LINE or (to_eof and node.partial):
            whole.append(node.partial)
            node.partial = b''
        lines = [line.decode('utf-8', 'replace') for line in whole]
        node.tail.extend(lines)
        node.run_lines += len(lines)
        if lines and self.on_lines is not None:
            try:
                self.on_lines(node.node_id, lines)
            except Exception as exc:            # a log shipper's bug must not stop nodes
                log.warning("node %s: on_lines failed: %s", node.node_id, exc)
