"""The master's persistent state: workers, typologies, placements and runs in SQLite
(see docs/control-plane.md, "State in the master").

Runs in the rz-master process. One State, used from the master's main thread, is the one
writer: each method is one transaction, committed before it returns. Readers in other
threads (the HTTP thread) get their own read-only connection from State.reader().

The state dir holds `state.db` (WAL, synchronous=FULL) and `master.lock`: a State holds
an exclusive flock on the lock file, with its pid written in it, until close(), so a
second master on the same dir fails at start and names the holder.

Rows come back as plain dicts; a spec is stored as JSON and comes back as a dict under
`spec`. Times are epoch floats.
"""

import datetime
import fcntl
import json
import logging
import os
import sqlite3
import time

from rezina.errors import RezinaError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DB_NAME = 'state.db'
LOCK_NAME = 'master.lock'
BUSY_TIMEOUT = 10.0             # seconds a statement waits for another connection's lock
LOCK_PID_TRIES = 50             # reads of the holder's pid, 10 ms apart, while it writes it

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY, host TEXT, address TEXT, slots INTEGER, session TEXT,
    state TEXT, last_heartbeat REAL);
CREATE TABLE IF NOT EXISTS typologies (
    name TEXT PRIMARY KEY, spec_json TEXT NOT NULL, snapshot TEXT, state TEXT,
    created REAL, changed REAL);
CREATE TABLE IF NOT EXISTS placements (
    node_id TEXT PRIMARY KEY, typology TEXT NOT NULL, stage TEXT, idx INTEGER,
    worker_id TEXT, generation INTEGER, spec_json TEXT, state TEXT,
    restarts INTEGER NOT NULL DEFAULT 0, last_error TEXT, endpoint TEXT);
CREATE INDEX IF NOT EXISTS placements_by_typology ON placements (typology);
CREATE INDEX IF NOT EXISTS placements_by_worker ON placements (worker_id);
CREATE TABLE IF NOT EXISTS runs (
    typology TEXT NOT NULL, run_id TEXT NOT NULL, started REAL, ended REAL,
    items INTEGER, failed INTEGER, state TEXT, PRIMARY KEY (typology, run_id));
"""

PLACEMENT_FIELDS = ('typology', 'stage', 'idx', 'worker_id', 'generation', 'spec', 'state',
                    'restarts', 'last_error', 'endpoint')
RUN_FIELDS = ('started', 'ended', 'items', 'failed', 'state')


class NotRecorded(RezinaError, LookupError):
    """A change names a worker, typology or placement that the state does not hold."""


def _row(cursor, values):
    """A row as a dict; `spec_json` comes back decoded, as `spec`."""
    row = {column[0]: value for column, value in zip(cursor.description, values)}
    if 'spec_json' in row:
        text = row.pop('spec_json')
        row['spec'] = None if text is None else json.loads(text)
    return row


def _spec_json(spec):
    return None if spec is None else json.dumps(spec)


def _connect(path, **kwargs):
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, **kwargs)
    conn.row_factory = _row
    return conn


class StateReader:
    """Read-only queries of the state, on a connection of their own."""

    def __init__(self, conn, path):
        self._conn = conn
        self.path = path

    def workers(self):
        return self._all('SELECT * FROM workers ORDER BY id')

    def typology(self, name):
        """The typology called `name`, or None."""
        rows = self._all('SELECT * FROM typologies WHERE name = ?', (name,))
        return rows[0] if rows else None

    def typologies(self):
        return self._all('SELECT * FROM typologies ORDER BY name')

    def placements(self, typology=None, worker_id=None):
        """Placements, of one typology and/or on one worker if given."""
        return self._all('SELECT * FROM placements WHERE (?1 IS NULL OR typology = ?1) '
                         'AND (?2 IS NULL OR worker_id = ?2) '
                         'ORDER BY typology, stage, idx, node_id', (typology, worker_id))

    def runs(self, typology, limit=50):
        """The last `limit` runs of `typology`, newest first."""
        return self._all('SELECT * FROM runs WHERE typology = ? '
                         'ORDER BY coalesce(started, ended) DESC, rowid DESC LIMIT ?',
                         (typology, limit))

    def _all(self, sql, args=()):
        return self._conn.execute(sql, args).fetchall()

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class State(StateReader):
    """The master's state in `state_dir`: the one writer. Build it with State.open()."""

    def __init__(self, conn, path, lock_fd, clock):
        super().__init__(conn, path)
        self._lock_fd = lock_fd
        self._clock = clock

    @classmethod
    def open(cls, state_dir, forget=False, clock=time.time):
        """Lock `state_dir` (creating it, mode 0700) and open its database.

        forget: rename an existing database aside first, as `-R` asks.
        """
        state_dir = os.path.abspath(os.path.expanduser(os.fspath(state_dir)))
        try:
            if not os.path.isdir(state_dir):
                os.makedirs(state_dir, mode=0o700)
            lock_fd = _take_lock(state_dir)
        except OSError as exc:
            raise RezinaError(f"cannot use state dir {state_dir}: {exc}") from None

        path, conn = os.path.join(state_dir, DB_NAME), None
        try:
            if forget:
                _set_aside(path)
            conn = _connect(path)
            _prepare(conn, path)
        except BaseException as exc:
            if conn is not None:
                conn.close()
            _release_lock(lock_fd)
            if isinstance(exc, (sqlite3.Error, OSError)):
                raise RezinaError(f"cannot open state database {path}: {exc}") from None
            raise
        return cls(conn, path, lock_fd, clock)

    def reader(self):
        """A read-only view on a new connection, for one other thread at a time."""
        conn = _connect(self.path, check_same_thread=False)
        conn.execute('PRAGMA query_only = ON')
        return StateReader(conn, self.path)

    # workers

    def upsert_worker(self, id, host, address, slots, session, state, last_heartbeat=None):
        """Record a worker, replacing what was known of it; the heartbeat defaults to now."""
        if last_heartbeat is None:
            last_heartbeat = self._clock()
        self._write('INSERT OR REPLACE INTO workers VALUES (?, ?, ?, ?, ?, ?, ?)',
                    (id, host, address, slots, session, state, last_heartbeat))

    def set_worker_state(self, id, state):
        self._change('worker', id, 'UPDATE workers SET state = ? WHERE id = ?', (state, id))

    # typologies

    def put_typology(self, name, spec, snapshot, state):
        """Record a typology; one put before keeps its `created` time."""
        now = self._clock()
        self._write('INSERT INTO typologies VALUES (?, ?, ?, ?, ?, ?) '
                    'ON CONFLICT (name) DO UPDATE SET spec_json = excluded.spec_json, '
                    'snapshot = excluded.snapshot, state = excluded.state, '
                    'changed = excluded.changed',
                    (name, _spec_json(spec), snapshot, state, now, now))

    def set_typology_state(self, name, state):
        self._change('typology', name,
                     'UPDATE typologies SET state = ?, changed = ? WHERE name = ?',
                     (state, self._clock(), name))

    def remove_typology(self, name):
        """Forget a typology and its placements (its runs stay); False if it was unknown."""
        with self._conn:
            self._conn.execute('BEGIN IMMEDIATE')
            self._conn.execute('DELETE FROM placements WHERE typology = ?', (name,))
            return self._conn.execute('DELETE FROM typologies WHERE name = ?',
                                      (name,)).rowcount > 0

    # placements

    def put_placement(self, node_id, typology, stage, idx, worker_id, generation, spec,
                      state, restarts=0, last_error=None, endpoint=None):
        """Record a node placement, replacing what was known of `node_id`."""
        self._write('INSERT OR REPLACE INTO placements VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                    (node_id, typology, stage, idx, worker_id, generation, _spec_json(spec),
                     state, restarts, last_error, endpoint))

    def update_placement(self, node_id, **fields):
        """Set some fields of a placement; a field that is not a column is a ValueError."""
        unknown = sorted(set(fields) - set(PLACEMENT_FIELDS))
        if unknown:
            raise ValueError(f"cannot update placement {node_id}: "
                             f"unknown field {', '.join(unknown)}")
        if not fields:
            return
        if 'spec' in fields:
            fields['spec_json'] = _spec_json(fields.pop('spec'))
        assignments = ', '.join(f'{column} = ?' for column in fields)
        self._change('placement', node_id,
                     f'UPDATE placements SET {assignments} WHERE node_id = ?',
                     (*fields.values(), node_id))

    def remove_placement(self, node_id):
        """Forget a placement; False if it was unknown."""
        return self._write('DELETE FROM placements WHERE node_id = ?', (node_id,)) > 0

    # runs

    def record_run(self, typology, run_id, started=None, ended=None, items=None,
                   failed=None, state=None):
        """Insert or update a run; the fields given replace, the ones left None stay."""
        merged = ', '.join(f'{field} = coalesce(excluded.{field}, {field})'
                           for field in RUN_FIELDS)
        self._write(f'INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?) '
                    f'ON CONFLICT (typology, run_id) DO UPDATE SET {merged}',
                    (typology, run_id, started, ended, items, failed, state))

    def close(self):
        """Close the database and release the lock on the state dir."""
        super().close()
        if self._lock_fd is not None:
            _release_lock(self._lock_fd)
            self._lock_fd = None

    def _write(self, sql, args):
        """Run one statement as a transaction; return the rows it changed."""
        with self._conn:
            self._conn.execute('BEGIN IMMEDIATE')
            return self._conn.execute(sql, args).rowcount

    def _change(self, what, key, sql, args):
        if self._write(sql, args) == 0:
            raise NotRecorded(f"cannot change {what} {key}: it is not in {self.path}")


def _take_lock(state_dir):
    """Lock the state dir for this process, with its pid in the lock file; return the fd."""
    lock_path = os.path.join(state_dir, LOCK_NAME)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder_pid(fd)
        os.close(fd)
        raise RezinaError(f"another rz-master (pid {holder}) is using {state_dir}") from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _holder_pid(fd):
    """The pid in a lock file held by another process; it may be between lock and write."""
    for _ in range(LOCK_PID_TRIES):
        text = os.pread(fd, 32, 0).decode('ascii', 'replace').strip()
        if text.isdigit():
            return int(text)
        time.sleep(0.01)
    return 'unknown'


def _release_lock(fd):
    os.ftruncate(fd, 0)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _set_aside(path):
    """Rename the database at `path`, with its WAL and shared memory, to a forgotten name."""
    if not os.path.exists(path):
        return
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
    aside = f"{path}.forgotten-{stamp}"
    for n in range(1, 100):
        if not os.path.exists(aside):
            break
        aside = f"{path}.forgotten-{stamp}.{n}"
    for suffix in ('', '-wal', '-shm'):
        if os.path.exists(path + suffix):
            os.rename(path + suffix, aside + suffix)
    log.info("forgot the saved state: moved %s to %s", path, aside)


def _prepare(conn, path):
    """Set WAL and FULL sync, and create the schema, or check the one there."""
    mode = conn.execute('PRAGMA journal_mode = WAL').fetchone()['journal_mode']
    if mode.lower() != 'wal':
        log.warning("%s: journal mode is %s, not WAL", path, mode)
    # FULL: a state change the master acts on must survive a power cut
    conn.execute('PRAGMA synchronous = FULL')
    with conn:
        conn.execute('BEGIN IMMEDIATE')
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                             "AND name = 'schema_version'").fetchone()
        version = found and conn.execute('SELECT max(version) AS v FROM schema_version'
                                         ).fetchone()['v']
        if version and version > SCHEMA_VERSION:
            raise RezinaError(f"cannot use state database {path}: its schema version is "
                              f"{version}, newer than {SCHEMA_VERSION}, which this "
                              f"rz-master knows")
        for statement in _SCHEMA.split(';'):
            if statement.strip():
                conn.execute(statement)
        if not version:
            conn.execute('INSERT INTO schema_version VALUES (?)', (SCHEMA_VERSION,))
