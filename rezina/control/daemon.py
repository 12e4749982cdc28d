"""Going into the background for `rz-master -D` and `rz-worker -D`.

daemonize() runs in the command's process before it makes threads or ZeroMQ sockets
(neither survives a fork). The process that called it exits 0 once the daemon has written
its pid file, or the call raises RezinaError there, in the foreground, so the command
reports the failure as any other; daemonize() returns only in the daemon.

The daemon is the grandchild: the child calls setsid() and forks again, so the daemon
leads no session and can never get a controlling terminal back. It runs in `/` with umask
022, reads /dev/null and appends its stdout and stderr to the log file. Its pid file is
removed when it exits normally (atexit); a command that wants SIGTERM to remove it turns
SIGTERM into a normal exit. A pid file left by a daemon that is gone is taken over.
"""

import atexit
import errno
import os
import select
import sys
import time

from rezina.errors import RezinaError

READY_TIMEOUT = 10.0            # seconds the foreground waits for the daemon's pid file
READY = b'ready\n'


def read_pid(pidfile):
    """The pid a pid file names, or None if there is no such file or no pid in it."""
    try:
        with open(pidfile, encoding='ascii', errors='replace') as file:
            text = file.read(64).strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RezinaError(f"cannot read pid file {pidfile}: {exc.strerror or exc}") from None
    return int(text) if text.isascii() and text.isdigit() and int(text) > 0 else None


def is_alive(pid):
    """Whether a process pid exists and has not exited (a zombie has)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True                 # it exists, as another user's
    try:
        with open(f"/proc/{pid}/stat", encoding='ascii', errors='replace') as file:
            state = file.read().rpartition(')')[2].split()[0]
    except (OSError, IndexError):
        return True                 # no /proc here: kill() is all we know
    return state not in ('Z', 'X')


def daemonize(pidfile, logfile):
    """Go into the background: return in the daemon, with its pid in pidfile."""
    pidfile = os.path.abspath(pidfile)
    logfile = os.path.abspath(logfile)

    # refuse in the foreground, where the error can be seen
    pid = read_pid(pidfile)
    if pid is not None and pid != os.getpid() and is_alive(pid):
        raise RezinaError(f"cannot start in the background: pid file {pidfile} names "
                          f"pid {pid}, which is running")
    try:
        _make_parent(pidfile)
    except OSError as exc:
        raise RezinaError(f"cannot write pid file {pidfile}: {exc.strerror or exc}") from None
    try:
        _make_parent(logfile)
        log_fd = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as exc:
        raise RezinaError(f"cannot open log file {logfile}: {exc.strerror or exc}") from None

    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()          # or the buffered text would be written by each process
    ready_r, ready_w = os.pipe()
    try:
        child = os.fork()
    except OSError as exc:
        for fd in (ready_r, ready_w, log_fd):
            os.close(fd)
        raise RezinaError(f"cannot start in the background: fork: {exc.strerror}") from None

    if child:
        os.close(ready_w)
        os.close(log_fd)
        _wait_for_daemon(child, ready_r, pidfile, logfile)
        os._exit(0)                 # the caller's cleanups belong to the daemon now

    os.close(ready_r)
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        _become_daemon(pidfile, log_fd)
    except BaseException as exc:    # tell the foreground why, then leave without cleanups
        _say(ready_w, f"{type(exc).__name__}: {exc}".encode('utf-8', 'replace'))
        os._exit(1)
    _say(ready_w, READY)
    os.close(ready_w)


def _make_parent(path):
    """Make the directory path is in, with its parents, as needed."""
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(errno.ENOTDIR, f"{parent} is not a directory") from None


def _become_daemon(pidfile, log_fd):
    """In the grandchild: detach from the caller's directory and streams, and record
    the pid."""
    os.chdir('/')
    os.umask(0o022)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    for stream in (sys.stdout, sys.stderr):
        if stream is not None and hasattr(stream, 'reconfigure'):
            stream.reconfigure(line_buffering=True)

    pid = os.getpid()
    temporary = f"{pidfile}.{pid}.tmp"
    try:
        with open(temporary, 'w', encoding='ascii') as file:
            file.write(f"{pid}\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, pidfile)
    except BaseException:
        _unlink(temporary)
        raise
    atexit.register(_remove_pidfile, pidfile, pid)


def _remove_pidfile(pidfile, pid):
    """Remove the pid file if it is still this daemon's (not a fork's, not a successor's)."""
    if os.getpid() != pid:
        return
    try:
        if read_pid(pidfile) == pid:
            os.unlink(pidfile)
    except (OSError, RezinaError):
        pass


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _say(fd, message):
    try:
        os.write(fd, message)
    except OSError:
        pass                        # the foreground gave up waiting


def _wait_for_daemon(child, ready_r, pidfile, logfile):
    """In the foreground: return once the daemon says it is ready, or raise RezinaError."""
    _reap(child)
    deadline = time.monotonic() + READY_TIMEOUT
    said = b''
    try:
        while len(said) < 4096:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([ready_r], [], [], left)[0]:
                raise RezinaError(
                    f"cannot start in the background: no pid in {pidfile} within "
                    f"{READY_TIMEOUT:g} s (see {logfile})")
            chunk = os.read(ready_r, 4096)
            if not chunk:
                break
            said += chunk
    finally:
        os.close(ready_r)
    if said != READY:
        why = said.decode('utf-8', 'replace').strip() or 'it exited at once'
        raise RezinaError(f"cannot start in the background: {why} (pid file {pidfile})")


def _reap(child):
    """Wait for the first child, which only forks the daemon and exits."""
    try:
        os.waitpid(child, 0)
    except ChildProcessError:
        pass                        # reaped already (SIGCHLD ignored)
