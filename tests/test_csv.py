"""The csv:PATH sink: its rows, header and failures, and rz-bocca writing it for real."""

import csv
import datetime
import logging
import os
import socket
import subprocess

import pytest

import fixtures_csv
from conftest import finish, stderr_of
from rezina import exitcodes
from rezina.backends import StorageBackend, open_sink
from rezina.backends.csvfile import CsvFile
from rezina.errors import BadArgument, SinkError, UnknownSink

PLUS2 = datetime.timezone(datetime.timedelta(hours=2))


def records(items, run='r1', start=0):
    """(item_id, run_id, item) records with ids RUN:SEQ."""
    return [(f"{run}:{start + seq}", run, item) for seq, item in enumerate(items)]


def read_rows(path):
    """Every record of the CSV file at `path`, header first."""
    with open(path, encoding='utf-8', newline='') as text:
        return list(csv.reader(text, strict=True))


def dropped_keys(caplog):
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and 'dropped' in r.getMessage()]


# header and cells

def test_header_is_the_first_items_keys_in_their_order(opened, tmp_path):
    path = tmp_path / 'out.csv'
    sink = opened(f'csv:{path}')
    sink.write(records([{'city': 'Zürich', 'rank': 1, 'area': 87.9}]))
    sink.write(records([{'area': 1.5, 'city': '東京', 'rank': 2}], start=1))

    assert path.read_bytes() == ('city,rank,area\r\nZürich,1,87.9\r\n東京,2,1.5\r\n'
                                 ).encode('utf-8')
    assert sink.idempotent is False


def test_cells_render_like_the_json_lines_sinks(opened, tmp_path):
    path = tmp_path / 'out.csv'
    item = {'none': None, 'yes': True, 'no': False, 'int': -7, 'big': 2 ** 70,
            'float': 0.1, 'nan': float('nan'), 'text': 'Kraków',
            'naive': datetime.datetime(2024, 5, 1, 12, 0),
            'aware': datetime.datetime(2024, 5, 1, 12, 0, tzinfo=PLUS2),
            'raw': b'\x00\xffok', 'list': [1, 'a,b', None], 'dict': {'k': [True, 1.5]},
            'nested_when': {'at': datetime.datetime(2024, 1, 2, 3, 4, 5)}, 7: 'int key'}
    opened(f'csv:{path}').write(records([item]))

    header, row = read_rows(path)
    assert header == ['none', 'yes', 'no', 'int', 'big', 'float', 'nan', 'text', 'naive',
                      'aware', 'raw', 'list', 'dict', 'nested_when', '7']
    assert row == ['', 'true', 'false', '-7', str(2 ** 70), '0.1', 'NaN', 'Kraków',
                   '2024-05-01T12:00:00', '2024-05-01T12:00:00+02:00', 'AP9vaw==',
                   '[1,"a,b",null]', '{"k":[true,1.5]}', '{"at":"2024-01-02T03:04:05"}',
                   'int key']


def test_missing_keys_are_empty_cells(opened, tmp_path):
    path = tmp_path / 'out.csv'
    opened(f'csv:{path}').write(records([{'a': 1, 'b': 2, 'c': 3}, {'c': 'only c'}, {}]))
    assert read_rows(path) == [['a', 'b', 'c'], ['1', '2', '3'], ['', '', 'only c'],
                               ['', '', '']]


def test_a_new_key_is_reported_once_and_its_values_dropped(opened, tmp_path, caplog):
    path = tmp_path / 'out.csv'
    sink = opened(f'csv:{path}')
    with caplog.at_level(logging.WARNING, logger='rezina.backends.csvfile'):
        sink.write(records([{'a': 1}, {'a': 2, 'new': 'x'}, {'a': None, 'other': 0}]))
        sink.write(records([{'new': 'z', 'a': 3}], start=3))
        # an item with no key in the header would be a row of nothing: it fails alone
        with pytest.raises(SinkError, match=r"item r1:4 .*none of its keys \('new'\)") \
                as caught:
            sink.write(records([{'a': 4}, {'new': 'lost?'}], start=3))
    assert caught.value.written == 1 and caught.value.bad_item

    assert read_rows(path) == [['a'], ['1'], ['2'], [''], ['3'], ['4']]
    warnings = dropped_keys(caplog)
    assert len(warnings) == 2
    assert "key 'new'" in warnings[0] and f"csv:{path}" in warnings[0]
    assert "key 'other'" in warnings[1] and f"csv:{path}" in warnings[1]


@pytest.mark.parametrize('text', ['a, comma', 'a "quote"', '"', 'two\nlines', 'cr\rlf\r\n',
                                  ' padded ', '', ',', '\t', 'Αθήνα', 'line\n"both",'])
def test_awkward_text_round_trips_through_csv_reader(opened, tmp_path, text):
    path = tmp_path / 'out.csv'
    opened(f'csv:{path}').write(records([{'before': 1, 'text': text, 'after': 2},
                                         {'text': text}]))
    assert read_rows(path) == [['before', 'text', 'after'], ['1', text, '2'], ['', text, '']]


def test_a_single_empty_cell_row_is_not_a_blank_line(opened, tmp_path):
    path = tmp_path / 'out.csv'
    opened(f'csv:{path}').write(records([None, '']))
    assert read_rows(path) == [['item'], [''], ['']]


# appending

def test_appending_keeps_the_files_header_and_writes_no_second_one(opened, tmp_path):
    path = tmp_path / 'out.csv'
    first = opened(f'csv:{path}')
    first.write(records([{'city': 'Zürich', 'rank': 1}]))
    first.close()
    second = opened(f'csv:{path}')
    second.write(records([{'rank': 2, 'city': 'Kraków', 'new': 'dropped'}], run='r2'))

    assert read_rows(path) == [['city', 'rank'], ['Zürich', '1'], ['Kraków', '2']]


def test_a_header_written_by_hand_orders_the_columns(opened, tmp_path):
    path = tmp_path / 'out.csv'
    path.write_bytes('\ufeffrank,"the city"\r\n'.encode('utf-8'))    # with a BOM
    opened(f'csv:{path}').write(records([{'the city': 'Ōsaka', 'rank': 3}]))
    assert read_rows(path)[1:] == [['3', 'Ōsaka']]


def test_a_cut_short_last_row_is_ended_before_the_next(opened, tmp_path):
    path = tmp_path / 'out.csv'
    path.write_bytes(b'a,b\r\n1,')
    opened(f'csv:{path}').write(records([{'a': 2, 'b': 3}]))
    assert path.read_bytes() == b'a,b\r\n1,\r\n2,3\r\n'


def test_a_file_whose_first_line_is_empty_fails_to_open(tmp_path):
    path = tmp_path / 'out.csv'
    path.write_bytes(b'\r\n1,2\r\n')
    with pytest.raises(SinkError, match=f"cannot open csv:{path}: its first line is empty"):
        open_sink(f'csv:{path}').open()


def test_each_write_is_on_disk_when_it_returns(opened, tmp_path, monkeypatch):
    path = tmp_path / 'out.csv'
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, 'fsync', lambda fd: (synced.append(fd), real_fsync(fd)))
    sink = opened(f'csv:{path}')
    sink.write(records([{'a': 1}]))
    assert read_rows(path) == [['a'], ['1']] and len(synced) == 1
    sink.write(records([{'a': 2}], start=1))
    assert read_rows(path) == [['a'], ['1'], ['2']] and len(synced) == 2


# items that are not dicts

def test_a_non_dict_first_item_makes_the_single_column_item(opened, tmp_path):
    path = tmp_path / 'out.csv'
    opened(f'csv:{path}').write(records([1, 'two, 2', [3], None, True]))
    assert read_rows(path) == [['item'], ['1'], ['two, 2'], ['[3]'], [''], ['true']]


def test_a_non_dict_item_under_dict_keys_fails_alone_after_the_rows_before_it(opened,
                                                                             tmp_path):
    path = tmp_path / 'out.csv'
    sink = opened(f'csv:{path}')
    with pytest.raises(SinkError) as caught:
        sink.write(records([{'a': 1}, {'a': 2}, 'no row', {'a': 4}]))
    assert str(caught.value) == (f"cannot write item r1:2 to csv:{path}: a non-dict item "
                                 f"(str) cannot be a row under a header of dict keys")
    assert caught.value.written == 2
    assert read_rows(path) == [['a'], ['1'], ['2']]

    sink.write(records([{'a': 4}], start=3))        # what comes after it still goes in
    assert read_rows(path) == [['a'], ['1'], ['2'], ['4']]


def test_a_dict_under_the_item_header_fails_alone(opened, tmp_path):
    path = tmp_path / 'out.csv'
    sink = opened(f'csv:{path}')
    with pytest.raises(SinkError, match=r"item r1:1 to csv:.*: a dict item cannot be a row "
                                        r"under the header 'item'") as caught:
        sink.write(records(['first', {'item': 'a dict'}, 'third']))
    assert caught.value.written == 1
    assert read_rows(path) == [['item'], ['first']]


def test_a_files_item_header_takes_dicts_and_other_items(opened, tmp_path):
    path = tmp_path / 'out.csv'
    path.write_bytes(b'item\r\n')
    sink = opened(f'csv:{path}')
    with pytest.raises(SinkError, match=r"item r1:2 .*none of its keys"):
        sink.write(records([{'item': 'from a dict'}, 'bare', {'other': 1}]))
    assert read_rows(path) == [['item'], ['from a dict'], ['bare']]


def test_an_empty_dict_cannot_make_the_header(opened, tmp_path):
    path = tmp_path / 'out.csv'
    sink = opened(f'csv:{path}')
    with pytest.raises(SinkError, match=r"item r1:0 .*an empty dict has no keys") as caught:
        sink.write(records([{}, {'a': 1}]))
    assert caught.value.written == 0
    assert not path.read_bytes()
    sink.write(records([{'a': 1}], start=1))
    assert read_rows(path) == [['a'], ['1']]


def test_a_first_item_that_fails_leaves_no_header(opened, tmp_path):
    path = tmp_path / 'out.csv'
    sink = opened(f'csv:{path}')
    with pytest.raises(SinkError, match=r"item r1:0 .*not an item type") as caught:
        sink.write(records([{'bad': {1, 2}}]))
    assert caught.value.written == 0
    sink.write(records(['then a value'], start=1))
    assert read_rows(path) == [['item'], ['then a value']]


def test_text_that_is_not_utf8_fails_its_item_alone(opened, tmp_path):
    path = tmp_path / 'out.csv'
    sink = opened(f'csv:{path}')
    with pytest.raises(SinkError, match=r"item r1:1 .*UnicodeEncodeError") as caught:
        sink.write(records([{'a': 'fine'}, {'a': 'bad \ud800'}, {'a': 'after'}]))
    assert caught.value.written == 1
    assert read_rows(path) == [['a'], ['fine']]


def test_csvfile_is_a_storage_backend_for_the_python_api(tmp_path):
    path = tmp_path / 'api.csv'
    backend = CsvFile(None, str(path))
    backend.open()
    backend.write({'city': 'Zürich'})
    with pytest.raises(SinkError, match=r"cannot write an item to csv:.*: a non-dict item"):
        backend.write(['a', 'batch'])
    backend.close()
    assert read_rows(path) == [['city'], ['Zürich']]
    assert issubclass(CsvFile, StorageBackend) and 'at least once' in CsvFile.__doc__


# specs and files that do not work

def test_csv_without_a_path_is_an_unknown_sink():
    with pytest.raises(UnknownSink) as caught:
        open_sink('csv:')
    assert str(caught.value) == "sink 'csv:' names no file: expected csv:PATH"


def test_csv_takes_no_arguments(tmp_path):
    with pytest.raises(BadArgument, match=r"sink 'csv:.*' takes no arguments"):
        open_sink(f'csv:{tmp_path}/x.csv', args=['x'])


def test_csv_in_a_missing_directory_fails_naming_it(tmp_path):
    missing = tmp_path / 'nowhere'
    with pytest.raises(SinkError, match=f"cannot open csv:{missing}/out.csv: directory "
                                        f"'{missing}' does not exist"):
        open_sink(f'csv:{missing}/out.csv').open()


def test_csv_on_a_directory_fails_naming_it(tmp_path):
    with pytest.raises(SinkError, match=f"cannot open csv:{tmp_path}: "):
        open_sink(f'csv:{tmp_path}').open()


# rz-bocca writing csv:PATH for real

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def expected_row(i):
    """The cells fixtures_csv.rows writes for item i, under the header n,text,ok,tags,when."""
    ok = '' if i % 4 == 3 else ('true' if i % 2 == 0 else 'false')
    return [str(i), fixtures_csv.AWKWARD[i % len(fixtures_csv.AWKWARD)], ok, f'["x",{i}]',
            f'2024-05-01T12:00:{i % 60:02d}']


def run_pipe(procs, *stages):
    chain = procs.pipeline(*stages, stdout=subprocess.DEVNULL)
    codes = [proc.wait(timeout=60) for proc in chain]
    return codes, [stderr_of(proc) for proc in chain]


def test_hydrant_piped_into_bocca_appends_rows_under_one_header(procs, tmp_path):
    path = tmp_path / 'rows.csv'
    for run in ('r1', 'r2'):
        codes, errs = run_pipe(
            procs, ['rz-hydrant', '--name', 't', '--run-id', run, 'fixtures_csv:rows', '300'],
            ['rz-bocca', f'csv:{path}'])
        assert codes == [0, 0], errs
        assert sum("key 'extra'" in line for line in errs[1].splitlines()) == 1, errs[1]

    rows = read_rows(path)
    assert rows[0] == ['n', 'text', 'ok', 'tags', 'when']
    assert rows[1:] == [expected_row(i) for i in range(300)] * 2


def test_hydrant_to_bocca_over_tcp_writes_every_row(procs, tmp_path):
    path = tmp_path / 'tcp.csv'
    port = free_port()
    source = procs.start(['rz-hydrant', '--out', f'tcp://127.0.0.1:{port}',
                          'fixtures_csv:rows', '2000'], stdin=subprocess.DEVNULL)
    sink = procs.start(['rz-bocca', '--in', f'tcp://127.0.0.1:{port}', f'csv:{path}'],
                       stdin=subprocess.DEVNULL)
    assert sink.wait(timeout=60) == 0, stderr_of(sink)
    assert source.wait(timeout=60) == 0, stderr_of(source)

    rows = read_rows(path)
    assert rows[0] == ['n', 'text', 'ok', 'tags', 'when']
    assert sorted(rows[1:], key=lambda row: int(row[0])) == [expected_row(i)
                                                              for i in range(2000)]


def test_non_dict_items_pipe_into_the_item_column(procs, tmp_path):
    path = tmp_path / 'values.csv'
    codes, errs = run_pipe(procs, ['rz-hydrant', 'fixtures_csv:values', '6'],
                           ['rz-bocca', '--mode', 'batch', f'csv:{path}'])
    assert codes == [0, 0], errs
    assert read_rows(path) == [['item'], ['0'], ['value, 1'], ['2'], ['value, 3'], ['4'],
                               ['value, 5']]


def test_an_item_that_cannot_be_a_row_fails_alone_in_a_pipe(procs, tmp_path):
    path = tmp_path / 'mixed.csv'
    codes, errs = run_pipe(
        procs, ['rz-hydrant', '--name', 't', '--run-id', 'r', 'fixtures_csv:mixed'],
        ['rz-bocca', f'csv:{path}'])
    assert codes == [0, exitcodes.FAILED], errs
    assert "item t/r:1 failed" in errs[1] and 'a non-dict item (str)' in errs[1]
    assert read_rows(path) == [['city', 'rank'], ['Zürich', '1'], ['Kraków', '2'],
                               ['Ōsaka', '3']]


def test_bocca_with_csv_and_no_path_is_a_one_line_usage_error(procs):
    code, out, err = finish(procs.start(['rz-bocca', 'csv:'], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE))
    assert code == exitcodes.USAGE
    assert err.strip() == "rz-bocca: sink 'csv:' names no file: expected csv:PATH"
    assert out == b''
