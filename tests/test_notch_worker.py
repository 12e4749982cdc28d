"""The rz-notch worker child: units in, 'D' records out, retries, and async lanes."""

import asyncio
import datetime
import mmap
import os
import signal
import socket
import time
import warnings

import msgpack
import pytest

import fixtures_async
from conftest import wait_for

from rezina import defaults
from rezina.nodes import notch_worker, unit_record
from rezina.pipe import codec


def new_slots(lanes):
    return memoryview(mmap.mmap(-1, 16 * lanes)).cast('q')


def run_unit(func, items, ids=0, retries=0, unit_no=4):
    """process_unit on items; returns (ids, outputs, failures) of its 'D' record."""
    payload, _ = codec.encode_items(items)
    slot = new_slots(1)[0:2]
    record = notch_worker.process_unit(func, unit_no, 'r', ids, len(items), payload, slot,
                                       retries)
    assert record[0] == 'D' and record[1] == unit_no
    assert slot[0] == 0
    return decoded(record)


def decoded(record):
    _, _, ids, count, payload, failures, _, _ = record
    outputs, bad = codec.decode_items(payload)
    assert not bad and len(outputs) == count
    return ids, outputs, failures


@pytest.fixture
def calls():
    fixtures_async.reset()
    yield fixtures_async.calls
    fixtures_async.reset()


@pytest.fixture
def short_backoff(monkeypatch):
    """Small backoff; returns the list of (attempts, delay) of every wait."""
    monkeypatch.setattr(defaults, 'RETRY_BASE', 0.002)
    monkeypatch.setattr(defaults, 'RETRY_MAX', 0.003)
    waits = []
    delay = notch_worker.retry_delay

    def recorded(attempts):
        waits.append((attempts, delay(attempts)))
        return waits[-1][1]

    monkeypatch.setattr(notch_worker, 'retry_delay', recorded)
    return waits


# process_unit, in this process

def test_items_that_fail_twice_succeed_with_two_retries(calls, short_backoff):
    ids, outputs, failures = run_unit(fixtures_async.fail_twice, [1, 2, 3], retries=2)
    assert (ids, outputs, failures) == (0, [2, 4, 6], [])
    assert calls == {1: 3, 2: 3, 3: 3}
    assert [attempts for attempts, _ in short_backoff] == [1, 2] * 3
    for attempts, delay in short_backoff:
        assert 0 <= delay <= min(0.003, 0.002 * 2 ** (attempts - 1))


def test_too_few_retries_fail_the_item_with_the_attempts_made(calls, short_backoff):
    ids, outputs, failures = run_unit(fixtures_async.fail_twice, [5], ids=[70], retries=1)
    assert (ids, outputs) == ([], [])
    [[seq, kind, message, trace, item, attempts]] = failures
    assert (seq, kind, message, item, attempts) == (70, 'ConnectionError',
                                                    "call 2 for 5 failed", 5, 2)
    assert 'fail_twice' in trace and trace.rstrip().endswith("call 2 for 5 failed")


def test_an_item_that_always_fails_is_one_failure_after_all_attempts(calls, short_backoff):
    ids, outputs, failures = run_unit(fixtures_async.always_fails, [0, 1], ids=10, retries=3)
    assert (ids, outputs) == ([], [])
    assert [f[:3] + f[4:] for f in failures] == [[10, 'ValueError', "0 is no good", 0, 4],
                                                 [11, 'ValueError', "1 is no good", 1, 4]]
    assert all('always_fails' in f[3] for f in failures)
    assert calls == {0: 4, 1: 4}
    assert len(short_backoff) == 6


def test_without_retries_a_failure_is_one_attempt_and_no_wait(calls, short_backoff):
    ids, outputs, failures = run_unit(fixtures_async.always_fails, [1, 2], ids=[3, 9])
    assert (ids, outputs) == ([], [])
    assert [(f[0], f[4], f[5]) for f in failures] == [(3, 1, 1), (9, 2, 1)]
    assert short_backoff == []


def test_outputs_after_a_failure_keep_their_ids(calls, short_backoff):
    def fail_on_two(item):
        return fixtures_async.always_fails(item) if item == 2 else item

    ids, outputs, failures = run_unit(fail_on_two, [1, 2, 3], ids=100, retries=1)
    assert (ids, outputs) == ([100, 102], [1, 3])
    assert [(f[0], f[4], f[5]) for f in failures] == [(101, 2, 2)]


def test_a_generator_that_raises_is_not_retried(calls, short_backoff):
    ids, outputs, failures = run_unit(fixtures_async.two_then_break, [10, 20], ids=5,
                                      retries=3)
    assert (ids, outputs) == (['5.0', '5.1', '6.0', '6.1'], [10, 11, 20, 21])
    assert [f[:3] + f[4:] for f in failures] == [
        [5, 'RuntimeError', "10 broke (after 2 results)", 10, 1],
        [6, 'RuntimeError', "20 broke (after 2 results)", 20, 1]]
    assert calls == {10: 1, 20: 1}
    assert short_backoff == []


def test_an_output_that_cannot_be_encoded_names_its_input_item():
    ids, outputs, failures = run_unit(fixtures_async.as_set, [7, 8], ids=[41, 43])
    assert (ids, outputs) == ([], [])
    assert [(f[0], f[1], f[4], f[5]) for f in failures] == [
        (41, 'ItemNotEncodable', 7, 1), (43, 'ItemNotEncodable', 8, 1)]


def test_a_fanned_out_output_that_cannot_be_encoded_names_its_input_item(calls):
    ids, outputs, failures = run_unit(fixtures_async.pair_then_set, [7, 8], ids=20)
    assert (ids, outputs) == (['20.0', '21.0'], [[7], [8]])
    assert [(f[0], f[1], f[4], f[5]) for f in failures] == [
        ('20.1', 'ItemNotEncodable', 7, 1), ('21.1', 'ItemNotEncodable', 8, 1)]


def test_an_item_that_does_not_decode_fails_with_no_item_and_no_attempt():
    # [1, {[1]: 2}, 3]: a list as a dict key decodes in msgpack, not in Python
    payload = b'\x93' + codec.packb(1) + b'\x81' + codec.packb([1]) + codec.packb(2) \
        + codec.packb(3)
    slot = new_slots(1)[0:2]
    record = notch_worker.process_unit(lambda item: item * 2, 1, 'r', 30, 3, payload, slot, 2)
    ids, outputs, failures = decoded(record)
    assert (ids, outputs) == ([30, 32], [2, 6])
    [[seq, kind, _, trace, item, attempts]] = failures
    assert (seq, kind, trace, item, attempts) == (31, 'DecodeError', '', None, 0)


def test_a_unit_counts_the_items_dropped_and_the_time_its_calls_took():
    def odd_only(item):
        time.sleep(0.01)
        return item if item % 2 else None

    async def odd_only_async(item):
        await asyncio.sleep(0.01)
        return item if item % 2 else None

    payload, _ = codec.encode_items([1, 2, 3, 4, 6])
    for record in (notch_worker.process_unit(odd_only, 1, 'r', 0, 5, payload,
                                             new_slots(1)[0:2]),
                   asyncio.run(notch_worker.process_unit_async(
                       odd_only_async, 1, 'r', 0, 5, payload, new_slots(1)[0:2]))):
        assert decoded(record)[:2] == ([0, 2], [1, 3])
        seconds, dropped = record[6:]
        assert dropped == 3 and seconds >= 5 * 0.01


def test_a_running_item_is_marked_in_its_slot():
    slot = new_slots(1)[0:2]
    payload, _ = codec.encode_items(['a', 'b'])
    record = notch_worker.process_unit(lambda item: [item, *slot.tolist()], 6, 'r', 0, 2,
                                       payload, slot)
    assert decoded(record)[1] == [['a', 7, 0], ['b', 7, 1]]
    assert slot[0] == 0


def test_retry_delays_grow_to_the_ceiling_with_full_jitter():
    for attempts in range(1, 12):
        ceiling = min(defaults.RETRY_MAX, defaults.RETRY_BASE * 2 ** (attempts - 1))
        delays = [notch_worker.retry_delay(attempts) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2          # jitter spans the range, not a point
    assert defaults.RETRY_MAX == 10.0 and defaults.RETRY_BASE == 0.1


def test_a_failure_whose_item_cannot_be_sent_is_sent_without_it():
    when = datetime.datetime(2024, 5, 1, 8, 30)
    record = ['D', 1, [], 0, codec.encode_items([])[0],
              [[3, 'ValueError', 'bad \udc80', 'trace', {'at': when}, 1],
               [4, 'ValueError', 'changed', 'trace', {'now': {1, 2}}, 2]], 0.5]
    sent = codec.unpackb(unit_record.pack_record(record))
    assert sent[5] == [[3, 'ValueError', 'bad \\udc80', 'trace', {'at': when}, 1],
                       [4, 'ValueError', 'changed', 'trace', None, 2]]


def test_async_unit_runs_in_process(calls, short_backoff):
    payload, _ = codec.encode_items([7, 8])
    slot = new_slots(1)[0:2]
    record = asyncio.run(notch_worker.process_unit_async(
        fixtures_async.fail_seven_once, 3, 'r', 0, 2, payload, slot, 1))
    assert decoded(record) == (0, [14, 16], [])
    assert calls == {7: 2} and [a for a, _ in short_backoff] == [1]


# a forked worker child over a real socketpair

class Link:
    """The parent's end of a worker child: send units, read its records."""

    def __init__(self, sock, pid):
        self.sock = sock
        self.pid = pid
        self.status = None
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        sock.settimeout(30)

    def send_units(self, units):
        """units: (unit_no, ids, items) each."""
        for unit_no, ids, items in units:
            payload, _ = codec.encode_items(items)
            self.sock.sendall(msgpack.packb(['U', unit_no, 'r', ids, len(items), payload],
                                            use_bin_type=True))

    def read(self):
        while True:
            for record in self.unpacker:
                return record
            data = self.sock.recv(1 << 20)
            assert data, "the worker closed its socket"
            self.unpacker.feed(data)

    def results(self, units):
        """unit_no -> (ids, outputs, failures) of the 'D' record of every unit."""
        assert self.read() == ['R']
        done = {}
        while len(done) < units:
            record = self.read()
            assert record[0] == 'D', record
            done[record[1]] = decoded(record)
        return done

    def reap(self):
        def ended():
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
            return bool(pid)
        wait_for(ended, timeout=20, what=f"worker {self.pid} to exit")


@pytest.fixture
def worker(calls, short_backoff):
    links = []

    def start(spec, lanes, *options):
        parent_end, child_end = notch_worker.make_socketpair()
        slots = new_slots(lanes)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            try:
                notch_worker.child_main(child_end, spec, lanes, slots, [parent_end.fileno()],
                                        *options)
            finally:
                os._exit(1)
        child_end.close()
        links.append(Link(parent_end, pid))
        return links[-1]

    yield start
    for link in links:
        link.sock.close()
        if link.status is None:
            try:
                os.kill(link.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(link.pid, 0)


def test_async_lanes_complete_every_item(worker):
    link = worker('fixtures_async:nap', 100, 'async')
    link.send_units([(n, n, [n]) for n in range(200)])
    done = link.results(200)
    assert done == {n: (n, [2 * n], []) for n in range(200)}


def test_async_lanes_run_their_units_at_once(worker):
    # every call returns only once all 100 are in flight: one lane each
    link = worker('fixtures_async:meet', 100, 'async')
    link.send_units([(n, n, [[n, 100]]) for n in range(100)])
    assert link.results(100) == {n: (n, [n], []) for n in range(100)}


def test_an_async_lane_works_through_a_unit_of_many_items(worker):
    link = worker('fixtures_async:nap', 4, 'async')
    link.send_units([(1, 0, list(range(10))), (2, [50, 52], [50, 52])])
    assert link.results(2) == {1: (0, [2 * n for n in range(10)], []),
                               2: ([50, 52], [100, 104], [])}


def test_an_async_function_that_raises_once_succeeds_with_one_retry(worker):
    link = worker('fixtures_async:fail_seven_once', 10, 'async', 1)
    link.send_units([(n, n, [n]) for n in range(10)])
    assert link.results(10) == {n: (n, [2 * n], []) for n in range(10)}


def test_an_async_function_that_raises_without_retries_fails_once(worker):
    link = worker('fixtures_async:fail_seven_once', 10, 'async')
    link.send_units([(1, 0, list(range(10)))])
    [(ids, outputs, failures)] = link.results(1).values()
    assert ids == [0, 1, 2, 3, 4, 5, 6, 8, 9]
    assert outputs == [2 * n for n in range(10) if n != 7]
    assert [f[:3] + f[4:] for f in failures] == [[7, 'TimeoutError', "7 timed out", 7, 1]]
    assert 'fail_seven_once' in failures[0][3]


def test_an_async_function_that_always_fails_reports_every_attempt(worker):
    link = worker('fixtures_async:async_always_fails', 2, 'async', 2)
    link.send_units([(1, [8], [3])])
    [(ids, outputs, [failure])] = link.results(1).values()
    assert (ids, outputs) == ([], [])
    assert failure[:3] + failure[4:] == [8, 'KeyError', '3', 3, 3]
    assert 'async_always_fails' in failure[3]


def test_an_async_generator_fans_out_with_sub_ids(worker):
    link = worker('fixtures_async:spread', 3, 'async')
    link.send_units([(1, 30, [3, 4, 5]), (2, ['9.1', '9.2'], [7, 8])])
    assert link.results(2) == {1: (['31.0', '32.0', '32.1'], [40, 50, 51], []),
                               2: (['9.1.0', '9.2.0', '9.2.1'], [70, 80, 81], [])}


def test_at_end_of_file_an_async_child_finishes_its_units_and_exits(worker):
    link = worker('fixtures_async:nap', 2, 'async')
    link.send_units([(n, n, [n]) for n in range(6)])
    link.sock.shutdown(socket.SHUT_WR)
    assert link.results(6) == {n: (n, [2 * n], []) for n in range(6)}
    link.reap()
    assert os.WIFEXITED(link.status) and os.WEXITSTATUS(link.status) == 0


def test_an_unknown_mode_is_refused_before_work(worker):
    link = worker('fixtures_async:nap', 2, 'fibres')
    assert link.read() == ['X', "unknown worker mode 'fibres'"]
    link.reap()
    assert os.WEXITSTATUS(link.status) == 0


def test_threads_keep_the_old_positional_call_and_retry_in_each_thread(worker):
    link = worker('fixtures_async:fail_twice', 4)
    link.send_units([(n, n, [n]) for n in range(8)])
    done = link.results(8)
    assert {n: (ids, outputs, [f[:3] + f[4:] for f in failures])
            for n, (ids, outputs, failures) in done.items()} == {
        n: ([], [], [[n, 'ConnectionError', f"call 1 for {n} failed", n, 1]])
        for n in range(8)}

    link = worker('fixtures_async:fail_twice', 4, 'threads', 2)
    link.send_units([(n, n, [n]) for n in range(8)])
    assert link.results(8) == {n: (n, [2 * n], []) for n in range(8)}
