"""rz-bocca's writer: the items a bocca holds, written to its sink from a thread of its
own so that a slow backend cannot stall the node's heartbeat, and the sink's outages.

Items are written in the order they came, at most batch-size a write; a wire batch is
handed back for acknowledgement once all its items are written. An outage is a run of
failed writes, ended by the next write that succeeds. After BackendDown the same items
wait for the store, the wait doubling from 1 s up to SINK_RETRY_MAX; after any other
failure the items are written one at a time to find the one the sink stumbles on, which
then fails alone. An outage is warned of at its first failed write, then once every
REPORT_EVERY seconds while it lasts.
"""

import logging
import threading
import time
from collections import deque
from itertools import repeat

from rezina import defaults
from rezina.backends.base import BackendDown
from rezina.errors import SinkError
from rezina.pipe.stream import DownstreamClosed

log = logging.getLogger(__name__)
ITEM_ATTEMPTS = defaults.SINK_ITEM_ATTEMPTS
REPORT_EVERY = 60.0         # seconds between warnings while the sink keeps failing


class SinkWriter:
    """Writes held items to a sink in its own thread, one pass each time it is asked."""

    def __init__(self, name, sink, batch_size, wake, failed):
        self.name = name
        self.sink = sink
        self.batch_size = batch_size
        self.wake = wake           # wakes the node's loop: there is something to handle
        self.failed = failed       # failed(item_id, item, kind, reason, attempts, batch)
        self.pending = []          # (batch, items) received, not yet written
        self.pending_items = 0
        self.oldest = None         # when the oldest pending item arrived
        self.stored = 0
        self.last_at = None
        self.retry_at = 0.0
        self.retry_wait = 0.0
        # an outage: a run of failed writes, ended by the next write that succeeds
        self.failing_since = None  # when the first failed write of it began
        self.failed_writes = 0
        self.write_began = 0.0
        self.write_seconds = 0.0   # spent in the sink's write
        self.failed_at = 0.0       # when the last write failed
        self.reported_at = None    # when the outage was last reported
        self.down = False          # the last failure was BackendDown: no item is to blame
        self.narrow = 0            # writes of one item left, to find a failing item
        self.head_attempts = 0     # failed writes of the first unwritten item alone
        self.last_error = ''
        self.partly_written = 0
        self.bad_item = False
        # `lock` guards what both threads change
        self.lock = threading.Lock()
        self.written_batches = deque()   # wire batches now written, to acknowledge
        self.writing = False
        self.error = None                # what ended the thread, for the node to raise
        self.wanted = threading.Event()
        self.thread = threading.Thread(target=self._run, name='rz-writer', daemon=True)
        self.closing = False

    def add(self, batch, items, ids):
        """Hold the decoded items of a wire batch (ids: their seqs, None for all)."""
        now = time.monotonic()
        with self.lock:
            if self.oldest is None:
                self.oldest = now
            self.pending.append([batch, items, ids, 0])     # 0: items written so far
            self.pending_items += len(items)

    def start(self):
        """Open the sink and start the thread."""
        self.sink.open()
        self.thread.start()

    def write_now(self):
        """Ask the thread for a pass over the pending items."""
        self.writing = True
        self.wanted.set()

    def stop(self):
        """End the thread, then close the sink; a write that hangs leaves the sink be."""
        self.closing = True
        self.wanted.set()
        self.thread.join(timeout=2.0)
        if not self.thread.is_alive():
            self.sink.close()

    def _run(self):
        """The writer thread: one pass over the pending items each time it is asked."""
        while True:
            self.wanted.wait()
            self.wanted.clear()
            if self.closing:
                return
            try:
                self._write_pending()
            except BaseException as exc:      # handed to the main thread, which raises it
                self.error = exc
            self.writing = False
            self.wake()

    def _write_pending(self):
        """Write pending items, at most batch-size a write; acknowledge each wire batch
        once all its items are written."""
        while self.pending:
            # at most a batch a write in stream mode too: a slow sink acknowledges as it goes
            limit = 1 if self.narrow else self.batch_size
            parts, count = self._take(limit, skip=0)
            if not self._write(parts):
                if self.partly_written:         # its first items are in: move past them
                    done, self.partly_written = self.partly_written, 0
                    self._written(self._take(done, skip=0)[0], done)
                    count -= done
                if self.bad_item:
                    self._fail_head(self.last_error, 1)
                    continue
                self._write_failed(count)
                return
            self._written(parts, count)
            self._sink_back()
            self.head_attempts = 0
            self.narrow = max(0, self.narrow - 1)
        with self.lock:
            if not self.pending:
                self.oldest = None

    def _take(self, limit, skip):
        """(parts, count): up to limit unwritten items, after the first skip of them."""
        parts, count = [], 0
        for entry in self.pending:
            start = entry[3]
            left = len(entry[1]) - start
            passed = min(skip, left)
            skip -= passed
            start, left = start + passed, left - passed
            take = left if limit is None else min(left, limit - count)
            if take:
                parts.append((entry, start, start + take))
                count += take
            if limit is not None and count >= limit:
                break
        return parts, count

    def _written(self, parts, count, stored=True):
        for entry, _, end in parts:
            entry[3] = end
        with self.lock:
            while self.pending and self.pending[0][3] == len(self.pending[0][1]):
                self.written_batches.append(self.pending.pop(0)[0])
            self.pending_items -= count
        self.wake()
        if stored:
            self.stored += count
            self.last_at = time.monotonic()

    def _write_failed(self, count):
        """Retry after a failed write. BackendDown blames the store: the same items wait for
        it. Otherwise find the item the write stumbles on: one item a write, and an item
        that fails ITEM_ATTEMPTS times while the one after it can be written fails alone."""
        self._note_failure()
        if self.down:
            self.narrow = 0
            self._say_retrying()
            return
        if count > 1:
            report = log.warning if self.failed_writes == 1 else log.debug
            report("%s: %s; writing its %d items one at a time to find the one that fails",
                   self.name, self.last_error, count)
            self.narrow = count
            self.retry_at = 0.0
            return
        self.head_attempts += 1
        if self.head_attempts < ITEM_ATTEMPTS or self.pending_items < 2:
            self._say_retrying()
            return
        probe, _ = self._take(1, skip=1)
        if not self._write(probe):
            # the items after it fail too: the sink is down; when it is back, whole writes
            self.head_attempts = self.narrow = 0
            self._note_failure()
            self._say_retrying()
            return
        self._fail_head(f"the sink failed to write it {ITEM_ATTEMPTS} times: "
                        f"{self.last_error}", ITEM_ATTEMPTS)
        self._written(probe, 1)
        self._sink_back()
        self.head_attempts = 0
        self.retry_at = 0.0

    def _note_failure(self):
        if self.failing_since is None:
            self.failing_since = self.write_began
        self.failed_writes += 1
        self.failed_at = time.monotonic()

    def _say_retrying(self):
        """A warning at the first failure of an outage, then one every REPORT_EVERY s."""
        now = time.monotonic()
        if self.reported_at is not None and now - self.reported_at < REPORT_EVERY:
            log.debug("%s: %s; retrying in %.0f s", self.name, self.last_error,
                      self.retry_wait)
            return
        self.reported_at = now
        log.warning("%s: %s; retrying in %.0f s (failing for %.0f s, %d writes; %d items "
                    "held, not acknowledged)", self.name, self.last_error, self.retry_wait,
                    now - self.failing_since, self.failed_writes, self.pending_items)

    def _sink_back(self):
        """A write succeeded: any outage is over."""
        if self.failing_since is None:
            return
        if self.reported_at is not None:
            log.info("%s: the sink writes again, after %.1f s and %d failed writes",
                     self.name, time.monotonic() - self.failing_since, self.failed_writes)
        self.failing_since, self.failed_writes, self.reported_at = None, 0, None

    def _fail_head(self, why, attempts):
        """The first unwritten item fails alone; the writing goes on after it."""
        head, _ = self._take(1, skip=0)
        (entry, index, _), = head
        self.failed(f"{entry[0].run}:{_seq_of(entry, index)}", entry[1][index], 'SinkError',
                    why, attempts, batch=entry[0])
        self._written(head, 1, stored=False)

    def _write(self, parts):
        records = []
        for (batch, items, ids, _), start, end in parts:
            run = batch.run
            if self.sink.wants_ids:
                seqs = (batch.seqs() if ids is None else ids)[start:end]
                records.extend((f"{run}:{seq}", run, item)
                               for seq, item in zip(seqs, items[start:end]))
            else:
                records.extend(zip(repeat(None), repeat(run), items[start:end]))
        self.write_began = time.monotonic()
        try:
            if records:
                self.sink.write(records)
        except BrokenPipeError:
            raise DownstreamClosed() from None
        except SinkError as exc:
            self.partly_written = exc.written
            self.last_error = str(exc)
            self.bad_item = exc.bad_item
            self.down = isinstance(exc, BackendDown)
            if exc.bad_item:
                return False
            self.retry_wait = min(defaults.SINK_RETRY_MAX, max(1.0, self.retry_wait * 2))
            self.retry_at = time.monotonic() + self.retry_wait
            return False
        finally:
            self.write_seconds += time.monotonic() - self.write_began
        self.retry_wait = 0.0
        return True


def _seq_of(entry, index):
    batch, _, ids, _ = entry
    return (batch.seqs() if ids is None else ids)[index]
