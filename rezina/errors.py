"""Exceptions that name the condition; the commands turn them into one-line errors."""


class RezinaError(Exception):
    """Base of the errors a command reports in one line."""


class UsageError(RezinaError):
    """The command line is wrong: exit status 2."""


class UnknownFunction(UsageError):
    """MOD:FUNC does not name an importable callable."""


class BadEndpoint(UsageError):
    """An endpoint that does not parse."""


class UnknownSink(UsageError):
    """A SINK that does not parse or name a backend."""


class BadArgument(UsageError):
    """A JSON argument that does not parse or has the wrong shape."""


class CannotBind(RezinaError):
    """An endpoint to bind cannot be bound (a missing directory, no such address)."""


class AddressInUse(CannotBind):
    """An endpoint to bind is taken by another process."""


class SinkError(RezinaError):
    """A backend failed to open, write or close; `written` records of the failed write,
    from its first, were stored before it failed. `bad_item`: the record after those can
    never be stored (it is not the backend that is down), so it fails alone at once."""

    def __init__(self, message, written=0, bad_item=False):
        super().__init__(message)
        self.written = written
        self.bad_item = bad_item


class BadStream(RezinaError, ValueError):
    """An input stream that is not what the command reads."""
