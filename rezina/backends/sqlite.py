"""The SQLite sink: items become rows of one table, each stored once whatever redelivers it.

Table layout (``items`` unless ``?table=NAME``):

- ``rz_id TEXT PRIMARY KEY`` (the item id) and ``rz_run TEXT`` (its run id);
- a dict item fills one column per key; a key not seen before adds a column, untyped,
  so each value keeps its own storage class;
- any other item goes to the column ``item``.

Values: str, int, float and None as they are (an int beyond 64 bits as its decimal text),
bool as 0 or 1, bytes as a BLOB, datetime as ISO 8601 text, list and dict as JSON text.

Column names: an int key becomes its decimal text; an item's own ``rz_id`` or ``rz_run``
key is stored in ``item_rz_id`` or ``item_rz_run``; a NUL in a key becomes U+FFFD. SQLite
folds ASCII case in names, so keys such as ``City`` and ``city`` share one column; if one
item holds both, its last one is stored and a warning is logged once per column.

A write is one transaction: INSERT OR IGNORE, so the first write of an id wins, then
COMMIT before it returns; on any failure it is rolled back, new columns included. A failure
of the database rather than of the items (locked past BUSY_TIMEOUT, disk full, read-only,
an I/O error) raises BackendDown and closes the connection: the next write opens it again,
so a file system that was remounted, or a database file that was replaced, is met afresh.
"""

import datetime
import logging
import os
import re
import sqlite3

from rezina.backends.base import BackendDown, Sink
from rezina.backends.jsonvalue import dumps_item
from rezina.errors import SinkError, UnknownSink

log = logging.getLogger(__name__)

DEFAULT_TABLE = 'items'
BUSY_TIMEOUT = 2.0              # seconds a write waits for another writer's lock, then
                                # fails as BackendDown (rz-bocca tries it again)
MAX_PLANS = 256                 # INSERT statements kept, one per shape of item

ID_COLUMNS = ('rz_id', 'rz_run')
ITEM_COLUMN = 'item'
_TABLE_NAME = re.compile(r'[A-Za-z0-9_]+')
_ASCII_LOWER = str.maketrans('ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_AS_IS = frozenset({str, float, bytes, type(None)})

# errors of the data in a batch (as opposed to the database: locked, full, read-only)
_DATA_ERRORS = (TypeError, ValueError, OverflowError, RecursionError, sqlite3.InterfaceError,
                sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError)
# primary result codes that blame the database, not the items: it comes back, or is fixed
_DOWN_CODES = frozenset(getattr(sqlite3, name) for name in (
    'SQLITE_BUSY', 'SQLITE_LOCKED', 'SQLITE_NOMEM', 'SQLITE_READONLY', 'SQLITE_IOERR',
    'SQLITE_CORRUPT', 'SQLITE_FULL', 'SQLITE_CANTOPEN', 'SQLITE_PROTOCOL', 'SQLITE_PERM',
    'SQLITE_NOTADB'))


def database_down(exc):
    """True if sqlite3 error `exc` is the database's fault (locked, full, read-only, ...)."""
    code = getattr(exc, 'sqlite_errorcode', None)
    return (isinstance(exc, sqlite3.Error) and not isinstance(exc, _DATA_ERRORS)
            and code is not None and code & 0xff in _DOWN_CODES)


def check_table_name(table, spec):
    """Return `table` if it is a usable name, else raise UnknownSink naming it."""
    if not _TABLE_NAME.fullmatch(table) or fold(table).startswith('sqlite_'):
        raise UnknownSink(
            f"bad table name {table!r} in sink {spec!r}: "
            f"expected letters, digits and underscores, not starting with sqlite_")
    return table


def fold(name):
    """The name SQLite sees: identifiers compare equal up to ASCII case."""
    return name.translate(_ASCII_LOWER)


def quote(name):
    """Quote an identifier for SQL text."""
    return '"' + name.replace('"', '""') + '"'


def column_name(key):
    """The column that stores the value of a dict item's `key`."""
    name = key if type(key) is str else str(key)
    if '\0' in name:
        name = name.replace('\0', '\ufffd')
    if fold(name) in ID_COLUMNS:
        name = 'item_' + name
    return name


def cell(value):
    """The value SQLite stores for one item value."""
    kind = type(value)
    if kind in _AS_IS:
        return value
    if kind is int:
        return value if _INT64_MIN <= value <= _INT64_MAX else str(value)
    if kind is bool:
        return int(value)
    if kind is datetime.datetime:
        return value.isoformat()
    if kind is list or kind is dict:
        return dumps_item(value)
    # subclasses of the item types, and what a Python caller may pass (tuple, bytearray)
    if isinstance(value, int):
        return cell(int(value))
    if isinstance(value, (str, float)):
        return value
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return dumps_item(value)


class _Plan:
    """The INSERT for one shape of item: its SQL, its columns, which values go in."""

    __slots__ = ('sql', 'columns', 'picks', 'whole')

    def __init__(self, table, names, picks, whole=False):
        self.columns = {fold(name): name for name in names}
        self.picks = picks      # indices of the item's values to store; None: all, in order
        self.whole = whole      # not a dict: the item itself is the one value
        names = [*ID_COLUMNS, *names]
        self.sql = (f"INSERT OR IGNORE INTO {quote(table)} ({', '.join(map(quote, names))}) "
                    f"VALUES ({', '.join('?' * len(names))})")


class SqliteSink(Sink):
    """Items as rows of a table in the SQLite database at `path`, in WAL mode."""

    idempotent = True

    def __init__(self, path, table=DEFAULT_TABLE, name=None):
        self.path = os.path.expanduser(os.fspath(path))
        self.table = check_table_name(table, name or f"sqlite:{path}")
        self.name = name or f"sqlite:{path}"
        self._conn = None
        self._dropped = False       # closed after a BackendDown: the next write reopens
        self._columns = set()       # folded names of the table's columns
        self._plans = {}            # item keys (None: not a dict) -> _Plan
        self._warned = set()        # folded columns a case clash was logged for

    def open(self):
        parent = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(parent):
            raise SinkError(f"cannot open {self.name}: directory {parent!r} does not exist")
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT, isolation_level=None,
                check_same_thread=False, cached_statements=MAX_PLANS)
            self._prepare_database()
        except sqlite3.Error as exc:
            self.close()
            raise SinkError(f"cannot open {self.name}: {exc}") from None

    def _prepare_database(self):
        conn = self._conn
        mode = conn.execute('PRAGMA journal_mode=WAL').fetchone()[0]
        if mode.lower() != 'wal' and self.path != ':memory:':
            log.warning("%s: journal mode is %s, not WAL", self.name, mode)
        # FULL: a commit survives a power cut, which is what acknowledging it promises
        conn.execute('PRAGMA synchronous=FULL')
        conn.execute(f"CREATE TABLE IF NOT EXISTS {quote(self.table)} "
                     f"(rz_id TEXT PRIMARY KEY, rz_run TEXT)")
        info = conn.execute(f"PRAGMA table_info({quote(self.table)})").fetchall()
        if not any(fold(row[1]) == 'rz_id' and row[5] for row in info):
            raise SinkError(f"cannot use table {self.table!r} of {self.name}: "
                            f"it exists without an rz_id primary key")
        if 'rz_run' not in {fold(row[1]) for row in info}:
            conn.execute(f"ALTER TABLE {quote(self.table)} ADD COLUMN rz_run TEXT")
        self._load_columns()

    def _load_columns(self):
        rows = self._conn.execute(f"PRAGMA table_info({quote(self.table)})").fetchall()
        self._columns = {fold(row[1]) for row in rows}

    def write(self, records):
        if not records:
            return
        self._connected()
        conn = self._conn
        what = f"{len(records)} items" if len(records) > 1 else f"item {records[0][0]}"
        try:
            conn.execute('BEGIN IMMEDIATE')
        except sqlite3.Error as exc:
            if database_down(exc):
                self._drop()
                raise BackendDown(f"cannot write {what} to {self.name}: {exc}") from None
            raise SinkError(f"cannot write {what} to {self.name}: {exc}") from None

        try:
            for plan, rows in self._runs(records):
                self._add_columns(plan)
                try:
                    conn.executemany(plan.sql, rows)
                except _DATA_ERRORS as exc:
                    culprit = self._find_culprit(plan, rows)
                    if culprit is not None:
                        what = f"item {culprit}"
                    raise SinkError(f"cannot write {what} to {self.name}: "
                                    f"{type(exc).__name__}: {exc}") from None
            conn.execute('COMMIT')
        except BaseException as exc:
            if database_down(exc):
                self._drop()        # closing rolls the transaction back
                raise BackendDown(f"cannot write {what} to {self.name}: {exc}") from None
            self._roll_back()
            if isinstance(exc, SinkError):
                raise
            if isinstance(exc, (sqlite3.Error, *_DATA_ERRORS)):
                raise SinkError(f"cannot write {what} to {self.name}: {exc}") from None
            raise

    def _drop(self):
        """Close the connection after a failure of the database; the next write reopens."""
        conn, self._conn, self._dropped = self._conn, None, True
        try:
            conn.close()
        except sqlite3.Error as exc:
            log.debug("%s: closing after a failure: %s", self.name, exc)

    def _runs(self, records):
        """Yield (plan, rows) for each run of consecutive items of one shape, in order."""
        start, shape, plan = 0, None, None
        for index, (_, _, item) in enumerate(records):
            # a dict's keys, in order, are its shape: they fix the INSERT statement
            item_shape = tuple(item) if type(item) is dict else None
            if index == 0 or item_shape != shape:
                if index:
                    yield plan, self._rows(plan, records[start:index])
                start, shape, plan = index, item_shape, self._plan(item_shape)
        yield plan, self._rows(plan, records[start:])

    def _plan(self, shape):
        """The INSERT plan for items of `shape` (their keys; None: not a dict)."""
        plan = self._plans.get(shape)
        if plan is not None:
            return plan
        if shape is None:
            plan = _Plan(self.table, [ITEM_COLUMN], None, whole=True)
        else:
            chosen = {}     # folded name -> (name, index of the value); the last key wins
            for index, key in enumerate(shape):
                name = column_name(key)
                chosen.pop(fold(name), None)
                chosen[fold(name)] = (name, index)
            names = [name for name, _ in chosen.values()]
            picks = [index for _, index in chosen.values()]
            if len(picks) < len(shape):
                self._warn_clash(shape)
            plan = _Plan(self.table, names, None if picks == list(range(len(shape))) else picks)
        if len(self._plans) >= MAX_PLANS:
            self._plans.clear()
        self._plans[shape] = plan
        return plan

    def _warn_clash(self, shape):
        seen = {}
        for key in shape:
            folded = fold(column_name(key))
            if folded in seen and folded not in self._warned:
                self._warned.add(folded)
                log.warning("%s: keys %r and %r share column %r; the last one is stored",
                            self.name, seen[folded], key, column_name(key))
            seen[folded] = key

    def _rows(self, plan, records):
        """The parameter rows of records that all have the shape of `plan`."""
        try:
            if plan.whole:
                return [(item_id, run_id, cell(item)) for item_id, run_id, item in records]
            as_is, low, high, picks = _AS_IS, _INT64_MIN, _INT64_MAX, plan.picks
            rows = []
            for item_id, run_id, item in records:
                values = item.values()
                if picks is not None:
                    values = list(values)
                    values = [values[index] for index in picks]
                rows.append((item_id, run_id, *[
                    value if type(value) in as_is
                    or (type(value) is int and low <= value <= high) else cell(value)
                    for value in values]))
            return rows
        except _DATA_ERRORS:
            self._blame_item(records)
            raise

    def _blame_item(self, records):
        """Raise SinkError naming the first item with a value that has no column value."""
        for item_id, _, item in records:
            try:
                for value in item.values() if type(item) is dict else [item]:
                    cell(value)
            except _DATA_ERRORS as exc:
                raise SinkError(f"cannot write item {item_id} to {self.name}: "
                                f"{type(exc).__name__}: {exc}") from None

    def _add_columns(self, plan):
        """Add the columns of `plan` the table lacks, inside the write's transaction."""
        if plan.columns.keys() <= self._columns:
            return
        # another writer may have added some: we hold the write lock, so look again
        self._load_columns()
        for folded, name in plan.columns.items():
            if folded not in self._columns:
                self._conn.execute(
                    f"ALTER TABLE {quote(self.table)} ADD COLUMN {quote(name)}")
                self._columns.add(folded)

    def _find_culprit(self, plan, rows):
        """The id of the first row the INSERT refuses, trying them one at a time."""
        for row in rows:
            try:
                self._conn.execute(plan.sql, row)
            except _DATA_ERRORS:
                return row[0]
            except sqlite3.Error:
                return None
        return None

    def _roll_back(self):
        try:
            if self._conn.in_transaction:
                self._conn.execute('ROLLBACK')
            # columns added in the transaction are gone with it
            self._load_columns()
        except sqlite3.Error as exc:
            log.warning("%s: rollback failed: %s", self.name, exc)

    def close(self):
        self._dropped = False
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.close()
            except sqlite3.Error as exc:
                raise SinkError(f"cannot close {self.name}: {exc}") from None
