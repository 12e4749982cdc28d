"""A throw-away PostgreSQL server for tests/test_postgresql.py, and the sources its
pipelines run (rows, steady).

The server lives in a temp dir owned by the `postgres` OS user (PostgreSQL refuses to run
as root): initdb there, then the postmaster itself as that user (Popen(user=...), so its
pid is ours to stop), on 127.0.0.1 at a free port with its unix socket in the temp dir and
trust authentication. It can be killed and started again on the same data and port.
"""

import glob
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

START_TIMEOUT = 30.0        # seconds for the server to accept connections
STOP_TIMEOUT = 10.0         # seconds for a fast shutdown before SIGKILL
OS_USER = 'postgres'


def binaries():
    """The directory of initdb and postgres, newest version first; None if not installed."""
    found = sorted(glob.glob('/usr/lib/postgresql/*/bin/initdb'),
                   key=lambda path: int(path.split('/')[4]) if path.split('/')[4].isdigit()
                   else 0)
    return os.path.dirname(found[-1]) if found else None


def missing():
    """Why a server cannot be run here, or None if it can."""
    if binaries() is None:
        return "PostgreSQL is not installed (tests/debian-packages.sh installs it)"
    if os.geteuid() != 0:
        return f"running the server as the {OS_USER} user needs root"
    try:
        pwd.getpwnam(OS_USER)
    except KeyError:
        return f"no {OS_USER} OS user"
    if importlib.util.find_spec('psycopg') is None:
        return "psycopg is not installed: pip install 'rezina[postgresql]'"
    return None


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Server:
    """One PostgreSQL server in its own temp dir; stop() ends it and removes the dir."""

    def __init__(self):
        self.bin = binaries()
        account = pwd.getpwnam(OS_USER)
        self.uid, self.gid = account.pw_uid, account.pw_gid
        # short: a unix socket path must fit in 107 bytes
        self.dir = tempfile.mkdtemp(prefix='rz-pg-')
        self.data = os.path.join(self.dir, 'data')
        self.sockets = os.path.join(self.dir, 'sockets')
        self.log_path = os.path.join(self.dir, 'server.log')
        os.mkdir(self.sockets)
        for path in (self.dir, self.sockets):
            os.chown(path, self.uid, self.gid)
        self.port = free_port()
        self.proc = None
        try:
            self._init()
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def _as_postgres(self, args, **kwargs):
        return subprocess.Popen(args, user=self.uid, group=self.gid, extra_groups=[],
                                cwd=self.dir, **kwargs)

    def _init(self):
        proc = self._as_postgres(
            [os.path.join(self.bin, 'initdb'), '-D', self.data, '-U', 'postgres',
             '--auth=trust', '-E', 'UTF8', '--locale=C', '--no-sync'],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = proc.communicate(timeout=120)
        if proc.returncode:
            raise RuntimeError(f"initdb failed: {out.decode(errors='replace')}")

    def uri(self, table=None, dbname='postgres'):
        uri = f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"
        return uri + (f"?table={table}" if table else '')

    def start(self):
        """Start the postmaster and wait until it accepts connections."""
        with open(self.log_path, 'ab') as log_file:
            self.proc = self._as_postgres(
                [os.path.join(self.bin, 'postgres'), '-D', self.data, '-p', str(self.port),
                 '-c', 'listen_addresses=127.0.0.1',
                 '-c', f'unix_socket_directories={self.sockets}',
                 # a killed server keeps what it committed: fsync only matters to the OS
                 '-c', 'fsync=off', '-c', 'full_page_writes=off', '-c', 'max_connections=30',
                 '-c', 'shared_buffers=16MB', '-c', 'logging_collector=off'],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file)
        self.wait_ready()

    def wait_ready(self):
        import psycopg
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited {self.proc.returncode}: {self.log()}")
            try:
                psycopg.connect(self.uri(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres not ready after {START_TIMEOUT} s: "
                                       f"{self.log()}") from None
                time.sleep(0.05)

    def children(self):
        """The pids of the postmaster's child processes."""
        pids = []
        for entry in os.listdir('/proc'):
            if not entry.isdigit():
                continue
            try:
                with open(f'/proc/{entry}/stat', encoding='ascii', errors='replace') as stat:
                    fields = stat.read().rpartition(')')[2].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                pids.append(int(entry))
        return pids

    def kill(self):
        """SIGKILL the postmaster, and wait for its children to notice and exit, so the
        server can start again on the same data dir."""
        children = self.children()
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=STOP_TIMEOUT)
        deadline = time.monotonic() + STOP_TIMEOUT
        for pid in children:
            while _alive(pid):
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    deadline += STOP_TIMEOUT
                time.sleep(0.02)

    def stop(self):
        """Stop the server (fast shutdown, then SIGKILL) and remove its directory."""
        if self.proc is not None and self.proc.poll() is None:
            stopper = self._as_postgres(
                [os.path.join(self.bin, 'pg_ctl'), 'stop', '-D', self.data, '-m', 'fast',
                 '-w', '-t', str(int(STOP_TIMEOUT))],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                stopper.wait(timeout=STOP_TIMEOUT + 5)
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        try:
            with open(self.log_path, encoding='utf-8', errors='replace') as log_file:
                return log_file.read()[-2000:]
        except OSError:
            return ''


def _alive(pid):
    try:
        with open(f'/proc/{pid}/stat', encoding='ascii', errors='replace') as stat:
            return stat.read().rpartition(')')[2].split()[0] != 'Z'
    except OSError:
        return False


def steady(total, gate):
    """Yield total dicts, one a millisecond; before the last quarter, wait (up to 30 s)
    for the file `gate`, so that items are still to come when the test opens it."""
    for n in range(total):
        if n == total * 3 // 4:
            deadline = time.monotonic() + 30.0
            while not os.path.exists(gate) and time.monotonic() < deadline:
                time.sleep(0.01)
        yield {'n': n, 'half': n / 2, 'even': n % 2 == 0, 'name': f'item {n}'}
        time.sleep(0.001)


def rows(n, *extra_keys):
    """n dicts of every column type, plus a text value for each of `extra_keys`."""
    for i in range(n):
        row = {'n': i, 'half': i / 2, 'even': i % 2 == 0, 'name': f'item {i}', 'tags': [i]}
        row.update((key, f'{key} {i}') for key in extra_keys)
        yield row
