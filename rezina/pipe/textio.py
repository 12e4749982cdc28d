"""Text at the stdio edges: JSON lines out (--format json), JSON or plain lines in
(--in-format json|lines), for the Unix tools on either side of a pipeline.

Runs in the rz-hydrant, rz-notch and rz-bocca processes whose stdin or stdout is text.
Text has no end-of-stream record, so end of file on text input is always a clean end.
An input item's id is its 1-based line number in its run, `RUN:LINE`; a line that does
not parse fails alone and the lines around it still become items.
"""

import json
import logging
import os

from rezina import defaults
from rezina.backends.jsonvalue import UnrenderableItem, dumps_lines
from rezina.errors import UsageError
from rezina.pipe import codec, protocol
from rezina.pipe.stream import READ_SIZE, PipeReader, PipeWriter

log = logging.getLogger(__name__)

READ_FORMATS = ('msgpack', 'json', 'lines')
SHOWN_TEXT = 10_000             # characters of a failed line kept in its error record
WRITE_FORMATS = ('msgpack', 'json')
UTF8_BOM = b'\xef\xbb\xbf'


def read_format(text):
    """The --in-format value text, checked."""
    return _choice('--in-format', text, READ_FORMATS)


def write_format(text):
    """The --format value text, checked."""
    return _choice('--format', text, WRITE_FORMATS)


def _choice(option, text, choices):
    if text not in choices:
        raise UsageError(f"{option} {text!r}: expected one of {', '.join(choices)}")
    return text


def _log_failed(item_id, reason):
    log.warning("stdout: item %s not written: %s", item_id, reason)


class TextWriter(PipeWriter):
    """Writes batches as JSON lines, one bare item (or {"id", "item"}) a line."""

    def __init__(self, fd, on_acked, with_ids=False, on_failed=None):
        super().__init__(fd, on_acked)
        self.with_ids = with_ids
        self.on_failed = _log_failed if on_failed is None else on_failed

    def offer(self, batch):
        text = self._render(batch)
        self.buffer += text
        self.queued += len(text)
        # a batch with nothing to write is acknowledged once what came before it is out
        self.marks.append((self.queued, batch))
        self.pending_items += batch.count

    def finish(self, clean=True):
        """End the stream: text has no end record, so there is nothing to write."""
        self.eos_sent = True

    def _render(self, batch):
        """The JSON lines of the items of batch that decode and render; reports the rest."""
        try:
            items, bad = codec.decode_items(batch.payload)
        except ValueError as exc:
            items, bad = [], [(index, str(exc)) for index in range(batch.count)]
        for index, reason in bad:
            self.on_failed(batch.item_id(index), reason)
        if bad:
            gone = {index for index, _ in bad}
            indexes = [index for index in range(batch.count) if index not in gone]
        else:
            indexes = range(len(items))
        if self.with_ids:
            items = [{'id': batch.item_id(index), 'item': item}
                     for index, item in zip(indexes, items)]

        try:
            return dumps_lines(items)
        except UnrenderableItem:
            pass
        # the slow path, one item at a time, runs only for a batch holding a bad item
        lines = []
        for index, item in zip(indexes, items):
            try:
                lines.append(dumps_lines([item]))
            except UnrenderableItem as exc:
                self.on_failed(batch.item_id(index), f"cannot be written as JSON: "
                                                     f"{exc.reason}")
        return b''.join(lines)


class TextReader(PipeReader):
    """Reads text lines from an fd as they arrive, one item a line, in batches.

    fmt 'lines' makes each line its str (UTF-8, without its \\n or \\r\\n); fmt 'json'
    parses each line as JSON and skips blank lines; a UTF-8 byte order mark opening the
    first line is dropped. A line that fails is reported with on_failed(item_id, reason)
    and is no item. A line longer than max_line bytes fails too; it is skipped up to its
    newline without being held in memory.
    """

    def __init__(self, fd, fmt, run, on_failed, name='stdin',
                 max_line=defaults.MAX_ITEM_BYTES):
        super().__init__(fd, name)
        if fmt not in ('lines', 'json'):
            raise ValueError(f"text input format {fmt!r}: expected 'lines' or 'json'")
        self.fmt = fmt
        self.run = run
        self.on_failed = on_failed
        self.max_line = max_line
        self.line_no = 0              # lines finished so far
        self.partial = bytearray()    # the start of the line not yet finished
        self.skipping = False         # the unfinished line is too long: drop its bytes
        self._parsed = []             # (line number, item, bytes) since the last batches

    @property
    def truncated(self):
        """Never: end of file is the clean end of text."""
        return False

    def read(self):
        """Batches of the lines whole in what the fd holds now; sets eos at end of file."""
        data = os.read(self.fd, READ_SIZE)
        if not data:
            self.eos = True
            if self.partial or self.skipping:
                self._end_line(b'')      # a last line without its newline
            return self._batches()

        start = 0
        while True:
            newline = data.find(b'\n', start)
            if newline < 0:
                break
            self._end_line(data[start:newline])
            start = newline + 1
        self._extend_line(data[start:])
        return self._batches()

    def _extend_line(self, data):
        if self.skipping or not data:
            return
        if len(self.partial) + len(data) > self.max_line + 1:      # + 1: a \r may end it
            self._too_long(self.line_no + 1)
            self.partial.clear()
            self.skipping = True
            return
        self.partial += data

    def _end_line(self, tail):
        self.line_no += 1
        if self.skipping:
            self.skipping = False        # reported when it grew too long
            return
        cr = (tail or self.partial).endswith(b'\r')
        if len(self.partial) + len(tail) - cr > self.max_line:
            self.partial.clear()
            self._too_long(self.line_no)
            return
        if self.partial:
            line = bytes(self.partial) + tail
            self.partial.clear()
        else:
            line = tail
        if line.endswith(b'\r'):
            line = line[:-1]
        if self.line_no == 1 and line.startswith(UTF8_BOM):
            line = line[len(UTF8_BOM):]
        self._parse(line)

    def _parse(self, line):
        number = self.line_no
        try:
            text = line.decode('utf-8')
        except UnicodeDecodeError as exc:
            self._fail(number, f"not UTF-8: byte 0x{line[exc.start]:02x} at byte "
                               f"{exc.start + 1} of the line",
                       line.decode('utf-8', errors='replace'))
            return
        if self.fmt == 'lines':
            self._parsed.append((number, text, len(line)))
            return

        if not text.strip():
            return
        try:
            item = json.loads(text)
        except json.JSONDecodeError as exc:
            self._fail(number, f"not JSON: {exc.msg} at column {exc.colno}", text)
            return
        except RecursionError:
            self._fail(number, "not JSON this can read: nested too deep", text)
            return
        except ValueError as exc:        # an int of more digits than Python converts
            self._fail(number, f"not JSON this can read: {exc}", text)
            return
        self._parsed.append((number, item, len(line)))

    def _too_long(self, number):
        self._fail(number, f"longer than {self.max_line} bytes")

    def _fail(self, number, what, line=None):
        """Report line number as failed: why, and its text (cut to SHOWN_TEXT) if any."""
        if line is not None and len(line) > SHOWN_TEXT:
            line = line[:SHOWN_TEXT] + '...'
        self.on_failed(f"{self.run}:{number}", f"line {number}: {what}", line)

    def _batches(self):
        """The items parsed so far, in batches of up to the wire batch size."""
        batches, chunk, size = [], [], 0
        for parsed in self._parsed:
            if chunk and (len(chunk) == defaults.WIRE_BATCH_ITEMS
                          or size + parsed[2] > defaults.WIRE_BATCH_BYTES):
                batches += self._batch_of(chunk)
                chunk, size = [], 0
            chunk.append(parsed)
            size += parsed[2]
        if chunk:
            batches += self._batch_of(chunk)
        self._parsed = []
        return batches

    def _batch_of(self, chunk):
        """[the batch of chunk's items that encode], or [] when none does."""
        seqs = [number for number, _, _ in chunk]
        payload, bad = codec.encode_items([item for _, item, _ in chunk])
        for index, reason in bad:
            self._fail(seqs[index], reason)
        if bad:
            seqs = protocol.seqs_without(seqs, bad)
        if not seqs:
            return []
        return [protocol.Batch(self.run, protocol.compact_ids(seqs), len(seqs), payload)]
