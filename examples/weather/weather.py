"""The notch stages of the weather job: fetch a city's weather, then sum it up in one line.

    rz-notch -p 2 -t 50 weather:get_city_weather      # slow: one HTTP request per city
    rz-notch weather:one_word_conditions_for_city     # fast: reshapes the answer

The weather comes from the service at $REZINA_WEATHER_URL (weather_service.py). Each
thread keeps one keep-alive connection to it, so fifty threads make fifty connections,
not one per city.
"""

import http.client
import json
import os
import threading
from datetime import datetime
from urllib.parse import urlencode, urlsplit

URL_VARIABLE = 'REZINA_WEATHER_URL'
DEFAULT_URL = 'http://127.0.0.1:8642'
TIMEOUT = 10.0  # seconds for connecting and for each answer

# errors that mean a kept-alive connection was closed by the other side while idle
DROPPED = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
           http.client.RemoteDisconnected, http.client.CannotSendRequest)

_local = threading.local()


class WeatherServiceError(Exception):
    """The weather service could not be reached or did not answer with weather."""


class ConnectionDropped(WeatherServiceError):
    """The service closed the connection before it answered."""


def service_url():
    """The base URL of the weather service, from $REZINA_WEATHER_URL."""
    return os.environ.get(URL_VARIABLE, DEFAULT_URL).rstrip('/')


def get_city_weather(city):
    """Fetch the weather for CITY (a dict from get_cities); return CITY merged with it."""
    query = urlencode({'lat': city['latitude'], 'lon': city['longitude'],
                       'city': city['name']})
    status, body = _get(f'{urlsplit(service_url()).path}/weather?{query}')

    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if status != 200:
        reason = answer.get('error') if isinstance(answer, dict) else None
        raise WeatherServiceError(
            f"weather service at {service_url()} answered {status} for {city['name']!r}: "
            f"{reason or repr(body[:80])}")
    if not isinstance(answer, dict):
        raise WeatherServiceError(
            f"weather service at {service_url()} sent no JSON object for {city['name']!r}: "
            f"{body[:80]!r}")

    if isinstance(answer.get('observed_at'), str):
        answer['observed_at'] = datetime.fromisoformat(answer['observed_at'])
    return {**city, **answer}


def one_word_conditions_for_city(city_weather):
    """Reduce a get_city_weather result to the one-line summary the job stores."""
    condition = city_weather.get('condition') or 'Unknown'
    weather = condition
    if city_weather.get('temperature_c') is not None:
        weather += f", {city_weather['temperature_c']:.1f} C"
    if city_weather.get('wind_kph') is not None:
        weather += f", wind {city_weather['wind_kph']:.0f} km/h"
    return {
        'geonameid': city_weather['geonameid'],
        'city': city_weather['name'],
        'country': city_weather['country'],
        'condition': condition,
        'weather': weather,
        'summary': f"{city_weather['name']} ({city_weather['country']}): {weather}",
        'observed_at': city_weather.get('observed_at'),
    }


def close_connection():
    """Close this thread's connection to the weather service, if it has one."""
    connection = getattr(_local, 'connection', None)
    if connection is not None:
        connection.close()
    _local.connection = None
    _local.url = None


def _get(path):
    """GET PATH on this thread's connection; return (status, body text).

    A kept-alive connection may have been closed by the service while idle: that one
    is reopened once and the request sent again, which is safe for a GET.
    """
    connection, reused = _connection()
    try:
        return _exchange(connection, path)
    except ConnectionDropped:
        if not reused:
            raise
    connection, _ = _connection()
    return _exchange(connection, path)


def _exchange(connection, path):
    """Send one GET on CONNECTION and read its answer; close the connection on failure."""
    try:
        connection.request('GET', path, headers={'Accept': 'application/json'})
        response = connection.getresponse()
        body = response.read()
    except DROPPED as exc:
        close_connection()
        raise ConnectionDropped(
            f"weather service at {service_url()} dropped the connection: {exc}") from exc
    except (OSError, http.client.HTTPException) as exc:
        close_connection()
        raise WeatherServiceError(
            f"cannot reach weather service at {service_url()}: {exc}") from exc
    return response.status, body.decode('utf-8', errors='replace')


def _connection():
    """This thread's connection to the service, and whether it was used before."""
    url = service_url()
    if getattr(_local, 'connection', None) is not None and _local.url == url:
        return _local.connection, True

    close_connection()
    parts = urlsplit(url)
    if parts.scheme not in ('http', 'https') or not parts.hostname:
        raise WeatherServiceError(f"${URL_VARIABLE} is not an http URL: {url!r}")
    kind = http.client.HTTPSConnection if parts.scheme == 'https' else http.client.HTTPConnection
    _local.connection = kind(parts.hostname, parts.port, timeout=TIMEOUT)
    _local.url = url
    return _local.connection, False
