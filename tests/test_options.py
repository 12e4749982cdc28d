"""The stage options of issue 3, each in a shell pipe and over ZeroMQ endpoints: async
functions, --keep-order, --retries and --errors, --format/--ids and --in-format."""

import json
import subprocess
import time

import pytest

from conftest import finish_chain, json_lines, stderr_of, wait_for
from test_edges import free_port

TRANSPORTS = ['pipe', 'tcp']


def run_chain(procs, transport, hydrant, notch, bocca, timeout=90, stdin=None):
    """Run hydrant | notch | bocca (any may be None to leave it out) over the transport;
    return (exit codes, stdout of the last stage, stderr texts)."""
    stages = [s for s in (hydrant, notch, bocca) if s is not None]
    if transport == 'pipe':
        kwargs = {'stdin': stdin} if stdin is not None else {}
        chain = procs.pipeline(*stages, **kwargs)
    else:
        ports = [free_port() for _ in stages[1:]]
        chain = []
        for index, args in enumerate(stages):
            args = list(args)
            if index < len(stages) - 1:
                args[1:1] = ['--out', f'tcp://127.0.0.1:{ports[index]}']
            if index > 0:
                args[1:1] = ['--in', f'tcp://127.0.0.1:{ports[index - 1]}']
            last = index == len(stages) - 1
            chain.append(procs.start(args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE if last else subprocess.DEVNULL))
    return finish_chain(chain, timeout)


# async


@pytest.mark.parametrize('transport', TRANSPORTS)
def test_async_generator_and_async_function_sources(procs, transport):
    for source in ('fixtures_options:async_numbers', 'fixtures_options:async_list'):
        codes, out, errs = run_chain(procs, transport, ['rz-hydrant', source, '500'],
                                     ['rz-notch', '-c', '8', 'fixtures_options:async_double'],
                                     ['rz-bocca'])
        assert codes == [0, 0, 0], errs
        assert sorted(json_lines(out)) == [2 * i for i in range(500)]


def test_async_notch_runs_c_coroutines_at_once(procs):
    """2,000 items of a 0.1 s await with -c 200: ideal 1 s; one at a time would take
    200 s. The bound leaves room for a loaded machine and still proves concurrency."""
    codes, out, errs = run_chain(
        procs, 'pipe', ['rz-hydrant', 'fixtures_funcs:numbers', '2000'],
        ['rz-notch', '-c', '200', 'fixtures_options:sleep_a_tenth'], ['rz-bocca', 'null'])
    assert codes == [0, 0, 0], errs
    summary = [line for line in errs[1].splitlines() if 'items in' in line][-1]
    seconds = float(summary.rsplit(' in ', 1)[1].split()[0])
    assert '2000 items in, 2000 out, 0 failed' in summary
    assert seconds < 6.0, summary


@pytest.mark.parametrize('argv, says', [
    (['-t', '4', 'fixtures_options:sleep_a_tenth'], 'give -c/--concurrency'),
    (['-c', '4', 'fixtures_funcs:double'], 'give -t/--threads'),
])
def test_the_wrong_kind_of_concurrency_is_a_usage_error(procs, argv, says):
    proc = procs.start(['rz-notch', *argv], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE)
    proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert says in stderr_of(proc)
    assert len(stderr_of(proc).strip().splitlines()) == 1


# order


@pytest.mark.parametrize('transport', TRANSPORTS)
def test_keep_order_under_many_processes_and_threads(procs, transport):
    codes, out, errs = run_chain(
        procs, transport, ['rz-hydrant', 'fixtures_funcs:numbers', '3000'],
        ['rz-notch', '-p', '4', '-t', '4', '--keep-order', 'fixtures_options:jittery'],
        ['rz-bocca'])
    assert codes == [0, 0, 0], errs
    assert json_lines(out) == list(range(3000))


def test_keep_order_pushes_back_instead_of_holding_everything(procs, tmp_path):
    """While item 0 is stuck, results after it wait in a bounded window and the notch stops
    reading: the source can write only a window's worth, not its million items."""
    flag = tmp_path / 'go'
    hydrant, notch, bocca = procs.pipeline(
        ['rz-hydrant', 'fixtures_funcs:numbers', '1000000'],
        ['rz-notch', '-t', '4', '--keep-order', 'fixtures_options:hold_first'],
        ['rz-bocca', 'null'], env={'HOLD_UNTIL': str(flag)})

    def written():
        with open(f'/proc/{hydrant.pid}/io') as io:
            return int(next(line for line in io if line.startswith('wchar')).split()[1])

    seen = []

    def settled():
        seen.append(written())
        return len(seen) > 25 and seen[-1] == seen[-25] > 0     # still for 25 polls

    wait_for(settled, timeout=30, what="the source to be held back")
    assert seen[-1] < 1_000_000          # a million items are about 5 MB of records
    flag.touch()
    for proc in (hydrant, notch, bocca):
        assert proc.wait(timeout=60) == 0, stderr_of(proc)


def test_keep_order_survives_a_worker_that_dies(procs):
    """Units given back by a dead worker keep their place: the order holds around the
    quarantined item."""
    codes, out, errs = run_chain(
        procs, 'pipe', ['rz-hydrant', 'fixtures_funcs:numbers', '2000'],
        ['rz-notch', '-p', '2', '-t', '3', '--keep-order', 'fixtures_funcs:die_on_poison'],
        ['rz-bocca'])
    assert codes == [0, 1, 0], errs
    assert json_lines(out) == [i for i in range(2000) if i != 13]


def test_without_keep_order_the_jitter_reorders(procs):
    """The control for the test above: the delays really do reorder results."""
    codes, out, errs = run_chain(
        procs, 'pipe', ['rz-hydrant', 'fixtures_funcs:numbers', '3000'],
        ['rz-notch', '-p', '4', '-t', '4', 'fixtures_options:jittery'], ['rz-bocca'])
    assert codes == [0, 0, 0], errs
    items = json_lines(out)
    assert sorted(items) == list(range(3000)) and items != list(range(3000))


# failures


@pytest.mark.parametrize('transport', TRANSPORTS)
def test_poison_item_is_retried_then_written_to_the_error_sink(procs, tmp_path, transport):
    errors = tmp_path / 'errors.jsonl'
    codes, out, errs = run_chain(
        procs, transport, ['rz-hydrant', '--name', 'src', 'fixtures_funcs:numbers', '40'],
        ['rz-notch', '-p', '2', '--retries', '2', '--errors', f'jsonl:{errors}',
         'fixtures_options:poison_13'], ['rz-bocca'])
    assert codes == [0, 1, 0], errs
    assert sorted(json_lines(out)) == [i for i in range(40) if i != 13]
    records = [json.loads(line) for line in errors.read_text().splitlines()]
    assert len(records) == 1
    record = records[0]
    assert record['id'].startswith('src/') and record['id'].endswith(':13')
    assert record['item'] == 13
    assert record['error'] == 'ValueError'
    assert record['message'] == '13 is poison (item 13)'
    assert 'Traceback' in record['traceback'] and 'poison_13' in record['traceback']
    assert record['attempts'] == 3
    assert record['node'].startswith('poison_13@')
    assert '1 failed' in errs[1]


def test_without_an_error_sink_each_failure_is_one_line_on_stderr(procs):
    codes, out, errs = run_chain(
        procs, 'pipe', ['rz-hydrant', 'fixtures_funcs:numbers', '30'],
        ['rz-notch', 'fixtures_funcs:fail_on_multiples_of_five'], ['rz-bocca'])
    assert codes == [0, 1, 0]
    failures = [line for line in errs[1].splitlines() if ' failed: ' in line]
    assert len(failures) == 6
    assert all('ValueError' in line for line in failures)


def test_errors_to_stdout_is_refused(procs):
    proc = procs.start(['rz-notch', '--errors', 'stdout', 'fixtures_funcs:double'],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert '--errors stdout' in stderr_of(proc)


# text in and out


def test_lines_in_json_out_for_other_unix_tools(procs, tmp_path):
    cities = tmp_path / 'cities.txt'
    cities.write_text('Ljubljana\nMaribor\r\nKoper')
    with open(cities, 'rb') as stdin:
        codes, out, errs = run_chain(
            procs, 'pipe', None,
            ['rz-notch', '--in-format', 'lines', 'fixtures_options:shout'], ['rz-bocca'],
            stdin=stdin)
    assert codes == [0, 0], errs
    assert json_lines(out) == ['LJUBLJANA', 'MARIBOR', 'KOPER']


def test_malformed_json_lines_fail_alone_by_line_number(procs, tmp_path):
    lines = tmp_path / 'in.jsonl'
    lines.write_text('1\n2\n{oops\n4\n\n"five"\n[7\n8\n')
    with open(lines, 'rb') as stdin:
        codes, out, errs = run_chain(
            procs, 'pipe', None,
            ['rz-notch', '--in-format', 'json', '--format', 'json', '--ids',
             'fixtures_options:plus_one'], None, stdin=stdin)
    assert codes == [1], errs
    records = json_lines(out)
    assert [r['item'] for r in records] == [2, 3, 5, 9]
    assert [r['id'].rsplit(':', 1)[1] for r in records] == ['1', '2', '4', '8']
    assert records[0]['id'].startswith('stdin/')
    err = errs[0]
    assert 'line 3' in err and 'line 7' in err
    assert ':6 failed: TypeError' in err        # "five" + 1 fails in the function


def test_format_json_from_the_hydrant_and_ids(procs):
    proc = procs.start(['rz-hydrant', '--name', 'n', '--run-id', 'r', '--format', 'json',
                        '--ids', 'fixtures_funcs:numbers', '3'],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert json_lines(out) == [{'id': f'n/r:{i}', 'item': i} for i in range(3)]


def test_bocca_reads_json_lines(procs, tmp_path):
    lines = tmp_path / 'in.jsonl'
    lines.write_text('{"a": 1}\n{"a": 2}\nnope\n')
    with open(lines, 'rb') as stdin:
        codes, out, errs = run_chain(procs, 'pipe', None, None,
                                     ['rz-bocca', '--in-format', 'json'], stdin=stdin)
    assert codes == [1]
    assert json_lines(out) == [{'a': 1}, {'a': 2}]
    assert 'line 3' in errs[0]


@pytest.mark.parametrize('argv, says', [
    (['rz-hydrant', '--format', 'json', '--out', 'tcp://127.0.0.1:1', 'fixtures_funcs:numbers',
      '1'], '--format json is for stdout'),
    (['rz-hydrant', '--ids', 'fixtures_funcs:numbers', '1'], '--ids wraps JSON lines'),
    (['rz-notch', '--in-format', 'json', '--in', 'tcp://127.0.0.1:1', 'fixtures_funcs:double'],
     '--in-format json is for stdin'),
    (['rz-notch', '--format', 'yaml', 'fixtures_funcs:double'], "--format 'yaml'"),
    (['rz-bocca', '--in-format', 'csv'], "--in-format 'csv'"),
])
def test_format_options_in_the_wrong_place_are_usage_errors(procs, argv, says):
    proc = procs.start(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    proc.communicate(timeout=30)
    assert proc.returncode == 2, stderr_of(proc)
    assert says in stderr_of(proc)


def test_hydrant_and_bocca_send_their_failed_items_to_the_error_sink(procs, tmp_path):
    """The hydrant's unsendable items and the sink's unwritable item are records too."""
    hydrant_errors, bocca_errors = tmp_path / 'h.jsonl', tmp_path / 'b.jsonl'
    codes, _, errs = run_chain(
        procs, 'pipe', ['rz-hydrant', '--name', 'odd', '--run-id', 'r', '--errors',
                        f'jsonl:{hydrant_errors}', 'fixtures_funcs:awkward_items'],
        None, ['rz-bocca', 'null'])
    assert codes == [1, 1], errs           # the bocca cannot decode the tuple key: odd/r:7
    records = [json.loads(line) for line in hydrant_errors.read_text().splitlines()]
    assert [r['id'] for r in records] == ['odd/r:4', 'odd/r:5', 'odd/r:8']
    assert all(r['error'] == 'ItemNotEncodable' and r['node'].startswith('odd@')
               for r in records)
    assert "'too big'" in records[0]['item']              # its repr: it cannot be encoded

    out = tmp_path / 'stored.txt'
    codes, _, errs = run_chain(
        procs, 'pipe', ['rz-hydrant', '--name', 'n', '--run-id', 'r', 'fixtures_funcs:numbers',
                        '6'], None,
        ['rz-bocca', '--errors', f'jsonl:{bocca_errors}', '--args', json.dumps([str(out)]),
         'fixtures_backends:FailOnThree'])
    assert codes == [0, 1], errs
    assert out.read_text().split() == ['0', '1', '2', '4', '5']
    record, = [json.loads(line) for line in bocca_errors.read_text().splitlines()]
    assert (record['id'], record['item'], record['error']) == ('n/r:3', 3, 'SinkError')
    assert 'three is not welcome' in record['message']



@pytest.mark.parametrize('stage', ['notch', 'bocca'])
def test_a_failed_item_is_acknowledged_only_once_its_error_record_is_stored(
        procs, tmp_path, stage):
    """Over ZeroMQ a stage holds the acknowledgement of a failed item until the error sink
    has its record: until then the source's run is not complete."""
    gate, records, stored = tmp_path / 'gate', tmp_path / 'errors.jsonl', tmp_path / 'ok'
    port = free_port()
    source = procs.start(['rz-hydrant', '--out', f'tcp://127.0.0.1:{port}',
                          'fixtures_funcs:numbers', '40'],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    errors = ['--errors', 'fixtures_backends:WaitForFile']
    env = {'WAIT_GATE': str(gate), 'WAIT_PATH': str(records)}
    if stage == 'notch':
        # item 13 fails in the function
        failing, sink = procs.pipeline(
            ['rz-notch', '--in', f'tcp://127.0.0.1:{port}', *errors,
             'fixtures_options:poison_13'], ['rz-bocca', f'jsonl:{stored}'], env=env)
        expected = 13
    else:
        # item 3 can never be written by the sink
        failing = sink = procs.start(
            ['rz-bocca', '--in', f'tcp://127.0.0.1:{port}', *errors, '--args',
             json.dumps([str(stored)]), 'fixtures_backends:FailOnThree'],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env)
        expected = 3
    wait_for(lambda: stored.exists() and len(stored.read_text().splitlines()) == 39,
             timeout=30, what='the 39 good items stored')
    # without the hold the run completes within milliseconds of the last write; with it,
    # not while the failed item's record waits at the gate: watch for a second to see
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert 'complete' not in stderr_of(source) and source.poll() is None
        time.sleep(0.02)
    gate.touch()
    assert source.wait(timeout=30) == 0
    assert ' complete: 40 items' in stderr_of(source)
    assert failing.wait(timeout=30) == 1
    sink.wait(timeout=30)
    record, = [json.loads(line) for line in records.read_text().splitlines()]
    assert record['item'] == expected


def test_only_the_item_that_kills_its_worker_is_quarantined(procs):
    """Items that were running beside it in other threads are suspects, retried alone,
    and come out; only item 5 is quarantined."""
    codes, out, errs = run_chain(
        procs, 'pipe', ['rz-hydrant', 'fixtures_funcs:numbers', '8'],
        ['rz-notch', '-p', '1', '-t', '8', 'fixtures_options:exit_on_five_slowly'],
        ['rz-bocca'])
    assert codes == [0, 1, 0], errs
    assert sorted(json_lines(out)) == [i for i in range(8) if i != 5]
    quarantined = [line for line in errs[1].splitlines() if 'Quarantined' in line]
    assert len(quarantined) == 1 and ':5 failed' in quarantined[0]
