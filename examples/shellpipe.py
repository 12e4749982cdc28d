"""Run rz stage commands as one pipeline, as `a | b | c` in a shell would, for the examples.

The examples' run.py scripts use this to start the stages, connect each one's stdout to
the next one's stdin, wait for all of them and report each exit status, so a failure in
any stage shows (a shell reports only the last one without `set -o pipefail`).
"""

import shlex
import sqlite3
import shutil
import subprocess
import sys
from contextlib import closing
from pathlib import Path

STDERR = 2  # our stderr's file descriptor, whatever sys.stderr has become
STOP_TIMEOUT = 5.0  # seconds a stage gets to exit after SIGTERM before SIGKILL


class CommandNotFound(Exception):
    """An rz command is neither on $PATH nor next to the running Python."""


def find_command(name):
    """NAME if it is on $PATH, else its path next to this Python (an uninstalled venv)."""
    if shutil.which(name):
        return name
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    raise CommandNotFound(
        f"cannot find {name}: install rezina (pip install -e .) or put its bin on $PATH")


def shell_line(stages, cwd=None, env=None):
    """The shell command line that runs STAGES, to show the user what runs."""
    pipeline = ' | '.join(shlex.join(argv) for argv in stages)
    settings = ' '.join(f'{name}={shlex.quote(value)}' for name, value in (env or {}).items())
    if settings:
        pipeline = f'{settings} {pipeline}'
    if cwd is not None:
        pipeline = f'cd {shlex.quote(str(cwd))} && {pipeline}'
    return pipeline


def run_pipeline(stages, cwd=None, env=None):
    """Run STAGES (argv lists) connected by pipes; return the list of their exit statuses.

    The first stage reads nothing; the last one's stdout goes to our stderr, so our
    stdout stays free for the report. Stages still running when this returns (after
    an error or Ctrl-C) are stopped by pid.
    """
    processes = []
    try:
        upstream = subprocess.DEVNULL
        for index, argv in enumerate(stages):
            last = index == len(stages) - 1
            process = subprocess.Popen(
                argv, cwd=cwd, env=env, stdin=upstream,
                stdout=STDERR if last else subprocess.PIPE)
            processes.append(process)
            if upstream is not subprocess.DEVNULL:
                upstream.close()  # the next stage holds it now; EOF must reach it
            upstream = process.stdout
        return [process.wait() for process in processes]
    finally:
        for process in processes:
            stop_process(process)


def stop_process(process, timeout=STOP_TIMEOUT):
    """Stop PROCESS by its pid: SIGTERM, then SIGKILL if it outlives TIMEOUT."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def pipeline_status(statuses):
    """One exit status for the pipeline: the last stage's that failed, as pipefail has it."""
    for status in reversed(statuses):
        if status != 0:
            return 128 - status if status < 0 else status
    return 0


def remove_database(db):
    """Delete DB and its WAL files, so a run starts from an empty database."""
    for suffix in ('', '-wal', '-shm', '-journal'):
        Path(f'{db}{suffix}').unlink(missing_ok=True)


def query_row(db, sql, default):
    """The first row SQL gives on DB, read only; default where DB or its table is missing."""
    try:
        with closing(sqlite3.connect(f'{Path(db).as_uri()}?mode=ro', uri=True)) as database:
            return database.execute(sql).fetchone()
    except sqlite3.OperationalError:
        return default
