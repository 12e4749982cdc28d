#!/usr/bin/env python3
"""The original README's cityweather.py, for Python 3 and the example weather service.

The weather comes from examples/weather/weather_service.py at $REZINA_WEATHER_URL
(default http://127.0.0.1:8642); the service wants coordinates, so the ten cities carry
theirs. Run alone, it fetches the ten cities one after another.
"""

import json
import os
import urllib.parse
import urllib.request

CITIES = {
    'Beijing': (39.9075, 116.39723), 'Berlin': (52.52437, 13.41053),
    'New York': (40.71427, -74.00597), 'London': (51.50853, -0.12574),
    'Tokyo': (35.6895, 139.69171), 'Paris': (48.85341, 2.3488),
    'Chicago': (41.85003, -87.65005), 'washington': (38.89511, -77.03637),
    'Venice': (45.43713, 12.33265), 'Houston': (29.76328, -95.36327),
}


def get_cities():
    cities = ['Beijing', 'Berlin', 'New York', 'London', 'Tokyo', 'Paris',
              'Chicago', 'washington', 'Venice', 'Houston']
    return cities


# get city weather data from the weather service
def get_city_weather(city):
    baseurl = os.environ.get('REZINA_WEATHER_URL', 'http://127.0.0.1:8642').rstrip('/')
    latitude, longitude = CITIES[city]
    query = urllib.parse.urlencode({'lat': latitude, 'lon': longitude, 'city': city})
    with urllib.request.urlopen(f"{baseurl}/weather?{query}", timeout=10) as answer:
        data = json.loads(answer.read())
    # the answer names the city already; keep the name we asked for
    data['city'] = city
    return data


# process the answer and convert it to a simple format
def one_word_conditions_for_city(city_weather_result):
    simple_format_data = {}
    simple_format_data['city'] = city_weather_result['city']
    simple_format_data['weather'] = city_weather_result.get('condition') or 'Unknown'
    return simple_format_data


if __name__ == "__main__":
    for city in get_cities():
        print(one_word_conditions_for_city(get_city_weather(city)))
