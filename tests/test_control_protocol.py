"""The control socket's messages and the client end, against a real ROUTER on loopback
that plays the master."""

import threading

import msgpack
import pytest
import zmq

from rezina.control import protocol
from rezina.control.protocol import BadMessage, Client, decode, encode
from rezina.errors import RezinaError


def test_messages_round_trip_with_and_without_a_blob():
    assert decode(encode(protocol.HEARTBEAT, {'worker': 'w1', 'nodes': []})) == (
        protocol.HEARTBEAT, {'worker': 'w1', 'nodes': []}, None)
    assert decode(encode(protocol.BLOB, {'hash': 'ab'}, b'\x00bytes')) == (
        protocol.BLOB, {'hash': 'ab'}, b'\x00bytes')


@pytest.mark.parametrize('frames, says', [
    ([], 'not one or two frames'),
    ([b'Z' + msgpack.packb({})], 'unknown kind'),
    ([b'H\xc1'], 'does not decode'),
    ([b'H' + msgpack.packb([1, 2])], 'not a map'),
    ([b'H' + msgpack.packb({}), b'', b''], 'not one or two frames'),
])
def test_what_is_not_the_protocol_is_a_bad_message(frames, says):
    with pytest.raises(BadMessage, match=says):
        decode(frames)


def test_a_request_gets_its_result(master):
    server = master(lambda h: {'rid': h['rid'], 'ok': True, 'result': {'op': h['op'],
                                                                        **h['args']}})
    client = Client(port=server.port)
    try:
        assert client.request('scale', typology='weather', stage='fetch', n=3) == {
            'op': 'scale', 'typology': 'weather', 'stage': 'fetch', 'n': 3}
    finally:
        client.close()


def test_a_refusal_is_an_error_with_the_masters_words(master):
    server = master(lambda h: {'rid': h['rid'], 'ok': False,
                               'error': "no typology 'nope'"})
    client = Client(port=server.port)
    try:
        with pytest.raises(RezinaError, match="^no typology 'nope'$"):
            client.request('stop', typology='nope')
    finally:
        client.close()


def test_no_master_is_an_error_naming_host_and_port():
    with zmq.Context() as context:
        probe = context.socket(zmq.ROUTER)
        port = probe.bind_to_random_port('tcp://127.0.0.1')
        probe.close(linger=0)                   # a port nobody answers on
    client = Client(port=port, timeout=0.3)
    try:
        with pytest.raises(RezinaError) as caught:
            client.request('ls')
        assert str(caught.value) == f"no answer from rz-master at 127.0.0.1:{port} within 0.3 s"
    finally:
        client.close()


def test_a_late_answer_is_not_taken_for_the_next_request(master):
    released = threading.Event()

    def answer(header):
        if header['op'] == 'slow':
            released.wait(5)                    # answers only after the client gave up
            return {'rid': header['rid'], 'ok': True, 'result': 'slow'}
        return {'rid': header['rid'], 'ok': True, 'result': 'fast'}

    server = master(answer)
    client = Client(port=server.port, timeout=0.3)
    try:
        with pytest.raises(RezinaError, match='no answer'):
            client.request('slow')
        released.set()
        assert client.request('fast') == 'fast'
    finally:
        client.close()
