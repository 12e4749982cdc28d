"""rz, the control client: real rz processes against a stand-in rz-master on loopback
(tests/fakemaster.py), which records every request it answers."""

import io
import json
import os
import select
import signal
import subprocess
import time

import pytest

from conftest import finish, wait_for

from rezina import defaults, exitcodes
from rezina.cli import parse
from rezina.control import rz
from rezina.control.console import Console
from rezina.control.protocol import Client

UTC = {'TZ': 'UTC'}
NEXT_RUN = 1796418000                       # 2026-12-04 21:00:00 UTC
STARTED = 1796417700                        # 2026-12-04 20:55:00 UTC

RUN = {'run_id': 'weather.get_cities/20261204T205500Z', 'started': STARTED,
       'ended': STARTED + 2.25, 'items': 10, 'failed': 2, 'state': 'COMPLETE'}
PS = [
    {'typology': 'weather', 'node_id': 'weather/get_cities#0', 'stage': 'get_cities',
     'index': 0, 'worker': 'alpha', 'pid': 4242, 'state': 'RUNNING', 'restarts': 0,
     'items_in': 0, 'items_out': 10, 'failed': 0, 'rate': 0.5, 'in_flight': 0,
     'oldest_age': None, 'last_error': None},
    {'typology': 'weather', 'node_id': None, 'stage': 'fetch', 'index': 1,
     'worker': 'beta', 'pid': None, 'state': 'FAILED', 'restarts': 5, 'items_in': 10,
     'items_out': 8, 'failed': 2, 'rate': 12.345, 'in_flight': 0, 'oldest_age': None,
     'last_error': 'Traceback (most recent call last):\n  ...\nKeyError: \'city\'\n'},
]


def workers(args):
    now = time.time()
    return [{'id': 'alpha', 'host': 'alpha.lan', 'address': '127.0.0.2', 'slots': 8,
             'load': 3, 'state': 'ONLINE', 'last_heartbeat': now - 3.5, 'nodes': 2},
            {'id': 'beta', 'host': 'beta.lan', 'address': '127.0.0.3', 'slots': 16,
             'load': 0.5, 'state': 'OFFLINE', 'last_heartbeat': now - 7300,
             'nodes': ['beta/x#0']},
            {'id': 'gamma', 'host': None, 'address': '127.0.0.4', 'slots': 1, 'load': 0,
             'state': 'ONLINE', 'last_heartbeat': None, 'nodes': 0}]


def typologies(args):
    now = time.time()
    return [{'name': 'weather', 'state': 'RUNNING',
             'schedule': {'start': None, 'interval': 10, 'cron': None},
             'last_run': dict(RUN, ended=now - 65.5, failed=0), 'next_run': NEXT_RUN,
             'nodes': 4, 'failed_nodes': 1},
            {'name': 'cities', 'state': 'STOPPED',
             'schedule': {'start': None, 'interval': None, 'cron': '*/5 * * * *'},
             'last_run': None, 'next_run': None, 'nodes': 0, 'failed_nodes': 0},
            {'name': 'once', 'state': 'STARTING',
             'schedule': {'start': STARTED, 'interval': None, 'cron': None},
             'last_run': dict(RUN, state='RUNNING', ended=None, started=now - 2.5,
                              items=1, failed=None),
             'next_run': None, 'nodes': 1, 'failed_nodes': 0},
            {'name': 'hourly', 'state': 'SUBMITTED',
             'schedule': {'start': STARTED, 'interval': 3600, 'cron': None},
             'last_run': None, 'next_run': NEXT_RUN, 'nodes': 0, 'failed_nodes': 0}]


class Refuse:
    def __init__(self, error):
        self.error = error


def answering(results):
    """A fakemaster answer: the result of each op from results (a value, or a function
    of the request's args); Refuse(error) refuses."""
    def answer(header):
        result = results[header['op']]
        result = result(header['args']) if callable(result) else result
        if isinstance(result, Refuse):
            return {'rid': header['rid'], 'ok': False, 'error': result.error}
        return {'rid': header['rid'], 'ok': True, 'result': result}
    return answer


def rz_run(procs, server, *args, env=None, timeout=30):
    proc = procs.start(['rz', '-P', str(server.port), *args], stdout=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, env=env or UTC)
    code, out, err = finish(proc, timeout=timeout)
    return code, out.decode(), err


def requests(server):
    return [(header['op'], header['args']) for header in server.seen]


# tables

def test_workers_is_a_table_with_heartbeats_as_ages(master, procs):
    server = master(answering({'workers': workers}))
    assert rz_run(procs, server, 'workers') == (exitcodes.OK, (
        "ID     HOST       ADDRESS    STATE    SLOTS  LOAD  NODES  LAST HEARTBEAT\n"
        "alpha  alpha.lan  127.0.0.2  ONLINE       8     3      2  3s ago\n"
        "beta   beta.lan   127.0.0.3  OFFLINE     16   0.5      1  2h ago\n"
        "gamma  -          127.0.0.4  ONLINE       1     0      0  -\n"), '')
    assert requests(server) == [('workers', {})]


def test_ls_shows_schedules_and_the_last_and_next_runs(master, procs):
    server = master(answering({'ls': typologies}))
    assert rz_run(procs, server, 'ls') == (exitcodes.OK, (
        "NAME     STATE      SCHEDULE                           LAST RUN"
        "                   NEXT RUN             NODES\n"
        "weather  RUNNING    every 10s                          COMPLETE 10 items, 1m ago"
        "  2026-12-04 21:00:00  4 (1 failed)\n"
        "cities   STOPPED    cron */5 * * * *                   -"
        "                          -                    0\n"
        "once     STARTING   once at 2026-12-04 20:55:00        RUNNING 1 item, 2s ago"
        "     -                    1\n"
        "hourly   SUBMITTED  every 1h from 2026-12-04 20:55:00  -"
        "                          2026-12-04 21:00:00  0\n"), '')
    assert requests(server) == [('ls', {})]


def test_ps_shows_every_node_and_the_last_line_of_a_last_error(master, procs):
    server = master(answering({'ps': PS}))
    assert rz_run(procs, server, 'ps') == (exitcodes.OK, (
        "TYPOLOGY  NODE                  WORKER   PID  STATE    RESTARTS  IN  OUT  FAILED"
        "    RATE  LAST ERROR\n"
        "weather   weather/get_cities#0  alpha   4242  RUNNING         0   0   10       0"
        "   0.5/s  -\n"
        "weather   fetch#1               beta       -  FAILED          5  10    8       2"
        "  12.3/s  KeyError: 'city'\n"), '')
    assert requests(server) == [('ps', {'typology': None})]


def test_ps_of_one_typology_has_no_error_column_when_no_node_failed(master, procs):
    server = master(answering({'ps': PS[:1]}))
    code, out, err = rz_run(procs, server, 'ps', 'weather')
    assert (code, err) == (exitcodes.OK, '')
    assert out.splitlines()[0].split() == ['TYPOLOGY', 'NODE', 'WORKER', 'PID', 'STATE',
                                           'RESTARTS', 'IN', 'OUT', 'FAILED', 'RATE']
    assert requests(server) == [('ps', {'typology': 'weather'})]


def test_runs_are_listed_newest_first_up_to_the_limit(master, procs):
    server = master(answering({'runs': [RUN, dict(RUN, run_id='r0', ended=None, items=None,
                                                  failed=None, state='RUNNING')]}))
    assert rz_run(procs, server, 'runs', 'weather') == (exitcodes.OK, (
        "RUN                                  STATE     STARTED              ENDED"
        "                TOOK  ITEMS  FAILED\n"
        "weather.get_cities/20261204T205500Z  COMPLETE  2026-12-04 20:55:00  2026-12-04 20:55:02"
        "  2.2s     10       2\n"
        "r0                                   RUNNING   2026-12-04 20:55:00  -"
        "                       -      -       -\n"), '')
    assert rz_run(procs, server, 'runs', 'weather', '--limit', '5')[0] == exitcodes.OK
    assert requests(server) == [('runs', {'typology': 'weather', 'limit': 50}),
                                ('runs', {'typology': 'weather', 'limit': 5})]


def test_ps_shows_dropped_and_redelivered_items_when_a_node_has_some(master, procs):
    server = master(answering({'ps': [dict(PS[0], dropped=None, redelivered=0),
                                      dict(PS[1], dropped=3, redelivered=12)]}))
    code, out, err = rz_run(procs, server, 'ps')
    assert (code, err) == (exitcodes.OK, '')
    lines = out.splitlines()
    assert lines[0].split()[-4:] == ['DROPPED', 'REDELIVERED', 'LAST', 'ERROR']
    assert lines[1].split()[-3:] == ['-', '0', '-']
    assert lines[2].split()[-4:] == ['3', '12', 'KeyError:', "'city'"]


FAILURES = [{'id': 'weather.get_cities/20261204T205500Z:7', 'run': 'weather.get_cities/'
             '20261204T205500Z', 'stage': 'fetch', 'index': 1, 'node_id': 'weather::fetch::1',
             'worker': 'beta', 'pid': 77, 'error': 'KeyError', 'message': "'city'",
             'traceback': 'Traceback ...', 'attempts': 1, 'at': STARTED + 1.5},
            {'id': 'weather.get_cities/20261204T205500Z:3', 'run': None, 'stage': 'fetch',
             'index': 0, 'node_id': None, 'worker': 'alpha', 'pid': 76,
             'error': 'Quarantined', 'message': 'its worker died running it 3 times (the '
             'last was killed by SIGKILL); ' + 'x' * 80, 'traceback': '', 'attempts': 3,
             'at': STARTED}]


def test_failures_lists_the_failed_items_newest_first_up_to_the_limit(master, procs):
    server = master(answering({'failures': FAILURES}))
    assert rz_run(procs, server, 'failures', 'weather') == (exitcodes.OK, (
        "AT                   ITEM                                   NODE"
        "               ERROR        MESSAGE\n"
        "2026-12-04 20:55:01  weather.get_cities/20261204T205500Z:7  weather::fetch::1"
        "  KeyError     'city'\n"
        "2026-12-04 20:55:00  weather.get_cities/20261204T205500Z:3  fetch#0"
        "            Quarantined  its worker died running it 3 times (the last was killed "
        "by SIGKILL); xxxxxxxx...\n"), '')
    assert rz_run(procs, server, 'failures', 'weather', '--limit', '2', '--json')[1] == (
        json.dumps(FAILURES, indent=2) + '\n')
    assert requests(server) == [('failures', {'typology': 'weather', 'limit': 50}),
                                ('failures', {'typology': 'weather', 'limit': 2})]


def test_an_empty_answer_is_the_header_alone(master, procs):
    server = master(answering({'ls': []}))
    assert rz_run(procs, server, 'ls') == (
        exitcodes.OK, "NAME  STATE  SCHEDULE  LAST RUN  NEXT RUN  NODES\n", '')


@pytest.mark.parametrize('argv, op', [(['workers'], 'workers'), (['ls'], 'ls'),
                                      (['ps'], 'ps'), (['runs', 'weather'], 'runs')])
def test_json_prints_the_masters_answer_as_one_document(master, procs, argv, op):
    results = {'workers': workers([]), 'ls': typologies([]), 'ps': PS, 'runs': [RUN]}
    server = master(answering(results))
    code, out, err = rz_run(procs, server, '--json', *argv)
    assert (code, err) == (exitcodes.OK, '')
    assert json.loads(out) == results[op]


# actions

@pytest.mark.parametrize('op, state', [('start', 'STARTING'), ('stop', 'STOPPING'),
                                       ('restart', 'STARTING'), ('remove', 'REMOVED')])
def test_an_action_sends_its_op_and_prints_the_state(master, procs, op, state):
    server = master(answering({op: {'typology': 'weather', 'state': state}}))
    assert rz_run(procs, server, op, 'weather') == (exitcodes.OK, f"weather: {state}\n", '')
    assert requests(server) == [(op, {'typology': 'weather'})]


def test_an_action_with_json_prints_the_answer(master, procs):
    server = master(answering({'stop': {'typology': 'weather', 'state': 'STOPPED'}}))
    code, out, err = rz_run(procs, server, 'stop', 'weather', '--json')
    assert (code, json.loads(out), err) == (
        exitcodes.OK, {'typology': 'weather', 'state': 'STOPPED'}, '')


def test_scale_names_the_stage_by_name_or_number(master, procs):
    server = master(answering({'scale': lambda args: {
        'typology': args['typology'], 'stage': 'fetch', 'nodes': args['n'], 'was': 2}}))
    assert rz_run(procs, server, 'scale', 'weather', 'fetch', '4') == (
        exitcodes.OK, "weather: fetch: 4 nodes (was 2)\n", '')
    assert rz_run(procs, server, 'scale', 'weather', '1', '1') == (
        exitcodes.OK, "weather: fetch: 1 nodes (was 2)\n", '')
    assert requests(server) == [
        ('scale', {'typology': 'weather', 'stage': 'fetch', 'n': 4}),
        ('scale', {'typology': 'weather', 'stage': 1, 'n': 1})]


@pytest.mark.parametrize('n', ['x', '1.5', '-1', '0', '+3', '1_0', '\u0663'])
def test_an_n_for_scale_that_is_not_a_whole_number_is_a_usage_error(master, procs, n):
    server = master(answering({}))
    assert rz_run(procs, server, 'scale', 'weather', 'fetch', n) == (
        exitcodes.USAGE, '', f"rz: N {n!r}: expected a whole number of at least 1\n")
    assert server.seen == []


@pytest.mark.parametrize('argv, says', [
    ([], 'rz: missing or misplaced arguments (see rz --help)'),
    (['frobnicate'], "rz: unexpected or repeated 'frobnicate' (see rz --help)"),
    (['runs'], "(see rz --help)"),
    (['ls', '--bogus'], "'--bogus'"),
    (['runs', 'weather', '--limit', '0'], "rz: --limit '0': expected a whole number of at "
                                          "least 1"),
    (['logs', 'weather', '-n', 'all'], "rz: --lines 'all': expected a whole number of at "
                                       "least 0"),
    (['-P', '70000', 'ls'], "rz: --port '70000': expected a port number from 1 to 65535"),
    (['--log-level', 'loud', 'ls'], "rz: --log-level 'loud': expected debug, info, warning "
                                    "or error"),
])
def test_usage_errors_are_one_line_and_status_2(procs, argv, says):
    proc = procs.start(['rz', *argv], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    code, out, err = finish(proc, timeout=30)
    assert (code, out) == (exitcodes.USAGE, b'')
    assert len(err.splitlines()) == 1 and says in err, err


def test_help_and_version_exit_0(procs):
    code, out, _ = finish(procs.start(['rz', '--help'], stdout=subprocess.PIPE))
    assert (code, out.decode()) == (exitcodes.OK, rz.__doc__.strip() + '\n')
    code, out, _ = finish(procs.start(['rz', '--version'], stdout=subprocess.PIPE))
    assert code == exitcodes.OK and out.decode().startswith('rz ')


def test_the_default_port_is_the_control_port():
    args = parse(rz.__doc__, ['ls'], 'rz')
    assert (args['--host'], args['--port']) == ('127.0.0.1', str(defaults.CONTROL_PORT))


# failures

def test_a_refusal_is_the_masters_line_and_status_1(master, procs):
    server = master(answering({'stop': Refuse("no typology 'nope'")}))
    assert rz_run(procs, server, 'stop', 'nope') == (
        exitcodes.FAILED, '', "rz: no typology 'nope'\n")


def test_a_master_that_does_not_answer_is_named_after_3_s(master, procs):
    server = master(lambda header: None)
    started = time.monotonic()
    assert rz_run(procs, server, 'ls') == (
        exitcodes.FAILED, '',
        f"rz: no answer from rz-master at 127.0.0.1:{server.port} within 3 s\n")
    assert 3.0 <= time.monotonic() - started < 10
    assert requests(server) == [('ls', {})]


def test_a_reader_that_goes_away_ends_rz_quietly(master, procs):
    server = master(answering({'ps': PS * 2000}))       # more than a pipe holds
    proc = procs.start(['rz', '-P', str(server.port), 'ps'], stdout=subprocess.PIPE)
    proc.stdout.close()
    code, _, err = finish(proc, timeout=30)
    assert (code, err) == (exitcodes.DOWNSTREAM_CLOSED, '')


# logs

def test_logs_prints_the_last_lines(master, procs):
    server = master(answering({'logs': {'lines': ['first', 'second'], 'cursor': 7}}))
    assert rz_run(procs, server, 'logs', 'weather') == (exitcodes.OK, 'first\nsecond\n', '')
    assert rz_run(procs, server, 'logs', 'weather', '-n', '2')[0] == exitcodes.OK
    assert requests(server) == [('logs', {'typology': 'weather', 'cursor': None, 'limit': 100}),
                                ('logs', {'typology': 'weather', 'cursor': None, 'limit': 2})]


def follow_answers(args):
    """Two lines, then one more, then nothing new."""
    lines, cursor = {None: (['one', 'two'], 2), 2: (['three'], 3)}.get(
        args['cursor'], ([], args['cursor']))
    return {'lines': lines, 'cursor': cursor}


def asked_with_cursor(server, cursor):
    return any(h['op'] == 'logs' and h['args']['cursor'] == cursor for h in server.seen)


@pytest.mark.parametrize('as_json', [False, True])
def test_logs_follow_asks_with_the_cursor_until_ctrl_c_then_exits_0(master, procs, as_json):
    server = master(answering({'logs': follow_answers}))
    proc = procs.start(['rz', '-P', str(server.port), 'logs', 'weather', '-f',
                        *(['--json'] if as_json else [])], stdout=subprocess.PIPE)
    wait_for(lambda: asked_with_cursor(server, 3), what='a question with cursor 3')
    started = time.monotonic()
    wait_for(lambda: len(server.seen) >= 4, what='another question')
    assert time.monotonic() - started > 0.2                 # it asks every 0.5 s
    os.kill(proc.pid, signal.SIGINT)
    code, out, err = finish(proc, timeout=10)
    assert (code, err) == (exitcodes.OK, '')
    if as_json:
        assert [json.loads(line) for line in out.decode().splitlines()] == [
            {'lines': ['one', 'two'], 'cursor': 2}, {'lines': ['three'], 'cursor': 3}]
    else:
        assert out.decode() == 'one\ntwo\nthree\n'
    cursors = [args['cursor'] for _, args in requests(server)]
    assert cursors[:3] == [None, 2, 3] and set(cursors[3:]) == {3}


# the console

CONSOLE_RESULTS = {'ls': typologies, 'stop': {'typology': 'weather', 'state': 'STOPPED'},
                   'runs': Refuse("no typology 'nope'"), 'ps': PS, 'logs': follow_answers,
                   'stages': [{'stage': 'get_cities', 'index': 0, 'kind': 'hydrant',
                               'target': 'cities:get_cities', 'nodes': 1},
                              {'stage': 'get_city_weather', 'index': 1, 'kind': 'notch',
                               'target': 'weather:get_city_weather', 'nodes': 2}],
                   'scale': {'typology': 'weather', 'stage': 'get_city_weather',
                             'nodes': 3, 'was': 2}}


def test_the_console_reads_commands_from_a_pipe_and_goes_on_after_errors(master, procs):
    server = master(answering(CONSOLE_RESULTS))
    proc = procs.start(['rz', '-P', str(server.port), 'console'], stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE)
    commands = ("ls\n\nruns nope\nstop   weather\nbogus 1\nscale weather fetch x\n"
                "ps --json\nstop 'weather\nexit\nls\n")
    out, _ = proc.communicate(commands.encode(), timeout=30)
    assert proc.returncode == exitcodes.OK
    ls_table = rz.render('ls', typologies({}), time.time())
    document = json.dumps(PS, indent=2)
    assert out.decode() == f"{ls_table}\nweather: STOPPED\n{document}\n"
    assert proc.errfile.read_text().splitlines() == [
        "rz: no typology 'nope'",
        "rz: unknown command 'bogus' ('help' lists the commands)",
        "rz: scale: N 'x': expected a whole number of at least 1",
        "rz: stop: No closing quotation"]
    assert [op for op, _ in requests(server)] == ['ls', 'runs', 'stop', 'ps']


def test_the_console_ends_at_end_of_input_and_has_help(master, procs):
    server = master(answering(CONSOLE_RESULTS))
    proc = procs.start(['rz', '-P', str(server.port), 'console'], stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE)
    out, _ = proc.communicate(b'help\nhelp scale\nconsole\n', timeout=30)
    assert proc.returncode == exitcodes.OK
    text = out.decode()
    for name in ('workers', 'ls', 'ps', 'runs', 'failures', 'start', 'stop', 'restart',
                 'remove', 'scale', 'logs', 'exit', 'quit'):
        assert f' {name} ' in f' {text} '.replace('\n', ' '), name
    assert 'scale TYPOLOGY STAGE N' in text and 'EOF' not in text
    assert proc.errfile.read_text() == (
        "rz: unknown command 'console' ('help' lists the commands)\n")
    assert server.seen == []


def test_ctrl_c_ends_logs_follow_in_the_console_and_the_console_goes_on(master, procs):
    server = master(answering(CONSOLE_RESULTS))
    proc = procs.start(['rz', '-P', str(server.port), 'console'], stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE)
    proc.stdin.write(b'logs weather -f\n')
    proc.stdin.flush()
    wait_for(lambda: asked_with_cursor(server, 3), what='a question with cursor 3')
    os.kill(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(b'stop weather\n', timeout=30)
    assert proc.returncode == exitcodes.OK
    assert out.decode() == 'one\ntwo\nthree\nweather: STOPPED\n'
    assert requests(server)[-1] == ('stop', {'typology': 'weather'})


class Terminal:
    """The far end of a pty that a console runs on."""

    def __init__(self, fd):
        self.fd = fd
        self.screen = b''

    def read_until(self, text, count=1, timeout=20):
        deadline = time.monotonic() + timeout
        while self.screen.count(text) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} on the terminal: {self.screen!r}"
            if select.select([self.fd], [], [], left)[0]:
                try:
                    self.screen += os.read(self.fd, 4096)
                except OSError:             # the console closed the terminal
                    break

    def type(self, text):
        os.write(self.fd, text)


def test_the_console_on_a_terminal_completes_names_and_keeps_its_history(
        master, procs, tmp_path):
    server = master(answering(CONSOLE_RESULTS))
    history = tmp_path / 'history'
    history.write_text('workers\n')
    terminal_fd, console_fd = os.openpty()
    try:
        proc = procs.start(['rz', '-P', str(server.port), 'console'], stdin=console_fd,
                           stdout=console_fd,
                           env={'REZINA_HISTORY': str(history), 'TERM': 'dumb'})
    finally:
        os.close(console_fd)
    terminal = Terminal(terminal_fd)
    try:
        terminal.read_until(b'rz> ')
        terminal.type(b'sto\twe\t\n')
        terminal.read_until(b'rz> ', count=2)
        terminal.type(b'scale we\tget_city\t3\n')
        terminal.read_until(b'rz> ', count=3)
        terminal.type(b'remove wea')
        terminal.read_until(b'remove wea')
        os.kill(proc.pid, signal.SIGINT)            # Ctrl-C drops the line
        terminal.read_until(b'rz> ', count=4)
        terminal.type(b'exit\n')
        assert proc.wait(timeout=20) == exitcodes.OK
    finally:
        os.close(terminal_fd)
    assert ('ls', {}) in requests(server)         # asked again if 2 s went by
    assert [request for request in requests(server) if request[0] != 'ls'] == [
        ('stop', {'typology': 'weather'}), ('stages', {'typology': 'weather'}),
        ('scale', {'typology': 'weather', 'stage': 'get_city_weather', 'n': 3})]
    assert b'weather: STOPPED' in terminal.screen
    assert [line.rstrip() for line in history.read_text().splitlines()] == [
        'workers', 'stop weather', 'scale weather get_city_weather 3', 'exit']


def test_completion_asks_ls_and_stages_once_in_a_while(master):
    server = master(answering(CONSOLE_RESULTS))
    client = Client(port=server.port)
    console = Console(client, stdin=io.StringIO(), stdout=io.StringIO())
    try:
        assert console.completenames('st') == ['start', 'stop']
        assert console.completedefault('w', 'logs -f w', 8, 9) == ['weather']
        assert console.completedefault('', 'stop ', 5, 5) == ['cities', 'hourly', 'once',
                                                              'weather']
        assert console.completedefault('get_', 'scale weather get_', 14, 18) == [
            'get_cities', 'get_city_weather']
        assert console.completedefault('', 'scale weather fetch ', 20, 20) == []
        assert console.completedefault('', 'workers ', 8, 8) == []
        assert requests(server) == [('ls', {}), ('stages', {'typology': 'weather'})]
    finally:
        console.names.close()
        client.close()


def test_completion_offers_nothing_when_the_master_is_silent(master):
    server = master(lambda header: None)
    client = Client(port=server.port)
    console = Console(client, stdin=io.StringIO(), stdout=io.StringIO())
    try:
        started = time.monotonic()
        assert console.completedefault('w', 'stop w', 5, 6) == []
        assert time.monotonic() - started < 2.5
    finally:
        console.names.close()
        client.close()


@pytest.mark.parametrize('error, shown', [
    ("was killed by SIGKILL\n20:55:58 rz-notch[1] INFO t.f: bound tcp://127.0.0.2:1",
     "was killed by SIGKILL"),
    ("exited with status 2\nrz-hydrant: cannot import 'm:f': No module named 'm'",
     "exited with status 2: rz-hydrant: cannot import 'm:f': No module named 'm'"),
    ("Traceback (most recent call last):\n  ...\nKeyError: 'city'", "KeyError: 'city'"),
])
def test_last_error_says_how_a_node_ended_and_why_when_it_knows(error, shown):
    assert rz.last_error({'last_error': error}, 0) == shown
