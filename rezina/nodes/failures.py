"""The error channel of a stage: where the items that a user function failed on are reported.

Runs in the parent process of rz-notch and rz-hydrant: report() is called from the node's
main thread; with `--errors SINK` a writer thread of this module owns the sink, so a slow
or failing sink never holds up the stream. Without a sink each failure is one WARNING line
on stderr, at most LINES_PER_SECOND of them a second.

A record in the sink is a dict: id, item, error (the exception type), message, traceback,
attempts, and node (NAME@HOST:PID); its item id is the failed item's, so a sink that
stores an id once (sqlite:PATH) keeps one record per failed item.

The node also keeps the newest RECENT_KEPT failures, without their items, for its status
to rz-worker (and so rz-master): each has a sequence number, and each status carries those
reported since the status STATUSES_PER_RECORD before it, so that one the worker replaces
before passing it on loses none, and the master takes each once by its number.
"""

import logging
import os
import queue
import socket
import threading
import time
from collections import Counter, OrderedDict, deque

from rezina import defaults
from rezina.errors import SinkError, UsageError

log = logging.getLogger(__name__)

LINES_PER_SECOND = defaults.FAILURE_LINES_PER_SECOND
WRITE_TRIES = defaults.ERROR_WRITE_TRIES
BACKOFF = defaults.ERROR_WRITE_BACKOFF
MAX_WRITE = defaults.ERROR_WRITE_MAX
LOST_IDS_SHOWN = 20         # ids of lost error records named in the log line
RUNS_COUNTED = 64           # runs whose failures a node reports to its rz-worker
RECENT_KEPT = 50            # failures kept, without their items, for the status
RECENT_PER_STATUS = 20      # most of them one status carries
STATUSES_PER_RECORD = 5     # statuses that carry each of them
MESSAGE_CHARS = 200         # of a failure's message, on one line, in the status
TRACE_CHARS = 300           # of the end of its traceback
_CLOSE = object()           # the writer thread's cue to finish


class Failures:
    """Count the items that failed, and report each to `--errors SINK` or to stderr."""

    def __init__(self, node_name, spec=None, logger=log, clock=time.monotonic,
                 mode='stream', backoff=BACKOFF):
        self.name = node_name
        self.node = f"{node_name}@{socket.gethostname()}:{os.getpid()}"
        self.spec = spec
        self.log = logger
        self.count = 0
        self.by_type = Counter()
        self.by_run = OrderedDict()     # failures of the last RUNS_COUNTED runs, by run id
        self.recent = deque(maxlen=RECENT_KEPT)     # the newest, for the status
        self._marks = deque(maxlen=STATUSES_PER_RECORD)     # count at each recent status
        self._clock = clock
        self._backoff = backoff
        self._window_start = None
        self._shown = 0             # lines logged in the current one-second window
        self._hidden = 0            # failures not logged in it
        self._queued = 0            # records handed to the writer thread
        self._written = 0           # ... that the sink stored
        self._lost = 0              # ... that it could not
        self._closed_lost = None    # what close() returned, once it has run
        self._sink = None
        self._queue = None
        self._writer = None
        self.wake = None            # called in the writer thread after each write
        if spec is not None:
            self._sink = _open(spec, mode)
            self._queue = queue.SimpleQueue()
            self._writer = threading.Thread(
                target=self._write_loop, name=f"errors {node_name}", daemon=True)
            self._writer.start()

    def report(self, item_id, item, error_type, message, traceback=None, attempts=1):
        """Count one failed item and pass it on; never waits for the sink. Returns None
        when the report is done, else its ticket: it is done once `settled` reaches it."""
        self.count += 1
        self.by_type[error_type] += 1
        run = item_id.rpartition(':')[0] if isinstance(item_id, str) else None
        if run:
            self.by_run[run] = self.by_run.pop(run, 0) + 1
            if len(self.by_run) > RUNS_COUNTED:
                self.by_run.popitem(last=False)
        self.recent.append({'seq': self.count, 'id': str(item_id), 'run': run or None,
                            'error': str(error_type), 'message': one_line(message),
                            'traceback': trace_tail(traceback),
                            'attempts': attempts, 'at': round(time.time(), 3)})
        if self._queue is None or self._closed_lost is not None:
            self._log_line(item_id, error_type, message, traceback, attempts)
            return None
        if self.count == 1:
            self.log.warning("%s: item %s failed: %s: %s; failed items go to --errors %s",
                             self.name, item_id, error_type, message, self.spec)
        record = {'id': item_id, 'item': item, 'error': error_type, 'message': message,
                  'traceback': traceback or '', 'attempts': attempts, 'node': self.node}
        self._queued += 1
        self._queue.put((item_id, run or None, record))
        return self._queued

    def for_status(self):
        """The recent failures a status carries: those reported since the status
        STATUSES_PER_RECORD before this one, at most the newest RECENT_PER_STATUS."""
        marks = self._marks
        since = marks[0] if len(marks) == marks.maxlen else 0
        marks.append(self.count)
        if since == self.count:
            return []
        return [r for r in self.recent if r['seq'] > since][-RECENT_PER_STATUS:]

    @property
    def settled(self):
        """Records the writer thread is done with (stored, or given up and logged), in the
        order they were reported."""
        return self._written + self._lost

    def summary(self):
        """'3 failed (2 ValueError, 1 quarantined)', or '' when nothing failed."""
        if not self.count:
            return ''
        kinds = ', '.join(f"{n} {kind}" for kind, n in self.by_type.most_common())
        return f"{self.count} failed ({kinds})"

    def close(self, timeout=5.0):
        """Write what is queued and close the sink; return how many records were lost."""
        if self._closed_lost is not None:
            return self._closed_lost
        self._show_hidden()
        lost = 0
        if self._writer is not None:
            self._queue.put(_CLOSE)
            self._writer.join(timeout)
            if self._writer.is_alive():
                # the writer still holds the sink: leave both to the process exit
                lost = self._queued - self._written
            else:
                lost = self._lost
                self._close_sink()
        if lost:
            self.log.error("%s: %d error records could not be written to --errors %s",
                           self.name, lost, self.spec)
        self._closed_lost = lost
        return lost

    def _log_line(self, item_id, error_type, message, traceback, attempts):
        now = self._clock()
        if self._window_start is None or now - self._window_start >= 1.0:
            self._show_hidden()
            self._window_start = now
            self._shown = 0
        if self._shown >= LINES_PER_SECOND:
            self._hidden += 1
            return
        self._shown += 1
        tries = f" ({attempts} attempts)" if attempts > 1 else ""
        self.log.warning("%s: item %s failed: %s: %s%s",
                         self.name, item_id, error_type, message, tries)
        if traceback:
            self.log.debug("%s: item %s:\n%s", self.name, item_id, traceback)

    def _show_hidden(self):
        if self._hidden:
            self.log.warning("%s: %d more items failed in the last second (not shown)",
                             self.name, self._hidden)
            self._hidden = 0

    def _write_loop(self):
        """The writer thread: write what is queued, in batches, until told to close."""
        closing = False
        while not closing:
            records = []
            entry = self._queue.get()
            while True:
                if entry is _CLOSE:
                    closing = True
                else:
                    records.append(entry)
                if len(records) >= MAX_WRITE:
                    break
                try:
                    entry = self._queue.get_nowait()
                except queue.Empty:
                    break
            if records:
                self._write(records)
                if self.wake is not None:
                    self.wake()

    def _write(self, records):
        """Write records, trying again with backoff; count those the sink never took."""
        reason = None
        for attempt in range(WRITE_TRIES):
            if attempt:
                time.sleep(min(defaults.ERROR_WRITE_BACKOFF_MAX,
                               self._backoff * 2 ** (attempt - 1)))
            try:
                self._sink.write(records)
            except Exception as exc:     # a node outlives its error sink
                stored = exc.written if isinstance(exc, SinkError) else 0
                self._written += stored
                records = records[stored:]
                reason = str(exc) if isinstance(exc, SinkError) else _describe(exc)
                self.log.debug("%s: --errors %s: write %d failed: %s",
                               self.name, self.spec, attempt + 1, reason)
                continue
            self._written += len(records)
            return
        self._lost += len(records)
        ids = ', '.join(str(item_id) for item_id, _, _ in records[:LOST_IDS_SHOWN])
        more = f" and {len(records) - LOST_IDS_SHOWN} more" if len(
            records) > LOST_IDS_SHOWN else ""
        self.log.error("%s: lost %d error records (items %s%s): --errors %s: %s",
                       self.name, len(records), ids, more, self.spec, reason)

    def _close_sink(self):
        try:
            self._sink.close()
        except Exception as exc:         # what was written stays written
            self.log.warning("%s: cannot close --errors %s: %s",
                             self.name, self.spec, _describe(exc))


def _open(spec, mode):
    """The opened sink that `--errors SPEC` names; errors name --errors."""
    if spec == 'stdout':
        raise UsageError("--errors stdout: stdout carries the stream; "
                         "expected null, jsonl:PATH, sqlite:PATH, csv:PATH or MODULE:CLASS")
    try:
        from rezina.backends import open_sink    # only with --errors: the import costs
        sink = open_sink(spec, mode=mode)
        sink.open()
    except (UsageError, SinkError) as exc:
        raise type(exc)(f"--errors {spec}: {exc}") from None
    return sink


def one_line(message):
    """A message on one line, cut to MESSAGE_CHARS."""
    text = ' '.join(str(message).split())
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS - 3] + '...'


def trace_tail(traceback):
    """The last TRACE_CHARS of a traceback, from the start of a line where one starts."""
    text = str(traceback or '')
    if len(text) <= TRACE_CHARS:
        return text
    tail = text[-TRACE_CHARS:]
    line = tail.find('\n') + 1
    return tail[line:] if 0 < line < len(tail) else tail


def _describe(exc):
    return f"{type(exc).__name__}: {exc}"
