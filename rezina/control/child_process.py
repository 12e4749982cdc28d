"""One child process as the OS sees it: reaped by pid without blocking, signalled only
while it cannot have been reaped, its exit described, and made to die with its parent.

Runs in rz-worker (the Supervisor, rezina/control/supervisor.py) and in the processes that
start children which must not outlive them (results.py). PR_SET_PDEATHSIG is sent when
the thread that forked the child ends, so a child made with death_signal_preexec() dies
with that thread, not only with its process.
"""

import ctypes
import logging
import os
import signal

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def describe_exit(status):
    """'exited with status 3' or 'was killed by SIGKILL', from a waitpid status."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"was killed by {name}"
    return f"exited with status {os.WEXITSTATUS(status)}"


def exit_code(status):
    """Popen's returncode for a waitpid status: its exit status, -N for signal N, else -1."""
    try:
        return os.waitstatus_to_exitcode(status)
    except ValueError:
        return -1


def reap(pid):
    """The waitpid status of child pid if it has exited (reaping it), else None."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        # reaped by someone else (SIGCHLD ignored?): its status is lost
        log.warning("pid %s: exit status lost (reaped elsewhere)", pid)
        return 1 << 8
    return status if done else None


def send_signal(pid, signum):
    """Signal a child not yet reaped (so its pid cannot have been reused)."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def find_prctl():
    """libc's prctl, or None where there is none (not Linux)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def die_with_parent():
    """A preexec_fn for a child of this thread that is to end with it."""
    return death_signal_preexec(find_prctl(), os.getpid())


def death_signal_preexec(prctl, parent_pid):
    """A preexec_fn: the child gets SIGTERM when the thread that forks it dies."""
    def preexec():
        if prctl is None:
            return
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        # the supervisor may have died between fork and prctl: then no signal would come
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGTERM)
    return preexec
