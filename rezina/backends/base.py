"""The two faces of a sink: the Sink that rz-bocca drives, and the user's StorageBackend."""

from rezina.errors import SinkError


class BackendDown(SinkError):
    """A write failed for a reason of the backend's, not of the items: the store is locked,
    full, read-only or unreachable. Every write fails alike until it returns, so the caller
    waits and tries the same items again rather than looking for one to blame."""


class Sink:
    """Where rz-bocca stores items, written in batches of (item_id, run_id, item) records.

    write() is durable when it returns; on failure it raises SinkError (BackendDown when the
    store, not the items, is at fault) and nothing of that call counts as written.
    `idempotent` says whether writing a record again stores it once (then redelivered items
    need no other guard). One caller at a time: a sink is not thread-safe, but it may be
    used from a thread other than the one that opened it.
    """

    idempotent = False
    wants_ids = True        # False: records may carry None for the item id

    def _connected(self):
        """For a write through `_conn`: open it again if a BackendDown closed it (setting
        `_dropped`); a SinkError if the sink was never opened or was closed."""
        if self._conn is None:
            if not self._dropped:
                raise SinkError(f"cannot write to {self.name}: it is not open")
            self._reopen()

    def _reopen(self):
        """Open again a connection that a BackendDown closed (setting `_dropped`); failing,
        the store is still down."""
        try:
            self.open()
        except SinkError as exc:
            self._dropped = True
            raise BackendDown(str(exc)) from None

    def open(self):
        """Acquire what writing needs (a file, a connection)."""

    def write(self, records):
        """Store a list of (item_id, run_id, item) records."""
        raise NotImplementedError

    def close(self):
        """Release what open() acquired; writes already returned stay stored."""

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc_info):
        self.close()


class StorageBackend:
    """Base class of a user backend, the original rezina API.

    A subclass is built as ``Class(logger, *args, **kwargs)`` and implements ``open()``,
    ``write(message)`` and ``close()``. In stream mode ``message`` is one item; in batch
    mode it is a list of items. A failure is an exception raised from ``write``: those
    items are not acknowledged and will be delivered again, so a backend that stores
    items twice on redelivery should say so by leaving ``idempotent`` False.

    A backend may also define ``write_records(records)``: it then gets every batch as a
    list of (item_id, run_id, item) records whatever the mode, ids included (the
    built-in backends do). Set ``idempotent = True`` only if storing the same item_id
    twice stores it once.

    ``open()`` is called once: a ``write`` whose connection broke should reconnect itself.
    A ConnectionError or TimeoutError from ``write`` (or a BackendDown it raises) says the
    store is down rather than that an item is bad: the same items are tried again, with
    backoff, until it returns.
    """

    idempotent = False

    def __init__(self, logger, *args, **kwargs):
        self.logger = logger
        self.args = args
        self.kwargs = kwargs

    def open(self):
        """Acquire what writing needs; nothing by default."""

    def write(self, message):
        """Store one item (stream mode) or a list of items (batch mode)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement write()")

    def close(self):
        """Release what open() acquired; nothing by default."""
