"""Small programs that tests/test_supervisor.py runs as supervised nodes:
`python fixtures_supervised.py MODE [ARG...]`."""

import os
import signal
import sys
import time

HERE = os.path.abspath(__file__)
LONG = 60.0         # seconds a sleeping node lives if nobody stops it


def argv(mode, *args):
    """The argv of a node running this file in MODE."""
    return [sys.executable, HERE, mode, *map(str, args)]


def exit_with(code, lines=0):
    """Write `lines` numbered lines to stderr, then exit with status `code`."""
    for number in range(int(lines)):
        print(f"line {number}", file=sys.stderr)
    sys.exit(int(code))


def three_lines():
    """Two whole lines and a last one without a newline, then exit 0."""
    sys.stderr.write("one\ntwo\nthree")
    sys.stderr.flush()


def where(name):
    """Write the current directory and the variable `name` to stderr, then exit 0."""
    print(os.getcwd(), file=sys.stderr)
    print(os.environ.get(name), file=sys.stderr)


def sleep():
    """Say so on stderr, then sleep until stopped."""
    print("ready", file=sys.stderr, flush=True)
    time.sleep(LONG)


def ignore_sigterm():
    """Sleep through any SIGTERM; only SIGKILL ends it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sleep()


def supervise():
    """A tiny worker: supervise one sleeping node, print its pid when it is ready, and poll
    until killed."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
    from rezina.control.supervisor import NodeSpec, Supervisor

    supervisor = Supervisor()
    child = supervisor.start(NodeSpec('sleeper', argv('sleep')))
    printed = False
    deadline = time.monotonic() + LONG
    while time.monotonic() < deadline:
        supervisor.poll()
        # once the child has written all it will, so that it cannot die of a broken pipe
        if not printed and 'ready' in child.tail:
            print(child.pid, flush=True)
            printed = True
        time.sleep(0.05)
    supervisor.close(timeout=1.0)


MODES = {'exit': exit_with, 'lines': three_lines, 'where': where, 'sleep': sleep,
         'ignore-sigterm': ignore_sigterm, 'supervise': supervise}

if __name__ == '__main__':
    MODES[sys.argv[1]](*sys.argv[2:])
