"""rezina-cli: the original command lines, translated into rz-master's, rz-worker's and rz's
and carried out by them."""

import subprocess
import sys
import types

import pytest

from conftest import finish

from rezina import exitcodes
from rezina.control import rezina_cli
from rezina.control.rezina_cli import translate
from rezina.errors import UsageError

from test_rz_cli import answering, requests, typologies


@pytest.mark.parametrize('argv, command, new_argv', [
    (['runmaster'], 'rz-master', []),
    (['runmaster', '-H', '0.0.0.0', '-P', '5555', '-D', '-L', '/l', '-W', '/w', '-HP', '8080',
      '-R'],
     'rz-master', ['--host', '0.0.0.0', '--port', '5555', '--daemon', '--logdir', '/l',
                   '--workspace', '/w', '--http-port', '8080', '--reset']),
    (['runmaster', '--host', 'h', '--port=1', '--daemon', '--logdir', '/l', '--workspace=/w',
      '--http-port', '9', '--reset', '--state-dir', '/s'],
     'rz-master', ['--host', 'h', '--port', '1', '--daemon', '--logdir', '/l', '--workspace',
                   '/w', '--http-port', '9', '--reset', '--state-dir', '/s']),
    (['runmaster', '-HP=8080'], 'rz-master', ['--http-port', '8080']),
    (['runmaster', '--http-port=8080'], 'rz-master', ['--http-port', '8080']),
    (['runmaster', '--http_port', '8080', '--log_dir=/l', '--refresh'],
     'rz-master', ['--logdir', '/l', '--http-port', '8080', '--reset']),
    (['runmaster', '-DR', '-Hhost'], 'rz-master', ['--host', 'host', '--daemon', '--reset']),
    (['runmaster', '-HP', '8080', '-H', 'h'], 'rz-master', ['--host', 'h', '--http-port',
                                                            '8080']),
    # a value is left as it is, even when it is spelled as an option of the original
    (['runmaster', '-L', '-HP', '-W', '-WIP'], 'rz-master', ['--logdir', '-HP',
                                                             '--workspace', '-WIP']),
    (['runmaster', '-DL', '-HP'], 'rz-master', ['--daemon', '--logdir', '-HP']),
    (['runmaster', '--logdir', '-HP'], 'rz-master', ['--logdir', '-HP']),
    (['runmaster', '--logd', '-HP'], 'rz-master', ['--logdir', '-HP']),
    (['runworker'], 'rz-worker', []),
    (['runworker', '-H', 'm', '-P', '11111', '-D', '-WIP', '192.168.1.101'],
     'rz-worker', ['--host', 'm', '--port', '11111', '--daemon', '--worker-ip',
                   '192.168.1.101']),
    (['runworker', '-WIP=10.0.0.2', '--slots', '4'],
     'rz-worker', ['--worker-ip', '10.0.0.2', '--slots', '4']),
    (['runworker', '--worker_ip', '10.0.0.2'],
     'rz-worker', ['--worker-ip', '10.0.0.2']),
    (['runworker', '--worker-ip=10.0.0.3', '--daemon'],
     'rz-worker', ['--daemon', '--worker-ip', '10.0.0.3']),
    (['runworker', '--log-level', 'debug'], 'rz-worker', ['--log-level', 'debug']),
    (['runmaster', '--log-level=warning'], 'rz-master', ['--log-level', 'warning']),
    (['runconsole', '--log-level', 'error'], 'rz', ['--log-level', 'error', 'console']),
    (['runconsole'], 'rz', ['console']),
    (['runconsole', '-H', '192.168.1.100', '-P', '11111'],
     'rz', ['--host', '192.168.1.100', '--port', '11111', 'console']),
])
def test_the_original_command_lines_translate(argv, command, new_argv):
    assert translate(argv) == (command, new_argv)


@pytest.mark.parametrize('argv, says', [
    ([], 'missing or misplaced arguments'),
    (['runnothing'], "'runnothing'"),
    (['runmaster', '--slots', '3'], '--slots: not an option of runmaster'),
    (['runmaster', '-WIP', '10.0.0.2'], '--worker-ip: not an option of runmaster'),
    (['runworker', '-HP', '8080'], '--http-port: not an option of runworker'),
    (['runworker', '-R'], '--reset: not an option of runworker'),
    (['runworker', '-L', '/l'], '--logdir: not an option of runworker'),
    (['runconsole', '-D'], '--daemon: not an option of runconsole'),
    (['runconsole', '--state-dir', '/s'], '--state-dir: not an option of runconsole'),
    (['runmaster', '-HP'], '--http-port requires argument'),
    (['runmaster', '-W'], '-W requires argument'),
    (['runmaster', 'extra'], "'extra'"),
    (['runmaster', '--bogus'], "'--bogus'"),
])
def test_what_is_not_an_original_command_line_is_a_usage_error(argv, says):
    with pytest.raises(UsageError, match=says.replace('-', r'\-')):
        translate(argv)


@pytest.mark.parametrize('command, module', [('runmaster', 'rezina.control.master_cmd'),
                                             ('runworker', 'rezina.control.worker_cmd')])
def test_main_runs_the_new_command_in_process_with_its_status(monkeypatch, command, module):
    seen = []
    stand_in = types.ModuleType(module)
    stand_in.main = lambda argv=None: seen.append(argv) or 7
    monkeypatch.setitem(sys.modules, module, stand_in)
    assert rezina_cli.main([command, '-P', '5', '-D']) == 7
    assert seen == [['--port', '5', '--daemon']]


def test_a_command_that_is_not_installed_is_one_line_and_status_1(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'rezina.control.master_cmd', None)     # import fails
    assert rezina_cli.main(['runmaster']) == exitcodes.FAILED
    err = capsys.readouterr().err
    assert err.startswith('rezina-cli: rz-master is not available: ') and err.count('\n') == 1


def test_a_usage_error_is_one_line_and_status_2(procs):
    proc = procs.start(['rezina-cli', 'runmaster', '--slots', '3'], stdout=subprocess.PIPE)
    assert finish(proc, timeout=30) == (
        exitcodes.USAGE, b'',
        "rezina-cli: --slots: not an option of runmaster (see rezina-cli --help)\n")


def test_help_and_version_exit_0(procs):
    code, out, _ = finish(procs.start(['rezina-cli', '--help'], stdout=subprocess.PIPE))
    assert (code, out.decode()) == (exitcodes.OK, rezina_cli.__doc__.strip() + '\n')
    code, out, _ = finish(procs.start(['rezina-cli', '--version'], stdout=subprocess.PIPE))
    assert code == exitcodes.OK and out.decode().startswith('rezina-cli ')


def test_runconsole_is_the_console_of_rz(master, procs):
    server = master(answering({'ls': typologies, 'stop': {'typology': 'weather',
                                                          'state': 'STOPPED'}}))
    proc = procs.start(['rezina-cli', 'runconsole', '-H', '127.0.0.1', '-P',
                        str(server.port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out, _ = proc.communicate(b'ls\nstop weather\n', timeout=30)
    assert proc.returncode == exitcodes.OK
    lines = out.decode().splitlines()
    assert lines[0].split() == ['NAME', 'STATE', 'SCHEDULE', 'LAST', 'RUN', 'NEXT', 'RUN',
                                'NODES']
    assert lines[-1] == 'weather: STOPPED'
    assert requests(server) == [('ls', {}), ('stop', {'typology': 'weather'})]
