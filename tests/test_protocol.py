"""Batches and their ids (rezina.pipe.protocol), cutting payloads (slicing, split_batch), and
batch records over a real OS pipe (rezina.pipe.stream)."""

import datetime
import fcntl
import os
import random
import select

import msgpack
import pytest

from conftest import close

from rezina.pipe import codec, protocol, slicing
from rezina.pipe.outbox import split_batch
from rezina.pipe.protocol import Batch
from rezina.pipe.stream import DownstreamClosed, PipeReader, PipeWriter, record_of
from rezina.pipe.textio import TextWriter

IST = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
ITEMS = ['São Paulo', 7, None, {'東京': [1.5, b'\x00']}, [[], {}],
         datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=IST), b'bytes', 2 ** 64 - 1, '🌧️']


def batch_of(run, first_seq, items):
    payload, bad = codec.encode_items(items)
    assert bad == []
    return Batch(run, first_seq, len(items), payload)


def encode_record_stream(batches):
    return b''.join(record_of(batch) for batch in batches)


def item_ids(batch):
    return [batch.item_id(i) for i in range(batch.count)]


def decoded(payload):
    items, bad = codec.decode_items(payload)
    assert bad == []
    return items


def test_batch_header_round_trip_with_plain_ids():
    batch = batch_of('hourly@2024-05-06T07:00', 100, ITEMS)
    batch.no = 41
    back = Batch.from_header(batch.header(), batch.payload)
    assert (back.no, back.run, back.ids, back.count) == (41, batch.run, 100, len(ITEMS))
    assert back.payload is batch.payload
    assert decoded(back.payload) == ITEMS


def test_batch_header_round_trip_with_listed_ids():
    batch = Batch('r7', [3, '5.0', '5.1', 9], 4, codec.packb(['a', 'b', 'c', 'd']), no=0)
    back = Batch.from_header(batch.header(), batch.payload)
    assert (back.no, back.run, back.ids, back.count) == (0, 'r7', [3, '5.0', '5.1', 9], 4)


@pytest.mark.parametrize('fields, reason', [
    ([0, 7, 0, 1], 'malformed batch header'),
    ([0, 'r', 0, '1'], 'malformed batch header'),
    ([0, 'r', [1, 2], 3], 'malformed batch ids'),
    ([0, 'r', 'x', 1], 'malformed batch ids'),
])
def test_malformed_batch_header_raises_value_error(fields, reason):
    with pytest.raises(ValueError, match=reason):
        Batch.from_header(codec.packb(fields), b'')


def test_seqs_and_item_ids_of_a_plain_range():
    batch = Batch('r1', 10, 3, b'')
    assert list(batch.seqs()) == [10, 11, 12]
    assert item_ids(batch) == ['r1:10', 'r1:11', 'r1:12']


def test_seqs_and_item_ids_of_listed_ids():
    batch = Batch('r1', [4, '6.0', '6.1', 8], 4, b'')
    assert list(batch.seqs()) == [4, '6.0', '6.1', 8]
    assert batch.item_id(2) == 'r1:6.1'
    assert item_ids(batch) == ['r1:4', 'r1:6.0', 'r1:6.1', 'r1:8']


def test_seqs_without_drops_the_bad_indexes():
    seqs = Batch('r', 10, 5, b'').seqs()
    assert protocol.seqs_without(seqs, [(4, 'why')]) == [10, 11, 12, 13]
    assert protocol.seqs_without(seqs, [(0, 'why'), (2, 'why')]) == [11, 13, 14]
    assert protocol.seqs_without([1, '2.0', 3], [(1, 'why')]) == [1, 3]


@pytest.mark.parametrize('seqs, ids', [
    ([5, 6, 7], 5), ([0], 0), ([5, 7], [5, 7]), ([], []), ([7, 6], [7, 6]),
    (['3.0', '3.1'], ['3.0', '3.1']), ([2, '3.0'], [2, '3.0']), ([True, False], [True, False]),
    (range(4, 9), 4),
])
def test_compact_ids(seqs, ids):
    assert protocol.compact_ids(seqs) == ids


@pytest.mark.parametrize('seqs', [[1, 3, 2, 4], [5, 5, 7, 8]])
def test_compact_ids_keeps_ints_that_are_not_consecutive(seqs):
    assert protocol.compact_ids(seqs) == seqs


def test_ranges_of_small_cases():
    assert protocol.ranges_of([]) == []
    assert protocol.ranges_of([3]) == [[3, 4]]
    assert protocol.ranges_of({5, 1, 2, 3, 9, 10}) == [[1, 4], [5, 6], [9, 11]]
    assert list(protocol.numbers_in([[1, 4], [9, 11]])) == [1, 2, 3, 9, 10]


def test_ranges_of_and_numbers_in_round_trip_random_sets():
    rng = random.Random(20240506)
    for _ in range(300):
        span = rng.randrange(1, 500)
        numbers = set(rng.sample(range(-50, span), rng.randrange(0, min(span, 200))))
        ranges = protocol.ranges_of(numbers)
        assert list(protocol.numbers_in(ranges)) == sorted(numbers)
        # sorted, non-empty, and maximal: no two ranges touch
        for first, end in ranges:
            assert first < end
        for (_, end), (first, _) in zip(ranges, ranges[1:]):
            assert end < first
        # ranges survive the wire as an ACK header
        assert codec.unpackb(codec.packb(ranges)) == ranges


@pytest.mark.parametrize('ids', [100, [100, '101.0', '101.1', 104, 105, 106, 107, 108, 109]],
                         ids=['plain', 'listed'])
def test_split_batch_keeps_items_ids_and_order(ids):
    origin = Batch('parent', 0, 0, b'')
    batch = Batch('r3', ids, len(ITEMS), codec.encode_items(ITEMS)[0], no=12, origin=origin)
    for count in range(1, len(ITEMS)):
        head, rest = split_batch(batch, count)
        assert (head.count, rest.count) == (count, len(ITEMS) - count)
        assert decoded(head.payload) == ITEMS[:count]
        assert decoded(rest.payload) == ITEMS[count:]
        assert item_ids(head) + item_ids(rest) == item_ids(batch)
        assert head.run == rest.run == 'r3'
        assert head.no == 12 and rest.no is None
        assert head.origin is origin and rest.origin is origin


def test_split_batch_of_one_item_each():
    batch = batch_of('r', 0, ['a', 'b'])
    head, rest = split_batch(batch, 1)
    assert (head.ids, rest.ids) == (0, 1)
    assert (decoded(head.payload), decoded(rest.payload)) == (['a'], ['b'])


def test_item_bounds_and_slice_payload():
    payload = codec.encode_items(ITEMS)[0]
    bounds = slicing.item_bounds(payload)
    assert len(bounds) == len(ITEMS) + 1 and bounds[-1] == len(payload)
    for index, item in enumerate(ITEMS):
        assert codec.unpackb(payload[bounds[index]:bounds[index + 1]]) == item
    assert decoded(slicing.slice_payload(payload, bounds, 2, 5)) == ITEMS[2:5]
    assert decoded(slicing.slice_payload(payload, bounds, 3, 3)) == []


@pytest.mark.parametrize('indexes', [[], [0], [8], [1, 4, 7], list(range(9)), [3, 3]])
def test_without_items_drops_exactly_those_items(indexes):
    payload = codec.encode_items(ITEMS)[0]
    kept = [item for i, item in enumerate(ITEMS) if i not in set(indexes)]
    assert decoded(slicing.without_items(payload, indexes)) == kept


def wait_readable(fd, timeout=5.0):
    readable, _, _ = select.select([fd], [], [], timeout)
    assert readable, "nothing to read from the pipe within 5 s"


def test_pipe_writer_to_pipe_reader_round_trip(pipe):
    read_fd, write_fd, fds = pipe
    big = b'\xab' * (3 << 20)   # larger than a pipe's buffer: written in many pieces
    batches = [batch_of('r1', 0, ITEMS), batch_of('r1', len(ITEMS), ['next']),
               Batch('r2', ['1.0', '1.1'], 2, codec.packb(['x', 'y'])),
               batch_of('r2', 2, [big, 'after big']), batch_of('r3', 0, [])]
    acked = []
    writer = PipeWriter(write_fd, acked.append)
    reader = PipeReader(read_fd)
    for batch in batches:
        writer.offer(batch)

    writer.pump()
    assert writer.wants_write, "a 3 MiB record cannot fit in the pipe at once"
    assert batches[3] not in acked and batches[4] not in acked

    received = []
    for _ in range(1000):
        if writer.idle:
            break
        wait_readable(read_fd)
        received += reader.read()
        writer.pump()
    assert writer.idle
    assert acked == batches
    assert writer.pending_items == 0
    writer.close()
    close(write_fd, fds)

    for _ in range(1000):
        if reader.ended():
            break
        received += reader.read()
    assert reader.ended()
    assert [(b.run, b.ids, b.count, b.payload) for b in received] == [
        (b.run, b.ids, b.count, b.payload) for b in batches]
    assert decoded(received[0].payload) == ITEMS
    assert decoded(received[3].payload) == [big, 'after big']
    assert sum(b.count for b in received) == sum(b.count for b in batches)


def test_pipe_writer_is_non_blocking_until_closed(pipe):
    _, write_fd, _ = pipe
    before = fcntl.fcntl(write_fd, fcntl.F_GETFL)
    writer = PipeWriter(write_fd, lambda batch: None)
    assert fcntl.fcntl(write_fd, fcntl.F_GETFL) & os.O_NONBLOCK
    writer.close()
    assert fcntl.fcntl(write_fd, fcntl.F_GETFL) == before


def test_record_cut_in_the_middle_then_eof_names_stdin(pipe):
    read_fd, write_fd, fds = pipe
    whole = [batch_of('r1', 0, ['a', 'b']), batch_of('r1', 2, ['c'])]
    stream = encode_record_stream(whole + [batch_of('r1', 3, ['d' * 100])])
    os.write(write_fd, stream[:-10])
    close(write_fd, fds)
    reader = PipeReader(read_fd)
    got = reader.read()
    assert [decoded(b.payload) for b in got] == [['a', 'b'], ['c']]
    with pytest.raises(ValueError, match='^stdin ended in the middle of a record$'):
        reader.read()


def test_clean_eof_ends_the_stream(pipe):
    read_fd, write_fd, fds = pipe
    os.write(write_fd, encode_record_stream([batch_of('r1', 0, ['a'])]))
    close(write_fd, fds)
    reader = PipeReader(read_fd, name='--in -')
    assert len(reader.read()) == 1 and not reader.ended()
    assert reader.read() == [] and reader.ended()


NOT_RECORDS = [
    b'hello\n',
    b'{"city": "Zurich"}\n',
    msgpack.packb([1, 2, 3]),
    msgpack.packb(['r', 0, 1, 'payload is str']),
    msgpack.packb(['r', 0, 1, b'\x91\x01', 'extra']),
    msgpack.packb({'run': 'r'}),
    b'\xc1\xc1\n',
    b'\xa3\xff\xfe\xfd',
    msgpack.packb(['r', 0, 'one', b'\x91\x01']),
]


@pytest.mark.parametrize('data', NOT_RECORDS, ids=repr)
def test_stream_that_is_not_records_is_refused_clearly(pipe, data):
    read_fd, write_fd, fds = pipe
    os.write(write_fd, data)
    close(write_fd, fds)
    reader = PipeReader(read_fd)
    with pytest.raises(ValueError) as caught:
        for _ in range(3):
            reader.read()
    assert str(caught.value) == ("stdin is not a rezina record stream (pipe rz commands "
                                 "together, or read text with --in-format json or lines)")


@pytest.mark.parametrize('writer_class', [PipeWriter, TextWriter])
def test_writer_whose_reader_closed_raises_downstream_closed(pipe, writer_class):
    read_fd, write_fd, fds = pipe
    close(read_fd, fds)
    acked = []
    writer = writer_class(write_fd, acked.append)
    writer.offer(batch_of('r1', 0, ['a']))
    try:
        with pytest.raises(DownstreamClosed):
            writer.pump()
    finally:
        writer.close()
    assert acked == []
