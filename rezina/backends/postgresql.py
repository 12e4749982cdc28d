"""The PostgreSQL sink: items become rows of one table, each stored once whatever redelivers it.

SINK is a libpq URI, ``postgresql://[USER[:PASSWORD]@]HOST[:PORT]/DB[?table=NAME&...]``
(or ``postgres://``); ``table`` is ours (``items`` by default), every other query parameter
goes to libpq (sslmode, connect_timeout, ...). psycopg 3 (the ``postgresql`` extra) is
imported only when such a sink is built. A password never reaches a log line or an error:
it is shown as ``***`` (PGPASSWORD or a .pgpass file keep it off the command line too).

Table layout, as the SQLite sink's: ``rz_id TEXT PRIMARY KEY`` (the item id), ``rz_run
TEXT`` (its run id), one column per key of a dict item, the column ``item`` for any other
item. A column is typed by the first value it gets: int BIGINT, float DOUBLE PRECISION,
bool BOOLEAN, str TEXT, anything else JSONB (bytes as base64 text, datetime as ISO 8601
text, as jsonvalue renders them); a key seen only with None waits for a typed value. As in
SQLite, where a column holds whatever each value is, a value that does not fit its column
is stored anyway: the column is widened, BIGINT to DOUBLE PRECISION for a float, and to
JSONB (which keeps each value's own type) for anything else; a bool in a BIGINT or DOUBLE
PRECISION column is stored as 0 or 1, as SQLite stores bools. Columns of other types (made
by the user) get the value's text, which the server casts.

Column names: an int key becomes its decimal text; a NUL becomes U+FFFD; an empty key, or
the key ``rz_id`` or ``rz_run``, gets the prefix ``item_``; a name over 63 bytes (the
server's limit) is cut and ends in a hash of the whole. Names keep their case.

A write is one transaction: new columns, then one INSERT ... SELECT FROM unnest(...) of the
whole batch, ON CONFLICT (rz_id) DO NOTHING, then COMMIT before it returns. A value that
PostgreSQL cannot hold (a NUL in text, NaN in JSON) fails its item alone (SinkError with
bad_item, after the items before it are stored); a batch the server refuses for its data
is reported so that rz-bocca writes it one item at a time. Any other failure (the server
down or restarting, a lost connection, a lock wait past LOCK_TIMEOUT, a full disk) raises
BackendDown and closes the connection: the next write connects again.
"""

import hashlib
import logging
import re

from rezina.backends.base import BackendDown, Sink
from rezina.backends.pgtypes import (DOUBLE, ID_COLUMNS, TEXT, BadValue, cell, column_name,
                                     first_type, holding_type)
from rezina.backends.sqlite import quote     # the same SQL identifier quoting
from rezina.errors import SinkError, UnknownSink

log = logging.getLogger(__name__)

SCHEMES = ('postgresql', 'postgres')
DEFAULT_TABLE = 'items'
# libpq options the URI may set, else these: a server that vanished from the network
# (no reset, no answer) fails a write within about half a minute rather than hanging it
DEFAULT_OPTIONS = {'connect_timeout': 10, 'keepalives_idle': 10, 'keepalives_interval': 5,
                   'keepalives_count': 3, 'tcp_user_timeout': 30000}
LOCK_TIMEOUT = '5s'         # a write waits this long for another session's lock
MAX_STATEMENTS = 256        # INSERT statements kept, one per set of columns
ITEM_COLUMN = 'item'
NEEDS_EXTRA = "needs psycopg: pip install 'rezina[postgresql]'"

_TABLE_NAME = re.compile(r'[A-Za-z0-9_]{1,63}')
_PASSWORD = re.compile(r'^(\w+://[^:@/?]*):[^@/?]*@')
# SQLSTATE classes that blame the items: data exceptions, constraints, program limits (too
# many columns), and features not supported (widening a column that a view uses)
_DATA_CLASSES = ('22', '23', '54', '0A')
# SQLSTATEs of a table changed under us: undefined table or column, datatype mismatch
_STALE = frozenset({'42P01', '42703', '42804'})


def mask(uri):
    """`uri` with its password, in the authority or the query, shown as ***."""
    masked = _PASSWORD.sub(r'\1:***@', uri)
    return re.sub(r'([?&]password=)[^&]*', r'\1***', masked)


def parse_uri(spec):
    """Split a postgresql:// SINK into (libpq URI without our options, table)."""
    base, _, query = spec.partition('?')
    table, passed = DEFAULT_TABLE, []
    for option in filter(None, query.split('&')):
        key, equals, value = option.partition('=')
        if key != 'table':
            passed.append(option)
            continue
        if not _TABLE_NAME.fullmatch(value) or value.lower().startswith('pg_'):
            raise UnknownSink(
                f"bad table name {value!r} in sink {mask(spec)!r}: expected up to 63 "
                f"letters, digits and underscores, not starting with pg_")
        table = value
    if not base.partition('://')[2].strip('/'):
        raise UnknownSink(f"sink {mask(spec)!r} names no server or database: expected "
                          f"postgresql://[USER@]HOST[:PORT]/DB[?table=NAME]")
    return base + ('?' + '&'.join(passed) if passed else ''), table


class _BadRecord(Exception):
    """Record `index` of a write holds a value PostgreSQL cannot store."""

    def __init__(self, index, why):
        super().__init__(why)
        self.index = index
        self.why = why


def import_psycopg(name):
    """The psycopg module, or SinkError naming the extra that installs it."""
    try:
        import psycopg
    except ImportError:
        raise SinkError(f"{name}: {NEEDS_EXTRA}") from None
    return psycopg


class PostgresqlSink(Sink):
    """Items as rows of a table in the PostgreSQL database that a libpq URI names."""

    idempotent = True

    def __init__(self, spec):
        self.name = mask(spec)
        self.conninfo, self.table = parse_uri(spec)
        self._secrets = [s for s in re.findall(r'^\w+://[^:@/?]*:([^@/?]*)@', spec)
                         + re.findall(r'[?&]password=([^&]*)', spec) if s]
        self._pg = import_psycopg(self.name)
        try:
            params = self._pg.conninfo.conninfo_to_dict(self.conninfo)
        except self._pg.Error as exc:
            raise UnknownSink(f"bad sink {self.name!r}: {self._why(exc)}") from None
        self._secrets += [params['password']] if params.get('password') else []
        self._options = {key: value for key, value in DEFAULT_OPTIONS.items()
                         if key not in params}
        digest = hashlib.sha1(f"rezina:{self.table}".encode()).digest()
        self._lock_key = int.from_bytes(digest[:8], 'big', signed=True)
        self._conn = None
        self._dropped = False       # closed after a BackendDown: the next write reopens
        self._columns = None        # column name -> type; None: to be read again
        self._names = {}            # item key -> column name
        self._statements = {}       # ((column, type), ...) -> INSERT
        self._warned = set()        # columns a key clash was logged for

    def open(self):
        try:
            self._conn = self._pg.connect(self.conninfo, autocommit=False, **self._options)
            self._prepare_table()
            self._conn.commit()
        except (self._pg.Error, SinkError) as exc:
            self._drop()
            self._dropped = False
            if isinstance(exc, SinkError):
                raise
            raise SinkError(f"cannot open {self.name}: {self._why(exc)}") from None
        log.debug("%s: connected; table %s has %d columns",
                  self.name, self.table, len(self._columns))

    def _prepare_table(self):
        conn, table = self._conn, quote(self.table)
        conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
        # two sinks creating one table at once would collide in the catalog
        conn.execute('SELECT pg_advisory_xact_lock(%s)', [self._lock_key])
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (rz_id TEXT PRIMARY KEY, rz_run TEXT)")
        key = conn.execute(
            "SELECT array_agg(a.attname::text) FROM pg_index i JOIN pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = %s::regclass AND i.indisprimary", [table]).fetchone()[0]
        if key != ['rz_id']:
            raise SinkError(f"cannot use table {self.table!r} of {self.name}: "
                            f"it exists without an rz_id primary key")
        self._load_columns()
        if 'rz_run' not in self._columns:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN rz_run TEXT")
            self._columns['rz_run'] = TEXT

    def _load_columns(self):
        rows = self._conn.execute(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            [quote(self.table)]).fetchall()
        self._columns = dict(rows)

    def write(self, records):
        if not records:
            return
        self._connected()
        try:
            try:
                self._store(records)
            except self._pg.Error as exc:
                if exc.sqlstate not in _STALE or self._conn.broken:
                    raise self._failure(records, exc) from None
                # another session changed or dropped the table since we read it
                log.debug("%s: table %s changed: %s", self.name, self.table, self._why(exc))
                self._roll_back()
                if self._conn is None:
                    raise BackendDown(f"cannot write to {self.name}: {self._why(exc)}") from None
                try:
                    self._prepare_table()
                    self._store(records)
                except self._pg.Error as exc:
                    raise self._failure(records, exc) from None
        except _BadRecord as bad:
            self._roll_back()
            if bad.index:
                self.write(records[:bad.index])
            raise SinkError(f"cannot write item {records[bad.index][0]} to {self.name}: "
                            f"{bad.why}", written=bad.index, bad_item=True) from None
        except BaseException:
            self._roll_back()       # a no-op if a failure above rolled it back already
            raise

    def _failure(self, records, exc):
        """The SinkError for psycopg error `exc` in a write, after rolling it back: of the
        items if they are at fault, else BackendDown, the connection closed."""
        what = f"{len(records)} items" if len(records) > 1 else f"item {records[0][0]}"
        if self._blames_items(exc):
            self._roll_back()
            return SinkError(f"cannot write {what} to {self.name}: {self._why(exc)}",
                             bad_item=len(records) == 1)
        self._drop()        # closing rolls the transaction back
        return BackendDown(f"cannot write {what} to {self.name}: {self._why(exc)}")

    def _store(self, records):
        """Insert the records and commit, adding or widening columns first."""
        rows = self._rows(records)
        if self._columns is None:
            self._load_columns()
        types = self._plan(rows, self._columns)
        if any(self._columns.get(name) != kind for name, kind in types.items()):
            types = self._change_columns(rows)
        self._conn.execute(self._statement(types), self._arrays(rows, types))
        self._conn.commit()

    def _rows(self, records):
        """(item_id, run_id, {column: value}) for each record."""
        names, rows = self._names, []
        for item_id, run_id, item in records:
            if not isinstance(item, dict):
                rows.append((item_id, run_id, {ITEM_COLUMN: item}))
                continue
            values = {}
            for key, value in item.items():
                name = names.get(key)
                if name is None:
                    name = self._name(key)
                if name in values:
                    self._warn_clash(item, name)
                values[name] = value
            rows.append((item_id, run_id, values))
        return rows

    def _name(self, key):
        if len(self._names) >= MAX_STATEMENTS * 16:
            self._names.clear()
        name = self._names[key] = column_name(key)
        return name

    def _warn_clash(self, item, name):
        if name not in self._warned:
            self._warned.add(name)
            keys = [key for key in item if column_name(key) == name]
            log.warning("%s: keys %s share column %r; the last one is stored",
                        self.name, ', '.join(map(repr, keys)), name)

    @staticmethod
    def _plan(rows, columns):
        """{column: type} that holds every value of the rows, given the table's `columns`."""
        types = {}
        # widening a column can leave values before the one that widened it unfit (an int
        # beyond 2**53 in what became DOUBLE PRECISION): then look again, at most 3 times
        for _ in range(4):
            widened = False
            for _, _, values in rows:
                for name, value in values.items():
                    known = types.get(name) or columns.get(name)
                    wanted = holding_type(known, value)
                    if wanted != known:
                        types[name] = wanted
                        widened = widened or known is not None
                    elif known is not None and name not in types:
                        types[name] = known
            if not widened:
                break
        return types

    def _change_columns(self, rows):
        """Add and widen the columns the rows need, under the table's lock; their types."""
        conn, table = self._conn, quote(self.table)
        conn.execute('SELECT pg_advisory_xact_lock(%s)', [self._lock_key])
        self._load_columns()            # another sink may have changed them
        types = self._plan(rows, self._columns)
        for name, kind in types.items():
            have = self._columns.get(name)
            if have is None:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {quote(name)} {kind}")
                first = next((first_type(values[name]) for _, _, values in rows
                              if values.get(name) is not None), kind)
                if first != kind:
                    log.warning("%s: column %r of table %s is %s, not %s, to hold every "
                                "value of its first write", self.name, name, self.table,
                                kind, first)
            elif have != kind:
                using = f"{quote(name)}::{kind}" if kind == DOUBLE else f"to_jsonb({quote(name)})"
                conn.execute(f"ALTER TABLE {table} ALTER COLUMN {quote(name)} TYPE {kind} "
                             f"USING {using}")
                log.warning("%s: column %r of table %s was %s, now %s, to hold every value",
                            self.name, name, self.table, have, kind)
            self._columns[name] = kind
        return types

    def _statement(self, types):
        """The INSERT of a batch into the columns `types` names, one array per column."""
        key = tuple(types.items())
        sql = self._statements.get(key)
        if sql is None:
            names = ', '.join(quote(name).replace('%', '%%') for name in [*ID_COLUMNS, *types])
            arrays = ', '.join(f"%b::{kind}[]" for kind in [TEXT, TEXT, *types.values()])
            sql = (f"INSERT INTO {quote(self.table)} ({names}) SELECT * FROM unnest({arrays}) "
                   f"ON CONFLICT (rz_id) DO NOTHING")
            if len(self._statements) >= MAX_STATEMENTS:
                self._statements.clear()
            self._statements[key] = sql
        return sql

    @staticmethod
    def _arrays(rows, types):
        """The parameters of the INSERT: ids, runs, then one list per column."""
        arrays = [[row[0] for row in rows], [row[1] for row in rows]]
        bad = None
        for name, kind in types.items():
            column = []
            for index, (_, _, values) in enumerate(rows):
                try:
                    column.append(cell(kind, values.get(name)))
                except BadValue as exc:
                    if bad is None or index < bad.index:
                        bad = _BadRecord(index, f"key {name!r}: {exc}")
                    break
            arrays.append(column)
        if bad is not None:
            raise bad
        return arrays

    def _blames_items(self, exc):
        """True if psycopg error `exc` is the data's fault, not the server's or connection's."""
        if self._conn is None or self._conn.broken:
            return False
        if exc.sqlstate is None:
            return isinstance(exc, self._pg.DataError)
        return exc.sqlstate[:2] in _DATA_CLASSES

    def _why(self, exc):
        """The first line of an error's text, without the password."""
        text = next((line.strip() for line in str(exc).splitlines() if line.strip()),
                    type(exc).__name__)
        for secret in self._secrets:
            text = text.replace(secret, '***')
        return text

    def _drop(self):
        """Close the connection after a failure of the server; the next write reopens."""
        conn, self._conn, self._dropped, self._columns = self._conn, None, True, None
        if conn is not None:
            try:
                conn.close()
            except self._pg.Error as exc:
                log.debug("%s: closing after a failure: %s", self.name, self._why(exc))

    def _roll_back(self):
        # columns added in the transaction are gone with it: read them again next time
        self._columns = None
        if self._conn is None:
            return
        try:
            self._conn.rollback()
        except self._pg.Error as exc:
            log.warning("%s: rollback failed: %s", self.name, self._why(exc))
            self._drop()

    def close(self):
        self._dropped = False
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.close()
            except self._pg.Error as exc:
                raise SinkError(f"cannot close {self.name}: {self._why(exc)}") from None
