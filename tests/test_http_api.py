"""rz-master's HTTP JSON API, on a real loopback port, against a stand-in master on a real
ROUTER (tests/fakemaster.py): every route, the token, the origin, and the answers."""

import http.client
import json
import logging
import os
import socket
import stat
import threading
import time

import pytest

from conftest import wait_for
from rezina.control import api_routes
from rezina.control.http import HttpApi, load_token
from rezina.errors import RezinaError

TOKEN = 'test-token-0123456789'
AUTH = {'Authorization': f'Bearer {TOKEN}'}
LS = [{'name': 'weather', 'state': 'RUNNING',
       'schedule': {'start': None, 'interval': 10, 'cron': None},
       'last_run': None, 'next_run': 1700000010.0, 'nodes': 3, 'failed_nodes': 0},
      {'name': 'other', 'state': 'STOPPED', 'schedule': None,
       'last_run': None, 'next_run': None, 'nodes': 0, 'failed_nodes': 0}]


def scripted(header):
    """The stand-in master: ls lists LS; 'nope' is unknown; 'busy' refuses; any other
    request answers its own op and args, so a test sees what reached the master."""
    rid, op, args = header['rid'], header['op'], header['args']
    if op == 'ls':
        return {'rid': rid, 'ok': True, 'result': LS}
    if args.get('typology') == 'nope':
        return {'rid': rid, 'ok': False, 'error': "no typology 'nope'"}
    if args.get('typology') == 'busy':
        return {'rid': rid, 'ok': False, 'error': "typology 'busy' is running already"}
    return {'rid': rid, 'ok': True, 'result': {'op': op, 'args': args}}


@pytest.fixture
def served(master):
    """(api, fake master) on loopback ports of their own; the API is closed after."""
    server = master(scripted)
    api = HttpApi('127.0.0.1', 0, '127.0.0.1', server.port, TOKEN).start()
    yield api, server
    api.close()


def call(api, method, path, body=None, headers=None, json_body=None):
    """(status, headers, decoded JSON) of one request; every answer must be JSON that
    no cache keeps."""
    host, port = api.address
    headers = dict(headers or {})
    if json_body is not None:
        body = json.dumps(json_body).encode()
        headers.setdefault('Content-Type', 'application/json')
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    assert response.headers['Content-Type'] == 'application/json'
    assert response.headers['Cache-Control'] == 'no-store'
    return response.status, response.headers, json.loads(data) if data else None


def echo(op, **args):
    return {'result': {'op': op, 'args': args}}


@pytest.mark.parametrize('path, op, args', [
    ('/api/workers', 'workers', {}),
    ('/api/nodes', 'ps', {'typology': None}),
    ('/api/typologies/weather/nodes', 'ps', {'typology': 'weather'}),
    ('/api/typologies/weather/runs', 'runs', {'typology': 'weather', 'limit': 50}),
    ('/api/typologies/weather/runs?limit=7', 'runs', {'typology': 'weather', 'limit': 7}),
    ('/api/typologies/weather/failures', 'failures', {'typology': 'weather', 'limit': 50}),
    ('/api/typologies/weather/failures?limit=3', 'failures',
     {'typology': 'weather', 'limit': 3}),
    ('/api/typologies/weather/logs', 'logs',
     {'typology': 'weather', 'cursor': None, 'limit': 100}),
    ('/api/typologies/weather/logs?cursor=12&limit=5', 'logs',
     {'typology': 'weather', 'cursor': 12, 'limit': 5}),
    ('/api/typologies/weather/logs?cursor=&limit=5', 'logs',
     {'typology': 'weather', 'cursor': None, 'limit': 5}),
    ('/api/typologies/we%20a%2Fther%C3%A9/nodes', 'ps', {'typology': 'we a/theré'}),
    ('/api/workers/', 'workers', {}),
])
def test_a_get_asks_the_master_the_matching_op(served, path, op, args):
    api, server = served
    status, headers, answer = call(api, 'GET', path)
    assert (status, answer) == (200, echo(op, **args))
    assert [(h['op'], h['args']) for h in server.seen] == [(op, args)]


@pytest.mark.parametrize('path', ['/api/', '/api'])
def test_the_api_root_lists_the_paths_and_asks_nothing(served, path):
    api, server = served
    status, _, answer = call(api, 'GET', path)
    assert (status, answer) == (200, {'result': api_routes.INDEX})
    assert server.seen == []


def test_every_get_the_api_root_lists_is_answered(served):
    api, _ = served
    listed = [route.split()[1] for route in api_routes.INDEX if route.startswith('GET /api')]
    assert len(listed) == 9
    for path in listed:
        path = path.replace('NAME', 'weather').replace('C&', '1&').replace('=N', '=5')
        status, _, answer = call(api, 'GET', path)
        assert status == 200, (path, answer)


def test_typologies_are_the_masters_ls(served):
    api, server = served
    assert call(api, 'GET', '/api/typologies')[::2] == (200, {'result': LS})
    assert [h['op'] for h in server.seen] == ['ls']


def test_a_typology_is_its_ls_entry_with_its_stages_and_nodes(served):
    api, server = served
    status, _, answer = call(api, 'GET', '/api/typologies/weather')
    assert status == 200
    assert answer == {'result': {'typology': LS[0],
                                 'stages': {'op': 'stages', 'args': {'typology': 'weather'}},
                                 'nodes': {'op': 'ps', 'args': {'typology': 'weather'}}}}


def test_a_typology_the_master_does_not_list_is_404(served):
    api, server = served
    status, _, answer = call(api, 'GET', '/api/typologies/ghost')
    assert (status, answer) == (404, {'error': "no typology 'ghost'"})
    assert [h['op'] for h in server.seen] == ['ls']


@pytest.mark.parametrize('method, path', [
    ('GET', '/api/typologies/nope/runs'),
    ('GET', '/api/typologies/nope/failures'),
    ('GET', '/api/typologies/nope/logs'),
    ('POST', '/api/typologies/nope/stop'),
])
def test_a_typology_the_master_does_not_know_is_404_with_its_words(served, method, path):
    api, _ = served
    status, _, answer = call(api, method, path, headers=AUTH)
    assert (status, answer) == (404, {'error': "no typology 'nope'"})


def test_another_refusal_of_the_master_is_409_with_its_words(served):
    api, _ = served
    status, _, answer = call(api, 'POST', '/api/typologies/busy/start', headers=AUTH)
    assert (status, answer) == (409, {'error': "typology 'busy' is running already"})


@pytest.mark.parametrize('method, path', [
    ('GET', '/nothing'),
    ('GET', '/api/nothing'),
    ('GET', '/api/workers/w1'),
    ('GET', '/api/typologies/weather/nothing'),
    ('GET', '/api/typologies/weather/runs/1'),
    ('GET', '/api/typologies//nodes'),
    ('POST', '/api/workers'),
    ('POST', '/api/typologies/weather'),
    ('POST', '/api/typologies/weather/explode'),
])
def test_an_unknown_path_is_404_and_asks_nothing(served, method, path):
    api, server = served
    status, _, answer = call(api, method, path, headers=AUTH)
    assert status == 404
    assert set(answer) == {'error'} and answer['error'].startswith('no such')
    assert server.seen == []


@pytest.mark.parametrize('query', ['limit=abc', 'limit=0', 'limit=-3', 'cursor=1.5'])
def test_a_query_that_is_not_a_count_is_400(served, query):
    api, server = served
    status, _, answer = call(api, 'GET', f'/api/typologies/weather/logs?{query}')
    assert status == 400 and 'must be' in answer['error']
    assert server.seen == []


@pytest.mark.parametrize('action', ['start', 'stop', 'restart', 'remove'])
def test_an_action_with_the_token_is_the_masters_op(served, action):
    api, server = served
    status, _, answer = call(api, 'POST', f'/api/typologies/weather/{action}', headers=AUTH)
    assert (status, answer) == (200, echo(action, typology='weather'))
    assert [(h['op'], h['args']) for h in server.seen] == [(action, {'typology': 'weather'})]


def test_an_action_may_carry_an_empty_json_object(served):
    api, _ = served
    status, _, answer = call(api, 'POST', '/api/typologies/weather/stop', headers=AUTH,
                             json_body={})
    assert (status, answer) == (200, echo('stop', typology='weather'))


@pytest.mark.parametrize('body', [{'stage': 'fetch', 'n': 3}, {'stage': 1, 'n': 1}])
def test_scale_sends_the_stage_and_n(served, body):
    api, _ = served
    status, _, answer = call(api, 'POST', '/api/typologies/weather/scale', headers=AUTH,
                             json_body=body)
    assert (status, answer) == (200, echo('scale', typology='weather', **body))


@pytest.mark.parametrize('body', [
    None, [], {'stage': 'fetch'}, {'n': 2}, {'stage': 'fetch', 'n': -1}, {'stage': 1, 'n': 0},
    {'stage': 'fetch', 'n': '3'}, {'stage': 'fetch', 'n': True}, {'stage': ['a'], 'n': 1},
])
def test_scale_without_a_stage_and_a_count_is_400(served, body):
    api, server = served
    raw = None if body is None else json.dumps(body).encode()
    status, _, answer = call(api, 'POST', '/api/typologies/weather/scale', body=raw,
                             headers={**AUTH, 'Content-Type': 'application/json'})
    assert status == 400 and 'scale needs' in answer['error']
    assert server.seen == []


def test_a_body_that_is_not_json_is_400(served):
    api, server = served
    status, _, answer = call(api, 'POST', '/api/typologies/weather/scale', body=b'{"stage"',
                             headers={**AUTH, 'Content-Type': 'application/json'})
    assert status == 400 and answer['error'].startswith('a body that is not JSON')
    assert server.seen == []


@pytest.mark.parametrize('content_type', [None, 'text/plain', 'application/x-www-form-urlencoded'])
def test_a_body_that_is_not_application_json_is_415(served, content_type):
    api, server = served
    headers = dict(AUTH)
    if content_type:
        headers['Content-Type'] = content_type
    status, _, answer = call(api, 'POST', '/api/typologies/weather/scale', headers=headers,
                             body=b'{"stage": "fetch", "n": 2}')
    assert (status, answer) == (415, {'error': 'a request body must be application/json'})
    assert server.seen == []


def test_json_with_a_charset_is_json(served):
    api, _ = served
    status, _, answer = call(api, 'POST', '/api/typologies/weather/scale',
                             headers={**AUTH, 'Content-Type': 'Application/JSON; charset=utf-8'},
                             body=b'{"stage": "fetch", "n": 2}')
    assert (status, answer) == (200, echo('scale', typology='weather', stage='fetch', n=2))


@pytest.mark.parametrize('authorization', [
    None, 'Bearer', 'Bearer ', 'Bearer wrong', f'Bearer {TOKEN}x', f'Bearer {TOKEN[:-1]}',
    f'Basic {TOKEN}', TOKEN,
])
def test_an_action_without_the_token_is_401_and_asks_nothing(served, authorization):
    api, server = served
    headers = {'Content-Type': 'application/json'}
    if authorization is not None:
        headers['Authorization'] = authorization
    for path, body in (('/api/typologies/weather/stop', None),
                       ('/api/typologies/weather/scale', b'{"stage": "fetch", "n": 9}')):
        status, _, answer = call(api, 'POST', path, headers=headers, body=body)
        assert status == 401 and 'Authorization: Bearer TOKEN' in answer['error']
    assert server.seen == []


def test_the_bearer_scheme_is_case_insensitive(served):
    api, _ = served
    status, _, _ = call(api, 'POST', '/api/typologies/weather/stop',
                        headers={'Authorization': f'bearer {TOKEN}'})
    assert status == 200


@pytest.mark.parametrize('origin', ['http://evil.example', 'null', 'http://127.0.0.1',
                                    'https://127.0.0.1:{port}', 'http://localhost:{port}x'])
def test_an_action_from_another_origin_is_403_even_with_the_token(served, origin):
    api, server = served
    headers = {**AUTH, 'Origin': origin.format(port=api.address[1])}
    status, _, answer = call(api, 'POST', '/api/typologies/weather/stop', headers=headers)
    assert status == 403 and 'another origin' in answer['error']
    assert server.seen == []


@pytest.mark.parametrize('host', ['127.0.0.1', 'localhost'])
def test_an_action_from_the_apis_own_origin_is_served(served, host):
    api, _ = served
    own = f'http://{host}:{api.address[1]}'
    status, _, answer = call(api, 'POST', '/api/typologies/weather/stop',
                             headers={**AUTH, 'Origin': own})
    assert (status, answer) == (200, echo('stop', typology='weather'))


def test_answers_carry_no_cors_headers(served):
    api, _ = served
    for method, path in (('GET', '/api/workers'), ('OPTIONS', '/api/workers'),
                         ('POST', '/api/typologies/weather/stop')):
        status, headers, _ = call(api, method, path,
                                  headers={'Origin': 'http://evil.example'})
        assert status in (200, 403, 405)
        assert not [name for name in headers if name.lower().startswith('access-control-')]


def test_a_body_over_64_kib_is_413_and_one_of_64_kib_is_read(served):
    api, server = served
    head = b'{"stage": "fetch", "n": 4, "pad": "'
    tail = b'"}'
    exact = head + b'x' * (64 * 1024 - len(head) - len(tail)) + tail
    assert len(exact) == 64 * 1024
    headers = {**AUTH, 'Content-Type': 'application/json'}
    status, _, answer = call(api, 'POST', '/api/typologies/weather/scale', body=exact,
                             headers=headers)
    assert (status, answer) == (200, echo('scale', typology='weather', stage='fetch', n=4))

    over = exact[:-2] + b'x"}'
    status, _, answer = call(api, 'POST', '/api/typologies/weather/scale', body=over,
                             headers=headers)
    assert (status, answer) == (413, {'error': 'a request body over 65536 bytes'})
    assert len(server.seen) == 1


def test_a_refusal_before_the_body_is_read_still_reaches_the_client(served):
    api, server = served
    big = b'x' * (3 << 20)          # more than the socket buffers hold
    for attempt in range(10):
        headers = {'Content-Type': 'application/json', **(AUTH if attempt % 2 else {})}
        status, _, _ = call(api, 'POST', '/api/typologies/weather/scale', body=big,
                            headers=headers)
        assert status == (413 if attempt % 2 else 401)
    assert server.seen == []


def test_other_methods_and_malformed_requests_are_answered_in_json(served):
    api, _ = served
    for method in ('PUT', 'DELETE', 'PATCH'):
        status, _, answer = call(api, method, '/api/workers', headers=AUTH)
        assert (status, answer) == (405, {'error': f'method {method} is not allowed'})
    for request, status in ((b'BREW /api/workers HTTP/1.1\r\n\r\n', b'501'),
                            (b'GET /' + b'x' * 70000 + b' HTTP/1.1\r\n\r\n', b'414')):
        head, body = raw_request(api, request)
        assert head.startswith(b'HTTP/1.0 ' + status + b' ')
        assert b'\r\nContent-Type: application/json\r\n' in head
        assert set(json.loads(body)) == {'error'}


def raw_request(api, request):
    """(head, body) of the answer to request bytes sent as they are."""
    answer = b''
    with socket.create_connection(api.address, timeout=10) as raw:
        raw.sendall(request)
        for _ in range(100):
            chunk = raw.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b'\r\n\r\n')
    return head, body


def test_requests_are_logged_at_debug_and_nothing_is_printed(served, capfd, caplog):
    api, _ = served
    with caplog.at_level(logging.DEBUG, logger='rezina.control.http'):
        assert call(api, 'GET', '/api/workers')[0] == 200
        assert call(api, 'GET', '/api/none')[0] == 404
    out, err = capfd.readouterr()
    assert (out, err) == ('', '')
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any('"GET /api/workers HTTP/1.1" 200' in line for line in logged)
    assert any('"GET /api/none HTTP/1.1" 404' in line for line in logged)


def test_requests_at_once_each_get_their_own_answer(served):
    api, _ = served
    answers = {}

    def ask(number):
        answers[number] = [call(api, 'GET', f'/api/typologies/t{number}/runs?limit={i + 1}')
                           [::2] for i in range(5)]

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert answers == {n: [(200, echo('runs', typology=f't{n}', limit=i + 1))
                           for i in range(5)] for n in range(8)}


def test_a_silent_master_is_502_and_close_does_not_wait_for_it(master):
    server = master(lambda header: None)
    api = HttpApi('127.0.0.1', 0, '127.0.0.1', server.port, TOKEN).start()
    answers = []
    asking = threading.Thread(target=lambda: answers.append(call(api, 'GET', '/api/workers')))
    try:
        asking.start()
        wait_for(lambda: server.seen, what='the request at the master')
        began = time.monotonic()
        api.close()
        assert time.monotonic() - began < 2.0
        with pytest.raises(OSError):
            socket.create_connection(api.address, timeout=2).close()
        asking.join(10)
    finally:
        api.close()
    status, _, answer = answers[0]
    assert (status, answer) == (502, {'error': f'no answer from rz-master at 127.0.0.1:'
                                               f'{server.port} within 3 s'})


def test_a_port_in_use_cannot_be_served():
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        api = HttpApi('127.0.0.1', port, '127.0.0.1', 1, TOKEN)
        with pytest.raises(RezinaError) as caught:
            api.start()
    assert str(caught.value) == f'cannot serve HTTP on 127.0.0.1:{port}: Address already in use'


def test_the_address_is_the_bound_port_and_close_frees_it(master):
    server = master(scripted)
    api = HttpApi('127.0.0.1', 0, '127.0.0.1', server.port, TOKEN).start()
    try:
        host, port = api.address
        assert host == '127.0.0.1' and port > 0
        assert call(api, 'GET', '/api/workers')[0] == 200
    finally:
        api.close()
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(('127.0.0.1', port))


def test_the_token_is_made_once_with_mode_0600_and_read_after(tmp_path):
    state_dir = tmp_path / 'state'
    token = load_token(str(state_dir))
    path = state_dir / 'token'
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(token) >= 43 and token == path.read_text().strip()
    assert load_token(str(state_dir)) == token
    assert load_token(str(state_dir)) == token
    assert [p.name for p in state_dir.iterdir()] == ['token']
    assert load_token(str(tmp_path / 'elsewhere')) != token


def test_a_token_file_that_is_there_is_used_as_it_is(tmp_path):
    (tmp_path / 'token').write_text('chosen-by-hand\n')
    os.chmod(tmp_path / 'token', 0o600)
    assert load_token(str(tmp_path)) == 'chosen-by-hand'


def test_an_empty_token_file_is_an_error_naming_it(tmp_path):
    (tmp_path / 'token').write_text('\n')
    with pytest.raises(RezinaError) as caught:
        load_token(str(tmp_path))
    path = tmp_path / 'token'
    assert str(caught.value) == f"cannot read the API token {path}: the file is empty"
