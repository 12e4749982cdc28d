"""Sinks: where rz-bocca stores items (stdout, null, jsonl:PATH, sqlite:PATH, MODULE:CLASS)."""

from rezina.backends.base import Sink, StorageBackend
from rezina.backends.sink import BackendSink, backend_sink, open_sink
from rezina.backends.sqlite import SqliteSink
from rezina.backends.textfiles import Null, PlainFile, Stdout

__all__ = ['BackendSink', 'Null', 'PlainFile', 'Sink', 'SqliteSink', 'Stdout',
           'StorageBackend', 'backend_sink', 'open_sink']
