"""The CSV sink: items appended as rows of a CSV file (RFC 4180: commas, CRLF, UTF-8).

The header is the first line. A file that already has one keeps it; otherwise the first
item makes it: a dict item's keys, in their order, or the single column ``item`` for any
other item. Then:

- a dict item fills the columns of its keys; a column it lacks is an empty cell, and a key
  the header lacks is dropped, with one warning per key naming it and the file;
- a non-dict item fills the column ``item``; under a header of dict keys it cannot be a
  row, nor can a dict under a header of its own ``item`` column (a file's header that is
  just ``item`` takes both, as it cannot say which made it): such an item fails alone;
- an empty dict cannot make a header: as the first item of a file, it fails alone.

Cells: None is empty; str as it is; bool, int and float as their JSON text (``true``,
``12``, ``1.5``, ``NaN``); datetime and bytes as the strings the JSON lines sinks write
(ISO 8601, base64); list and dict as compact JSON text. An int key names the column of
its decimal text.
"""

import bisect
import csv
import io
import json
import logging
import os

from rezina.backends.appendfile import AppendFile
from rezina.backends.base import StorageBackend
from rezina.backends.jsonvalue import dumps_item
from rezina.errors import SinkError

log = logging.getLogger(__name__)

ITEM_COLUMN = 'item'
LINE_END = '\r\n'               # RFC 4180; the csv module's default too


def cell(value):
    """The text of one CSV cell for an item value; TypeError if it is not an item value."""
    if value is None:
        return ''
    if type(value) is str:
        return value
    text = dumps_item(value)
    # datetime, bytes and str subclasses render as JSON strings: the cell is the string
    return json.loads(text) if text.startswith('"') else text


def column_name(key):
    """The header column a dict item's `key` fills."""
    return key if type(key) is str else str(key)


class _NotARow(Exception):
    """An item of a batch that cannot be a row; `reason` says why."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class CsvFile(StorageBackend):
    """Items appended as rows of the CSV file `path` (created if missing), flushed and
    fsynced on every write.

    Not idempotent: a redelivered item is appended again, so the file holds every item
    at least once.
    """

    def __init__(self, logger, path):
        super().__init__(logger, path)
        self.path = os.path.expanduser(os.fspath(path))
        self.name = f"csv:{path}"
        self.file = AppendFile(self.path, self.name, LINE_END.encode('ascii'))
        self.header = None          # column names once fixed, by the file or a first item
        self.columns = {}           # column name -> its index in the header
        self.takes_dicts = False    # rows from dict items fit the header
        self.takes_values = False   # rows from non-dict items fit the header
        self._warned = set()        # keys already reported as not in the header

    def open(self):
        self.file.open()
        try:
            header = self._read_header()
        except OSError as exc:
            self.file.close()
            raise SinkError(f"cannot open {self.name}: {exc.strerror or exc}") from None
        except (UnicodeDecodeError, csv.Error) as exc:
            self.file.close()
            raise SinkError(f"cannot open {self.name}: its header is not UTF-8 CSV: "
                            f"{exc}") from None
        if header == []:
            self.file.close()
            raise SinkError(f"cannot open {self.name}: its first line is empty, "
                            f"not a CSV header")
        self._warned = set()
        self._fix_header(header, dicts=True, values=header == [ITEM_COLUMN])

    def _read_header(self):
        """The first record of the file, or None if the file is empty."""
        if self.file.size() == 0:
            return None
        # utf-8-sig: a header saved by a spreadsheet may start with a byte order mark
        with open(self.path, encoding='utf-8-sig', newline='') as text:
            return next(csv.reader(text), [])

    def _fix_header(self, header, dicts, values):
        self.header = header
        self.takes_dicts = dicts and header is not None
        self.takes_values = values and header is not None
        self.columns = {}
        for index, name in enumerate(header or ()):
            self.columns.setdefault(name, index)

    def write(self, message):
        """Write one item as a row (the original API: a batch-mode list is one item)."""
        self.write_records([(None, None, message)])

    def write_records(self, records):
        """Append one row per record's item (and the header first, if it has none yet).

        An item that cannot be a row raises SinkError once the rows before it are stored,
        with `written` saying how many there are.
        """
        if not records:
            return
        if self.file.stream is None:
            raise SinkError(f"cannot write to {self.name}: it is not open")
        saved = (self.header, self.takes_dicts, self.takes_values)
        buffer = io.StringIO(newline='')
        writer = csv.writer(buffer, lineterminator=LINE_END)
        ends = []           # where the text of each item's row ends
        failure = None      # (index, reason) of the first item that cannot be a row

        for index, (_, _, item) in enumerate(records):
            try:
                header = self._header_from(item) if self.header is None else None
                row = self._row(item)
            except _NotARow as exc:
                failure = (index, exc.reason)
                break
            except (TypeError, ValueError, RecursionError) as exc:
                failure = (index, f"{type(exc).__name__}: {exc}")
                break
            if header is not None:
                writer.writerow(header)
            writer.writerow(row)
            ends.append(buffer.tell())

        text = buffer.getvalue()
        try:
            data = text.encode('utf-8')
        except UnicodeEncodeError as exc:   # a lone surrogate, which a Python caller may pass
            index = bisect.bisect_right(ends, exc.start)
            data = text[:ends[index - 1] if index else 0].encode('utf-8')
            failure = (index, f"UnicodeEncodeError: {exc.reason}")

        # only the first item of a write can fix the header: if it failed, unfix it
        if failure is not None and failure[0] == 0:
            self._fix_header(*saved)
        try:
            self.file.append(data)
        except SinkError:
            self._fix_header(*saved)
            raise
        if failure is not None:
            index, reason = failure
            item_id = records[index][0]
            what = f"item {item_id}" if item_id is not None else "an item"
            raise SinkError(f"cannot write {what} to {self.name}: {reason}", written=index,
                            bad_item=True)

    def _header_from(self, item):
        """Fix the header from the first item; return it, to be written first."""
        if type(item) is dict:
            if not item:
                raise _NotARow("an empty dict has no keys to make the header from")
            header = list(dict.fromkeys(column_name(key) for key in item))
            self._fix_header(header, dicts=True, values=False)
        else:
            self._fix_header([ITEM_COLUMN], dicts=False, values=True)
        return self.header

    def _row(self, item):
        """The cells of one item under the header."""
        if type(item) is not dict:
            if not self.takes_values:
                raise _NotARow(f"a non-dict item ({type(item).__name__}) cannot be a row "
                                  f"under a header of dict keys")
            return [cell(item)]
        if not self.takes_dicts:
            raise _NotARow(f"a dict item cannot be a row under the header {ITEM_COLUMN!r} "
                              f"of non-dict items")
        row = [''] * len(self.header)
        columns = self.columns
        dropped = []
        for key, value in item.items():
            index = columns.get(column_name(key))
            if index is None:
                dropped.append(key)
            else:
                row[index] = cell(value)
        if dropped and len(dropped) == len(item):   # ({} is an empty row: it holds nothing)
            # a row of empty cells would lose the whole item: it fails alone instead
            raise _NotARow(f"none of its keys ({', '.join(map(repr, dropped[:5]))}) is in "
                           f"the file's header")
        for key in dropped:
            self._drop(key)
        return row

    def _drop(self, key):
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s: key %r is not in the file's header; its values are dropped",
                        self.name, key)

    def close(self):
        self.file.close()
