"""rezina-cli: the commands of the original rezina, with its options, carried out by
rezina's own: runmaster runs rz-master, runworker rz-worker, and runconsole rz console.

Usage:
  rezina-cli runmaster [options]
  rezina-cli runworker [options]
  rezina-cli runconsole [options]
  rezina-cli (-h | --help | --version)

Each command takes the options that name it below. The original spellings -HP, -WIP,
--http_port, --worker_ip, --log_dir and --refresh are taken too. What an option not
given is, rz-master, rz-worker and rz decide (see their help).

Options:
  -H, --host=HOST        runmaster: the address rz-master binds; runworker and
                         runconsole: the master's host.
  -P, --port=PORT        runmaster, runworker, runconsole: the master's control port.
  -D, --daemon           runmaster, runworker: run in the background.
  -L, --logdir=DIR       runmaster: the directory of the typologies' log files.
  -W, --workspace=DIR    runmaster: the workspace, whose files the workers import.
  --http-port=PORT       runmaster: the port of the HTTP JSON API (also -HP PORT).
  -R, --reset            runmaster: forget the saved state (also --refresh).
  --state-dir=DIR        runmaster: where rz-master keeps its state.
  --worker-ip=IP         runworker: the address this worker's nodes bind, which the
                         other workers reach (also -WIP IP).
  --slots=N              runworker: how much work this worker takes on.
  --log-level=LEVEL      runmaster, runworker, runconsole: debug, info, warning or error.
  -h, --help             Show this help.
  --version              Show the version.
"""

import importlib
import sys

from rezina import exitcodes
from rezina.cli import parse
from rezina.errors import RezinaError, UsageError

PROG = 'rezina-cli'

# command: (the command it runs, its module, the options it passes on)
COMMANDS = {
    'runmaster': ('rz-master', 'rezina.control.master_cmd',
                  ('--host', '--port', '--daemon', '--logdir', '--workspace', '--http-port',
                   '--reset', '--state-dir', '--log-level')),
    'runworker': ('rz-worker', 'rezina.control.worker_cmd',
                  ('--host', '--port', '--daemon', '--worker-ip', '--slots', '--log-level')),
    'runconsole': ('rz', 'rezina.control.rz', ('--host', '--port', '--log-level')),
}
OPTIONS = ('--host', '--port', '--daemon', '--logdir', '--workspace', '--http-port',
           '--reset', '--state-dir', '--worker-ip', '--slots', '--log-level')
WITH_VALUE = ('--host', '--port', '--logdir', '--workspace', '--http-port', '--state-dir',
              '--worker-ip', '--slots', '--log-level')
SHORT_WITH_VALUE = 'HPLW'
SPELLINGS = {'-HP': '--http-port', '-WIP': '--worker-ip', '--http_port': '--http-port',
             '--worker_ip': '--worker-ip', '--log_dir': '--logdir', '--refresh': '--reset'}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        command, new_argv = translate(argv)
        run = command_main(command)
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    except RezinaError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exitcodes.FAILED
    return run(new_argv)


def translate(argv):
    """(command, its argv) that carry out a rezina-cli command line; UsageError if it is
    not one."""
    args = parse(__doc__, respell(argv), PROG)
    name = next(name for name in COMMANDS if args[name])
    command, _, allowed = COMMANDS[name]
    new_argv = []
    for option in OPTIONS:
        value = args[option]
        if value is None or value is False:
            continue
        if option not in allowed:
            raise UsageError(f"{option}: not an option of {name} (see {PROG} --help)")
        new_argv += [option] if value is True else [option, value]
    if name == 'runconsole':
        new_argv.append('console')
    return command, new_argv


def respell(argv):
    """argv with the original's spellings as long options, leaving options' values be:
    docopt would read -HP as -H P."""
    words = []
    value_next = False
    for index, word in enumerate(argv):
        if value_next:
            words.append(word)
            value_next = False
            continue
        if word == '--':
            words.extend(argv[index:])
            break
        name, equals, value = word.partition('=')
        if name in SPELLINGS:
            name = SPELLINGS[name]
            word = name + equals + value
        if word.startswith('--'):
            value_next = not equals and _long_with_value(name)
        elif word.startswith('-'):
            value_next = _short_wants_next(word)
        words.append(word)
    return words


def _long_with_value(name):
    """Whether a long option, or the unique beginning of one, takes a value."""
    if name in WITH_VALUE:
        return True
    matches = [option for option in OPTIONS if option.startswith(name)]
    return len(matches) == 1 and matches[0] in WITH_VALUE


def _short_wants_next(word):
    """Whether a cluster of short options ends with one whose value is the next word."""
    for position, letter in enumerate(word[1:], 1):
        if letter in SHORT_WITH_VALUE:
            return position == len(word) - 1
    return False


def command_main(command):
    """main(argv) of the command rezina-cli runs, imported only now."""
    module = next(module for name, module, _ in COMMANDS.values() if name == command)
    try:
        return importlib.import_module(module).main
    except ImportError as exc:
        raise RezinaError(f"{command} is not available: {exc}") from None
