"""rz-bocca when its backend fails under it: an SQLite database locked by another process,
a full disk, a file system gone read-only. Nothing it did not store is acknowledged; it
retries, says so, and stores every item once the backend is back; if the backend never
comes back, it exits 1 saying how many items it did not write."""

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

import fixtures_outage
from conftest import stderr_of, wait_for
from test_control_fd import Worker
from test_edges import free_port
from rezina import exitcodes

FIXTURES = [sys.executable, fixtures_outage.__file__]


def stored(db):
    """The item ids in the items table of `db`, [] while it has none."""
    try:
        conn = sqlite3.connect(db, timeout=5)
    except sqlite3.Error:
        return []
    try:
        return [row[0] for row in conn.execute('SELECT rz_id FROM items')]
    except sqlite3.Error:
        return []
    finally:
        conn.close()


def last_line(text):
    lines = text.strip().splitlines()
    return lines[-1] if lines else ''


def ids(run, n):
    return sorted(f't/{run}:{i}' for i in range(n))


def in_waves(procs, tmp_path, run, db, *bocca_options, first=10, total=200):
    """hydrant | bocca sqlite:db, the hydrant's items after the first `first` held back
    until the returned gate file is made."""
    gate = tmp_path / f'gate-{run}'
    chain = procs.pipeline(
        ['rz-hydrant', '--name', 't', '--run-id', run, 'fixtures_outage:waves', str(first),
         str(total), str(gate)],
        ['rz-bocca', *bocca_options, f'sqlite:{db}'], stdout=subprocess.DEVNULL)
    wait_for(lambda: len(stored(db)) == first, what=f'the first {first} items stored')
    return chain, gate


def lock(procs, db):
    """Another process holding the write lock of `db`; closing its stdin releases it."""
    locker = procs.start([*FIXTURES, 'lock', str(db)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)
    assert locker.stdout.readline() == b'locked\n', stderr_of(locker)
    return locker


def release(locker):
    locker.stdin.close()
    assert locker.wait(timeout=10) == 0, stderr_of(locker)


def test_a_database_locked_by_another_process_gets_every_item_once_it_is_released(
        procs, tmp_path):
    db = tmp_path / 'locked.db'
    (hydrant, bocca), gate = in_waves(procs, tmp_path, 'l', db)
    locker = lock(procs, db)
    gate.touch()
    wait_for(lambda: 'database is locked; retrying in' in stderr_of(bocca),
             what='a write that found the database locked')
    assert len(stored(db)) == 10
    release(locker)

    assert [hydrant.wait(timeout=30), bocca.wait(timeout=30)] == [0, 0], stderr_of(bocca)
    assert sorted(stored(db)) == ids('l', 200)
    assert 'the sink writes again' in stderr_of(bocca)


def test_a_sink_that_never_comes_back_exits_1_counting_what_it_did_not_write(
        procs, tmp_path):
    db = tmp_path / 'never.db'
    (hydrant, bocca), gate = in_waves(procs, tmp_path, 'n', db, '--drain-timeout', '1')
    locker = lock(procs, db)
    gate.touch()
    assert hydrant.wait(timeout=30) == 0
    ended = time.monotonic()

    assert bocca.wait(timeout=30) == exitcodes.FAILED
    assert time.monotonic() - ended < 6      # a write's wait for the lock, the drain timeout
    release(locker)
    assert sorted(stored(db)) == ids('n', 10)
    err = stderr_of(bocca)
    assert 'the sink has failed for longer than --drain-timeout (1 s)' in err
    summary = last_line(err)
    assert 'stored 10 items' in summary and ', 0 failed, 190 items not written' in summary


def test_items_a_failing_sink_did_not_store_go_to_the_next_sink(procs, tmp_path):
    db = tmp_path / 'next.db'
    with sqlite3.connect(db) as conn:
        conn.execute('PRAGMA journal_mode=WAL')
        conn.execute('CREATE TABLE items (rz_id TEXT PRIMARY KEY, rz_run TEXT)')
    conn.close()
    locker = lock(procs, db)
    port = free_port()
    hydrant = procs.start(['rz-hydrant', '--name', 't', '--run-id', 'z', '--out',
                           f'tcp://127.0.0.1:{port}', 'fixtures_funcs:numbers', '200'],
                          stdin=subprocess.DEVNULL)
    channel = Worker()
    try:
        first = procs.start(['rz-bocca', '--in', f'tcp://127.0.0.1:{port}',
                             '--control-fd', str(channel.fd), f'sqlite:{db}'],
                            pass_fds=(channel.fd,), stdin=subprocess.DEVNULL)
        channel.started()
        wait_for(lambda: 'database is locked; retrying in' in stderr_of(first),
                 what='a write that found the database locked')
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=10) == exitcodes.FAILED
        wait_for(lambda: (channel.of('status') or [{}])[-1].get('stopping'),
                 what='the status it sends as it closes')
        status = channel.of('status')[-1]
    finally:
        channel.close()
    assert status['sink_failing_for'] > 0 and 'database is locked' in status['sink_error']
    assert status['in_flight'] == 200 and status['stored'] == 0
    assert '200 items not written (not acknowledged)' in last_line(stderr_of(first))
    release(locker)

    second = procs.start(['rz-bocca', '--in', f'tcp://127.0.0.1:{port}', f'sqlite:{db}'],
                         stdin=subprocess.DEVNULL)
    assert [hydrant.wait(timeout=30), second.wait(timeout=30)] == [0, 0], stderr_of(second)
    assert sorted(stored(db)) == ids('z', 200)


def test_a_server_down_for_a_while_gets_every_item_once_it_is_back(procs, tmp_path):
    port, received = free_port(), tmp_path / 'received.jsonl'

    def start_server():
        server = procs.start([*FIXTURES, 'serve', str(port), str(received)],
                             stdout=subprocess.PIPE)
        assert server.stdout.readline() == b'listening\n', stderr_of(server)
        return server

    def items():
        return [json.loads(line) for line in received.read_text().splitlines()]

    def retries():
        """The level of each line of the bocca's about a retry."""
        return [line.split()[2] for line in stderr_of(bocca).splitlines()
                if 'retrying in' in line]

    server = start_server()
    gate = tmp_path / 'gate'
    hydrant, bocca = procs.pipeline(
        ['rz-hydrant', 'fixtures_outage:waves', '10', '200', str(gate)],
        ['rz-bocca', '--mode', 'batch', '--log-level', 'debug', '--args', json.dumps([port]),
         'fixtures_outage:LineServer'], stdout=subprocess.DEVNULL)
    wait_for(lambda: len(items()) == 10, what='the first 10 items on the server')
    server.kill()
    server.wait(timeout=10)
    gate.touch()
    wait_for(lambda: 'DEBUG' in retries(), what='a second write to the server that failed')
    start_server()

    assert [hydrant.wait(timeout=30), bocca.wait(timeout=30)] == [0, 0], stderr_of(bocca)
    assert sorted(items()) == list(range(200))
    err = stderr_of(bocca)
    assert 'ConnectionRefusedError' in err or 'ConnectionResetError' in err
    assert 'one at a time' not in err       # the server was down: no item was to blame
    assert 'the sink writes again' in err
    assert retries().count('WARNING') == 1   # the outage is reported, not every retry


# the file system failures need a file system of their own: mounted here, as root


class Mounts:
    """File systems mounted for one test, each on a directory it makes; all unmounted at
    the end. A test that cannot mount is skipped, saying why."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.points = []

    def tmpfs(self, name, size):
        point = self.tmp_path / name
        point.mkdir()
        self._mount(['-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(point)], point)
        return point

    def ext4(self, name, size='16M'):
        """An ext4 file system in an image file, that an error turns read-only."""
        image, point = self.tmp_path / f'{name}.img', self.tmp_path / name
        point.mkdir()
        with open(image, 'wb') as file:
            file.truncate(_bytes(size))
        made = _run(['mkfs.ext4', '-q', '-F', '-O', '^has_journal', str(image)])
        if made.returncode:
            pytest.skip(f"cannot make an ext4 file system: {made.stderr.strip()}")
        self.mount_image(image, point)
        return image, point

    def mount_image(self, image, point):
        self._mount(['-o', 'loop,errors=remount-ro', str(image), str(point)], point)

    def _mount(self, argv, point):
        if os.geteuid() != 0:
            pytest.skip("mounting a file system needs root")
        done = _run(['mount', *argv])
        if done.returncode:
            pytest.skip(f"mount is not permitted here: {done.stderr.strip()}")
        self.points.append(point)

    def unmount(self, point, timeout=10.0):
        """Unmount `point`, waiting while it is busy (a process closing its files)."""
        deadline = time.monotonic() + timeout
        while _run(['umount', str(point)]).returncode:
            if time.monotonic() > deadline:
                _run(['umount', '-l', str(point)])
                break
            time.sleep(0.05)
        self.points.remove(point)

    def close(self):
        for point in list(reversed(self.points)):
            self.unmount(point)


@pytest.fixture
def mounts(tmp_path):
    made = Mounts(tmp_path)
    yield made
    made.close()


def _run(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except FileNotFoundError as exc:
        pytest.skip(f"{argv[0]} is not installed: {exc}")


def _bytes(size):
    units = {'k': 1 << 10, 'm': 1 << 20}
    return int(size[:-1]) * units[size[-1].lower()] if size[-1].isalpha() else int(size)


def fill(directory):
    """Write a file into `directory` until its file system is full; return its path."""
    path = directory / 'filler'
    chunk = b'\0' * (1 << 16)
    with open(path, 'wb', buffering=0) as file:
        for _ in range(1 << 16):            # 4 GiB at most: far beyond the test's tmpfs
            try:
                file.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return path
    raise AssertionError(f"{directory} never filled up")


def test_a_full_disk_holds_the_items_until_space_is_freed(procs, tmp_path, mounts):
    disk = mounts.tmpfs('disk', '2m')
    db = disk / 'full.db'
    (hydrant, bocca), gate = in_waves(procs, tmp_path, 'f', db, total=2000)
    filler = fill(disk)
    gate.touch()
    wait_for(lambda: 'database or disk is full; retrying in' in stderr_of(bocca),
             what='a write that found the disk full')
    assert len(stored(db)) == 10
    filler.unlink()

    assert [hydrant.wait(timeout=30), bocca.wait(timeout=30)] == [0, 0], stderr_of(bocca)
    assert sorted(stored(db)) == ids('f', 2000)
    assert 'the sink writes again' in stderr_of(bocca)


def test_a_file_system_gone_read_only_holds_the_items_until_it_is_back(
        procs, tmp_path, mounts):
    image, disk = mounts.ext4('disk')
    device = _run(['findmnt', '-no', 'SOURCE', str(disk)]).stdout.strip()
    trigger = f'/sys/fs/ext4/{os.path.basename(device)}/trigger_fs_error'
    if not os.path.exists(trigger):
        pytest.skip(f"the kernel has no {trigger} to make ext4 fail")
    db = disk / 'ro.db'
    (hydrant, bocca), gate = in_waves(procs, tmp_path, 'r', db)
    with open(trigger, 'w') as file:       # errors=remount-ro: the kernel makes it read-only
        file.write('1')
    with pytest.raises(OSError, match='Read-only file system'):
        (disk / 'probe').touch()
    gate.touch()
    wait_for(lambda: 'retrying in' in stderr_of(bocca), what='a write that failed')

    # it comes back as an operator would bring it back: unmounted and mounted again
    mounts.unmount(disk)
    mounts.mount_image(image, disk)
    assert [hydrant.wait(timeout=30), bocca.wait(timeout=30)] == [0, 0], stderr_of(bocca)
    assert sorted(stored(db)) == ids('r', 200)
    assert 'the sink writes again' in stderr_of(bocca)
