"""The progress line of a one-shot pipeline: one line on stderr, rewritten in place.

Run by rz-bocca, the stage that knows what is stored and what failed: the line shows items
done, their rate and failures and, once a source said how many items its run yields (the
optional total of a batch), the percent done and the time left. It is rewritten with '\r'
at most REFRESH_PER_SECOND times a second and finished with a newline; a log line of this
process clears it first, so the two do not mix, and the cursor is left at its start, so a
line another stage writes to the same terminal overwrites it rather than runs on from it.
"""

import logging
import os
import sys
import time
from collections import deque

REFRESH_PER_SECOND = 4
RATE_WINDOW = 5.0           # seconds of history the rate is measured over
SAMPLE_EVERY = 0.1          # seconds between the points of that history


def wanted(choice, stream):
    """Whether to show the line: choice is True (--progress), False (--no-progress) or
    None, then only when stream is a terminal."""
    if choice is not None:
        return choice
    try:
        return os.isatty(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False


class Progress:
    """The line of one node: update() as items are done, finish() at the end."""

    def __init__(self, prog, stream=None, clock=time.monotonic):
        self.prog = prog
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.started = clock()
        self.shown_at = None
        self.width = 0              # of the line now on the terminal; 0: none shown
        self.history = deque()      # (time, done) over the last RATE_WINDOW seconds
        self.totals = {}            # run -> items its source yields
        self.last = (0, 0)          # (stored, failed) of the last update
        self.finished = False
        self._filter = None

    def saw_total(self, run, total):
        if total is not None:
            self.totals[run] = total

    @property
    def total(self):
        return sum(self.totals.values()) if self.totals else None

    def update(self, stored, failed, force=False):
        """Note the counts; redraw when the last drawing is old enough (or force)."""
        self.last = (stored, failed)
        now = self.clock()
        history = self.history
        if not history or now - history[-1][0] >= SAMPLE_EVERY:
            history.append((now, stored + failed))
            while len(history) > 2 and now - history[0][0] > RATE_WINDOW:
                history.popleft()
        if self.finished or not (stored or failed or self.totals):
            return                  # nothing to say yet: start-up logs go out unmixed
        if not force and self.shown_at is not None \
                and now - self.shown_at < 1.0 / REFRESH_PER_SECOND:
            return
        self.shown_at = now
        self._draw(self.line(stored, failed, now))

    def finish(self, stored, failed, complete):
        """The last drawing, with a newline; complete: every item of the input is done
        (100% when a total is known)."""
        if self.finished:
            return
        self.update(stored, failed)
        self.finished = True
        self._draw(self.line(stored, failed, self.clock(), complete=complete))
        self._write('\n')
        self.width = 0
        self.detach_logging()

    def line(self, stored, failed, now, complete=False):
        done = stored + failed
        total = self.total
        parts = []
        if total:
            percent = 100 if complete else min(99, int(100 * done / total))
            parts.append(f"{done}/{total} items ({percent}%)")
        else:
            parts.append(f"{done} items")
        rate = self.rate(now, done, overall=complete)
        parts.append(f"{rate:.0f} items/s")
        parts.append(f"{failed} failed")
        if complete:
            parts.append(f"{now - self.started:.1f} s")
        elif total and rate > 0 and done < total:
            parts.append(f"ETA {_duration((total - done) / rate)}")
        return f"{self.prog}: " + ', '.join(parts)

    def rate(self, now, done, overall=False):
        """Items per second over the last RATE_WINDOW seconds (or since the start)."""
        if overall or not self.history:
            first_at, first = self.started, 0
        else:
            first_at, first = self.history[0]
        span = now - first_at
        return (done - first) / span if span > 0 else 0.0

    def clear(self):
        """Blank the line, so that what is written next starts at its left."""
        if self.width:
            self._write('\r' + ' ' * self.width + '\r')
            self.width = 0

    def _draw(self, text):
        pad = ' ' * max(0, self.width - len(text))
        self._write('\r' + text + pad + '\r')
        self.width = len(text)

    def _write(self, text):
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):       # a closed terminal: no line, not a failure
            self.finished = True

    def attach_logging(self):
        """Clear the line before each log record the root logger's handlers write."""
        self._filter = _ClearFirst(self)
        for handler in logging.getLogger().handlers:
            handler.addFilter(self._filter)

    def detach_logging(self):
        if self._filter is None:
            return
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self._filter)
        self._filter = None


class _ClearFirst(logging.Filter):
    def __init__(self, progress):
        super().__init__()
        self.progress = progress

    def filter(self, record):
        self.progress.clear()
        return True


def _duration(seconds):
    """5 s, 2 min 5 s, 1 h 2 min."""
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
