"""rezina: plain Python functions in parallel across processes and machines."""

__version__ = '0.2.0.dev0'


def __getattr__(name):
    """TypologyBuilder on first use: the stage commands import this package and must not
    pay for the API's imports."""
    if name == 'TypologyBuilder':
        from rezina.typology import TypologyBuilder
        return TypologyBuilder
    raise AttributeError(f"module 'rezina' has no attribute {name!r}")
