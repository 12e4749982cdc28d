"""Hostile and broken input on a stage's socket: garbage is dropped and counted, logged at
most once a second, and the node goes on, its memory flat; items over --max-item-bytes
fail alone, and items up to it arrive whole."""

import hashlib
import random
import re
import sqlite3
import subprocess

import msgpack
import pytest
import zmq

from conftest import stderr_of, wait_for
from test_edges import free_port, stored

MIB = 1 << 20


def rss(pid):
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024
    raise AssertionError(f'no VmRSS for {pid}')


def hello(version=1, session='s1'):
    return b'H' + msgpack.packb({'node': 'intruder', 'session': session,
                                 'role': 'producer', 'again': False, 'v': version})


def garbage(rng):
    """The frames of one message that is not rezina's protocol, of every kind the issue
    names, from a peer that never greets as rezina does."""
    kinds = [
        lambda: [rng.randbytes(rng.randrange(1, 2000))],                   # random bytes
        lambda: [hello()[:-3]],                                           # truncated
        lambda: [b'Z' + rng.randbytes(20)],                               # unknown kind
        lambda: [b'H', b'x', b'y'],                                       # three frames
        lambda: [hello(version=99, session=f'v{rng.random()}')],          # other version
        lambda: [b'H\xdd\xff\xff\xff\xff'],                              # a 4 GiB array
        lambda: [b'H' + b'\x91' * 10000 + b'\xc0'],                      # 10,000 deep
        lambda: [b'H' + msgpack.packb([1, 2, 3])],                         # not a map
        lambda: [b''],
    ]
    return rng.choice(kinds)()


def greeted_garbage(rng):
    """Messages of a peer that greeted: batches that claim more than they hold, or more
    than any credit, and kinds a producer does not send."""
    kinds = [
        lambda: [b'B' + msgpack.packb([0, 'r', 0, 4 << 30]), b'\xdd\xff\xff\xff\xff'],
        lambda: [b'B' + msgpack.packb([0, 'r', 0, 100000]), bytes(100000)],
        lambda: [b'B' + rng.randbytes(30), rng.randbytes(30)],
        lambda: [b'A' + rng.randbytes(10)],
        lambda: [b'C' + msgpack.packb(5)],
    ]
    return rng.choice(kinds)()


def dropped(proc):
    """The count in the last 'dropped' line a node logged."""
    counts = re.findall(r'\((\d+) dropped so far\)', stderr_of(proc))
    return int(counts[-1]) if counts else 0


@pytest.fixture
def dealer():
    """dealer(port): a raw ZeroMQ DEALER connected to a node's bound port, closed at the
    end of the test."""
    context = zmq.Context()
    sockets = []

    def connect(port):
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f'tcp://127.0.0.1:{port}')
        sockets.append(sock)
        return sock

    yield connect
    for sock in sockets:
        sock.close()
    context.term()


def start_bound(procs, port, *argv):
    """A node with a bound --in on port, once it has bound."""
    proc = procs.start([*argv[:1], '--in', f'@tcp://127.0.0.1:{port}', *argv[1:]],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    wait_for(lambda: f'bound tcp://127.0.0.1:{port}' in stderr_of(proc), what='bound')
    return proc


def test_a_garbage_flood_is_dropped_counted_and_the_sink_goes_on(procs, tmp_path, dealer):
    port = free_port()
    db = tmp_path / 'out.db'
    sink = start_bound(procs, port, 'rz-bocca', '--producers', '1', f'sqlite:{db}')
    intruder = dealer(port)
    rng = random.Random(5)
    for _ in range(200):                    # warm up: what a flood costs once
        intruder.send_multipart(garbage(rng))
    wait_for(lambda: 'dropped so far' in stderr_of(sink), what='the first drop logged')
    before = rss(sink.pid)
    for _ in range(10000):
        intruder.send_multipart(garbage(rng))
    intruder.send_multipart([hello(session='s2')])      # now it greets, and then ...
    wait_for(lambda: intruder.poll(100), what='the greeting answered')
    for _ in range(2000):
        intruder.send_multipart(greeted_garbage(rng))
    assert intruder.recv_multipart()
    wait_for(lambda: dropped(sink) >= 12000, timeout=30, what='the flood counted')
    assert sink.poll() is None, stderr_of(sink)
    once = rss(sink.pid)
    for _ in range(10000):                  # as much again: memory stays where it was
        intruder.send_multipart(greeted_garbage(rng))
    wait_for(lambda: dropped(sink) >= 22000, timeout=30, what='the flood counted')
    # the first flood raises the high-water mark of the heap and of ZeroMQ's queues
    # once (about 7 MiB here); a second one as big costs nothing more
    assert once - before < 10 * MIB
    assert rss(sink.pid) - once < 2 * MIB

    lines = [line for line in stderr_of(sink).splitlines() if 'dropped' in line]
    assert 1 <= len(lines) <= 30            # at most one a second, not one a frame
    source = procs.start(['rz-hydrant', '--name', 'real', '--run-id', 'r', '--out',
                          f'>tcp://127.0.0.1:{port}', 'fixtures_funcs:numbers', '1000'],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    assert source.wait(timeout=60) == 0, stderr_of(source)
    assert sink.wait(timeout=60) == 0, stderr_of(sink)
    assert sorted(stored(db)) == sorted(f'real/r:{i}' for i in range(1000))


def test_a_frame_larger_than_the_limit_drops_its_connection_not_the_node(procs, dealer):
    port = free_port()
    notch = start_bound(procs, port, 'rz-notch', '--max-item-bytes', '1024', '--out', '-',
                        'fixtures_funcs:double')
    big = dealer(port)
    before = rss(notch.pid)
    for _ in range(20):
        big.send(b'B' + bytes(4 * MIB))
    big.send(hello())
    # the connection is dropped at the first big frame: the greeting is never read
    assert not big.poll(2000)
    assert notch.poll() is None, stderr_of(notch)
    assert rss(notch.pid) - before < 8 * MIB


def test_items_over_max_item_bytes_fail_alone_and_those_up_to_it_arrive_whole(procs,
                                                                            tmp_path):
    limit = 2 * MIB
    port = free_port()
    db = tmp_path / 'big.db'
    sink = procs.start(['rz-bocca', '--in', f'@tcp://127.0.0.1:{port}', '--producers', '1',
                        f'sqlite:{db}'], stdin=subprocess.DEVNULL)
    source = procs.start(['rz-hydrant', '--max-item-bytes', str(limit), '--name', 'big',
                          '--run-id', 'r', '--out', f'>tcp://127.0.0.1:{port}',
                          'fixtures_funcs:blobs', str(limit)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    assert source.wait(timeout=60) == 1, stderr_of(source)
    assert sink.wait(timeout=60) == 0, stderr_of(sink)
    err = stderr_of(source)
    assert "item big/r:2 failed: ItemNotEncodable: cannot be sent: it is" in err
    assert f"more than --max-item-bytes {limit}" in err
    with sqlite3.connect(db) as conn:
        got = dict(conn.execute('SELECT rz_id, sha FROM items'))
        sizes = dict(conn.execute('SELECT rz_id, length(data) FROM items'))
        data = dict(conn.execute('SELECT rz_id, data FROM items'))
    assert sorted(got) == ['big/r:0', 'big/r:1', 'big/r:3']
    for rz_id, blob in data.items():
        assert hashlib.sha256(blob).hexdigest() == got[rz_id], rz_id
    assert sizes['big/r:1'] == limit - 200
