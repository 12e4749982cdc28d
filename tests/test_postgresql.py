"""The postgresql:// sink against a real PostgreSQL server (tests/pgserver.py): typed
columns, columns added and widened as items need, one row per item id however often it
is delivered, one-line errors, and a server killed mid-run that loses nothing."""

import datetime
import logging
import subprocess
import sys
import time

import pytest

import pgserver
from faults import checker
from conftest import finish_chain, stderr_of, wait_for
from rezina import exitcodes
from rezina.backends import open_sink
from rezina.backends.base import BackendDown
from rezina.errors import SinkError

WHY_NOT = pgserver.missing()
needs_server = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or '')


@pytest.fixture(scope='module')
def pg():
    """One server for the module; stopped by pid and removed, pass or fail."""
    server = pgserver.Server()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def sql(pg):
    """sql(query, *params): the rows a query returns, on a connection of its own (the
    server may have been restarted since the last)."""
    import psycopg

    def run(query, *params):
        with psycopg.connect(pg.uri(), autocommit=True) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else None

    return run


def column_types(sql, table):
    return dict(sql("SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                    table))


def hydrant_into(procs, uri, run_id, *source):
    """rz-hydrant --run-id run_id SOURCE | rz-bocca uri; returns (exit codes, stderrs)."""
    chain = procs.pipeline(['rz-hydrant', '--name', 't', '--run-id', run_id, *source],
                           ['rz-bocca', uri], stdout=subprocess.DEVNULL)
    codes, _, errors = finish_chain(chain)
    return codes, errors


@needs_server
def test_a_pipeline_stores_dicts_as_rows_with_typed_columns(procs, pg, sql):
    codes, errors = hydrant_into(procs, pg.uri('typed'), 'a', 'pgserver:rows', '200')

    assert codes == [0, 0], errors
    assert column_types(sql, 'typed') == {
        'rz_id': 'text', 'rz_run': 'text', 'n': 'bigint', 'half': 'double precision',
        'even': 'boolean', 'name': 'text', 'tags': 'jsonb'}
    rows = sql('SELECT rz_id, rz_run, n, half, even, name, tags FROM typed ORDER BY n')
    assert len(rows) == 200
    assert rows[7] == ('t/a:7', 't/a', 7, 3.5, False, 'item 7', [7])
    assert 'stored 200 items' in errors[1]


@needs_server
def test_new_keys_add_columns_and_old_rows_leave_them_null(procs, pg, sql):
    assert hydrant_into(procs, pg.uri('grown'), 'a', 'pgserver:rows', '3')[0] == [0, 0]
    codes, errors = hydrant_into(procs, pg.uri('grown'), 'b', 'pgserver:rows', '3',
                                 'colour', 'size')

    assert codes == [0, 0], errors
    assert column_types(sql, 'grown').keys() >= {'colour', 'size'}
    assert column_types(sql, 'grown')['colour'] == 'text'
    assert sql('SELECT rz_id, colour, size FROM grown ORDER BY rz_id') == [
        ('t/a:0', None, None), ('t/a:1', None, None), ('t/a:2', None, None),
        ('t/b:0', 'colour 0', 'size 0'), ('t/b:1', 'colour 1', 'size 1'),
        ('t/b:2', 'colour 2', 'size 2')]


@needs_server
def test_a_run_delivered_twice_is_stored_once_and_the_first_write_wins(procs, pg, sql):
    assert hydrant_into(procs, pg.uri('twice'), 'same', 'pgserver:rows', '50')[0] == [0, 0]
    codes, errors = hydrant_into(procs, pg.uri('twice'), 'same', 'pgserver:rows', '60',
                                 'colour')

    assert codes == [0, 0], errors
    assert sql('SELECT count(*), count(DISTINCT rz_id), count(colour) FROM twice') == [
        (60, 60, 10)]
    assert sql("SELECT colour FROM twice WHERE rz_id = 't/same:49'") == [(None,)]


@pytest.mark.parametrize('where, status, expected', [
    ('127.0.0.1:{port}/nosuchdb', exitcodes.FAILED,
     "rz-bocca: cannot open postgresql://postgres:***@127.0.0.1:{port}/nosuchdb: "
     "connection failed: "),
    ('127.0.0.1:{port}/postgres?table=no-such', exitcodes.USAGE,
     "rz-bocca: bad table name 'no-such' in sink "
     "'postgresql://postgres:***@127.0.0.1:{port}/postgres?table=no-such': expected up to "
     "63 letters, digits and underscores, not starting with pg_\n"),
    ('127.0.0.1:{port}/postgres?tabel=x', exitcodes.USAGE,
     "rz-bocca: bad sink 'postgresql://postgres:***@127.0.0.1:{port}/postgres?tabel=x': "
     "invalid URI query parameter: \"tabel\"\n"),
    ('[::1/postgres', exitcodes.USAGE,
     "rz-bocca: bad sink 'postgresql://postgres:***@[::1/postgres': end of string reached "
     "when looking for matching \"]\" in IPv6 host address in URI: "
     "\"postgresql://postgres:***@[::1/postgres\"\n"),
])
@needs_server
def test_a_bad_uri_or_table_name_is_a_one_line_error_without_the_password(
        procs, pg, where, status, expected):
    uri = f"postgresql://postgres:hunter2@{where.format(port=pg.port)}"
    bocca = procs.start(['rz-bocca', uri], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)

    assert bocca.wait(timeout=30) == status
    err = stderr_of(bocca)
    assert err.startswith(expected.format(port=pg.port)), err
    assert err.count('\n') == 1 and 'hunter2' not in err


def test_without_psycopg_the_error_names_the_extra(procs, tmp_path):
    hidden = tmp_path / 'psycopg'
    hidden.mkdir()
    (hidden / '__init__.py').write_text('raise ImportError("hidden by the test")\n')
    bocca = procs.start(['rz-bocca', 'postgresql://me:pw@127.0.0.1:1/db'],
                        stdin=subprocess.DEVNULL, env={'PYTHONPATH': str(tmp_path)})

    assert bocca.wait(timeout=30) == exitcodes.FAILED
    assert stderr_of(bocca) == ("rz-bocca: postgresql://me:***@127.0.0.1:1/db: needs psycopg: "
                                "pip install 'rezina[postgresql]'\n")


# the sink itself

@pytest.fixture
def sink(pg):
    opened = []

    def open_one(table):
        one = open_sink(pg.uri(table))
        one.open()
        opened.append(one)
        return one

    yield open_one
    for one in opened:
        one.close()


def records(run, items):
    return [(f'{run}:{seq}', run, item) for seq, item in enumerate(items)]


@needs_server
def test_a_value_that_does_not_fit_its_column_widens_it(sink, sql):
    items = sink('widened')
    items.write(records('a', [{'n': 1, 'ok': True, 'at': 'noon'}]))
    items.write(records('b', [{'n': 2.5, 'ok': 'yes'}, {'n': 3, 'ok': None}]))
    items.write(records('c', [{'n': 1 << 70, 'at': datetime.datetime(2024, 5, 1, 12)},
                              'not a dict']))

    assert column_types(sql, 'widened') == {
        'rz_id': 'text', 'rz_run': 'text', 'n': 'jsonb', 'ok': 'jsonb', 'at': 'jsonb',
        'item': 'text'}
    assert sql('SELECT rz_id, n, ok, at, item FROM widened ORDER BY rz_id') == [
        ('a:0', 1, True, 'noon', None), ('b:0', 2.5, 'yes', None, None),
        ('b:1', 3, None, None, None), ('c:0', 1 << 70, None, '2024-05-01T12:00:00', None),
        ('c:1', None, None, None, 'not a dict')]


@needs_server
def test_a_first_write_of_mixed_types_makes_a_wide_column_and_says_so(sink, sql, caplog):
    items = sink('mixed')
    with caplog.at_level(logging.WARNING, logger='rezina.backends.postgresql'):
        items.write(records('a', [{'n': 1, 'same': 'x'}, {'n': 'two', 'same': 'y'}]))
    assert column_types(sql, 'mixed')['n'] == 'jsonb'
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "column 'n' of table mixed is jsonb, not bigint" in said[0]


@needs_server
def test_a_value_postgresql_cannot_hold_fails_its_item_after_storing_those_before(
        sink, sql):
    items = sink('nul')
    batch = records('a', [{'s': 'fine'}, {'s': 'fine too'}, {'s': 'no\0'}, {'s': 'after'}])
    with pytest.raises(SinkError) as caught:
        items.write(batch)

    assert (caught.value.written, caught.value.bad_item) == (2, True)
    assert str(caught.value).startswith("cannot write item a:2 to ")
    assert 'cannot hold a NUL character' in str(caught.value)
    items.write(batch[3:])
    assert sql('SELECT rz_id FROM nul ORDER BY rz_id') == [('a:0',), ('a:1',), ('a:3',)]


@needs_server
def test_a_killed_server_is_backend_down_and_the_next_write_reconnects(pg, sink, sql):
    items = sink('reconnect')
    items.write(records('a', [{'n': 1}]))
    pg.kill()
    try:
        with pytest.raises(BackendDown):
            items.write(records('b', [{'n': 2}]))
        with pytest.raises(BackendDown, match='cannot open'):
            items.write(records('b', [{'n': 2}]))
    finally:
        pg.start()

    items.write(records('b', [{'n': 2}, {'n': 3}]))
    assert sql('SELECT rz_id, n FROM reconnect ORDER BY rz_id') == [
        ('a:0', 1), ('b:0', 2), ('b:1', 3)]


@needs_server
def test_a_server_killed_mid_run_and_restarted_stores_every_item_once(
        procs, pg, sql, tmp_path, long_run):
    gate, total = tmp_path / 'gate', 2000
    down = 20.0 if long_run else 0.0        # with --long, the server stays down 20 s
    hydrant, bocca = procs.pipeline(
        ['rz-hydrant', '--name', 't', '--run-id', 'k', 'pgserver:steady', str(total),
         str(gate)],
        ['rz-bocca', pg.uri('killed')], stdout=subprocess.DEVNULL)

    def stored():
        try:
            return sql('SELECT count(*) FROM killed')[0][0]
        except Exception:       # the table is not made yet
            return 0

    wait_for(lambda: stored() >= 100, what='the first items stored')
    pg.kill()       # while items still flow: the source has three quarters to give
    killed_at = time.monotonic()
    try:
        gate.touch()
        wait_for(lambda: 'retrying in' in stderr_of(bocca), what='a failed write')
        time.sleep(max(0.0, killed_at + down - time.monotonic()))   # the outage itself
    finally:
        pg.start()
    back_at = time.monotonic()
    wait_for(lambda: 'the sink writes again' in stderr_of(bocca), timeout=60,
             what='the sink to write again')
    recovery = time.monotonic() - back_at

    assert [hydrant.wait(timeout=60), bocca.wait(timeout=60)] == [0, 0], stderr_of(bocca)
    assert sql('SELECT count(*), count(DISTINCT rz_id), min(n), max(n) FROM killed') == [
        (total, total, 0, total - 1)]
    ids = [row[0] for row in sql('SELECT rz_id FROM killed')]
    counts = checker.check([f't/k:{i}' for i in range(total)], ids)
    checker.record(f"PostgreSQL sink's server down {down:g} s", counts, [recovery])
    assert counts['lost'] == 0 and counts['duplicated'] == 0 and counts['unexpected'] == 0


def test_importing_the_sink_does_not_import_psycopg():
    code = ("import sys, rezina.backends.sink, rezina.backends.postgresql; "
            "sys.exit('psycopg' in sys.modules)")
    assert subprocess.run([sys.executable, '-c', code], timeout=30).returncode == 0


@needs_server
def test_a_table_changed_by_another_session_is_read_again(sink, sql):
    first, second = sink('shared'), sink('shared')
    first.write(records('a', [{'v': 1}]))
    second.write(records('b', [{'v': 'text'}]))     # widens v, which first does not know
    first.write(records('c', [{'v': 2}]))
    sql('DROP TABLE shared')
    second.write(records('d', [{'w': True}]))

    assert sql('SELECT rz_id, w FROM shared') == [('d:0', True)]
    assert column_types(sql, 'shared') == {'rz_id': 'text', 'rz_run': 'text', 'w': 'boolean'}


@needs_server
def test_a_table_without_an_rz_id_primary_key_is_refused_in_one_line(procs, pg, sql):
    sql('CREATE TABLE plain (rz_id text, n int)')
    bocca = procs.start(['rz-bocca', pg.uri('plain')], stdin=subprocess.DEVNULL)

    assert bocca.wait(timeout=30) == exitcodes.FAILED
    assert stderr_of(bocca) == (
        f"rz-bocca: cannot use table 'plain' of {pg.uri('plain')}: "
        f"it exists without an rz_id primary key\n")


@needs_server
def test_an_item_the_server_refuses_fails_alone_and_the_others_are_stored(procs, pg, sql):
    sql('CREATE TABLE checked (rz_id text PRIMARY KEY, rz_run text, item bigint '
        'CHECK (item <> 3))')
    chain = procs.pipeline(['rz-hydrant', '--name', 't', '--run-id', 'c',
                            'fixtures_funcs:numbers', '6'],
                           ['rz-bocca', '--mode', 'batch', pg.uri('checked')],
                           stdout=subprocess.DEVNULL)
    codes, _, errors = finish_chain(chain)

    assert codes == [0, exitcodes.FAILED], errors
    assert sql('SELECT item FROM checked ORDER BY item') == [(0,), (1,), (2,), (4,), (5,)]
    assert 't/c:3' in errors[1] and 'violates check constraint' in errors[1]
