"""Stages wired by ZeroMQ endpoints, across separate processes."""

import re
import signal
import socket
import sqlite3
import subprocess

import pytest

from conftest import stderr_of, wait_for


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def stored(db, table='items'):
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db) as conn:
            return [r[0] for r in conn.execute(f'SELECT rz_id FROM {table}')]
    except sqlite3.OperationalError:
        return []


def start_chain(procs, db, n, order, notch_args=('-p', '2')):
    """hydrant -> notch -> bocca over tcp, started in the given order of stage names."""
    a, b = free_port(), free_port()
    argv = {
        'hydrant': ['rz-hydrant', '--name', 't', '--run-id', 'r', '--out', f'tcp://127.0.0.1:{a}',
                    'fixtures_funcs:numbers', str(n)],
        'notch': ['rz-notch', *notch_args, '--in', f'tcp://127.0.0.1:{a}',
                  '--out', f'>tcp://127.0.0.1:{b}', 'fixtures_funcs:double'],
        'bocca': ['rz-bocca', '--in', f'@tcp://127.0.0.1:{b}', f'sqlite:{db}'],
    }
    return {name: procs.start(argv[name], stdin=subprocess.DEVNULL) for name in order}


@pytest.mark.parametrize('order', [('bocca', 'notch', 'hydrant'),
                                   ('hydrant', 'notch', 'bocca'),
                                   ('notch', 'hydrant', 'bocca')])
def test_one_shot_over_endpoints_ends_with_every_node_exiting_0(procs, tmp_path, order):
    db = tmp_path / 'out.db'
    nodes = start_chain(procs, db, 5000, order)
    for name in ('hydrant', 'notch', 'bocca'):
        assert nodes[name].wait(timeout=60) == 0, stderr_of(nodes[name])
    ids = stored(db)
    assert len(ids) == 5000 and set(ids) == {f't/r:{i}' for i in range(5000)}


def test_ipc_endpoints_and_several_inputs(procs, tmp_path):
    db = tmp_path / 'ipc.db'
    left, right = f'ipc://{tmp_path}/left', f'ipc://{tmp_path}/right'
    sink = procs.start(['rz-bocca', '--in', left, '--in', right, f'sqlite:{db}'])
    sources = [procs.start(['rz-hydrant', '--name', name, '--out', address,
                            'fixtures_funcs:numbers', '300'])
               for name, address in (('left', left), ('right', right))]
    for proc in (*sources, sink):
        assert proc.wait(timeout=60) == 0, stderr_of(proc)
    ids = stored(db)
    assert len(ids) == 600 and len(set(ids)) == 600
    assert {i.split('/')[0] for i in ids} == {'left', 'right'}


def test_two_sources_into_one_bound_sink_never_share_an_id(procs, tmp_path):
    db = tmp_path / 'shared.db'
    port = free_port()
    sink = procs.start(['rz-bocca', '--producers', '2', '--in', f'@tcp://127.0.0.1:{port}',
                        f'sqlite:{db}'])
    sources = [procs.start(['rz-hydrant', '--out', f'>tcp://127.0.0.1:{port}',
                            'fixtures_funcs:numbers', '1000']) for _ in range(2)]
    for proc in (*sources, sink):
        assert proc.wait(timeout=60) == 0, stderr_of(proc)
    ids = stored(db)
    assert len(ids) == 2000 and len(set(ids)) == 2000


def test_a_consumer_killed_mid_run_loses_nothing(procs, tmp_path):
    from test_control_fd import Worker          # here: that module imports this one
    db = tmp_path / 'kill.db'
    a, b = free_port(), free_port()
    n = 5000
    sink = procs.start(['rz-bocca', '--in', f'@tcp://127.0.0.1:{b}', f'sqlite:{db}'])
    notches = [procs.start(['rz-notch', '--in', f'tcp://127.0.0.1:{a}',
                            '--out', f'>tcp://127.0.0.1:{b}', 'fixtures_funcs:slow_identity'])
               for _ in range(2)]
    channel = Worker()          # the source's status, as rz-worker would read it
    try:
        source = procs.start(['rz-hydrant', '--name', 't', '--run-id', 'k', '--control-fd',
                              str(channel.fd), '--out', f'tcp://127.0.0.1:{a}',
                              'fixtures_funcs:numbers', str(n)], pass_fds=(channel.fd,))
        channel.started()
        wait_for(lambda: len(stored(db)) > 500, timeout=60, what='items stored')
        notches[0].send_signal(signal.SIGKILL)
        for proc in (source, notches[1], sink):
            assert proc.wait(timeout=120) == 0, stderr_of(proc)
        statuses = channel.rest('status')
    finally:
        channel.close()
    ids = stored(db)
    assert len(ids) == n and set(ids) == {f't/k:{i}' for i in range(n)}
    logged = re.findall(r'redelivering (\d+) items', stderr_of(source))
    assert logged and statuses[-1]['redelivered'] == sum(map(int, logged)) > 0


def test_a_sink_killed_and_started_again_loses_nothing(procs, tmp_path):
    db = tmp_path / 'again.db'
    a, b = free_port(), free_port()
    n = 6000
    sink_argv = ['rz-bocca', '--in', f'@tcp://127.0.0.1:{b}', f'sqlite:{db}']
    sink = procs.start(sink_argv)
    notch = procs.start(['rz-notch', '-p', '2', '--in', f'tcp://127.0.0.1:{a}',
                         '--out', f'>tcp://127.0.0.1:{b}', 'fixtures_funcs:slow_identity'])
    source = procs.start(['rz-hydrant', '--name', 't', '--run-id', 's',
                          '--out', f'tcp://127.0.0.1:{a}', 'fixtures_funcs:records', str(n)])
    wait_for(lambda: len(stored(db)) > 1000, timeout=60, what='items stored')
    sink.send_signal(signal.SIGKILL)
    sink.wait(timeout=10)
    assert len(stored(db)) < n, "the run ended before the sink could be killed"
    sink = procs.start(sink_argv)
    for proc in (source, notch, sink):
        assert proc.wait(timeout=120) == 0, stderr_of(proc)
    ids = stored(db)
    assert len(ids) == n and set(ids) == {f't/s:{i}' for i in range(n)}
    assert 'restarted' in stderr_of(notch)


def test_an_item_entering_an_idle_pipeline_over_endpoints_reaches_the_sink_at_once(
        procs, tmp_path):
    flag = tmp_path / 'go'
    a, b = f'ipc://{tmp_path}/a', f'ipc://{tmp_path}/b'
    sink = procs.start(['rz-bocca', '--in', '@' + b], stdout=subprocess.PIPE)
    notch = procs.start(['rz-notch', '--in', a, '--out', '>' + b, 'fixtures_funcs:identity'])
    source = procs.start(['rz-hydrant', '--out', a, 'fixtures_funcs:one_then_wait', str(flag)])
    assert sink.stdout.readline() == b'"first"\n'    # while the source holds the second
    flag.touch()
    assert sink.stdout.readline() == b'"second"\n'
    for proc in (source, notch, sink):
        assert proc.wait(timeout=30) == 0, stderr_of(proc)


def test_a_slow_sink_keeps_its_heartbeat(procs, tmp_path):
    out = tmp_path / 'slow.txt'
    port = free_port()
    sink = procs.start(['rz-bocca', '--in', f'@tcp://127.0.0.1:{port}', '--args',
                        f'["{out}"]', 'fixtures_backends:SlowFirstWrite'])
    source = procs.start(['rz-hydrant', '--out', f'>tcp://127.0.0.1:{port}',
                          'fixtures_funcs:numbers', '50'])
    for proc in (source, sink):
        assert proc.wait(timeout=60) == 0, stderr_of(proc)
    assert sorted(int(x) for x in out.read_text().split()) == list(range(50))
    assert 'lost' not in stderr_of(source) and 'redelivering' not in stderr_of(source)



def test_a_producer_that_joins_while_another_holds_the_credit_is_not_starved(
        procs, tmp_path):
    # the first source takes the sink's whole window, sends one item and then sits on
    # the rest; the second, joining later, must still get a wire batch's worth at once
    db, flag, port = tmp_path / 'late.db', tmp_path / 'go', free_port()
    sink = procs.start(['rz-bocca', '--producers', '2', '--mode', 'batch', '--in',
                        f'@tcp://127.0.0.1:{port}', f'sqlite:{db}'])
    idle = procs.start(['rz-hydrant', '--name', 'idle', '--out', f'>tcp://127.0.0.1:{port}',
                        'fixtures_funcs:one_then_wait', str(flag), '60'])
    wait_for(lambda: len(stored(db)) == 1, timeout=20, what='the idle source\'s first item')
    late = procs.start(['rz-hydrant', '--name', 'late', '--out', f'>tcp://127.0.0.1:{port}',
                        'fixtures_funcs:numbers', '50'])
    # starved, it would get one item of credit a flush interval (about 50 s)
    assert late.wait(timeout=20) == 0, stderr_of(late)
    assert sum(1 for i in stored(db) if i.startswith('late/')) == 50
    flag.touch()
    for proc in (idle, sink):
        assert proc.wait(timeout=30) == 0, stderr_of(proc)
    assert len(stored(db)) == 52


def test_a_bound_source_with_consumers_2_waits_for_a_second_consumer_that_comes_late(
        procs, tmp_path):
    # without --consumers the source ends once its first consumer has everything, and a
    # consumer that connects afterwards waits for ever
    port = free_port()
    source = procs.start(['rz-hydrant', '--consumers', '2', '--out', f'tcp://127.0.0.1:{port}',
                          'fixtures_funcs:numbers', '40'])
    first, late = tmp_path / 'first.jsonl', tmp_path / 'late.jsonl'
    sinks = [procs.start(['rz-bocca', '--in', f'tcp://127.0.0.1:{port}', f'jsonl:{first}'])]
    wait_for(lambda: first.exists() and len(first.read_text().splitlines()) == 40,
             timeout=20, what='the first consumer to have every item')
    waiting = 'done; waiting for 1 more consumer (--consumers 2) before ending'
    wait_for(lambda: waiting in stderr_of(source), timeout=20, what='the source to say it waits')
    sinks.append(procs.start(['rz-bocca', '--in', f'tcp://127.0.0.1:{port}', f'jsonl:{late}']))
    for proc in (source, *sinks):
        assert proc.wait(timeout=20) == 0, stderr_of(proc)
    assert late.read_text() == ''
    assert stderr_of(source).count('waiting for') == 1


def test_a_bound_notch_with_consumers_2_says_once_that_it_waits_for_the_second(
        procs, tmp_path):
    a, b = free_port(), free_port()
    source = procs.start(['rz-hydrant', '--out', f'tcp://127.0.0.1:{a}',
                          'fixtures_funcs:numbers', '30'])
    notch = procs.start(['rz-notch', '--consumers', '2', '--in', f'tcp://127.0.0.1:{a}',
                         '--out', f'tcp://127.0.0.1:{b}', 'fixtures_funcs:double'])
    first, late = tmp_path / 'first.jsonl', tmp_path / 'late.jsonl'
    sinks = [procs.start(['rz-bocca', '--in', f'tcp://127.0.0.1:{b}', f'jsonl:{first}'])]
    waiting = 'done; waiting for 1 more consumer (--consumers 2) before ending'
    wait_for(lambda: waiting in stderr_of(notch), timeout=20, what='the notch to say it waits')
    assert len(first.read_text().splitlines()) == 30
    sinks.append(procs.start(['rz-bocca', '--in', f'tcp://127.0.0.1:{b}', f'jsonl:{late}']))
    for proc in (source, notch, *sinks):
        assert proc.wait(timeout=20) == 0, stderr_of(proc)
    assert stderr_of(notch).count('waiting for') == 1


@pytest.mark.parametrize('stage', ['rz-bocca', 'rz-notch'])
def test_a_consumer_whose_producer_is_not_up_says_so_once_and_when_it_answers(
        procs, tmp_path, stage):
    port = free_port()
    address = f'tcp://127.0.0.1:{port}'
    if stage == 'rz-bocca':
        argv = ['rz-bocca', '--in', address, f'jsonl:{tmp_path / "out.jsonl"}']
    else:
        argv = ['rz-notch', '--format', 'json', '--in', address, 'fixtures_funcs:identity']
    consumer = procs.start(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    waiting = f'waiting for a producer at {address}'
    wait_for(lambda: waiting in stderr_of(consumer), timeout=20,
             what='the consumer to say it waits')
    source = procs.start(['rz-hydrant', '--name', 'up', '--out', address,
                          'fixtures_funcs:numbers', '10'])
    for proc in (source, consumer):
        assert proc.wait(timeout=30) == 0, stderr_of(proc)
    said = stderr_of(consumer)
    assert said.count('waiting for') == 1 and ' INFO ' in _line_of(said, waiting)
    assert len(re.findall(rf'up answered at {re.escape(address)} after \d+ s', said)) == 1


def test_under_rz_worker_an_unanswered_input_is_logged_at_debug_only(procs, tmp_path):
    from test_control_fd import Worker          # here: that module imports this one
    port = free_port()
    address = f'tcp://127.0.0.1:{port}'
    channel = Worker()
    try:
        sink = procs.start(['rz-bocca', '--log-level', 'debug', '--control-fd',
                            str(channel.fd), '--in', address, 'null'],
                           pass_fds=(channel.fd,))
        channel.started()
        waiting = f'waiting for a producer at {address}'
        wait_for(lambda: waiting in stderr_of(sink), timeout=20,
                 what='the consumer to log its wait')
        source = procs.start(['rz-hydrant', '--out', address, 'fixtures_funcs:numbers', '5'])
        for proc in (source, sink):
            assert proc.wait(timeout=30) == 0, stderr_of(proc)
    finally:
        channel.close()
    said = stderr_of(sink)
    assert ' DEBUG ' in _line_of(said, waiting)
    assert ' DEBUG ' in _line_of(said, f'answered at {address}')


def _line_of(text, part):
    """The one line of text that holds part."""
    [line] = [line for line in text.splitlines() if part in line]
    return line


def test_a_node_removes_the_ipc_socket_files_it_bound(procs, tmp_path):
    flag = tmp_path / 'go'
    a, b = tmp_path / 'a', tmp_path / 'b'
    sink = procs.start(['rz-bocca', '--in', f'@ipc://{b}', 'null'])
    notch = procs.start(['rz-notch', '--in', f'ipc://{a}', '--out', f'>ipc://{b}',
                         'fixtures_funcs:identity'])
    source = procs.start(['rz-hydrant', '--out', f'ipc://{a}', 'fixtures_funcs:one_then_wait',
                          str(flag)])
    wait_for(lambda: a.is_socket() and b.is_socket(), timeout=20, what='both socket files')
    flag.touch()
    for proc in (source, notch, sink):
        assert proc.wait(timeout=30) == 0, stderr_of(proc)
    assert not a.exists() and not b.exists()


def test_an_ipv6_loopback_endpoint_carries_a_pipeline(procs, tmp_path):
    port = free_port()
    sink = procs.start(['rz-bocca', '--in', f'@tcp://[::1]:{port}'], stdout=subprocess.PIPE)
    source = procs.start(['rz-hydrant', '--out', f'>tcp://[::1]:{port}',
                          'fixtures_funcs:numbers', '5'])
    out, _ = sink.communicate(timeout=30)
    assert sink.returncode == 0 and source.wait(timeout=30) == 0, stderr_of(sink)
    assert sorted(map(int, out.split())) == list(range(5))
