"""Hash every file under a directory on several processes, into SQLite.

Runs

    rz-hydrant files:list_files DIR | rz-notch -p PROCS hashing:digest | rz-bocca sqlite:DB

from this directory and reports how many files were hashed, their total size and how
long it took. DIR is the Python standard library unless given. The pipeline's command
line is printed on stderr first.

    python examples/filehash/run.py
    python examples/filehash/run.py --procs 4 /usr/share
"""

import argparse
import sys
import sysconfig
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


sys.path[:0] = [str(HERE), str(HERE.parent)]      # this example's modules, and shellpipe
import shellpipe  # noqa: E402  (examples/shellpipe.py, shared by the examples)

PROG = 'filehash/run.py'


def parse_args(argv):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument('dir', nargs='?', default=sysconfig.get_paths()['stdlib'],
                        help='directory to hash [default: %(default)s]')
    parser.add_argument('--db', default='filehash.db',
                        help='SQLite file to store the digests in [default: %(default)s]')
    parser.add_argument('--procs', type=_positive, default=2,
                        help='processes hashing files [default: %(default)s]')
    return parser.parse_args(argv)


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be >= 1: {text}')
    return value


def build_stages(directory, db, procs=2):
    """The argv of each stage of the filehash pipeline."""
    # DIR is absolute: an ARG that parses as JSON (say 123) would not arrive as a str
    return [
        [shellpipe.find_command('rz-hydrant'), 'files:list_files', str(directory)],
        [shellpipe.find_command('rz-notch'), '-p', str(procs), 'hashing:digest'],
        [shellpipe.find_command('rz-bocca'), f'sqlite:{db}'],
    ]


def count_stored(db):
    """(rows, distinct paths, total bytes, total lines) in DB's items table."""
    rows, paths, size, lines = shellpipe.query_row(
        db, 'SELECT COUNT(*), COUNT(DISTINCT "path"), SUM("bytes"), SUM("lines") FROM items',
        (0, 0, 0, 0))
    return rows, paths, size or 0, lines or 0


def main(argv=None):
    args = parse_args(argv)
    directory = Path(args.dir).resolve()
    db = Path(args.db).resolve()
    if not directory.is_dir():
        print(f'{PROG}: cannot hash {str(directory)!r}: not a directory', file=sys.stderr)
        return 2
    try:
        stages = build_stages(directory, db, args.procs)
    except shellpipe.CommandNotFound as exc:
        print(f'{PROG}: {exc}', file=sys.stderr)
        return 1
    import files
    listed = sum(1 for _ in files.list_files(directory))
    shellpipe.remove_database(db)

    print(shellpipe.shell_line(stages, HERE), file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        statuses = shellpipe.run_pipeline(stages, cwd=HERE)
    except KeyboardInterrupt:
        print(f'{PROG}: interrupted', file=sys.stderr)
        return 130
    elapsed = time.monotonic() - started

    status = shellpipe.pipeline_status(statuses)
    rows, paths, size, lines = count_stored(db)
    print(f'files hashed:  {paths} of {listed} ({rows} rows, {listed - paths} failed)')
    print(f'total size:    {size} bytes ({size / 2**20:.1f} MiB), {lines} lines')
    print(f'database:      {db} (table items)')
    print(f'time:          {elapsed:.1f} s on {args.procs} processes '
          f'({size / 2**20 / max(elapsed, 1e-9):.1f} MiB/s)')
    print(f'pipeline exit: {status} (stages: {" ".join(map(str, statuses))})')

    if status != 0:
        return status
    if not rows == paths == listed:
        print(f'{PROG}: not every file stored exactly once: {rows} rows, '
              f'{paths} distinct, {listed} listed', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
