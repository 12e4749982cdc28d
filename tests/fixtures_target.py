"""Functions and classes that tests/test_endpoint.py names as MODULE:FUNCTION targets."""

NOT_CALLABLE = 42


def double(item):
    return item * 2


class Counter:
    """Built with no arguments; counts the items its method has seen."""

    def __init__(self):
        self.seen = 0

    def add(self, item):
        self.seen += 1
        return [self.seen, item]


class NeedsSize:
    """A class whose constructor needs an argument, so it cannot serve as Class.method."""

    def __init__(self, size):
        self.size = size

    def run(self, item):
        return item


class BrokenInit:
    """A class whose constructor raises."""

    def __init__(self):
        raise RuntimeError("no database configured")

    def run(self, item):
        return item


# an instance, not a class or module: it has no __name__
COUNTER = Counter()
