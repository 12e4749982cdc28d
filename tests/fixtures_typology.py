"""Targets for the TypologyBuilder tests: what a workspace module holds."""

from rezina.backends import StorageBackend


def get_cities():
    return ['Ljubljana', 'Koper']


def get_city_weather(city):
    return {'city': city}


class Shouter:
    def shout(self, item):
        return str(item).upper()


class Rows(StorageBackend):
    def write(self, message):
        pass


async def fetch(item):
    return item


def make_closure():
    def inner(item):
        return item
    return inner
