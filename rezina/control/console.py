"""`rz console`: a shell of rz's commands for one rz-master, with history and completion.

Each line is an rz command without `rz` and its host and port (`ps weather`, `logs
weather -f`, `ls --json`), read by rz's own usage and carried out by rz.execute, so the
two print the same. An error prints its line on stderr and the shell goes on.

On a terminal, lines are read with readline: the history is kept in
~/.rezina/console_history (or the file REZINA_HISTORY names), and Tab completes command
names, typology names (from `ls`) and, after `scale TYPOLOGY`, stage names (from
`stages`). Otherwise lines are read from stdin as they come, without a prompt.
"""

import cmd
import logging
import os
import re
import shlex
import sys
import time

import zmq

from rezina import exitcodes
from rezina.cli import parse
from rezina.control import rz
from rezina.control.protocol import Client
from rezina.errors import RezinaError, UsageError

log = logging.getLogger(__name__)

HISTORY_ENV = 'REZINA_HISTORY'
HISTORY_LENGTH = 1000           # lines of history kept
COMPLETION_TIMEOUT = 1.0        # seconds Tab waits for the master's names
COMPLETION_TTL = 2.0            # seconds the names are asked again after
TYPOLOGY_FIRST = ('ps', 'runs', 'failures', 'start', 'stop', 'restart', 'remove', 'scale',
                  'logs')

# rz's usage, less what the console fixes: which master, and the console itself
_NOT_IN_CONSOLE = re.compile(r'\s*(rz \[options\] console|rz \(-h|-H, |-P, |--log-level|'
                             r'--version)')
USAGE = '\n'.join(line for line in rz.__doc__.splitlines()
                  if not _NOT_IN_CONSOLE.match(line))


def history_path():
    return (os.environ.get(HISTORY_ENV)
            or os.path.join(os.path.expanduser('~'), '.rezina', 'console_history'))


class Console(cmd.Cmd):
    """The shell: one method per command, each handing its line to rz."""

    def __init__(self, client, stdin=None, stdout=None):
        super().__init__(stdin=stdin, stdout=stdout)
        self.client = client
        self.interactive = self.stdin.isatty()
        self.use_rawinput = self.interactive
        self.prompt = 'rz> ' if self.interactive else ''
        self.names = Client(client.host, client.port, timeout=COMPLETION_TIMEOUT,
                            context=client.context)
        self.cached = {}

    def run(self):
        """Read and carry out commands until exit, quit or end of input; exit status 0."""
        history = self._start_readline() if self.interactive else None
        intro = (f"rz console: rz-master at {self.client.host}:{self.client.port}. "
                 f"'help' lists the commands; 'exit' or Ctrl-D leaves.")
        try:
            while True:             # Ctrl-C drops the line or the command, not the shell
                try:
                    self.cmdloop(intro if self.interactive else None)
                    break
                except KeyboardInterrupt:
                    print(file=self.stdout)
                    intro = ''
        finally:
            if history:
                self._save_history(history)
            self.names.close()
        return exitcodes.OK

    # the commands

    def do_workers(self, arg):
        """workers [--json]
        The workers: their state, slots, load and last heartbeat."""
        return self._run('workers', arg)

    def do_ls(self, arg):
        """ls [--json]
        The typologies: their state, schedule, last and next run, and nodes."""
        return self._run('ls', arg)

    def do_ps(self, arg):
        """ps [TYPOLOGY] [--json]
        The nodes of every typology, or of one: where they run, their state and counters."""
        return self._run('ps', arg)

    def do_runs(self, arg):
        """runs TYPOLOGY [--limit=N] [--json]
        A typology's runs, newest first (the newest 50 unless --limit says)."""
        return self._run('runs', arg)

    def do_failures(self, arg):
        """failures TYPOLOGY [--limit=N] [--json]
        A typology's failed items, newest first: id, node, error and message."""
        return self._run('failures', arg)

    def do_start(self, arg):
        """start TYPOLOGY
        Start a stopped typology as it was submitted."""
        return self._run('start', arg)

    def do_stop(self, arg):
        """stop TYPOLOGY
        Stop a typology: its nodes drain and exit."""
        return self._run('stop', arg)

    def do_restart(self, arg):
        """restart TYPOLOGY
        Stop a typology, then start it again with the workspace as it is now."""
        return self._run('restart', arg)

    def do_remove(self, arg):
        """remove TYPOLOGY
        Forget a stopped typology (its runs stay in the history)."""
        return self._run('remove', arg)

    def do_scale(self, arg):
        """scale TYPOLOGY STAGE N
        Give a stage (its name, or its number from 0) N nodes."""
        return self._run('scale', arg)

    def do_logs(self, arg):
        """logs TYPOLOGY [-f] [-n N] [--json]
        A typology's last N log lines (100); with -f, then the new ones until Ctrl-C."""
        return self._run('logs', arg)

    def do_exit(self, arg):
        """exit
        Leave the console (so do quit and Ctrl-D)."""
        return True

    do_quit = do_exit

    def do_EOF(self, arg):
        if self.interactive:
            print(file=self.stdout)
        return True

    def _run(self, command, arg):
        try:
            words = shlex.split(arg)
        except ValueError as exc:           # a quote not closed
            self._error(f"{command}: {exc}")
            return False
        try:
            rz.execute(self.client, parse(USAGE, [command, *words], rz.PROG))
        except UsageError as exc:
            self._error(f"{command}: {str(exc).removesuffix(f' (see {rz.PROG} --help)')}")
        except RezinaError as exc:
            self._error(str(exc))
        except SystemExit:                  # -h: docopt printed the usage
            pass
        except BrokenPipeError:
            return True
        self.stdout.flush()
        return False

    def _error(self, message):
        self.stdout.flush()
        print(f"{rz.PROG}: {message}", file=sys.stderr, flush=True)

    def default(self, line):
        self._error(f"unknown command {line.split()[0]!r} ('help' lists the commands)")

    def emptyline(self):
        return False                        # not cmd's default: the last command again

    def get_names(self):
        return [name for name in super().get_names() if name != 'do_EOF']

    # completion

    def complete(self, text, state):
        """cmd's completion, with a space after the only match (Python's readline adds
        none), so that the next word can be typed at once."""
        match = super().complete(text, state)
        if state == 0 and match is not None and len(self.completion_matches) == 1:
            return match + ' '
        return match

    def completedefault(self, text, line, begidx, endidx):
        """Typology names after a command that takes one; stage names after scale's."""
        words = line[:begidx].split()
        before = [word for word in words[1:] if not word.startswith('-')]
        if not words or text.startswith('-'):
            return []
        if words[0] in TYPOLOGY_FIRST and not before:
            names = self._names('ls', 'name')
        elif words[0] == 'scale' and len(before) == 1:
            names = self._names('stages', 'stage', typology=before[0])
        else:
            return []
        return [name for name in names if name.startswith(text)]

    def _names(self, op, key, **args):
        """The `key` of every record of op's answer, asked once in COMPLETION_TTL; [] if
        the master does not answer."""
        asked = (op, tuple(sorted(args.items())))
        now = time.monotonic()
        if asked in self.cached and now - self.cached[asked][0] < COMPLETION_TTL:
            return self.cached[asked][1]
        try:
            rows = self.names.request(op, **args)
            names = sorted({str(row[key]) for row in rows
                            if isinstance(row, dict) and row.get(key) is not None})
        except (RezinaError, zmq.ZMQError, TypeError) as exc:
            log.debug("no names to complete from %s: %s", op, exc)
            names = []
        self.cached[asked] = (now, names)
        return names

    # readline

    def _start_readline(self):
        """Load the history; the path to save it to."""
        import readline
        path = history_path()
        try:
            readline.read_history_file(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("console history %s: cannot read it: %s", path, exc)
        readline.set_history_length(HISTORY_LENGTH)
        readline.set_completer_delims(' \t\n')
        return path

    def _save_history(self, path):
        import readline
        try:
            os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
            readline.write_history_file(path)
        except OSError as exc:
            log.warning("console history %s: cannot write it: %s", path, exc)
