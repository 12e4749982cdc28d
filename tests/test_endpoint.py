"""Parsing the command line's edges and targets: endpoints (rezina.pipe.endpoint), MOD:FUNC
specs and JSON arguments (rezina.target)."""

import pytest

import fixtures_target
from rezina.errors import BadArgument, BadEndpoint, UnknownFunction, UsageError
from rezina.pipe.endpoint import Endpoint, parse_endpoint
from rezina.target import parse_arg, parse_json, resolve_callable

FIXTURES = fixtures_target.__name__

# (option, bind by default) as the commands call parse_endpoint
IN = ('--in', False)
OUT = ('--out', True)


def parse(text, side):
    option, bind_by_default = side
    return parse_endpoint(text, option, bind_by_default)


def refused(text, side):
    """The one-line message of the BadEndpoint that parsing TEXT raises."""
    with pytest.raises(BadEndpoint) as caught:
        parse(text, side)
    message = str(caught.value)
    assert '\n' not in message
    assert message.startswith(f"{side[0]} {text!r}: ")
    return message


@pytest.mark.parametrize('side', [IN, OUT], ids=['in', 'out'])
def test_dash_is_stdio_on_either_side(side):
    endpoint = parse('-', side)
    assert endpoint == Endpoint('-')
    assert endpoint.is_stdio and not endpoint.bind
    assert str(endpoint) == '-'


def test_bare_in_address_connects():
    endpoint = parse('tcp://127.0.0.1:5555', IN)
    assert endpoint == Endpoint('tcp://127.0.0.1:5555', bind=False)
    assert not endpoint.is_stdio
    assert str(endpoint) == '>tcp://127.0.0.1:5555'


def test_bare_out_address_binds():
    endpoint = parse('tcp://127.0.0.1:5555', OUT)
    assert endpoint == Endpoint('tcp://127.0.0.1:5555', bind=True)
    assert str(endpoint) == '@tcp://127.0.0.1:5555'


@pytest.mark.parametrize('side', [IN, OUT], ids=['in', 'out'])
def test_at_prefix_forces_bind(side):
    assert parse('@tcp://127.0.0.1:6000', side) == Endpoint('tcp://127.0.0.1:6000', True)
    assert parse('@ipc:///tmp/rz.sock', side) == Endpoint('ipc:///tmp/rz.sock', True)


@pytest.mark.parametrize('side', [IN, OUT], ids=['in', 'out'])
def test_gt_prefix_forces_connect(side):
    assert parse('>tcp://127.0.0.1:6000', side) == Endpoint('tcp://127.0.0.1:6000', False)
    assert parse('>ipc:///tmp/rz.sock', side) == Endpoint('ipc:///tmp/rz.sock', False)


@pytest.mark.parametrize('text', ['tcp://*:*', 'tcp://127.0.0.1:*', 'tcp://*:5555',
                                  'tcp://[::1]:5555', 'tcp://localhost:65535',
                                  'tcp://my-host.example_1:1', 'ipc:///tmp/rezina/a.sock'])
def test_bound_addresses_that_parse(text):
    endpoint = parse(text, OUT)
    assert endpoint == Endpoint(text, bind=True)
    # what str() gives back parses to the same endpoint from the other side
    assert parse(str(endpoint), IN) == endpoint


def test_any_port_on_connect_is_refused():
    assert "a port of '*' only works when binding" in refused('tcp://127.0.0.1:*', IN)
    assert "only works when binding" in refused('>tcp://*:*', OUT)


def test_connect_to_any_host_is_refused():
    assert "cannot connect to host '*'" in refused('tcp://*:5555', IN)


@pytest.mark.parametrize('port', ['0', '00000', '65536', '70000', '99999'])
@pytest.mark.parametrize('side', [IN, OUT], ids=['in', 'out'])
def test_port_out_of_range_is_refused(port, side):
    message = refused(f'tcp://127.0.0.1:{port}', side)
    assert f"port {port} is not between 1 and 65535" in message


@pytest.mark.parametrize('text', ['tcp://host', 'tcp://host:', 'tcp://:5555',
                                  'tcp://host:123456', 'tcp://host:port', 'tcp://a b:1',
                                  'tcp://host:5555/path', 'tcp://[::1:5555'])
def test_malformed_tcp_address_is_refused(text):
    assert "expected tcp://HOST:PORT" in refused(text, IN)


@pytest.mark.parametrize('text', ['udp://x', 'udp://127.0.0.1:5555', 'http://host:80',
                                  'localhost:5555', '', '@', '>', '@-', '--', 'inproc://x'])
def test_unknown_scheme_is_refused_with_the_accepted_forms(text):
    message = refused(text, IN)
    assert "expected '-', tcp://HOST:PORT or ipc://PATH" in message
    assert "'@' to bind" in message and "'>' to connect" in message


def test_ipc_path_up_to_107_bytes_is_accepted():
    text = 'ipc:///' + 'p' * 106
    assert parse(text, OUT) == Endpoint(text, bind=True)


def test_ipc_path_over_107_bytes_is_refused():
    message = refused('ipc:///' + 'p' * 107, OUT)
    assert "an ipc path may have at most 107 bytes" in message


def test_ipc_path_length_counts_bytes_not_characters():
    # 36 characters of 3 bytes each: 108 bytes
    message = refused('ipc://' + '東' * 36, IN)
    assert "at most 107 bytes" in message


def test_ipc_without_path_is_refused():
    assert "expected ipc://PATH" in refused('ipc://', IN)
    assert "expected ipc://PATH" in refused('@ipc://', IN)


def test_message_with_a_newline_in_the_text_stays_one_line():
    message = refused('tcp://a\nb:5', IN)
    assert "expected tcp://HOST:PORT" in message


def test_bad_endpoint_is_a_usage_error():
    with pytest.raises(UsageError):
        parse('udp://x', OUT)


def test_tcp_address_with_trailing_newline_is_refused():
    refused('tcp://127.0.0.1:5555\n', IN)


@pytest.mark.parametrize('text, value', [
    ('3', 3), ('-2.5', -2.5), ('"a"', 'a'), ('abc', 'abc'), ('[1,2]', [1, 2]),
    ('{"k": [true, null]}', {'k': [True, None]}), ('true', True), ('null', None),
    ('', ''), ('São Paulo', 'São Paulo'), ('"東京"', '東京'), ('[1,', '[1,'),
])
def test_parse_arg_takes_json_else_the_text(text, value):
    assert parse_arg(text) == value
    assert type(parse_arg(text)) is type(value)


def test_parse_json_of_nothing_is_empty():
    assert parse_json(None, '--kwargs', dict) == {}
    assert parse_json(None, '--args', list) == []


def test_parse_json_returns_the_value_of_its_kind():
    assert parse_json('{"city": "Zürich", "n": 2}', '--kwargs', dict) == {'city': 'Zürich',
                                                                          'n': 2}
    assert parse_json('[1, "two"]', '--args', list) == [1, 'two']


def test_parse_json_invalid_names_the_option():
    with pytest.raises(BadArgument) as caught:
        parse_json('{city: 1}', '--kwargs', dict)
    message = str(caught.value)
    assert message.startswith('--kwargs is not valid JSON: ')
    assert '\n' not in message


@pytest.mark.parametrize('text, option, kind, expected', [
    ('[1, 2]', '--kwargs', dict, '--kwargs must be a JSON object, not list'),
    ('"s"', '--kwargs', dict, '--kwargs must be a JSON object, not str'),
    ('{"a": 1}', '--args', list, '--args must be a JSON array, not dict'),
    ('3', '--args', list, '--args must be a JSON array, not int'),
])
def test_parse_json_of_the_wrong_kind_names_the_option(text, option, kind, expected):
    with pytest.raises(BadArgument) as caught:
        parse_json(text, option, kind)
    assert str(caught.value) == expected


def test_resolve_function():
    func = resolve_callable(f'{FIXTURES}:double')
    assert func is fixtures_target.double
    assert func(21) == 42


def test_resolve_method_builds_its_class_with_no_arguments():
    method = resolve_callable(f'{FIXTURES}:Counter.add')
    assert isinstance(method.__self__, fixtures_target.Counter)
    assert method.__self__ is not fixtures_target.COUNTER
    assert method('a') == [1, 'a']
    assert method('b') == [2, 'b']
    # each resolve builds its own instance
    assert resolve_callable(f'{FIXTURES}:Counter.add')('c') == [1, 'c']


def test_resolve_method_of_a_module_level_instance_uses_that_instance():
    method = resolve_callable(f'{FIXTURES}:COUNTER.add')
    assert method.__self__ is fixtures_target.COUNTER


def unknown(spec):
    with pytest.raises(UnknownFunction) as caught:
        resolve_callable(spec)
    message = str(caught.value)
    assert '\n' not in message
    return message


def test_unknown_module_names_the_spec_and_the_import_error():
    assert unknown('rz_no_such_module:fetch') == (
        "cannot import 'rz_no_such_module:fetch': No module named 'rz_no_such_module'")


def test_unknown_function_names_the_module_and_attribute():
    assert unknown(f'{FIXTURES}:fetch') == (
        f"cannot import '{FIXTURES}:fetch': '{FIXTURES}' has no attribute 'fetch'")


def test_unknown_method_names_the_class_and_attribute():
    assert unknown(f'{FIXTURES}:Counter.fetch') == (
        f"cannot import '{FIXTURES}:Counter.fetch': 'Counter' has no attribute 'fetch'")


@pytest.mark.parametrize('spec', ['double', f'{FIXTURES}:', ':double', f'{FIXTURES}:.add',
                                  f'{FIXTURES}:Counter.', f'{FIXTURES}:Counter..add'])
def test_malformed_spec_asks_for_module_function(spec):
    assert unknown(spec) == f"cannot use {spec!r}: expected MODULE:FUNCTION"


def test_not_callable_target_is_refused():
    assert unknown(f'{FIXTURES}:NOT_CALLABLE') == (
        f"cannot call '{FIXTURES}:NOT_CALLABLE': it is a int")


def test_class_that_needs_arguments_is_refused_by_name():
    message = unknown(f'{FIXTURES}:NeedsSize.run')
    assert message.startswith(f"cannot build NeedsSize() for '{FIXTURES}:NeedsSize.run': "
                              "TypeError: ")


def test_class_whose_constructor_raises_is_refused_with_the_reason():
    assert unknown(f'{FIXTURES}:BrokenInit.run') == (
        f"cannot build BrokenInit() for '{FIXTURES}:BrokenInit.run': "
        "RuntimeError: no database configured")


def test_unknown_attribute_of_an_instance_is_unknown_function():
    message = unknown(f'{FIXTURES}:COUNTER.fetch')
    assert message.startswith(f"cannot import '{FIXTURES}:COUNTER.fetch': ")
    assert "'fetch'" in message
