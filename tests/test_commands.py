"""The stage commands in shell pipes: items, ids, errors and exit statuses."""

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time

import pytest

from conftest import finish, finish_chain, json_lines, stderr_of, wait_for

from rezina import exitcodes


def run_pipeline(procs, *stages, timeout=60):
    return finish_chain(procs.pipeline(*stages), timeout)


def test_pipe_calls_the_function_on_every_item(procs):
    codes, out, _ = run_pipeline(
        procs, ['rz-hydrant', 'fixtures_funcs:numbers', '100'],
        ['rz-notch', '-p', '2', '-t', '2', 'fixtures_funcs:double'], ['rz-bocca'])
    assert codes == [0, 0, 0]
    assert sorted(json_lines(out)) == [2 * i for i in range(100)]


def test_none_drops_and_generator_fans_out(procs):
    codes, out, _ = run_pipeline(
        procs, ['rz-hydrant', 'fixtures_funcs:numbers', '30'],
        ['rz-notch', 'fixtures_funcs:evens_only'],
        ['rz-notch', 'fixtures_funcs:repeat_by_mod3'], ['rz-bocca'])
    assert codes == [0, 0, 0, 0]
    expected = sorted(i for i in range(0, 30, 2) for _ in range(i % 3))
    assert sorted(json_lines(out)) == expected


def test_fan_out_ids_extend_the_parent_id(procs, tmp_path):
    db = tmp_path / 'fan.db'
    codes, _, _ = run_pipeline(
        procs, ['rz-hydrant', '--name', 't', '--run-id', 'r1', 'fixtures_funcs:numbers', '6'],
        ['rz-notch', 'fixtures_funcs:repeat_by_mod3'], ['rz-bocca', f'sqlite:{db}'])
    assert codes == [0, 0, 0]
    ids = {row[0] for row in sqlite3.connect(db).execute('SELECT rz_id FROM items')}
    assert ids == {'t/r1:1.0', 't/r1:2.0', 't/r1:2.1', 't/r1:4.0', 't/r1:5.0', 't/r1:5.1'}


def test_class_method_runs_on_an_instance_per_worker(procs):
    codes, out, _ = run_pipeline(
        procs, ['rz-hydrant', 'fixtures_funcs:numbers', '50'],
        ['rz-notch', '-p', '2', 'fixtures_funcs:Scaler.scale'], ['rz-bocca'])
    assert codes == [0, 0, 0]
    rows = json_lines(out)
    assert sorted(r['value'] for r in rows) == [10 * i for i in range(50)]
    assert 1 <= len({r['pid'] for r in rows}) <= 2


def test_failing_items_fail_alone_and_are_named(procs):
    codes, out, errs = run_pipeline(
        procs, ['rz-hydrant', '--name', 't', '--run-id', 'r5', 'fixtures_funcs:numbers', '20'],
        ['rz-notch', 'fixtures_funcs:fail_on_multiples_of_five'], ['rz-bocca'])
    assert codes == [0, exitcodes.FAILED, 0]
    assert sorted(json_lines(out)) == [i for i in range(20) if i % 5]
    for seq in (0, 5, 10, 15):
        assert f"item t/r5:{seq} failed: ValueError: {seq} is a multiple of five" in errs[1]
    assert 'Traceback' not in errs[1]


def test_a_source_that_raises_fails_its_run_but_keeps_its_items(procs):
    codes, out, errs = run_pipeline(
        procs, ['rz-hydrant', '--name', 't', '--run-id', 'broken',
                'fixtures_funcs:fail_after', '7'],
        ['rz-bocca'])
    assert codes == [exitcodes.FAILED, 0]
    assert sorted(json_lines(out)) == list(range(7))
    assert re.search(r"run t/broken failed after 7 items in [\d.]+ s: "
                     r"RuntimeError: source broke after 7 items", errs[0])


def test_unicode_city_names_arrive_unchanged(procs, tmp_path):
    from fixtures_funcs import CITIES
    db = tmp_path / 'cities.db'
    codes, out, _ = run_pipeline(
        procs, ['rz-hydrant', 'fixtures_funcs:cities'],
        ['rz-notch', '-p', '2', 'fixtures_funcs:identity'], ['rz-bocca', f'sqlite:{db}'])
    assert codes == [0, 0, 0]
    stored = [r[0] for r in sqlite3.connect(db).execute('SELECT city FROM items ORDER BY rank')]
    assert stored == CITIES
    codes, out, _ = run_pipeline(procs, ['rz-hydrant', 'fixtures_funcs:cities'], ['rz-bocca'])
    assert [r['city'] for r in sorted(json_lines(out), key=lambda r: r['rank'])] == CITIES


def test_awkward_values_round_trip_or_fail_alone(procs):
    codes, out, errs = run_pipeline(
        procs, ['rz-hydrant', '--name', 't', '--run-id', 'odd', 'fixtures_funcs:awkward_items'],
        ['rz-notch', 'fixtures_funcs:describe'], ['rz-bocca'])
    rows = {r['kind']: r for r in json_lines(out)}
    assert rows['naive']['shown'] == '2024-03-01T12:30:05'
    assert rows['aware']['shown'] == '2024-03-01T12:30:05+05:30'
    assert rows['bytes']['type'] == 'bytes' and rows['str']['type'] == 'str'
    assert rows['int keys']['shown'] == "{1: 'one', 2: 'two'}"
    assert 'last' in rows
    assert set(rows) == {'naive', 'aware', 'bytes', 'str', 'int keys', 'last'}
    assert codes[0] == exitcodes.FAILED and codes[1] == exitcodes.FAILED
    unsent = "failed: ItemNotEncodable: cannot be sent:"
    assert f"item t/odd:4 {unsent} int 1180591620717411303424 does not fit in 64 bits" \
        in errs[0]
    assert f"item t/odd:5 {unsent} str holds a lone surrogate" in errs[0]
    assert f"item t/odd:8 {unsent} type set is not supported" in errs[0]
    assert "item t/odd:7 failed" in errs[1] and "dict key" in errs[1]


def test_two_sources_never_share_an_id(procs, tmp_path):
    db = tmp_path / 'two.db'
    for args in (['7'], ['7', '100'], ['7']):
        codes, _, _ = run_pipeline(
            procs, ['rz-hydrant', 'fixtures_funcs:numbers', *args], ['rz-bocca', f'sqlite:{db}'])
        assert codes == [0, 0]
    rows = sqlite3.connect(db).execute('SELECT rz_id, rz_run FROM items').fetchall()
    assert len(rows) == 21 and len({r[0] for r in rows}) == 21
    assert len({r[1] for r in rows}) == 3


def test_two_sources_with_one_run_id_never_share_an_id(procs, tmp_path):
    db = tmp_path / 'same-run.db'
    for args in (['5'], ['5', '100']):
        codes, _, _ = run_pipeline(
            procs, ['rz-hydrant', '--run-id', 'nightly', 'fixtures_funcs:numbers', *args],
            ['rz-bocca', f'sqlite:{db}'])
        assert codes == [0, 0]
    count, = sqlite3.connect(db).execute('SELECT COUNT(*) FROM items').fetchone()
    assert count == 10


def test_a_named_run_is_stored_once_when_repeated(procs, tmp_path):
    db = tmp_path / 'named.db'
    for _ in range(2):
        codes, _, _ = run_pipeline(
            procs, ['rz-hydrant', '--name', 't', '--run-id', 'nightly-1',
                    'fixtures_funcs:records', '50'],
            ['rz-bocca', f'sqlite:{db}'])
        assert codes == [0, 0]
    count, = sqlite3.connect(db).execute('SELECT COUNT(*) FROM items').fetchone()
    assert count == 50


def test_an_item_entering_an_idle_pipeline_reaches_the_sink_at_once(procs, tmp_path):
    flag = tmp_path / 'go'
    chain = procs.pipeline(
        ['rz-hydrant', 'fixtures_funcs:one_then_wait', str(flag)],
        ['rz-notch', 'fixtures_funcs:identity'], ['rz-bocca'])
    sink = chain[-1]
    first = sink.stdout.readline()       # arrives while the source still holds the second
    assert json.loads(first) == 'first'
    flag.touch()
    assert json.loads(sink.stdout.readline()) == 'second'
    assert [p.wait(timeout=20) for p in chain] == [0, 0, 0]


def test_head_ends_the_pipeline_quietly_and_promptly(procs):
    chain = procs.pipeline(
        ['rz-hydrant', 'fixtures_funcs:numbers', '100000000'],
        ['rz-notch', 'fixtures_funcs:identity'], ['rz-bocca'], ['head', '-n', '3'])
    out, _ = chain[-1].communicate(timeout=20)
    head_done = time.monotonic()
    assert out.decode().splitlines() == ['0', '1', '2']
    for proc in chain[:-1]:
        proc.wait(timeout=10)
    assert time.monotonic() - head_done < 3.0
    for proc in chain[:-1]:
        assert proc.returncode == exitcodes.DOWNSTREAM_CLOSED
        assert 'Traceback' not in stderr_of(proc)
        assert 'Error' not in stderr_of(proc)


def test_batch_mode_flushes_under_steady_input(procs, tmp_path):
    out = tmp_path / 'steady.jsonl'
    feeder = procs.start(['rz-hydrant', '--every', '0.2', 'fixtures_funcs:numbers', '1'],
                         stdout=subprocess.PIPE)
    sink = procs.start(['rz-bocca', '--mode', 'batch', '--batch-size', '1000',
                        '--flush-interval', '0.5', f'jsonl:{out}'], stdin=feeder.stdout)
    feeder.stdout.close()

    def lines():
        return out.read_text().splitlines() if out.exists() else []
    wait_for(lambda: len(lines()) >= 3, what='batch mode to flush steady input')
    assert feeder.poll() is None and sink.poll() is None


@pytest.mark.parametrize('argv, message', [
    (['rz-hydrant', 'no_such_module:f'], "rz-hydrant: cannot import 'no_such_module:f'"),
    (['rz-hydrant', 'fixtures_funcs:nope'], "has no attribute 'nope'"),
    (['rz-notch', 'fixtures_funcs'], "expected MODULE:FUNCTION"),
    (['rz-hydrant', '--out', 'udp://x:1', 'fixtures_funcs:numbers', '1'],
     "--out 'udp://x:1': expected"),
    (['rz-notch', '--in', 'tcp://127.0.0.1:*', 'fixtures_funcs:identity'],
     "only works when binding"),
    (['rz-bocca', 'nosuchsink'], "rz-bocca: unknown sink 'nosuchsink'"),
    (['rz-hydrant', '--kwargs', '{bad', 'fixtures_funcs:numbers'], "--kwargs is not valid JSON"),
    (['rz-notch', '-p', 'two', 'fixtures_funcs:identity'], "--processes 'two'"),
    (['rz-bocca', '--mode', 'fast'], "--mode"),
    (['rz-hydrant', '--every', '0', 'fixtures_funcs:numbers', '1'], "--every"),
    (['rz-hydrant', '--every', '1e-7', 'fixtures_funcs:numbers', '1'], "at least 0.001"),
    (['rz-hydrant', '--bogus', 'fixtures_funcs:numbers'], "--bogus"),
    (['rz-hydrant', '--run-id', '', 'fixtures_funcs:numbers'], "--run-id '': expected"),
    (['rz-hydrant', '--name', 'a:b', 'fixtures_funcs:numbers'], "--name 'a:b': expected"),
])
def test_usage_errors_are_one_line_and_exit_2(procs, argv, message):
    code, out, err = finish(procs.start(argv, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE))
    assert code == exitcodes.USAGE
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert out == b''


def test_address_in_use_is_one_line(procs):
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = finish(procs.start(
            ['rz-hydrant', '--out', f'tcp://127.0.0.1:{port}', 'fixtures_funcs:numbers', '1'],
            stdout=subprocess.PIPE))
    assert code == exitcodes.FAILED
    assert err.strip() == f"rz-hydrant: cannot bind tcp://127.0.0.1:{port}: address already in use"


def test_user_backend_class_gets_items_with_its_arguments(procs, tmp_path):
    calls = tmp_path / 'calls.jsonl'
    codes, _, _ = run_pipeline(
        procs, ['rz-hydrant', 'fixtures_funcs:numbers', '5'],
        ['rz-bocca', '--mode', 'batch', '--args', json.dumps([str(calls)]),
         '--kwargs', '{"label": "mine"}', 'fixtures_backends:CallLog'])
    assert codes == [0, 0]
    logged = [json.loads(line) for line in calls.read_text().splitlines()]
    assert logged[0] == {'call': 'open', 'label': 'mine', 'logger': logged[0]['logger']}
    assert logged[-1] == {'call': 'close'}
    written = [entry['message'] for entry in logged[1:-1]]
    assert all(isinstance(message, list) for message in written)
    assert sorted(x for message in written for x in message) == [0, 1, 2, 3, 4]


def test_user_backend_in_stream_mode_gets_one_item_per_write(procs, tmp_path):
    calls = tmp_path / 'calls.jsonl'
    codes, _, _ = run_pipeline(
        procs, ['rz-hydrant', 'fixtures_funcs:numbers', '5'],
        ['rz-bocca', '--mode', 'stream', '--args', json.dumps([str(calls)]),
         'fixtures_backends:CallLog'])
    assert codes == [0, 0]
    logged = [json.loads(line) for line in calls.read_text().splitlines()]
    assert sorted(e['message'] for e in logged if e['call'] == 'write') == [0, 1, 2, 3, 4]


def test_a_bound_port_of_star_is_logged(procs):
    source = procs.start(['rz-hydrant', '--out', 'tcp://127.0.0.1:*',
                          'fixtures_funcs:numbers', '3'])
    wait_for(lambda: 'bound tcp://127.0.0.1:' in stderr_of(source), what='the bound port')
    port = int(stderr_of(source).split('bound tcp://127.0.0.1:')[1].split()[0])
    sink = procs.start(['rz-bocca', '--in', f'tcp://127.0.0.1:{port}'], stdout=subprocess.PIPE)
    out, _ = sink.communicate(timeout=30)
    assert sorted(json_lines(out)) == [0, 1, 2]
    assert source.wait(timeout=30) == 0


def test_a_result_the_wire_cannot_carry_fails_that_item_only(procs):
    codes, out, errs = run_pipeline(
        procs, ['rz-hydrant', '--name', 't', '--run-id', 'u', 'fixtures_funcs:numbers', '10'],
        ['rz-notch', 'fixtures_funcs:unsendable_on_seven'], ['rz-bocca'])
    assert codes == [0, exitcodes.FAILED, 0]
    assert sorted(json_lines(out)) == [i for i in range(10) if i != 7]
    assert "item t/u:7 failed: ItemNotEncodable: type set is not supported" in errs[1]


def test_batch_size_bounds_every_write(procs, tmp_path):
    calls = tmp_path / 'calls.jsonl'
    codes, _, _ = run_pipeline(
        procs, ['rz-hydrant', 'fixtures_funcs:numbers', '10'],
        ['rz-bocca', '--mode', 'batch', '--batch-size', '3', '--args', json.dumps([str(calls)]),
         'fixtures_backends:CallLog'])
    assert codes == [0, 0]
    writes = [json.loads(line)['message'] for line in calls.read_text().splitlines()
              if json.loads(line)['call'] == 'write']
    assert all(1 <= len(w) <= 3 for w in writes)
    assert sorted(x for w in writes for x in w) == list(range(10))


def test_input_that_is_not_a_rezina_stream_is_one_line(procs):
    proc = procs.start(['rz-bocca'], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out, _ = proc.communicate(b'hello\n', timeout=20)
    assert proc.returncode == exitcodes.FAILED and out == b''
    assert stderr_of(proc).strip() == (
        "rz-bocca: stdin is not a rezina record stream (pipe rz commands together, or read "
        "text with --in-format json or lines)")


@pytest.mark.parametrize('argv', [
    ['rz-notch', '--in', '@tcp://127.0.0.1:{port}', 'fixtures_funcs:identity'],
    ['rz-notch', '--out', 'tcp://127.0.0.1:{port}', 'fixtures_funcs:identity'],
    ['rz-bocca', '--in', '@tcp://127.0.0.1:{port}'],
])
def test_every_command_reports_an_address_in_use_and_exits(procs, argv):
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = procs.start([a.format(port=port) for a in argv], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE)
        code, _, err = finish(proc, timeout=20)
    assert code == exitcodes.FAILED
    assert f"cannot bind tcp://127.0.0.1:{port}: address already in use" in err


@pytest.mark.parametrize('count, kib, notch_args', [
    (300, 1, []), (2000, 1, ['-p', '2', '-t', '3']), (3, 3000, []), (2, 3000, ['-t', '2'])])
def test_large_items_pass_through_a_notch(procs, count, kib, notch_args):
    codes, out, _ = run_pipeline(
        procs, ['rz-hydrant', 'fixtures_funcs:big_strings', str(count), str(kib)],
        ['rz-notch', *notch_args, 'fixtures_funcs:length'], ['rz-bocca'], timeout=60)
    assert codes == [0, 0, 0]
    assert json_lines(out) == [kib * 1024] * count


def test_prints_in_user_code_do_not_corrupt_the_stream(procs):
    codes, out, errs = run_pipeline(
        procs, ['rz-hydrant', 'fixtures_noisy:numbers', '5'],
        ['rz-notch', 'fixtures_noisy:identity'], ['rz-bocca'])
    assert codes == [0, 0, 0]
    assert sorted(json_lines(out)) == [0, 1, 2, 3, 4]
    assert 'fixtures_noisy imported' in errs[0] and 'numbers called' in errs[0]
    assert 'fixtures_noisy imported' in errs[1]


def test_a_stage_that_dies_fails_the_stages_after_it(procs):
    chain = procs.pipeline(
        ['rz-hydrant', '--every', '0.05', 'fixtures_funcs:numbers', '10'],
        ['rz-notch', 'fixtures_funcs:identity'], ['rz-bocca'])
    assert chain[-1].stdout.readline()
    chain[0].send_signal(signal.SIGKILL)
    chain[-1].communicate(timeout=20)
    assert [p.wait(timeout=20) for p in chain[1:]] == [exitcodes.FAILED, exitcodes.FAILED]
    for proc in chain[1:]:
        assert 'stdin ended without end of stream' in stderr_of(proc)


def test_a_module_that_is_not_callable_is_a_usage_error(procs):
    for command in ('rz-hydrant', 'rz-notch'):
        code, _, err = finish(procs.start([command, 'fixtures_funcs:CITIES'],
                                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE))
        assert code == exitcodes.USAGE and "cannot call 'fixtures_funcs:CITIES'" in err


@pytest.mark.parametrize('mode', ['stream', 'batch'])
def test_an_item_the_sink_cannot_write_fails_alone(procs, tmp_path, mode):
    out = tmp_path / 'written.txt'
    codes, _, errs = run_pipeline(
        procs, ['rz-hydrant', '--name', 't', '--run-id', 'w', 'fixtures_funcs:numbers', '8'],
        ['rz-bocca', '--mode', mode, '--args', json.dumps([str(out)]),
         'fixtures_backends:FailOnThree'], timeout=60)
    assert codes == [0, exitcodes.FAILED]
    written = out.read_text().split()
    assert set(written) == {'0', '1', '2', '4', '5', '6', '7'}
    if mode == 'stream':     # each write is one item: none is written twice
        assert sorted(written) == ['0', '1', '2', '4', '5', '6', '7']
    assert "item t/w:3 failed: SinkError: the sink failed to write it 3 times" in errs[1]
    assert "three is not welcome" in errs[1]


def test_a_sink_that_cannot_write_stops_at_once_on_sigterm(procs, tmp_path):
    feeder = procs.start(['rz-hydrant', '--every', '0.1', 'fixtures_funcs:numbers', '3'],
                         stdout=subprocess.PIPE)
    sink = procs.start(['rz-bocca', 'fixtures_backends:FailingWrite'], stdin=feeder.stdout)
    feeder.stdout.close()
    wait_for(lambda: 'retrying in' in stderr_of(sink), what='a failed write')
    sink.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    assert sink.wait(timeout=10) == exitcodes.FAILED
    assert time.monotonic() - stopped < 2.0
    assert 'items not written' in stderr_of(sink)


@pytest.mark.parametrize('argv', [['rz-hydrant', 'fixtures_funcs:numbers', '3'],
                                  ['rz-notch', 'fixtures_funcs:identity']])
def test_the_record_stream_is_not_written_to_a_terminal(procs, argv):
    import pty
    main, terminal = pty.openpty()
    try:
        proc = procs.start(argv, stdin=subprocess.DEVNULL, stdout=terminal)
        assert proc.wait(timeout=20) == exitcodes.USAGE
    finally:
        os.close(terminal)
        os.close(main)
    assert "stdout is a terminal" in stderr_of(proc)


def test_arguments_after_a_double_dash_reach_the_function_and_the_dash_does_not(procs):
    source = procs.start(['rz-hydrant', '--format', 'json', 'fixtures_funcs:numbers', '--',
                          '2', '-1'], stdout=subprocess.PIPE)
    code, out, err = finish(source)
    assert (code, out) == (0, b'-1\n0\n'), err
