"""The built-in text backends: JSON lines on stdout or in a file, and the null sink.

They are StorageBackend subclasses, so the Python API can name them like a user class,
and they take whole batches with ids through write_records().
"""

import logging
import os
import sys

from rezina.backends.appendfile import AppendFile
from rezina.backends.base import StorageBackend
from rezina.backends.jsonvalue import UnrenderableItem, dumps_lines
from rezina.errors import SinkError

log = logging.getLogger(__name__)


class JsonLines(StorageBackend):
    """Write each item as one line of JSON to a binary stream that a subclass opens."""

    name = 'json lines'

    def __init__(self, logger, *args, **kwargs):
        super().__init__(logger, *args, **kwargs)
        self.stream = None

    def write(self, message):
        """Write one item (the original API: a batch-mode list is one line)."""
        self._write_bytes(self._render([(None, None, message)]))

    def write_records(self, records):
        """Write one line per record's item, then flush. An item that cannot be JSON
        fails alone, once the lines before it are written."""
        self._write_bytes(self._render(records))

    def _render(self, records):
        items = [item for _, _, item in records]
        try:
            return dumps_lines(items)
        except UnrenderableItem as exc:
            self._write_bytes(dumps_lines(items[:exc.index]))
            item_id = records[exc.index][0]
            what = f"item {item_id}" if item_id is not None else "an item"
            raise SinkError(f"cannot write {what} to {self.name}: {exc.reason}",
                            written=exc.index, bad_item=True) from None

    def _write_bytes(self, data):
        raise NotImplementedError


class Stdout(JsonLines):
    """JSON lines on standard output (or on the binary `stream` given), flushed per write.

    A closed reader (``| head``) raises BrokenPipeError unchanged, so the command can
    exit quietly, as it does for any closed downstream.
    """

    name = 'stdout'

    def __init__(self, logger, stream=None):
        super().__init__(logger)
        self.stream = stream

    def open(self):
        if self.stream is None:
            self.stream = sys.stdout.buffer

    def _write_bytes(self, data):
        if not data:
            return
        try:
            self.stream.write(data)
            self.stream.flush()
        except BrokenPipeError:
            raise
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed
            raise SinkError(f"cannot write to stdout: {exc}") from None


class PlainFile(JsonLines):
    """JSON lines appended to the file `path` (created if missing), flushed and fsynced.

    A file whose last line was cut short (a crash mid-write) gets a newline first, so the
    next item starts a line of its own.
    """

    def __init__(self, logger, path):
        super().__init__(logger, path)
        self.path = os.path.expanduser(os.fspath(path))
        self.name = f"jsonl:{path}"
        self.file = AppendFile(self.path, self.name)

    def open(self):
        self.file.open()

    def _write_bytes(self, data):
        self.file.append(data)

    def close(self):
        self.file.close()


class Null(StorageBackend):
    """Discard every item (for benchmarks); idempotent, as nothing is stored twice."""

    idempotent = True
    wants_ids = False
    name = 'null'

    def write(self, message):
        pass

    def write_records(self, records):
        pass
