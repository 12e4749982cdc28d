"""Scheduled hydrants as real processes: --overlap, --cron, and the reports on stderr."""

import json
import re
import signal
import subprocess

import pytest

from conftest import stderr_of, wait_for
from test_edges import free_port

COMPLETE = re.compile(r'run (\S+)/(\d{8}T\d{6}(?:\.\d+)?Z) complete: (\d+) items in '
                      r'([\d.]+) s, (\d+) failed')
TOTALS = re.compile(r'ticks: (\d+) fired, (\d+) skipped, (\d+) missed')


def completed_runs(proc):
    return COMPLETE.findall(stderr_of(proc))


def stop(proc):
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    return stderr_of(proc)


@pytest.mark.parametrize('transport', ['pipe', 'tcp'])
def test_overrunning_runs_skip_ticks_and_stay_on_the_grid(procs, transport):
    """Each run takes 0.5 s, ticks come every 0.2 s: with the default --overlap skip, ticks
    that come while a run is in flight are skipped and counted."""
    hydrant = ['rz-hydrant', '--every', '0.2', '--name', 'slow', 'fixtures_options:slow_run',
               '0.5']
    if transport == 'pipe':
        source, sink = procs.pipeline(hydrant, ['rz-bocca', 'null'])
    else:
        port = free_port()
        source = procs.start([*hydrant, '--out', f'tcp://127.0.0.1:{port}'],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        sink = procs.start(['rz-bocca', 'null', '--in', f'tcp://127.0.0.1:{port}'],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    wait_for(lambda: len(completed_runs(source)) >= 3, timeout=30, what='three runs')
    err = stop(source)
    sink.wait(timeout=30)
    fired, skipped, missed = map(int, TOTALS.search(err).groups())
    runs = completed_runs(source)
    assert skipped >= 2 * (len(runs) - 1)            # at least two ticks per overrun
    assert fired >= len(runs)
    assert missed == 0
    for name, label, items, seconds, failed in runs:
        assert name == 'slow' and items == '3' and failed == '0'
        assert float(seconds) >= 0.45
        tenths = label.split('T')[1].rstrip('Z').split('.')[1] if '.' in label else '0'
        assert int(tenths) % 2 == 0                   # on the 0.2 s grid
    assert 'skipped: the previous run is still in flight' in err


def test_overlap_allow_runs_beside_and_queue_waits(procs):
    for policy, expect_skips in (('allow', False), ('queue', True)):
        source = procs.start(['rz-hydrant', '--every', '0.2', '--overlap', policy,
                              '--format', 'json', '--ids', 'fixtures_options:slow_run',
                              '0.5'], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        wait_for(lambda: len(completed_runs(source)) >= 4, timeout=30, what='four runs')
        err = stop(source)
        fired, skipped, _ = map(int, TOTALS.search(err).groups())
        if policy == 'allow':
            assert skipped == 0 and fired >= 4
        else:
            assert 'waits for the run in flight' in err
            assert skipped >= 1


def test_cron_fires_on_the_second(procs):
    source = procs.start(['rz-hydrant', '--cron', '* * * * * *', '--format', 'json', '--ids',
                          'fixtures_options:tick_source'],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    wait_for(lambda: len(completed_runs(source)) >= 2, timeout=30, what='two cron runs')
    source.send_signal(signal.SIGINT)
    out, _ = source.communicate(timeout=30)
    records = [json.loads(line) for line in out.decode().splitlines()]
    assert len(records) >= 2
    for record in records:
        label = record['id'].rsplit('/', 1)[1].split(':')[0]
        assert re.fullmatch(r'\d{8}T\d{6}Z', label)          # whole seconds
        assert record['item'] >= 0
    assert TOTALS.search(stderr_of(source))


@pytest.mark.parametrize('argv, says', [
    (['--cron', '* * * * *', '--every', '5'], '--cron and --every'),
    (['--cron', '61 * * * *'], "--cron '61 * * * *'"),
    (['--cron', '* * * * *', '--run-id', 'x'], '--run-id names a one-shot run'),
    (['--overlap', 'sometimes'], "--overlap 'sometimes'"),
])
def test_schedule_options_that_cannot_work_are_usage_errors(procs, argv, says):
    proc = procs.start(['rz-hydrant', '--format', 'json', *argv, 'fixtures_funcs:numbers',
                        '1'], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    proc.communicate(timeout=30)
    assert proc.returncode == 2, stderr_of(proc)
    assert says in stderr_of(proc)


def test_a_run_cut_short_by_a_stop_is_reported_as_stopped_not_complete(procs, tmp_path):
    """A source waiting on downstream credit when it is stopped: its run did not reach the
    end of the source, whatever was acknowledged of it."""
    port, out = free_port(), tmp_path / 'out.jsonl'
    source = procs.start(['rz-hydrant', '--out', f'tcp://127.0.0.1:{port}', '--name', 'big',
                          'fixtures_funcs:numbers', '1000000'],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    notch, sink = procs.pipeline(
        ['rz-notch', '--in', f'tcp://127.0.0.1:{port}', 'fixtures_funcs:slow_identity'],
        ['rz-bocca', f'jsonl:{out}'])
    wait_for(lambda: out.exists() and len(out.read_bytes().splitlines()) >= 10, timeout=30,
             what='items at the sink')
    source.send_signal(signal.SIGTERM)
    assert source.wait(timeout=30) == 0
    log = stderr_of(source)
    assert re.search(r'run big/\S+ stopped after \d+ items', log), log
    assert 'complete' not in log
    for proc in (notch, sink):
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
