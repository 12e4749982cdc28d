"""Parse a SINK spec into a Sink, and adapt a StorageBackend (built-in or the user's) to it.

SINK is one of:

    stdout                    JSON lines on standard output (the default)
    null                      discard everything
    jsonl:PATH                JSON lines appended to PATH
    csv:PATH                  CSV rows appended to PATH, under a header from the first item
    sqlite:PATH[?table=NAME]  rows of table NAME (items) in the SQLite database PATH
    postgresql://USER@HOST[:PORT]/DB[?table=NAME]
                              rows of table NAME (items) in a PostgreSQL database, as a
                              libpq URI (also postgres://); needs psycopg
    MODULE:CLASS              a rezina.backends.StorageBackend subclass, built as
                              CLASS(logger, *args, **kwargs)
"""

import logging

from rezina.backends.base import BackendDown, Sink, StorageBackend
from rezina.backends.csvfile import CsvFile
from rezina.backends.sqlite import DEFAULT_TABLE, SqliteSink, check_table_name
from rezina.backends.textfiles import Null, PlainFile, Stdout
from rezina.errors import BadArgument, SinkError, UnknownSink, UsageError
from rezina.target import add_search_path, import_target

log = logging.getLogger(__name__)

USER_LOGGER = 'rezina.backends.user'
MODES = ('stream', 'batch')
EXPECTED = ("expected stdout, null, jsonl:PATH, csv:PATH, sqlite:PATH[?table=NAME] "
            "or MODULE:CLASS")
POSTGRESQL_SCHEMES = ('postgresql://', 'postgres://')
# what a backend raises when its store, not an item, is at fault
_DOWN = (ConnectionError, TimeoutError)


class BackendSink(Sink):
    """A Sink that hands batches to a StorageBackend, the way `mode` says.

    A backend with write_records() gets the records of each batch, ids included; any
    other gets write(item) per item in stream mode, or write(list_of_items) once per
    batch in batch mode. An exception the backend raises becomes SinkError (BackendDown for
    a ConnectionError or TimeoutError: the store is down, not the items at fault), except
    BrokenPipeError from Stdout: its reader went away, which the command handles.
    """

    def __init__(self, backend, name, mode='batch'):
        if mode not in MODES:
            raise UsageError(f"--mode must be stream or batch, not {mode!r}")
        self.backend = backend
        self.name = name
        self.mode = mode
        self.idempotent = bool(getattr(backend, 'idempotent', False))
        self._write_records = getattr(backend, 'write_records', None)
        self.wants_ids = (self._write_records is not None
                          and getattr(backend, 'wants_ids', True))

    def open(self):
        self._call('open', self.backend.open)

    def write(self, records):
        if not records:
            return
        if self._write_records is not None:
            self._call('write', self._write_records, records)
        elif self.mode == 'stream':
            for index, (_, _, item) in enumerate(records):
                try:
                    self._call('write', self.backend.write, item)
                except SinkError as exc:
                    exc.written = index      # those before it are stored: say so
                    raise
        else:
            self._call('write', self.backend.write, [item for _, _, item in records])

    def close(self):
        self._call('close', self.backend.close)

    def _call(self, verb, method, *args):
        try:
            method(*args)
        except SinkError:
            raise
        except BrokenPipeError:
            if isinstance(self.backend, Stdout):
                raise
            raise BackendDown(f"backend {self.name} failed to {verb}: BrokenPipeError") from None
        except Exception as exc:
            error = BackendDown if isinstance(exc, _DOWN) else SinkError
            raise error(
                f"backend {self.name} failed to {verb}: {type(exc).__name__}: {exc}"
            ) from exc


def open_sink(spec, args=(), kwargs=None, mode='batch', stdout=None):
    """Return the Sink that SINK `spec` names, not opened yet.

    `args` and `kwargs` go to a MODULE:CLASS backend; `mode` (stream or batch) says how it
    gets items; `stdout` is the binary stream of the stdout sink (sys.stdout.buffer).
    Raises UnknownSink for a spec that names no sink, UnknownFunction for a MODULE:CLASS
    that does not import.
    """
    kwargs = dict(kwargs or {})
    if mode not in MODES:
        raise UsageError(f"--mode must be stream or batch, not {mode!r}")
    scheme, colon, rest = spec.partition(':')
    is_postgresql = spec.lower().startswith(POSTGRESQL_SCHEMES)
    if (scheme in ('stdout', 'null', 'jsonl', 'csv', 'sqlite') or is_postgresql) and (
            args or kwargs):
        if is_postgresql:
            from rezina.backends.postgresql import mask
            spec = mask(spec)       # never a password in an error
        raise BadArgument(f"sink {spec!r} takes no arguments (only MODULE:CLASS does)")

    if spec == 'stdout':
        return BackendSink(Stdout(log, stream=stdout), 'stdout', mode)
    if spec == 'null':
        return BackendSink(Null(log), 'null', mode)
    if scheme == 'jsonl' and colon:
        if not rest:
            raise UnknownSink(f"sink {spec!r} names no file: expected jsonl:PATH")
        return BackendSink(PlainFile(log, rest), spec, mode)
    if scheme == 'csv' and colon:
        if not rest:
            raise UnknownSink(f"sink {spec!r} names no file: expected csv:PATH")
        return BackendSink(CsvFile(log, rest), spec, mode)
    if scheme == 'sqlite' and colon:
        path, table = parse_sqlite(spec, rest)
        return SqliteSink(path, table, name=spec)
    if is_postgresql:
        # imported here: psycopg is an extra, loaded only for a postgresql:// sink
        from rezina.backends.postgresql import PostgresqlSink
        return PostgresqlSink(spec)
    if colon and _looks_like_target(spec):
        return user_sink(spec, args, kwargs, mode)
    raise UnknownSink(f"unknown sink {spec!r}: {EXPECTED}")


def parse_sqlite(spec, rest):
    """Split the PATH[?table=NAME] of a sqlite: spec into (path, table)."""
    path, _, query = rest.partition('?')
    if not path:
        raise UnknownSink(f"sink {spec!r} names no database: expected sqlite:PATH[?table=NAME]")
    table = DEFAULT_TABLE
    for option in filter(None, query.split('&')):
        key, equals, value = option.partition('=')
        if key != 'table' or not equals:
            raise UnknownSink(f"unknown option {option!r} in sink {spec!r}: "
                              f"expected sqlite:PATH[?table=NAME]")
        table = check_table_name(value, spec)
    return path, table


def user_sink(spec, args=(), kwargs=None, mode='batch'):
    """Import the StorageBackend subclass MODULE:CLASS, build it and wrap it in a Sink."""
    add_search_path()
    backend_class = import_target(spec)
    return backend_sink(backend_class, args, kwargs, mode, name=spec)


def backend_sink(backend_class, args=(), kwargs=None, mode='batch', name=None):
    """Build `backend_class(logger, *args, **kwargs)` and wrap it in a Sink."""
    name = name or f"{backend_class.__module__}:{backend_class.__qualname__}"
    if not (isinstance(backend_class, type) and issubclass(backend_class, StorageBackend)):
        what = (f"class {backend_class.__name__}" if isinstance(backend_class, type)
                else f"a {type(backend_class).__name__}")
        raise UnknownSink(
            f"sink {name!r} is not a rezina.backends.StorageBackend subclass: it is {what}")
    try:
        backend = backend_class(logging.getLogger(USER_LOGGER), *args, **(kwargs or {}))
    except Exception as exc:
        raise UnknownSink(f"cannot build sink {name!r}: {type(exc).__name__}: {exc}") from None
    return BackendSink(backend, name, mode)


def _looks_like_target(spec):
    """True if `spec` reads as MODULE:CLASS (dotted identifiers either side of one colon)."""
    module, _, attrs = spec.partition(':')
    return all(part.isidentifier() for part in [*module.split('.'), *attrs.split('.')])
