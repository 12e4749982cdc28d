"""The processes of one benchmark stage: started in their own process groups, reaped with
their resource usage, and killed by process group when the stage passes its deadline.

Runs in the bench's own process (bench/run.py).
"""

import ctypes
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time

SAMPLE_INTERVAL = 0.1       # seconds between two reads of the children's VmHWM
STRAGGLER_GRACE = 1.0       # seconds a stage's leftover processes get to exit by themselves
PR_SET_CHILD_SUBREAPER = 36


class StageTimeout(Exception):
    """A stage ran past its deadline; its processes were killed."""


def free_ports(count):
    """count distinct loopback TCP ports that were free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(('127.0.0.1', 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def read_hwm_kib(pid):
    """VmHWM (peak resident set) of a live process in KiB, or None."""
    try:
        with open(f'/proc/{pid}/status') as status:
            for line in status:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def become_subreaper():
    """Have orphaned descendants (a killed node's workers) reparented to this process, so
    that they can be reaped here rather than left as zombies under a container's pid 1."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap_orphans():
    """Reap every exited child; call only when no started process is left unreaped."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def group_members(pgids):
    """{pid: pgid} of every live (not zombie) process whose process group is one of
    pgids."""
    members = {}
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            with open(f'/proc/{name}/stat') as stat:
                fields = stat.read().rsplit(')', 1)[1].split()
        except (OSError, IndexError):
            continue
        state, pgid = fields[0], int(fields[2])    # after the command: state, ppid, pgrp
        if pgid in pgids and state != 'Z':
            members[int(name)] = pgid
    return members


class Proc:
    """One started command: its pid, when it started and ended, its status and peak RSS."""

    def __init__(self, label, popen, started, stderr_file=None):
        self.label = label
        self.popen = popen
        self.pid = popen.pid
        self.started = started
        self.ended = None
        self.exit_code = None
        self.maxrss_kib = None          # wait4's ru_maxrss: the most of it and its children
        self.children_hwm_kib = {}      # pid -> sampled VmHWM of each child process
        self.stderr_file = stderr_file
        self.stderr_lines = []          # (time.monotonic(), line) when stderr is a pipe
        self._reader = None
        if stderr_file is None:
            self._reader = threading.Thread(target=self._read_stderr, daemon=True)
            self._reader.start()

    @property
    def reaped(self):
        return self.exit_code is not None

    def _read_stderr(self):
        for raw in self.popen.stderr:
            self.stderr_lines.append((time.monotonic(), raw.decode(errors='replace')))
        self.popen.stderr.close()

    def join_stderr(self, timeout=STRAGGLER_GRACE):
        if self._reader is not None:
            self._reader.join(timeout)

    def stderr_text(self):
        if self.stderr_file is None:
            return ''.join(line for _, line in self.stderr_lines)
        self.stderr_file.seek(0)
        return self.stderr_file.read().decode(errors='replace')

    def summary(self):
        children = sorted(self.children_hwm_kib.values(), reverse=True)
        return {'command': self.label, 'pid': self.pid, 'exit': self.exit_code,
                'peak_rss_kib': self.maxrss_kib, 'children_peak_rss_kib': children}


class Stage:
    """The processes of one stage; use as a context manager, so none outlives it."""

    def __init__(self, name, timeout, cwd):
        self.name = name
        self.timeout = timeout
        self.cwd = cwd
        self.procs = []
        self.timed_out = False
        self.stragglers = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._deadline = None
        self._watchdog = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self):
        become_subreaper()
        self._deadline = time.monotonic() + self.timeout
        self._watchdog.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._watchdog.join()
        with self._lock:
            for proc in self.procs:
                if not proc.reaped:
                    self._kill_group(proc)
        for proc in self.procs:
            if not proc.reaped:
                self._reap(proc)
        self._end_stragglers()
        return False

    def start(self, label, argv, stdin=None, stdout=subprocess.DEVNULL, timed_stderr=False):
        """Start argv in a process group of its own. stderr is kept in a temporary file, or
        with timed_stderr read line by line as it comes, each line with its arrival time."""
        stderr_file = None if timed_stderr else tempfile.TemporaryFile()
        started = time.monotonic()
        popen = subprocess.Popen(argv, cwd=self.cwd, stdin=stdin, stdout=stdout,
                                 stderr=stderr_file or subprocess.PIPE,
                                 start_new_session=True)
        proc = Proc(label, popen, started, stderr_file)
        self.procs.append(proc)
        return proc

    def wait(self, proc):
        """Block until proc exits and reap it; StageTimeout if the deadline killed it."""
        if not proc.reaped:
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)   # leaves it a zombie
            proc.ended = time.monotonic()
            self._reap(proc)
        proc.join_stderr()
        if self.timed_out:
            raise StageTimeout(f"{self.name}: timed out after {self.timeout:g} s")
        return proc

    def wait_all(self):
        for proc in self.procs:
            self.wait(proc)

    def _reap(self, proc):
        # the lock keeps the watchdog from signalling a pid the moment it is reaped
        with self._lock:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.exit_code = os.waitstatus_to_exitcode(status)
            proc.popen.returncode = proc.exit_code
            proc.maxrss_kib = usage.ru_maxrss
            if proc.ended is None:
                proc.ended = time.monotonic()

    def _watch(self):
        """Sample the children's VmHWM; kill every group once the deadline has passed."""
        while not self._done.wait(SAMPLE_INTERVAL):
            self._sample_children()
            if time.monotonic() > self._deadline:
                with self._lock:
                    self.timed_out = True
                    for proc in self.procs:
                        if not proc.reaped:
                            self._kill_group(proc)
                return

    def _sample_children(self):
        leaders = {proc.pid: proc for proc in self.procs if not proc.reaped}
        for pid, pgid in group_members(set(leaders)).items():
            if pid == pgid:
                continue
            hwm = read_hwm_kib(pid)
            if hwm is not None:
                children = leaders[pgid].children_hwm_kib
                children[pid] = max(hwm, children.get(pid, 0))

    @staticmethod
    def _kill_group(proc):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _end_stragglers(self):
        """Processes left in a stage's groups after their leader exited: noted, then killed."""
        pgids = {proc.pid for proc in self.procs}
        members = leftovers(pgids, STRAGGLER_GRACE)
        if not self.timed_out:      # after a timeout, leftovers of killed leaders are normal
            self.stragglers = [{'pid': pid, 'group_of': pgid}
                               for pid, pgid in members.items()]
        for pgid in set(members.values()):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        leftovers(pgids, STRAGGLER_GRACE)


def leftovers(pgids, grace):
    """The live members of pgids once they are gone or grace seconds have passed; reaps the
    orphans among them that exit meanwhile."""
    deadline = time.monotonic() + grace
    while True:
        reap_orphans()
        members = group_members(pgids)
        if not members or time.monotonic() >= deadline:
            return members
        time.sleep(0.05)
