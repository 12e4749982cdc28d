"""A small local weather service for the weather job, standing in for a real weather API.

    GET /weather?lat=LAT&lon=LON&city=NAME

answers, after a fixed delay, with JSON {city, latitude, longitude, condition,
temperature_c, wind_kph, observed_at}. The weather is made up but repeatable: it is
derived from the coordinates alone, so the same place always gets the same weather.
A request with a missing or bad parameter gets 400 and {"error": ...} at once.

Usage:
    python weather_service.py [--host HOST] [--port PORT] [--delay SECONDS]

It prints its base URL (http://HOST:PORT) on stdout once it listens, and logs on stderr.
"""

import argparse
import hashlib
import json
import logging
import math
import sys
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

DEFAULT_HOST = '127.0.0.1'
DEFAULT_PORT = 0          # any free port
DEFAULT_DELAY = 0.2       # seconds per answer, like a remote API
IDLE_TIMEOUT = 60.0       # seconds a keep-alive connection may sit idle
LISTEN_BACKLOG = 256      # so a hundred clients connecting at once are not refused

CONDITIONS = ('Clear', 'Sunny', 'Mostly Sunny', 'Partly Cloudy', 'Mostly Cloudy',
              'Cloudy', 'Fog', 'Breezy', 'Drizzle', 'Rain', 'Showers', 'Thunderstorms')
WET_CONDITIONS = ('Drizzle', 'Rain', 'Showers')


class BadQuery(ValueError):
    """A /weather request whose parameters are missing or out of range."""


def observe(latitude, longitude, city=''):
    """The weather at a place: the same coordinates always give the same weather."""
    seed = hashlib.sha256(f'{latitude:.5f},{longitude:.5f}'.encode()).digest()

    # warmer near the equator, then up to 8 degrees either way
    temperature = 30.0 - 0.45 * abs(latitude) + (seed[1] / 255 - 0.5) * 16
    condition = CONDITIONS[seed[0] % len(CONDITIONS)]
    if temperature < 0 and condition in WET_CONDITIONS:
        condition = 'Snow'

    return {
        'city': city,
        'latitude': latitude,
        'longitude': longitude,
        'condition': condition,
        'temperature_c': round(temperature, 1),
        'wind_kph': round(seed[2] / 255 * 45, 1),
        'observed_at': datetime.now(timezone.utc).isoformat(timespec='seconds'),
    }


def parse_query(query):
    """Return (latitude, longitude, city) from a /weather query string, or raise BadQuery."""
    try:
        fields = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query),
                          max_num_fields=10)
    except ValueError as exc:
        raise BadQuery(f"bad query string: {exc}") from None
    for name, values in fields.items():
        if len(values) > 1:
            raise BadQuery(f"parameter {name!r} given {len(values)} times")

    latitude = _coordinate(fields, 'lat', 90.0)
    longitude = _coordinate(fields, 'lon', 180.0)
    city = fields.get('city', [''])[0]
    return latitude, longitude, city


def _coordinate(fields, name, limit):
    """The float parameter NAME, which must lie within [-LIMIT, LIMIT]."""
    if name not in fields:
        raise BadQuery(f"missing parameter {name!r}")
    text = fields[name][0]
    try:
        value = float(text)
    except ValueError:
        raise BadQuery(f"parameter {name!r} is not a number: {text!r}") from None
    if not math.isfinite(value) or abs(value) > limit:
        raise BadQuery(f"parameter {name!r} must be between {-limit:g} and {limit:g}: {text!r}")
    return value


class WeatherHandler(BaseHTTPRequestHandler):
    """Answers GET /weather on a keep-alive HTTP/1.1 connection."""

    protocol_version = 'HTTP/1.1'
    server_version = 'rezina-weather/1.0'

    def setup(self):
        self.timeout = self.server.idle_timeout
        super().setup()

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path != '/weather':
            self.send_json(404, {'error': f"no such path: {url.path!r}; try /weather"})
            return
        try:
            latitude, longitude, city = parse_query(url.query)
        except BadQuery as exc:
            self.send_json(400, {'error': str(exc)})
            return

        time.sleep(self.server.delay)
        self.send_json(200, observe(latitude, longitude, city))

    def send_json(self, status, document):
        """Send DOCUMENT as a JSON answer with a Content-Length, keeping the connection."""
        body = json.dumps(document, ensure_ascii=False).encode('utf-8')
        self.send_response(status)
        self.send_header('Content-Type', 'application/json; charset=utf-8')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        log.debug('%s %s', self.address_string(), format % args)


class WeatherServer(ThreadingHTTPServer):
    """The weather service: one daemon thread per connection."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address=(DEFAULT_HOST, DEFAULT_PORT), delay=DEFAULT_DELAY,
                 idle_timeout=IDLE_TIMEOUT):
        if delay < 0:
            raise ValueError(f"delay must be >= 0, not {delay!r}")
        self.delay = delay
        self.idle_timeout = idle_timeout
        super().__init__(address, WeatherHandler)

    @property
    def url(self):
        """The base URL clients use, e.g. http://127.0.0.1:8642."""
        host, port = self.server_address[:2]
        if ':' in host:
            host = f'[{host}]'
        return f'http://{host}:{port}'


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='weather_service', description='A local weather service for the rezina example.')
    parser.add_argument('--host', default=DEFAULT_HOST,
                        help='address to bind [default: %(default)s]')
    parser.add_argument('--port', type=int, default=DEFAULT_PORT,
                        help='port to bind, 0 for any free port [default: %(default)s]')
    parser.add_argument('--delay', type=float, default=DEFAULT_DELAY,
                        help='seconds before each answer [default: %(default)s]')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='weather_service: %(message)s')

    try:
        server = WeatherServer((args.host, args.port), delay=args.delay)
    except (OSError, ValueError) as exc:
        print(f"weather_service: cannot serve on {args.host}:{args.port}: {exc}",
              file=sys.stderr)
        return 1

    with server:
        print(server.url, flush=True)
        log.info('serving %s/weather with a %.3f s delay', server.url, server.delay)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == '__main__':
    sys.exit(main())
