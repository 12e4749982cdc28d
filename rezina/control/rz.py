"""rz: the control client of rz-master. It shows the workers, typologies, nodes, runs,
failed items and logs the master knows, and starts, stops, restarts, scales and removes
typologies.

Usage:
  rz [options] workers
  rz [options] ls
  rz [options] ps [TYPOLOGY]
  rz [options] runs TYPOLOGY [--limit=N]
  rz [options] failures TYPOLOGY [--limit=N]
  rz [options] (start | stop | restart | remove) TYPOLOGY
  rz [options] scale TYPOLOGY STAGE N
  rz [options] logs TYPOLOGY [-f] [-n N]
  rz [options] console
  rz [options] keygen NAME
  rz (-h | --help | --version)

workers: the workers, their state and load. ls: the typologies, their schedules and
runs. ps: the nodes of every typology, or of one. runs: a typology's runs, newest first.
failures: a typology's failed items, newest first, as its nodes reported them (the master
keeps the last 200). start, stop, restart, remove: change a typology's state. scale: give
the stage STAGE (its name, or its number from 0) N nodes. logs: a typology's last log
lines. console: a shell of these commands. keygen: write a CURVE key pair, NAME.key
(public, to give to the peers that let this one in) and NAME.key_secret (for
--curve-key), in --dir.

Options:
  -H, --host=HOST      rz-master's host [default: 127.0.0.1].
  -P, --port=PORT      rz-master's control port [default: 12345].
  --curve-key=FILE     Our CURVE secret key file, for a master that requires CURVE (or
                       REZINA_CURVE_KEY).
  --master-key=KEY     rz-master's public key, a file or 40 Z85 characters (or
                       REZINA_MASTER_KEY; by default our own).
  --dir=DIR            keygen: the directory of the key files [default: .].
  --json               Print the master's answer as JSON instead of a table.
  --limit=N            runs, failures: show the newest N [default: 50].
  -n, --lines=N        logs: show the last N lines [default: 100].
  -f, --follow         logs: then print new lines as they come, until Ctrl-C, which
                       ends rz with status 0.
  --log-level=LEVEL    debug, info, warning or error [default: warning].
  -h, --help           Show this help.
  --version            Show the version.
"""

import json
import os
import re
import sys
import time

import zmq

from rezina import exitcodes
from rezina.cli import run_command
from rezina.control.protocol import Client
from rezina.errors import RezinaError, UsageError
from rezina.security import Security, master_key, write_key_pair

PROG = 'rz'
ACTIONS = ('start', 'stop', 'restart', 'remove')
FOLLOW_INTERVAL = 0.5       # seconds between the questions of `rz logs -f`
FOLLOW_LIMIT = 1000         # most lines one question of `rz logs -f` asks for
ERROR_WIDTH = 80            # most characters of a node's last error shown by `rz ps`
WHOLE = re.compile(r'[0-9]+')
CONTROL = re.compile(r'[\x00-\x1f\x7f]')


def main(argv=None):
    return run_command(PROG, __doc__, sys.argv[1:] if argv is None else argv, _serve)


def _serve(args):
    if args['keygen']:
        return keygen(args['NAME'], args['--dir'])
    port = whole_number(args['--port'], '--port', 1)
    if port > 65535:
        raise UsageError(f"--port {args['--port']!r}: expected a port number from 1 to 65535")
    client = Client(args['--host'], port, security=Security.from_options(args['--curve-key']),
                    server_key=master_key(args['--master-key']))
    try:
        if args['console']:
            from rezina.control.console import Console
            return Console(client).run()
        return execute(client, args)
    except BrokenPipeError:
        return exitcodes.DOWNSTREAM_CLOSED
    finally:
        client.close()


def keygen(name, directory):
    """Write NAME.key and NAME.key_secret in directory, and say where."""
    if not name or not name.isprintable() or '/' in name or name.startswith('.'):
        raise UsageError(f"NAME {name!r}: expected a file name without '/' (e.g. the host)")
    if not os.path.isdir(directory):
        raise UsageError(f"--dir {directory}: not a directory")
    public, secret = write_key_pair(directory, name)
    print(f"{public}: the public key, for the --curve-allow directory of the peers that "
          f"let this one in")
    print(f"{secret}: the secret key, for --curve-key (readable by its owner only)")
    return exitcodes.OK


def execute(client, args):
    """Carry out one parsed rz command (not console) with client; its exit status."""
    if args['logs']:
        return show_logs(client, args)
    op, request = request_of(args)
    result = ask(client, op, **request)
    if args['--json']:
        print(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    else:
        print(render(op, result, time.time()))
    return exitcodes.OK


def request_of(args):
    """(op, args) of the request a parsed command makes; UsageError for a bad number."""
    typology = args['TYPOLOGY']
    if args['workers'] or args['ls']:
        return ('workers' if args['workers'] else 'ls'), {}
    if args['ps']:
        return 'ps', {'typology': typology}
    if args['runs'] or args['failures']:
        return ('runs' if args['runs'] else 'failures'), {
            'typology': typology, 'limit': whole_number(args['--limit'], '--limit', 1)}
    if args['scale']:
        stage = args['STAGE']
        return 'scale', {'typology': typology,
                         'stage': int(stage) if WHOLE.fullmatch(stage) else stage,
                         'n': whole_number(args['N'], 'N', 1)}
    return next(op for op in ACTIONS if args[op]), {'typology': typology}


def whole_number(text, name, minimum):
    if text is None or not WHOLE.fullmatch(text) or int(text) < minimum:
        raise UsageError(f"{name} {text!r}: expected a whole number of at least {minimum}")
    return int(text)


def ask(client, op, **args):
    """The master's result of op; RezinaError if it refuses, is silent or is unreachable."""
    try:
        return client.request(op, **args)
    except zmq.ZMQError as exc:
        raise RezinaError(f"cannot reach rz-master at {client.host}:{client.port}: "
                          f"{exc}") from None


# logs

def show_logs(client, args):
    """Print a typology's last lines; with --follow, the new ones until Ctrl-C."""
    typology, follow, as_json = args['TYPOLOGY'], args['--follow'], args['--json']
    limit = whole_number(args['--lines'], '--lines', 0)
    try:
        answer = _logs(client, typology, None, limit)
        _print_logs(answer, as_json, follow)
        while follow:
            if len(answer['lines']) < FOLLOW_LIMIT:     # else more are waiting: ask at once
                time.sleep(FOLLOW_INTERVAL)
            answer = _logs(client, typology, answer['cursor'], FOLLOW_LIMIT)
            _print_logs(answer, as_json, follow)
    except KeyboardInterrupt:
        if not follow:
            raise
    return exitcodes.OK


def _logs(client, typology, cursor, limit):
    answer = ask(client, 'logs', typology=typology, cursor=cursor, limit=limit)
    if not isinstance(answer, dict) or not isinstance(answer.get('lines'), list):
        raise RezinaError(f"rz-master's answer to logs is not {{lines, cursor}}: {answer!r}")
    return answer


def _print_logs(answer, as_json, follow):
    if as_json and not follow:
        print(json.dumps(answer, indent=2, ensure_ascii=False, default=str))
    elif as_json:
        if answer['lines']:
            print(json.dumps(answer, ensure_ascii=False, default=str))
    else:
        for line in answer['lines']:
            print(str(line).rstrip('\n'))
    sys.stdout.flush()


# tables

def render(op, result, now):
    """The text rz prints for the master's result of op, at time now."""
    if op == 'scale':
        result = result if isinstance(result, dict) else {}
        return (f"{shown(result.get('typology'))}: {shown(result.get('stage'))}: "
                f"{shown(result.get('nodes'))} nodes (was {shown(result.get('was'))})")
    if op not in TABLES:
        result = result if isinstance(result, dict) else {}
        return f"{shown(result.get('typology'))}: {shown(result.get('state'))}"
    if not isinstance(result, list) or not all(isinstance(row, dict) for row in result):
        raise RezinaError(f"rz-master's answer to {op} is not a list of records: {result!r}")
    return table(TABLES[op](result), result, now)


def table(columns, rows, now):
    """Aligned lines of rows under the columns' headers; (header, get(row, now), right)."""
    cells = [[header for header, _, _ in columns]]
    cells += [[CONTROL.sub(' ', get(row, now)) for _, get, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = []
    for line in cells:
        parts = [text.rjust(width) if right else text.ljust(width)
                 for text, width, (_, _, right) in zip(line, widths, columns)]
        lines.append('  '.join(parts).rstrip())
    return '\n'.join(lines)


def field(name):
    return lambda row, now: shown(row.get(name))


def shown(value):
    if value is None:
        return '-'
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def number(value):
    """A count, or the length of a list of things counted."""
    return shown(len(value) if isinstance(value, (list, tuple)) else value)


def local(when):
    """Epoch seconds as local time."""
    if not isinstance(when, (int, float)):
        return shown(when)
    return time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(when))


def age(when, now):
    """Epoch seconds as a time from now: '3s ago', '5m ago', 'in 2h'."""
    if not isinstance(when, (int, float)):
        return shown(when)
    seconds = now - when
    if seconds > -1:
        return f"{span(max(seconds, 0))} ago"
    return f"in {span(-seconds)}"


def span(seconds):
    for unit, size in (('d', 86400), ('h', 3600), ('m', 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def interval_text(seconds):
    """10 as '10s', 600 as '10m', 7200 as '2h'."""
    for unit, size in (('d', 86400), ('h', 3600), ('m', 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def schedule_text(schedule):
    """'every 10s', 'cron */5 * * * *' or 'once', and 'from' or 'at' its start."""
    schedule = schedule if isinstance(schedule, dict) else {}
    start, interval, cron = (schedule.get(key) for key in ('start', 'interval', 'cron'))
    if cron:
        text = f"cron {cron}"
    elif isinstance(interval, (int, float)) and interval > 0:
        text = f"every {interval_text(interval)}"
    else:
        return 'once' if start is None else f"once at {local(start)}"
    return text if start is None else f"{text} from {local(start)}"


def run_text(run, now):
    """A run as its state, its items and when it ended (or started)."""
    if not isinstance(run, dict):
        return shown(run)
    items, failed = run.get('items'), run.get('failed')
    parts = []
    if items is not None:
        parts.append(f"{items} item{'' if items == 1 else 's'}")
    if failed:
        parts.append(f"{failed} failed")
    parts.append(age(run.get('ended') or run.get('started'), now))
    return f"{shown(run.get('state'))} {', '.join(parts)}"


def nodes_text(row, now):
    failed = row.get('failed_nodes')
    failed = len(failed) if isinstance(failed, (list, tuple)) else failed
    nodes = number(row.get('nodes'))
    return f"{nodes} ({failed} failed)" if failed else nodes


def took(row, now):
    started, ended = row.get('started'), row.get('ended')
    if not isinstance(started, (int, float)) or not isinstance(ended, (int, float)):
        return '-'
    return f"{ended - started:.1f}s"


def rate(row, now):
    value = row.get('rate')
    return f"{value:.1f}/s" if isinstance(value, (int, float)) else shown(value)


def oldest(row, now):
    """How long the oldest item a node holds has been in it; blank when it holds none."""
    value = row.get('oldest_age')
    return span(max(value, 0)) if isinstance(value, (int, float)) else ''


def node_name(row, now):
    return shown(row.get('node_id') or f"{row.get('stage')}#{row.get('index')}")


ROUTINE_LEVELS = ('DEBUG', 'INFO', 'WARNING')
EXIT_WORDS = ('exited with status', 'was killed by')


def cut(text):
    return text if len(text) <= ERROR_WIDTH else text[:ERROR_WIDTH - 3] + '...'


def last_error(row, now):
    """How a node last ended (the first line of its last error) and, when its stderr ended
    with an error rather than a routine log line, that line; cut to ERROR_WIDTH."""
    lines = [line for line in str(row.get('last_error') or '').splitlines() if line.strip()]
    if not lines:
        return '-'
    how, tail = lines[0].strip(), lines[-1].strip()
    line = tail
    if how.startswith(EXIT_WORDS):          # the worker's words for how the node ended
        line = how
        if len(lines) > 1 and not any(f' {level} ' in tail for level in ROUTINE_LEVELS):
            line = f"{how}: {tail}"
    return cut(line)


def workers_columns(rows):
    return [('ID', field('id'), False), ('HOST', field('host'), False),
            ('ADDRESS', field('address'), False), ('STATE', field('state'), False),
            ('SLOTS', field('slots'), True), ('LOAD', field('load'), True),
            ('NODES', lambda row, now: number(row.get('nodes')), True),
            ('LAST HEARTBEAT', lambda row, now: age(row.get('last_heartbeat'), now), False)]


def ls_columns(rows):
    return [('NAME', field('name'), False), ('STATE', field('state'), False),
            ('SCHEDULE', lambda row, now: schedule_text(row.get('schedule')), False),
            ('LAST RUN', lambda row, now: run_text(row.get('last_run'), now), False),
            ('NEXT RUN', lambda row, now: local(row.get('next_run')), False),
            ('NODES', nodes_text, False)]


def ps_columns(rows):
    columns = [('TYPOLOGY', field('typology'), False), ('NODE', node_name, False),
               ('WORKER', field('worker'), False), ('PID', field('pid'), True),
               ('STATE', field('state'), False), ('RESTARTS', field('restarts'), True),
               ('IN', field('items_in'), True), ('OUT', field('items_out'), True),
               ('FAILED', field('failed'), True), ('RATE', rate, True)]
    for key, header in (('dropped', 'DROPPED'), ('redelivered', 'REDELIVERED')):
        if any(row.get(key) for row in rows):       # shown where there is one to see
            columns.append((header, field(key), True))
    if any(isinstance(row.get('oldest_age'), (int, float)) for row in rows):
        columns.append(('OLDEST', oldest, True))
    if any(row.get('last_error') for row in rows):
        columns.append(('LAST ERROR', last_error, False))
    return columns


def runs_columns(rows):
    return [('RUN', field('run_id'), False), ('STATE', field('state'), False),
            ('STARTED', lambda row, now: local(row.get('started')), False),
            ('ENDED', lambda row, now: local(row.get('ended')), False),
            ('TOOK', took, True), ('ITEMS', field('items'), True),
            ('FAILED', field('failed'), True)]


def failures_columns(rows):
    return [('AT', lambda row, now: local(row.get('at')), False),
            ('ITEM', field('id'), False), ('NODE', node_name, False),
            ('ERROR', field('error'), False),
            ('MESSAGE', lambda row, now: cut(shown(row.get('message'))), False)]


TABLES = {'workers': workers_columns, 'ls': ls_columns, 'ps': ps_columns,
          'runs': runs_columns, 'failures': failures_columns}
