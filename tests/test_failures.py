"""The error channel of a stage: failed items to an --errors sink, or rate-limited to stderr."""

import json
import logging
import os
import socket
import sqlite3

import pytest

import fixtures_failing_sink
from fixtures_failing_sink import Held
from rezina.errors import SinkError, UnknownFunction, UnknownSink, UsageError
from rezina.nodes.failures import (LINES_PER_SECOND, MESSAGE_CHARS, RECENT_KEPT,
                                   RECENT_PER_STATUS, STATUSES_PER_RECORD, TRACE_CHARS,
                                   Failures)

LOGGER = 'rezina.nodes.failures'
FIXTURES = fixtures_failing_sink.__name__


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def failures():
    """Build Failures through this, so each is closed after the test."""
    made = []

    def build(*args, **kwargs):
        channel = Failures(*args, **kwargs)
        made.append(channel)
        return channel

    yield build
    for channel in made:
        channel.close(timeout=1.0)


def failure_lines(caplog):
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno == logging.WARNING]


def test_jsonl_sink_gets_every_field_of_each_failed_item(tmp_path, failures):
    path = tmp_path / 'errors.jsonl'
    channel = failures('weather/fetch#0', f"jsonl:{path}")
    channel.report('r7:3', {'city': 'Zürich'}, 'ValueError', 'no such city',
                   traceback='Traceback (most recent call last):\n...', attempts=2)
    channel.report('r7:5', [1, 2], 'KeyError', "'temp'")

    assert channel.close() == 0
    records = [json.loads(line) for line in path.read_text(encoding='utf-8').splitlines()]
    node = f"weather/fetch#0@{socket.gethostname()}:{os.getpid()}"
    assert records == [
        {'id': 'r7:3', 'item': {'city': 'Zürich'}, 'error': 'ValueError',
         'message': 'no such city', 'traceback': 'Traceback (most recent call last):\n...',
         'attempts': 2, 'node': node},
        {'id': 'r7:5', 'item': [1, 2], 'error': 'KeyError', 'message': "'temp'",
         'traceback': '', 'attempts': 1, 'node': node},
    ]


def test_sqlite_sink_stores_an_item_reported_twice_once(tmp_path, failures):
    path = tmp_path / 'errors.db'
    channel = failures('fetch', f"sqlite:{path}")
    channel.report('r1:0', 'a', 'ValueError', 'first try', attempts=1)
    channel.report('r1:0', 'a', 'ValueError', 'second try', attempts=2)
    channel.report('r1:1', 'b', 'quarantined', 'worker died 3 times')
    assert channel.close() == 0

    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            'SELECT rz_id, rz_run, message, attempts FROM items ORDER BY rz_id').fetchall()
    finally:
        conn.close()
    assert rows == [('r1:0', 'r1', 'first try', 1), ('r1:1', 'r1', 'worker died 3 times', 1)]
    assert channel.count == 3


def test_burst_without_sink_logs_ten_lines_then_counts(caplog, failures):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    clock = Clock()
    channel = failures('fetch', clock=clock)
    for seq in range(50):
        channel.report(f"r1:{seq}", seq, 'ValueError', f"bad {seq}", traceback='TB', attempts=1)

    lines = failure_lines(caplog)
    assert len(lines) == LINES_PER_SECOND
    assert lines[0] == "fetch: item r1:0 failed: ValueError: bad 0"
    tracebacks = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.DEBUG]
    assert len(tracebacks) == LINES_PER_SECOND
    assert 'TB' in tracebacks[0].getMessage()

    # the next second opens with the count of those not shown, then shows again
    clock.now += 1.0
    channel.report('r1:50', 50, 'KeyError', 'k', attempts=3)
    assert failure_lines(caplog)[LINES_PER_SECOND:] == [
        "fetch: 40 more items failed in the last second (not shown)",
        "fetch: item r1:50 failed: KeyError: k (3 attempts)",
    ]
    assert channel.count == 51
    assert channel.summary() == "51 failed (50 ValueError, 1 KeyError)"


def test_close_logs_the_failures_not_shown(caplog, failures):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    channel = failures('fetch', clock=Clock())
    for seq in range(LINES_PER_SECOND + 3):
        channel.report(f"r1:{seq}", seq, 'ValueError', 'bad')

    assert channel.close() == 0
    assert failure_lines(caplog)[-1] == "fetch: 3 more items failed in the last second (not shown)"


def test_summary_names_each_kind_of_failure(failures):
    channel = failures('fetch')
    assert channel.summary() == ''
    channel.report('r1:0', 0, 'ValueError', 'x')
    channel.report('r1:1', 1, 'quarantined', 'worker died')
    channel.report('r1:2', 2, 'ValueError', 'y')
    assert channel.summary() == "3 failed (2 ValueError, 1 quarantined)"
    assert channel.by_type == {'ValueError': 2, 'quarantined': 1}


def test_each_status_carries_a_failure_five_times_without_its_item(failures):
    channel = failures('fetch')
    channel.report('r1:0', {'big': 'x' * 10000}, 'ValueError', 'bad\nvalue  here',
                   traceback='T\n' * 500 + 'END', attempts=2)
    carried = [channel.for_status() for _ in range(STATUSES_PER_RECORD + 2)]
    assert [len(records) for records in carried] == [1] * STATUSES_PER_RECORD + [0, 0]
    [record] = carried[0]
    assert set(record) == {'seq', 'id', 'run', 'error', 'message', 'traceback', 'attempts',
                           'at'}
    assert (record['seq'], record['id'], record['run'], record['error'], record['message'],
            record['attempts']) == (1, 'r1:0', 'r1', 'ValueError', 'bad value here', 2)
    assert record['traceback'] == 'T\n' * ((TRACE_CHARS - 3) // 2) + 'END'    # whole lines

    # a burst: a status carries the newest only; the node keeps the newest RECENT_KEPT
    for seq in range(1, 2 * RECENT_KEPT):
        channel.report(f"r2:{seq}", None, 'KeyError', 'k' * 1000)
    records = channel.for_status()
    assert [r['seq'] for r in records] == list(range(2 * RECENT_KEPT - RECENT_PER_STATUS + 1,
                                                     2 * RECENT_KEPT + 1))
    assert len(records[0]['message']) == MESSAGE_CHARS
    assert len(channel.recent) == RECENT_KEPT


def test_failing_sink_loses_records_without_crashing(caplog, failures):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    channel = failures('fetch', f"{FIXTURES}:AlwaysDown", backoff=0)
    for seq in range(3):
        channel.report(f"r1:{seq}", seq, 'ValueError', 'bad')

    assert channel.close() == 3
    assert channel.close() == 3          # a second close changes nothing
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    # the lost records name their items: a failed item is never named nowhere
    assert errors[0].startswith("fetch: lost 3 error records (items r1:0, r1:1, r1:2): ")
    assert '127.0.0.1:9 is down' in errors[0]
    assert errors[1:] == [f"fetch: 3 error records could not be written to "
                          f"--errors {FIXTURES}:AlwaysDown"]


def test_report_does_not_wait_for_a_held_sink(failures):
    Held.entered.clear()
    Held.release.clear()
    Held.received.clear()
    channel = failures('fetch', f"{FIXTURES}:Held")
    channel.report('r1:0', 0, 'ValueError', 'bad')
    assert Held.entered.wait(5), "the writer thread never wrote"

    # the sink is stuck in write(): reports still return, queued behind it
    for seq in range(1, 101):
        channel.report(f"r1:{seq}", seq, 'ValueError', 'bad')
    assert len(Held.received) == 0

    Held.release.set()
    assert channel.close() == 0
    assert [record['id'] for record in Held.received] == [f"r1:{seq}" for seq in range(101)]


def test_close_gives_up_on_a_sink_that_never_returns(failures):
    Held.entered.clear()
    Held.release.clear()
    channel = failures('fetch', f"{FIXTURES}:Held")
    channel.report('r1:0', 0, 'ValueError', 'bad')
    channel.report('r1:1', 1, 'ValueError', 'bad')
    assert Held.entered.wait(5)

    assert channel.close(timeout=0.2) == 2
    Held.release.set()                  # let the writer thread end


@pytest.mark.parametrize('spec, error', [
    ('stdout', UsageError),
    ('nonsense', UnknownSink),
    ('jsonl:', UnknownSink),
    ('no_such_module_here:Sink', UnknownFunction),
])
def test_bad_errors_spec_is_a_usage_error_naming_the_option(spec, error):
    with pytest.raises(error) as raised:
        Failures('fetch', spec)
    assert isinstance(raised.value, UsageError)
    assert str(raised.value).startswith(f"--errors {spec}: ")


def test_errors_file_in_a_missing_directory_names_the_option(tmp_path):
    spec = f"jsonl:{tmp_path}/no/such/dir/errors.jsonl"
    with pytest.raises(SinkError, match=f"^--errors {spec}: cannot open"):
        Failures('fetch', spec)
