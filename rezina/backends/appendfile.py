"""A file that sinks append whole lines to: flushed and fsynced before each append returns
(a sink acknowledges what it wrote), and mended after a crash cut its last line short."""

import logging
import os

from rezina.errors import SinkError

log = logging.getLogger(__name__)


class AppendFile:
    """The file `path`, created if missing, opened to append; `name` is the sink's name in
    errors. A last line cut short (by a crash mid-write) gets `line_end` before the next
    append, so that the next line starts a line of its own."""

    def __init__(self, path, name, line_end=b'\n'):
        self.path = path
        self.name = name
        self.line_end = line_end
        self.stream = None
        self._check_tail = True

    def open(self):
        parent = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(parent):
            raise SinkError(f"cannot open {self.name}: directory {parent!r} does not exist")
        try:
            # read access too: the last byte is read; writes still append
            self.stream = open(self.path, 'a+b')
        except OSError as exc:
            raise SinkError(f"cannot open {self.name}: {exc.strerror or exc}") from None
        self._check_tail = True

    def size(self):
        return os.fstat(self.stream.fileno()).st_size

    def append(self, data):
        """Append the bytes `data`, flushed and fsynced."""
        if not data:
            return
        if self.stream is None:
            raise SinkError(f"cannot write to {self.name}: it is not open")
        try:
            if self._check_tail and not self._ends_a_line():
                log.warning("%s: last line was cut short; starting a new one", self.name)
                data = self.line_end + data
            self._check_tail = False
            self.stream.write(data)
            self.stream.flush()
            os.fsync(self.stream.fileno())
        except OSError as exc:
            # a partial write may have left half a line: look again before the next one
            self._check_tail = True
            raise SinkError(f"cannot write to {self.name}: {exc.strerror or exc}") from None

    def _ends_a_line(self):
        """True if the file is empty or its last byte is a newline."""
        size = self.size()
        return size == 0 or os.pread(self.stream.fileno(), 1, size - 1) == b'\n'

    def close(self):
        stream, self.stream = self.stream, None
        if stream is not None:
            try:
                stream.close()
            except OSError as exc:
                raise SinkError(f"cannot close {self.name}: {exc.strerror or exc}") from None
