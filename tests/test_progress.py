"""rz-bocca's progress line (rezina/nodes/progress.py): on a terminal by default, on a file
with --progress, never otherwise; the line itself on a fake clock."""

import io
import logging
import os
import pty
import re
import subprocess
import time
import tty

import pytest

from conftest import command, stderr_of, TESTS
from test_edges import free_port
from rezina.nodes.progress import Progress, REFRESH_PER_SECOND
from rezina.pipe import codec, protocol

pytestmark = pytest.mark.timeout(60)

LINE = re.compile(r'rz-bocca: (\d+)(?:/(\d+))? items(?: \((\d+)%\))?, \d+ items/s, '
                  r'(\d+) failed')


def read_pty(fd, proc, timeout=30):
    """All that the process writes to the terminal whose master side is fd, until it
    exits and the terminal has nothing more."""
    out = bytearray()
    deadline = time.monotonic() + timeout
    os.set_blocking(fd, False)
    while time.monotonic() < deadline:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            if proc.poll() is not None:
                break
            time.sleep(0.01)
            continue
        except OSError:             # EIO: every slave side is closed
            break
        if not data:
            break
        out += data
    proc.wait(timeout=10)
    return out.decode()


def test_on_a_terminal_the_line_counts_to_100_percent_and_ends_with_a_newline(procs):
    port = free_port()
    hydrant = procs.start(['rz-hydrant', '--out', f'tcp://127.0.0.1:{port}',
                           '--log-level', 'warning', 'fixtures_funcs:numbers', '3000'],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    master, slave = pty.openpty()
    tty.setraw(slave)               # the bytes as written, no '\r\n' for '\n'
    try:
        bocca = subprocess.Popen([command('rz-bocca'), '--in', f'tcp://127.0.0.1:{port}',
                                  '--log-level', 'warning', 'null'], cwd=TESTS,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=slave)
        procs.started.append(bocca)
        os.close(slave)
        slave = None
        text = read_pty(master, bocca)
    finally:
        os.close(master)
        if slave is not None:
            os.close(slave)
    assert bocca.returncode == 0 and hydrant.wait(timeout=10) == 0, text
    assert text.startswith('\r') and text.endswith('\n'), repr(text)
    last = last_drawn(text)
    done, total, percent, failed = LINE.match(last).groups()
    assert (done, total, percent, failed) == ('3000', '3000', '100', '0'), last
    assert text.count('\n') == 1


def last_drawn(text):
    """The last progress line drawn in text (each is written between two '\\r')."""
    return [part for part in text.rstrip('\n').split('\r') if part.strip()][-1].rstrip()


def test_stderr_a_file_gets_no_line_unless_progress_is_given(procs):
    plain = procs.pipeline(['rz-hydrant', 'fixtures_funcs:numbers', '50'], ['rz-bocca', 'null'])
    forced = procs.pipeline(['rz-hydrant', 'fixtures_funcs:numbers', '50'],
                            ['rz-bocca', '--progress', '--log-level', 'warning', 'null'])
    for proc in plain + forced:
        assert proc.wait(timeout=30) == 0, stderr_of(proc)
    assert not LINE.search(stderr_of(plain[1])), stderr_of(plain[1])
    text = forced[1].errfile.read_bytes().decode()     # '\r' as written
    assert LINE.match(last_drawn(text)).group(1) == '50', repr(text)
    assert text.endswith('\n')


def test_both_progress_options_are_a_usage_error(procs):
    proc = procs.start(['rz-bocca', '--progress', '--no-progress', 'null'],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    assert proc.wait(timeout=30) == 2
    assert 'rz-bocca: --progress and --no-progress' in stderr_of(proc)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_the_line_is_redrawn_a_few_times_a_second_with_percent_and_eta():
    out, clock = io.StringIO(), Clock()
    progress = Progress('rz-bocca', out, clock)
    progress.update(0, 0)
    assert out.getvalue() == ''             # nothing known yet: nothing drawn
    progress.saw_total('r1', 600)
    progress.saw_total('r2', 400)
    for step in range(1, 101):              # 100 items a second for 1 s
        clock.now += 0.01
        progress.update(step, 0)
    assert 1 <= out.getvalue().count('\r') // 2 <= REFRESH_PER_SECOND + 1    # 2 a drawing
    clock.now += 1.0
    progress.update(200, 5)
    last = last_drawn(out.getvalue())
    assert last.startswith('rz-bocca: 205/1000 items (20%), ')
    assert ', 5 failed, ETA ' in last
    progress.finish(990, 10, complete=True)
    assert last_drawn(out.getvalue()).startswith('rz-bocca: 1000/1000 items (100%)')
    assert out.getvalue().endswith('\n')
    progress.update(1000, 10)
    assert out.getvalue().endswith('\n')    # nothing after the end


def test_a_log_record_clears_the_line_first():
    out, clock = io.StringIO(), Clock()
    progress = Progress('rz-bocca', out, clock)
    logs = io.StringIO()
    handler = logging.StreamHandler(logs)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        progress.attach_logging()
        progress.update(7, 0)
        logging.getLogger('rezina.test').warning('a warning')
        progress.detach_logging()
    finally:
        root.removeHandler(handler)
    drawn = out.getvalue()
    line = last_drawn(drawn)
    assert drawn.startswith('\r' + line + '\r') and line.startswith('rz-bocca: 7 items')
    assert drawn.endswith('\r' + ' ' * len(line) + '\r')     # cleared, cursor at its start
    assert logs.getvalue() == 'a warning\n'


def test_a_batch_header_carries_the_total_only_when_known():
    plain = protocol.Batch('run-1', 0, 2, b'\x01\x02', no=7)
    assert codec.unpackb(plain.header()) == [7, 'run-1', 0, 2]     # as before the total
    assert protocol.Batch.from_header(plain.header(), b'\x01\x02').total is None
    sized = protocol.Batch('run-1', 0, 2, b'\x01\x02', no=7, total=10)
    assert protocol.Batch.from_header(sized.header(), b'\x01\x02').total == 10
    later = codec.packb([7, 'run-1', 0, 2, -1, 'a field of a later version'])
    read = protocol.Batch.from_header(later, b'\x01\x02')
    assert (read.count, read.total) == (2, None)
