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


class AddressInUse(RezinaError):
    """An endpoint to bind is taken by another process."""


class SinkError(RezinaError):
    """A backend failed to open, write or close."""


class BadStream(RezinaError, ValueError):
    """An input stream that is not what the command reads."""


class ItemNotEncodable(RezinaError):
    """An item holds a value the wire cannot carry."""
