"""The sinks of rz-bocca: stdout, null, jsonl, sqlite and user StorageBackend classes."""

import datetime
import io
import json
import os
import sqlite3
import threading

import pytest

import fixtures_backends
from rezina.backends import Null, PlainFile, Sink, Stdout, StorageBackend, open_sink
from rezina.backends.jsonvalue import dumps_item
from rezina.errors import BadArgument, SinkError, UnknownFunction, UnknownSink, UsageError

FIXTURES = fixtures_backends.__name__
CITIES = ['São Paulo', 'Zürich', '東京', 'Île-de-France', 'Kraków', 'Αθήνα']
UTC = datetime.timezone.utc
PLUS2 = datetime.timezone(datetime.timedelta(hours=2))


def records(items, run='r1', start=0):
    """(item_id, run_id, item) records with ids RUN:SEQ."""
    return [(f"{run}:{start + seq}", run, item) for seq, item in enumerate(items)]


def query(path, sql, *params):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def columns(path, table='items'):
    return [row[1] for row in query(path, f'PRAGMA table_info("{table}")')]


# JSON rendering

def test_dumps_item_renders_bytes_datetimes_and_int_keys():
    item = {'b': b'\x00\xffok', 1: 'one', 'naive': datetime.datetime(2024, 5, 1, 12, 0),
            'aware': datetime.datetime(2024, 5, 1, 12, 0, tzinfo=PLUS2), 'city': 'Zürich'}
    text = dumps_item(item)
    assert text == ('{"b":"AP9vaw==","1":"one","naive":"2024-05-01T12:00:00",'
                    '"aware":"2024-05-01T12:00:00+02:00","city":"Zürich"}')


def test_dumps_item_matches_the_plain_json_encoder():
    from rezina.backends.jsonvalue import _ENCODER
    item = {'cities': CITIES, 'n': [0, -1, 2 ** 70, 1.5, float('inf')], 'none': None,
            'yes': True, 'nested': {'deep': [[{'x': 'Zürich\n"quoted"'}]]}, 7: 'seven',
            'when': datetime.datetime(2024, 1, 1, 0, 0, 0, 1, tzinfo=UTC), 'raw': b'\x00'}
    assert dumps_item(item) == _ENCODER.encode(item)
    assert json.loads(dumps_item(item))['nested'] == item['nested']


def test_dumps_item_refuses_what_is_not_an_item():
    with pytest.raises(TypeError, match='object is not an item type'):
        dumps_item([object()])


# stdout and null

def test_stdout_writes_one_json_line_per_item(opened):
    out = io.BytesIO()
    sink = opened('stdout', stdout=out)
    sink.write(records([{'city': city} for city in CITIES]))
    sink.write(records([[1, None, True], 'plain', 2.5], start=10))

    lines = out.getvalue().decode('utf-8').splitlines()
    assert [json.loads(line) for line in lines] == (
        [{'city': city} for city in CITIES] + [[1, None, True], 'plain', 2.5])
    assert '東京' in lines[2]     # kept as is, not \u escaped
    assert sink.idempotent is False


def test_stdout_flushes_at_the_end_of_each_write(opened, tmp_path):
    path = tmp_path / 'out'
    with open(path, 'wb', buffering=1 << 20) as stream:
        sink = opened('stdout', stdout=stream)
        sink.write(records(['a', 'b']))
        assert path.read_bytes() == b'"a"\n"b"\n'


def test_stdout_lets_a_broken_pipe_through(opened):
    read_end, write_end = os.pipe()
    os.close(read_end)
    with open(write_end, 'wb', buffering=0) as stream:
        sink = opened('stdout', stdout=stream)
        with pytest.raises(BrokenPipeError):
            sink.write(records(['lost']))


def test_unrenderable_item_fails_the_write_naming_its_id(opened):
    out = io.BytesIO()
    sink = opened('stdout', stdout=out)
    with pytest.raises(SinkError, match=r"cannot write item r1:1 to stdout: .*surrogates") \
            as caught:
        sink.write(records(['fine', 'bad \ud800']))
    # the items before it are written, and said to be; the bad one can never be
    assert out.getvalue() == b'"fine"\n'
    assert caught.value.written == 1 and caught.value.bad_item


def test_null_discards_and_is_idempotent(opened):
    sink = opened('null')
    sink.write(records([{'x': 1}, b'raw', object()]))
    assert sink.idempotent is True


# jsonl

def test_jsonl_appends_lines_across_sinks(opened, tmp_path):
    path = tmp_path / 'out.jsonl'
    path.write_bytes(b'{"old":true}\n')
    first = opened(f'jsonl:{path}')
    first.write(records([{'city': 'São Paulo', 'at': datetime.datetime(2024, 1, 2, 3, 4, 5)}]))
    first.close()
    second = opened(f'jsonl:{path}')
    second.write(records([{'city': '東京', 'raw': b'\x01\x02'}, [1, [2]]], run='r2'))

    assert path.read_bytes().decode('utf-8').splitlines() == [
        '{"old":true}',
        '{"city":"São Paulo","at":"2024-01-02T03:04:05"}',
        '{"city":"東京","raw":"AQI="}',
        '[1,[2]]',
    ]
    assert second.idempotent is False


def test_jsonl_creates_a_missing_file(opened, tmp_path):
    path = tmp_path / 'new.jsonl'
    opened(f'jsonl:{path}').write(records([1, 2]))
    assert path.read_text() == '1\n2\n'


def test_jsonl_in_a_missing_directory_fails_naming_it(tmp_path):
    missing = tmp_path / 'nowhere'
    sink = open_sink(f'jsonl:{missing}/out.jsonl')
    with pytest.raises(SinkError, match=f"directory '{missing}' does not exist"):
        sink.open()


def test_jsonl_starts_a_new_line_after_a_cut_short_one(opened, tmp_path):
    path = tmp_path / 'out.jsonl'
    path.write_bytes(b'{"cut": ')
    opened(f'jsonl:{path}').write(records(['next']))
    assert path.read_bytes() == b'{"cut": \n"next"\n'


def test_jsonl_write_stops_at_an_unrenderable_item_after_the_lines_before_it(
        opened, tmp_path):
    path = tmp_path / 'out.jsonl'
    sink = opened(f'jsonl:{path}')
    sink.write(records(['kept']))
    with pytest.raises(SinkError, match=r"item r2:1 to jsonl:.*not an item type") as caught:
        sink.write(records(['ok', {'bad': {1, 2}}, 'after'], run='r2'))
    assert path.read_text() == '"kept"\n"ok"\n'
    assert caught.value.written == 1 and caught.value.bad_item


def test_plainfile_is_a_storage_backend_for_the_python_api(tmp_path):
    path = tmp_path / 'api.jsonl'
    backend = PlainFile(None, str(path))
    backend.open()
    backend.write({'city': 'Zürich'})
    backend.write(['a', 'batch'])
    backend.close()
    assert path.read_text(encoding='utf-8') == '{"city":"Zürich"}\n["a","batch"]\n'
    assert all(issubclass(cls, StorageBackend) for cls in (Stdout, PlainFile, Null))


# sqlite

def test_sqlite_stores_a_redelivered_item_once_and_the_first_write_wins(opened, tmp_path):
    db = tmp_path / 'w.db'
    sink = opened(f'sqlite:{db}')
    sink.write(records([{'city': c, 'n': i} for i, c in enumerate(CITIES[:3])]))
    sink.write(records([{'city': 'changed', 'n': 99}] * 3, start=1))

    assert query(db, 'SELECT rz_id, rz_run, city, n FROM items ORDER BY rz_id') == [
        ('r1:0', 'r1', 'São Paulo', 0), ('r1:1', 'r1', 'Zürich', 1),
        ('r1:2', 'r1', '東京', 2), ('r1:3', 'r1', 'changed', 99)]
    assert sink.idempotent is True


def test_sqlite_keeps_the_first_of_an_id_repeated_in_one_write(opened, tmp_path):
    db = tmp_path / 'w.db'
    opened(f'sqlite:{db}').write([('r:1', 'r', {'v': 'first'}), ('r:1', 'r', 'second'),
                                  ('r:1', 'r', {'v': 'third'})])
    assert query(db, 'SELECT rz_id, v, item FROM items') == [('r:1', 'first', None)]


def test_sqlite_uses_wal_mode(opened, tmp_path):
    db = tmp_path / 'w.db'
    opened(f'sqlite:{db}').write(records([{'x': 1}]))
    assert query(db, 'PRAGMA journal_mode') == [('wal',)]


def test_sqlite_adds_columns_as_new_keys_appear(opened, tmp_path):
    db = tmp_path / 'w.db'
    sink = opened(f'sqlite:{db}')
    sink.write(records([{'city': 'Zürich'}]))
    sink.write(records([{'city': 'Kraków', 'temp': 3.5}, {'wind': 'NW'}], start=1))
    sink.close()
    opened(f'sqlite:{db}').write(records([{'city': 'Αθήνα', 'humidity': 40}], run='r2'))

    assert columns(db) == ['rz_id', 'rz_run', 'city', 'temp', 'wind', 'humidity']
    assert query(db, 'SELECT rz_id, city, temp, wind, humidity FROM items ORDER BY rz_id') == [
        ('r1:0', 'Zürich', None, None, None), ('r1:1', 'Kraków', 3.5, None, None),
        ('r1:2', None, None, 'NW', None), ('r2:0', 'Αθήνα', None, None, 40)]


def test_sqlite_puts_non_dict_items_in_the_item_column(opened, tmp_path):
    db = tmp_path / 'w.db'
    opened(f'sqlite:{db}').write(records(
        ['Zürich', 7, 2.5, None, True, [1, {'a': 'b'}], b'\x00\x01', {'k': 'v'}]))
    rows = query(db, 'SELECT item, typeof(item), k FROM items ORDER BY rz_id')
    assert rows == [('Zürich', 'text', None), (7, 'integer', None), (2.5, 'real', None),
                    (None, 'null', None), (1, 'integer', None),
                    ('[1,{"a":"b"}]', 'text', None), (b'\x00\x01', 'blob', None),
                    (None, 'null', 'v')]


def test_sqlite_stores_nested_values_as_json_text(opened, tmp_path):
    db = tmp_path / 'w.db'
    item = {'tags': ['warm', 'dry'], 'wind': {'dir': 'NW', 'speed': 12, 1: 'int key'},
            'when': [datetime.datetime(2024, 1, 1, tzinfo=UTC), b'\xff']}
    opened(f'sqlite:{db}').write(records([item]))
    tags, wind, when = query(db, 'SELECT tags, wind, "when" FROM items')[0]
    assert json.loads(tags) == ['warm', 'dry']
    assert json.loads(wind) == {'dir': 'NW', 'speed': 12, '1': 'int key'}
    assert json.loads(when) == ['2024-01-01T00:00:00+00:00', '/w==']


def test_sqlite_keeps_unicode_names_and_values_unchanged(opened, tmp_path):
    db = tmp_path / 'w.db'
    opened(f'sqlite:{db}').write(records([{'city': city, city: len(city)} for city in CITIES]))
    assert query(db, 'SELECT city FROM items ORDER BY rz_id') == [(c,) for c in CITIES]
    assert columns(db)[3:] == CITIES
    assert query(db, 'SELECT "東京", "Île-de-France" FROM items WHERE rz_id = ?', 'r1:2') == [
        (2, None)]


def test_sqlite_stores_bytes_datetimes_bools_and_big_ints(opened, tmp_path):
    db = tmp_path / 'w.db'
    opened(f'sqlite:{db}').write(records([{
        'raw': b'\x00\xff', 'naive': datetime.datetime(2024, 5, 1, 12, 30, 0, 250),
        'aware': datetime.datetime(2024, 5, 1, 12, 30, tzinfo=PLUS2),
        'yes': True, 'no': False, 'big': 2 ** 64 - 1, 'small': -2 ** 63}]))
    row = query(db, 'SELECT raw, typeof(raw), naive, aware, yes, no, big, small FROM items')
    assert row == [(b'\x00\xff', 'blob', '2024-05-01T12:30:00.000250',
                    '2024-05-01T12:30:00+02:00', 1, 0, '18446744073709551615', -2 ** 63)]


def test_sqlite_quotes_awkward_keys(opened, tmp_path):
    db = tmp_path / 'w.db'
    keys = ['with space', 'a "quote"', "it's", 'select', '', 'semi;colon', 42, 'nul\0char']
    opened(f'sqlite:{db}').write(records([{key: i for i, key in enumerate(keys)}]))
    names = ['with space', 'a "quote"', "it's", 'select', '', 'semi;colon', '42',
             'nul\ufffdchar']
    assert columns(db)[2:] == names
    assert query(db, 'SELECT * FROM items') == [('r1:0', 'r1', *range(len(keys)))]


def test_sqlite_folds_keys_differing_only_by_ascii_case_into_one_column(opened, tmp_path):
    db = tmp_path / 'w.db'
    sink = opened(f'sqlite:{db}')
    sink.write(records([{'City': 'Zürich'}, {'CITY': 'Kraków'}, {'city': 'a', 'City': 'b'}]))
    sink.write(records([{'cItY': 'Αθήνα', 'ZÜRICH': 1, 'zÜrich': 2}], run='r2'))

    assert columns(db) == ['rz_id', 'rz_run', 'City', 'zÜrich']
    assert query(db, 'SELECT city, "zÜRICH" FROM items ORDER BY rz_id') == [
        ('Zürich', None), ('Kraków', None), ('b', None), ('Αθήνα', 2)]


def test_sqlite_keeps_an_items_own_rz_id_apart_from_the_item_id(opened, tmp_path):
    db = tmp_path / 'w.db'
    opened(f'sqlite:{db}').write(records([{'rz_id': 'mine', 'RZ_RUN': 5, 'v': 1}]))
    assert columns(db) == ['rz_id', 'rz_run', 'item_rz_id', 'item_RZ_RUN', 'v']
    assert query(db, 'SELECT * FROM items') == [('r1:0', 'r1', 'mine', 5, 1)]


def test_sqlite_table_option_names_the_table(opened, tmp_path):
    db = tmp_path / 'w.db'
    opened(f'sqlite:{db}?table=weather_2024').write(records([{'city': 'Zürich'}]))
    tables = query(db, "SELECT name FROM sqlite_master WHERE type = 'table'")
    assert tables == [('weather_2024',)]
    assert query(db, 'SELECT city FROM weather_2024') == [('Zürich',)]


@pytest.mark.parametrize('table', ['', 'bad-name', 'a b', 'x;DROP', 'sqlite_master', 'Ünï'])
def test_sqlite_bad_table_name_is_an_unknown_sink(tmp_path, table):
    spec = f'sqlite:{tmp_path}/w.db?table={table}'
    with pytest.raises(UnknownSink, match='bad table name') as caught:
        open_sink(spec)
    assert repr(table) in str(caught.value) and repr(spec) in str(caught.value)


def test_sqlite_unknown_option_is_an_unknown_sink(tmp_path):
    with pytest.raises(UnknownSink, match=r"unknown option 'mode=fast'"):
        open_sink(f'sqlite:{tmp_path}/w.db?mode=fast')


def test_sqlite_failed_write_is_rolled_back_whole(opened, tmp_path):
    db = tmp_path / 'w.db'
    sink = opened(f'sqlite:{db}')
    sink.write(records([{'city': 'Zürich'}]))

    # the second item cannot be encoded as UTF-8 when SQLite binds it
    batch = records([{'city': 'Kraków', 'new': 1}, {'city': 'bad \ud800', 'new': 2}], run='r2')
    with pytest.raises(SinkError, match=r"cannot write item r2:1 to sqlite:.*surrogates"):
        sink.write(batch)
    assert query(db, 'SELECT rz_id FROM items') == [('r1:0',)]
    assert columns(db) == ['rz_id', 'rz_run', 'city']

    # a value that is no item type fails before SQLite sees it, naming the item
    with pytest.raises(SinkError, match=r"item r3:1 .*set is not an item type"):
        sink.write(records([{'other': 1}, {'other': {1}}], run='r3'))
    assert columns(db) == ['rz_id', 'rz_run', 'city']

    # the same ids go in once the batch is fixed, new column included
    fixed = [{'city': 'Kraków', 'new': 1}, {'city': 'Αθήνα', 'new': 2}]
    sink.write(records(fixed, run='r2'))
    assert query(db, 'SELECT rz_id, city, new FROM items ORDER BY rz_id') == [
        ('r1:0', 'Zürich', None), ('r2:0', 'Kraków', 1), ('r2:1', 'Αθήνα', 2)]


def test_sqlite_write_in_a_locked_database_fails_and_stores_nothing(opened, tmp_path,
                                                                    monkeypatch):
    db = tmp_path / 'w.db'
    monkeypatch.setattr('rezina.backends.sqlite.BUSY_TIMEOUT', 0.05)
    sink = opened(f'sqlite:{db}')
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute('BEGIN IMMEDIATE')
        with pytest.raises(SinkError, match=r"cannot write 2 items to sqlite:.*locked"):
            sink.write(records([{'a': 1}, {'a': 2}]))
        holder.execute('ROLLBACK')
    finally:
        holder.close()
    sink.write(records([{'a': 1}, {'a': 2}]))
    assert query(db, 'SELECT count(*) FROM items') == [(2,)]


def test_sqlite_sees_columns_another_writer_added(opened, tmp_path):
    db = tmp_path / 'w.db'
    first, second = opened(f'sqlite:{db}'), opened(f'sqlite:{db}')
    first.write(records([{'a': 1}]))
    second.write(records([{'a': 2, 'b': 2}], run='r2'))
    first.write(records([{'a': 3, 'B': 3}], run='r3'))
    assert query(db, 'SELECT a, b FROM items ORDER BY rz_id') == [(1, None), (2, 2), (3, 3)]


def test_sqlite_in_a_missing_directory_fails_naming_it(tmp_path):
    sink = open_sink(f'sqlite:{tmp_path}/nowhere/w.db')
    with pytest.raises(SinkError, match=f"directory '{tmp_path}/nowhere' does not exist"):
        sink.open()


def test_sqlite_on_a_file_that_is_no_database_fails_naming_it(tmp_path):
    db = tmp_path / 'notes.txt'
    db.write_text('just text, long enough to be read as a header ' * 4)
    with pytest.raises(SinkError, match=f"cannot open sqlite:{db}: file is not a database"):
        open_sink(f'sqlite:{db}').open()


def test_sqlite_refuses_a_table_without_an_rz_id_key(tmp_path):
    db = tmp_path / 'w.db'
    query(db, 'CREATE TABLE items (city TEXT)')
    with pytest.raises(SinkError, match="table 'items' .* without an rz_id primary key"):
        open_sink(f'sqlite:{db}').open()


def test_sqlite_writes_a_thousand_items_in_one_transaction(opened, tmp_path):
    db = tmp_path / 'w.db'
    sink = opened(f'sqlite:{db}')
    batch = records([{'city': CITIES[i % 6], 'n': i, 'tags': [i]} for i in range(1000)])
    sink.write(batch)
    sink.write(batch)
    assert query(db, 'SELECT count(*), sum(n) FROM items') == [(1000, sum(range(1000)))]


# spec parsing

def test_unknown_spec_is_an_unknown_sink_naming_what_is_expected():
    with pytest.raises(UnknownSink) as caught:
        open_sink('foo')
    assert str(caught.value) == (
        "unknown sink 'foo': expected stdout, null, jsonl:PATH, csv:PATH, "
        "sqlite:PATH[?table=NAME] or MODULE:CLASS")


@pytest.mark.parametrize('spec', ['', 'out.jsonl', 'jsonl:', 'sqlite:', 'sqlite:?table=x',
                                  'a b:C', 'mod:', 'csv:',
                                  'postgresql://'])
def test_specs_that_name_no_sink_are_unknown_sinks(spec):
    with pytest.raises(UnknownSink, match=repr(spec).replace('?', r'\?')):
        open_sink(spec)


def test_builtin_sinks_take_no_arguments():
    with pytest.raises(BadArgument, match="sink 'stdout' takes no arguments"):
        open_sink('stdout', args=['x'])


def test_a_mode_other_than_stream_or_batch_is_a_usage_error():
    with pytest.raises(UsageError, match="--mode must be stream or batch, not 'fast'"):
        open_sink('null', mode='fast')


# user backends

def test_user_backend_in_stream_mode_gets_one_item_per_write(opened, tmp_path):
    log_path = tmp_path / 'calls.jsonl'
    sink = opened(f'{FIXTURES}:CallLog', args=[str(log_path)], kwargs={'label': 'weather'},
                  mode='stream')
    sink.write(records([{'city': 'Zürich'}, ['a', 'list'], 'São Paulo']))
    sink.close()

    calls = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert calls == [
        {'call': 'open', 'label': 'weather', 'logger': 'rezina.backends.user'},
        {'call': 'write', 'message': {'city': 'Zürich'}},
        {'call': 'write', 'message': ['a', 'list']},
        {'call': 'write', 'message': 'São Paulo'},
        {'call': 'close'}]
    assert sink.idempotent is False


def test_user_backend_in_batch_mode_gets_a_list_per_write(opened, tmp_path):
    log_path = tmp_path / 'calls.jsonl'
    sink = opened(f'{FIXTURES}:CallLog', args=[str(log_path)], mode='batch')
    sink.write(records([{'city': 'Zürich'}, 'São Paulo']))
    sink.write(records(['東京'], start=2))

    calls = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert calls[1:] == [
        {'call': 'write', 'message': [{'city': 'Zürich'}, 'São Paulo']},
        {'call': 'write', 'message': ['東京']}]


def test_user_backend_that_fails_to_write_raises_sink_error(opened):
    sink = opened(f'{FIXTURES}:FailingWrite', mode='stream')
    with pytest.raises(SinkError) as caught:
        sink.write(records([{'city': 'Zürich'}]))
    assert str(caught.value) == (
        f"backend {FIXTURES}:FailingWrite failed to write: TypeError: cannot store dict")


def test_user_backend_that_fails_to_open_raises_sink_error():
    sink = open_sink(f'{FIXTURES}:FailingOpen')
    with pytest.raises(SinkError, match=r"failed to open: ConnectionRefusedError: store at"):
        sink.open()


def test_user_class_that_is_not_a_storage_backend_is_an_unknown_sink():
    with pytest.raises(UnknownSink, match="is not a rezina.backends.StorageBackend subclass: "
                                          "it is class NotABackend"):
        open_sink(f'{FIXTURES}:NotABackend')
    with pytest.raises(UnknownSink, match="it is a function"):
        open_sink(f'{FIXTURES}:not_a_class')


def test_user_class_built_with_wrong_arguments_is_an_unknown_sink():
    with pytest.raises(UnknownSink, match=r"cannot build sink .*NeedsAnArgument.*TypeError"):
        open_sink(f'{FIXTURES}:NeedsAnArgument')
    assert isinstance(open_sink(f'{FIXTURES}:NeedsAnArgument', args=['here']), Sink)


def test_user_class_that_does_not_import_is_an_unknown_function():
    with pytest.raises(UnknownFunction, match="No module named 'no_such_module'"):
        open_sink('no_such_module:Backend')
    with pytest.raises(UnknownFunction, match="has no attribute 'Missing'"):
        open_sink(f'{FIXTURES}:Missing')


def test_builtin_backend_named_as_a_class_writes_one_line_per_item(opened, tmp_path):
    path = tmp_path / 'out.jsonl'
    sink = opened('rezina.backends:PlainFile', args=[str(path)], mode='batch')
    sink.write(records([{'city': 'Zürich'}, [1, 2]]))
    assert path.read_text(encoding='utf-8') == '{"city":"Zürich"}\n[1,2]\n'


def test_builtin_backend_refuses_arguments_it_does_not_take(tmp_path):
    with pytest.raises(UnknownSink, match=r"cannot build sink 'rezina.backends:PlainFile'"):
        open_sink('rezina.backends:PlainFile', args=[str(tmp_path / 'x'), 'w'])


def test_sqlite_sink_may_write_from_another_thread_than_it_opened_in(opened, tmp_path):
    db = tmp_path / 'w.db'
    sink = opened(f'sqlite:{db}')
    failures = []

    def write():
        try:
            sink.write(records([{'city': 'Zürich'}]))
        except Exception as exc:  # reported by the assertion below
            failures.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    writer.join(timeout=10)
    assert not writer.is_alive() and failures == []
    assert query(db, 'SELECT city FROM items') == [('Zürich',)]
