"""Sinks: where rz-bocca stores items (stdout, null, jsonl:PATH, csv:PATH, sqlite:PATH,
postgresql://..., MODULE:CLASS).

The names below are imported when first used, so that a stage that needs no sink (or one
module of this package) does not pay for importing them all at start-up.
"""

import importlib

_HOMES = {
    'Sink': 'base', 'StorageBackend': 'base',
    'BackendSink': 'sink', 'backend_sink': 'sink', 'open_sink': 'sink',
    'SqliteSink': 'sqlite', 'PostgresqlSink': 'postgresql', 'CsvFile': 'csvfile',
    'Null': 'textfiles', 'PlainFile': 'textfiles', 'Stdout': 'textfiles',
}

__all__ = sorted(_HOMES)


def __getattr__(name):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
