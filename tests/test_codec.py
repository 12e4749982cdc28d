"""Items on the wire: what round-trips through rezina.pipe.codec and what fails alone."""

import datetime
import math

import msgpack
import pytest

from rezina.pipe import codec

IST = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
BRT = datetime.timezone(datetime.timedelta(hours=-3))
UTC = datetime.timezone.utc

ROUND_TRIPS = [
    None, True, False,
    0, 1, -1, 2 ** 63 - 1, 2 ** 63, -2 ** 63, 2 ** 64 - 1,
    0.0, 1.5, -2.25, 1e308, 5e-324, float('inf'), float('-inf'),
    '', 'plain', 'São Paulo', '東京', 'Αθήνα', '🌧️ rain', '👩‍👩‍👧',
    b'', b'\x00\xff\x80', bytes(range(256)),
    [], [1, 'two', 3.0, None, b'four'],
    {}, {'city': 'Zürich', 'temp': 21.5}, {1: 'one', -2: 'minus two', 2 ** 64 - 1: 'max'},
    {'東京': {'pop': 13960000, 'wards': ['Chiyoda', 'Chūō']}},
    {'nested': [[{'deep': [1, [2, [3, {'deeper': b'bin'}]]]}]]},
    datetime.datetime(2024, 2, 29, 23, 59, 59),
    datetime.datetime(2024, 2, 29, 23, 59, 59, 999999),
    datetime.datetime(2000, 1, 1, tzinfo=UTC),
    datetime.datetime(2024, 6, 1, 12, 30, 15, 250, tzinfo=IST),
    datetime.datetime(1970, 1, 1, 0, 0, 1, tzinfo=BRT),
    {'at': datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=IST), 'list': [datetime.datetime.min]},
]


def round_trip(items):
    payload, bad = codec.encode_items(items)
    assert bad == []
    decoded, bad = codec.decode_items(payload)
    assert bad == []
    return decoded


@pytest.mark.parametrize('item', ROUND_TRIPS, ids=repr)
def test_supported_item_round_trips_with_its_type(item):
    [back] = round_trip([item])
    assert back == item
    assert type(back) is type(item)


def test_whole_batch_round_trips_in_order():
    assert round_trip(ROUND_TRIPS) == ROUND_TRIPS


def test_nan_round_trips_as_nan():
    [back] = round_trip([float('nan')])
    assert math.isnan(back)


def test_bytes_and_str_stay_apart():
    back = round_trip([b'abc', 'abc', {'k': b'v', 'w': 'v'}])
    assert back == [b'abc', 'abc', {'k': b'v', 'w': 'v'}]
    assert [type(x) for x in back[:2]] == [bytes, str]
    assert type(back[2]['k']) is bytes and type(back[2]['w']) is str


def test_tuples_arrive_as_lists():
    back = round_trip([(1, 2), ((3, (4,)), 'x'), {'t': ()}])
    assert back == [[1, 2], [[3, [4]], 'x'], {'t': []}]
    assert type(back[0]) is list and type(back[1][0][1]) is list


def test_dict_keys_of_str_and_int_keep_their_type():
    [back] = round_trip([{'1': 'str one', 1: 'int one'}])
    assert back == {'1': 'str one', 1: 'int one'}
    assert sorted(type(k).__name__ for k in back) == ['int', 'str']


def test_aware_datetime_keeps_its_offset():
    moment = datetime.datetime(2024, 3, 10, 8, 15, 0, 123456, tzinfo=IST)
    [back] = round_trip([moment])
    assert back == moment
    assert back.utcoffset() == datetime.timedelta(hours=5, minutes=30)
    assert back.isoformat() == '2024-03-10T08:15:00.123456+05:30'


def test_naive_datetime_stays_naive():
    moment = datetime.datetime(2024, 3, 10, 8, 15)
    [back] = round_trip([moment])
    assert back == moment and back.tzinfo is None


def test_packb_unpackb_round_trip_one_value():
    value = {'run': 'r1', 'at': datetime.datetime(2024, 1, 1, tzinfo=IST), 'ids': [1, 2]}
    assert codec.unpackb(codec.packb(value)) == value


def test_join_packed_equals_packing_the_list_whole():
    items = ['a', 1, {'b': [2, 3]}, b'c', None]
    assert codec.join_packed([codec.packb(i) for i in items]) == codec.packb(items)
    assert codec.join_packed([]) == codec.packb([])


BAD_ITEMS = [
    (2 ** 64, 'int 18446744073709551616 does not fit in 64 bits'),
    (-2 ** 63 - 1, 'int -9223372036854775809 does not fit in 64 bits'),
    ('caf\udc80', r"str holds a lone surrogate '\udc80'"),
    ({1, 2}, 'type set is not supported'),
    (object(), 'type object is not supported'),
    (frozenset(), 'type frozenset is not supported'),
    (datetime.date(2024, 1, 1), 'type date is not supported'),
    ({'a': [1, {'b': {3}}]}, 'type set is not supported'),
    ([1, [2, 2 ** 70]], 'int 1180591620717411303424 does not fit in 64 bits'),
    ({'k': '\udc80'}, "lone surrogate"),
]


@pytest.mark.parametrize('bad_item, reason', BAD_ITEMS, ids=lambda v: repr(v)[:40])
def test_unencodable_item_fails_only_itself_with_reason(bad_item, reason):
    items = ['first', 1, bad_item, {'last': True}]
    payload, bad = codec.encode_items(items)
    assert len(bad) == 1
    index, why = bad[0]
    assert index == 2
    assert reason in why
    assert '\n' not in why
    assert codec.decode_items(payload) == (['first', 1, {'last': True}], [])


def test_huge_int_reason_is_shortened():
    payload, bad = codec.encode_items([10 ** 100])
    [(index, why)] = bad
    assert index == 0 and 'does not fit in 64 bits' in why
    assert len(why) < 80 and '101 digits' in why
    assert codec.decode_items(payload) == ([], [])


def test_every_unencodable_item_is_reported_by_index():
    items = [{1}, 'ok', 2 ** 64, 'ok too', object()]
    payload, bad = codec.encode_items(items)
    assert [index for index, _ in bad] == [0, 2, 4]
    assert codec.decode_items(payload) == (['ok', 'ok too'], [])


def test_too_deep_nesting_fails_only_itself():
    deep = 'bottom'
    for _ in range(2000):
        deep = [deep]
    payload, bad = codec.encode_items(['a', deep, 'b'])
    [(index, why)] = bad
    assert index == 1 and 'nesting' in why
    assert codec.decode_items(payload) == (['a', 'b'], [])


def test_tuple_dict_key_encodes_but_decode_isolates_it():
    items = ['before', {(1, 2): 'pair'}, 'after', {'fine': 1}]
    payload, bad = codec.encode_items(items)
    assert bad == []
    decoded, bad = codec.decode_items(payload)
    assert decoded == ['before', 'after', {'fine': 1}]
    [(index, why)] = bad
    assert index == 1
    assert 'key' in why and 'does not decode' in why


def test_unknown_extension_type_fails_only_its_item():
    odd = msgpack.packb(msgpack.ExtType(5, b'zz'))
    payload = codec.join_packed([codec.packb(1), odd, codec.packb(2)])
    decoded, bad = codec.decode_items(payload)
    assert decoded == [1, 2]
    [(index, why)] = bad
    assert index == 1 and 'extension type 5' in why


def test_every_truncation_of_a_payload_raises_value_error():
    payload, _ = codec.encode_items(['São Paulo', {'t': 21.5}, b'bin', [1, 2, 3]])
    for end in range(len(payload)):
        with pytest.raises(ValueError, match='batch payload'):
            codec.decode_items(payload[:end])


@pytest.mark.parametrize('garbage', [b'', b'\xc1', b'\xc1\x91\x01', b'\x01\x02'], ids=repr)
def test_garbage_payload_raises_value_error(garbage):
    with pytest.raises(ValueError, match='batch payload'):
        codec.decode_items(garbage)


@pytest.mark.parametrize('payload', [codec.packb(7), codec.packb({'a': 1}), codec.packb('s')],
                         ids=repr)
def test_payload_that_is_not_an_array_raises_value_error(payload):
    with pytest.raises(ValueError, match='not an array'):
        codec.decode_items(payload)


def test_trailing_bytes_after_the_array_raise_value_error():
    payload = codec.packb([1, 2]) + b'\x03'
    with pytest.raises(ValueError, match='batch payload'):
        codec.decode_items(payload)
