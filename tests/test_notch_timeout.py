"""rz-notch --timeout: a call that hangs fails its item by id and the worker is replaced;
without it, a hanging item shows in the node's status as in flight, with its age."""

import json
import mmap
import subprocess
import time

import pytest

from conftest import stderr_of, wait_for
from test_control_fd import Worker

from rezina import defaults, exitcodes
from rezina.control import rz
from rezina.nodes import notch_worker
from rezina.pipe import codec

N = 40
GOOD = [i for i in range(N) if i != 7]
BOUND = 6.0     # seconds a run of N items with one hang of --timeout 0.5 may take


def run(procs, *notch, env=None):
    """numbers N | rz-notch --timeout 0.5 NOTCH... | rz-bocca: (codes, items, notch's
    stderr, seconds)."""
    started = time.monotonic()
    chain = procs.pipeline(
        ['rz-hydrant', '--name', 't', '--run-id', 'h', 'fixtures_funcs:numbers', str(N)],
        ['rz-notch', '--timeout', '0.5', *notch], ['rz-bocca'], env=env or {})
    out, _ = chain[-1].communicate(timeout=30)
    codes = [p.wait(timeout=30) for p in chain]
    return codes, sorted(int(x) for x in out.split()), stderr_of(chain[1]), \
        time.monotonic() - started


@pytest.mark.parametrize('lanes', [['-p', '2'], ['-t', '4']])
def test_a_call_that_hangs_fails_its_item_and_its_worker_is_replaced(procs, lanes):
    codes, items, log, seconds = run(procs, *lanes, 'fixtures_hang:hang_on_seven')
    assert codes == [0, exitcodes.FAILED, 0], log
    assert items == GOOD and seconds < BOUND
    assert "item t/h:7 failed: TimeoutError: timed out after 0.5 s" in log
    assert log.count("killed: a call ran over --timeout 0.5 s; restarting it") == 1
    # the calls the other threads of the killed worker ran were given again, not failed
    assert f"{N} items in, {N - 1} out, 1 failed" in log


def test_a_timed_out_item_goes_to_errors_as_a_record(procs, tmp_path):
    errors = tmp_path / 'errors.jsonl'
    codes, items, log, _ = run(procs, '--errors', f'jsonl:{errors}',
                               'fixtures_hang:hang_on_seven')
    assert codes == [0, exitcodes.FAILED, 0] and items == GOOD, log
    [record] = [json.loads(line) for line in errors.read_text().splitlines()]
    assert {k: record[k] for k in ('id', 'item', 'error', 'message', 'attempts')} == {
        'id': 't/h:7', 'item': 7, 'error': 'TimeoutError',
        'message': 'timed out after 0.5 s', 'attempts': 1}


def test_with_retries_a_timed_out_item_is_called_again(procs, tmp_path):
    mark = tmp_path / 'hung-once'
    codes, items, log, _ = run(procs, '-p', '2', '--retries', '1',
                               'fixtures_hang:hang_once_on_seven',
                               env={'RZ_HANG_MARK': str(mark)})
    assert codes == [0, 0, 0], log
    assert items == list(range(N)) and mark.exists()
    assert log.count("killed: a call ran over --timeout") == 1 and 'failed:' not in log


def test_an_item_that_always_hangs_is_tried_at_most_max_deliveries_times(procs):
    codes, items, log, seconds = run(procs, '-p', '2', '--retries', '5',
                                     '--max-deliveries', '2', 'fixtures_hang:hang_on_seven')
    assert codes == [0, exitcodes.FAILED, 0] and items == GOOD, log
    assert "item t/h:7 failed: TimeoutError: timed out after 0.5 s (2 attempts)" in log
    assert log.count("killed: a call ran over --timeout") == 2 and seconds < BOUND


def test_a_coroutine_that_hangs_is_cancelled_and_its_worker_kept(procs):
    codes, items, log, seconds = run(procs, '-c', '4', 'fixtures_hang:await_forever_on_seven')
    assert codes == [0, exitcodes.FAILED, 0] and items == GOOD, log
    assert "item t/h:7 failed: TimeoutError: timed out after 0.5 s" in log
    assert 'killed' not in log and seconds < BOUND


def test_a_coroutine_that_blocks_its_event_loop_has_its_worker_killed(procs):
    codes, items, log, seconds = run(procs, '-c', '4', 'fixtures_hang:block_on_seven')
    assert codes == [0, exitcodes.FAILED, 0] and items == GOOD, log
    assert "item t/h:7 failed: TimeoutError: timed out after 0.5 s" in log
    assert log.count("killed: a call ran over --timeout 0.5 s") == 1 and seconds < BOUND


def test_a_retry_is_a_new_call_and_its_backoff_is_not_timed(monkeypatch):
    """The lane's counter is even in a call, odd in the wait before the next: the parent
    times each call from its start, and no wait."""
    monkeypatch.setattr(defaults, 'RETRY_BASE', 0.001)
    monkeypatch.setattr(defaults, 'RETRY_MAX', 0.002)
    retried = memoryview(mmap.mmap(-1, 8)).cast('q')
    seen = []

    def flaky(item):
        seen.append(retried[0])
        if len(seen) < 3:
            raise ConnectionError("no answer")
        return item

    payload, _ = codec.encode_items([5])
    slot = memoryview(mmap.mmap(-1, 16)).cast('q')
    record = notch_worker.process_unit(flaky, 1, 'r', 0, 1, payload, slot, 2, retried)
    assert record[5] == [] and seen == [0, 2, 4] and retried[0] == 4


@pytest.mark.parametrize('value, says', [
    ('0', "--timeout '0': must be at least 0.01"),
    ('-1', "--timeout '-1': must be at least 0.01"),
    ('soon', "--timeout 'soon': expected a number"),
    ('nan', "--timeout 'nan': must be at least 0.01")])
def test_a_timeout_that_is_not_a_positive_number_is_a_usage_error(procs, value, says):
    proc = procs.start(['rz-notch', '--timeout', value, 'fixtures_funcs:identity'],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    assert proc.wait(timeout=30) == exitcodes.USAGE
    assert stderr_of(proc) == f"rz-notch: {says}\n"


@pytest.fixture
def channel():
    """rz-worker's end of a node's --control-fd channel."""
    worker = Worker()
    yield worker
    worker.close()


def numbers_into(procs, channel, *notch):
    """rz-hydrant numbers 10 | rz-notch NOTCH... --control-fd, its output dropped."""
    source = procs.start(['rz-hydrant', 'fixtures_funcs:numbers', '10'],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    proc = procs.start(['rz-notch', *notch, '--control-fd', str(channel.fd)],
                       pass_fds=(channel.fd,), stdin=source.stdout,
                       stdout=subprocess.DEVNULL)
    source.stdout.close()
    channel.started()
    return proc


def test_a_hanging_item_shows_in_the_status_as_in_flight_with_its_age(procs, channel):
    notch = numbers_into(procs, channel, '-t', '2', 'fixtures_hang:hang_on_seven')

    def aged(least):
        return lambda: any((r['oldest_age'] or 0) >= least for r in channel.of('status'))
    wait_for(aged(1.0), timeout=10, what='a status with the hanging item a second old')
    wait_for(aged(2.0), timeout=10, what='the age to grow')
    status = channel.of('status')[-1]
    # the items given to a worker with 7, in one unit, wait for it: in flight too
    assert status['items_in'] == 10 and status['failed'] == 0
    assert status['in_flight'] >= 1 and status['items_out'] + status['in_flight'] == 10
    assert notch.poll() is None


def test_a_node_with_nothing_in_flight_reports_no_age(procs, channel):
    notch = numbers_into(procs, channel, 'fixtures_funcs:identity')
    assert notch.wait(timeout=30) == 0, stderr_of(notch)
    last = channel.of('status')[-1]
    assert (last['items_out'], last['in_flight'], last['oldest_age']) == (10, 0, None)


PS_ROW = {'typology': 'w', 'node_id': 'w/fetch#0', 'worker': 'a', 'pid': 7,
          'state': 'RUNNING', 'restarts': 0, 'items_in': 10, 'items_out': 9, 'failed': 0,
          'rate': 0.0, 'in_flight': 1, 'oldest_age': 754.2, 'last_error': None}


def test_rz_ps_shows_the_age_of_the_oldest_item_in_flight():
    rows = [PS_ROW, dict(PS_ROW, node_id='w/fetch#1', in_flight=0, oldest_age=None),
            dict(PS_ROW, node_id='w/fetch#2', oldest_age=12.3)]
    lines = rz.render('ps', rows, time.time()).splitlines()
    assert lines[0].split()[-1] == 'OLDEST'
    assert [line.split()[-1] for line in lines[1:]] == ['12m', '0.0/s', '12s']


def test_rz_ps_has_no_age_column_when_nothing_is_in_flight():
    lines = rz.render('ps', [dict(PS_ROW, in_flight=0, oldest_age=None)], 0).splitlines()
    assert 'OLDEST' not in lines[0]
