"""The workspace module of the control-plane tests: copied into the master's workspace,
and imported by the tests for TypologyBuilder's targets."""

import os
import time


def numbers(n=10):
    return list(range(n))


def record(x):
    return {'x': x, 'pid': os.getpid()}


def slow_record(x, delay=0.05):
    time.sleep(delay)
    return {'x': x, 'pid': os.getpid()}


def version(x):
    return {'x': x, 'version': 1}


def get_cities():
    return ['Ljubljana', 'Koper', 'Maribor']


def get_city_weather(city):
    return {'city': city, 'weather': 'Sunny'}


def slowish(x):
    time.sleep(0.005)
    return {'x': x, 'pid': os.getpid()}


class Forecaster:
    """A target that is a method: the class is built once per worker process."""

    def __init__(self):
        self.word = 'Sunny'

    def forecast(self, city):
        return {'city': city, 'weather': self.word}


def picky(x):
    if x % 3 == 0:
        raise ValueError(f"{x} is a multiple of 3")
    return {'x': x}


def paced(x):
    time.sleep(0.001)
    return {'x': x}


def aborts(x):
    os.abort()


def poison(x):
    if x == 777:
        raise ValueError("item 777 is poison")
    return {'x': x}
