"""The JSON rendering of items that the text sinks print and SQLite stores for nested values.

An item is what the wire decodes: None, bool, int, float, str, bytes, list, dict (str or
int keys) and datetime. JSON has no bytes or datetime, so:

- datetime becomes its ISO 8601 string (``2024-05-01T12:00:00`` naive,
  ``2024-05-01T12:00:00+02:00`` aware);
- bytes become their standard base64 string;
- int keys become str keys, as ``json`` does;
- non-ASCII text is kept as is, and lines are UTF-8;
- NaN and infinities are written as ``NaN`` and ``Infinity``, as Python's ``json`` does,
  rather than failing the item.
"""

import base64
import datetime
import json


class UnrenderableItem(ValueError):
    """The item at `index` of a batch has no JSON rendering; `reason` says why."""

    def __init__(self, index, reason):
        super().__init__(f"item {index}: {reason}")
        self.index = index
        self.reason = reason


def _json_default(value):
    """Render the item values JSON lacks; anything else is not an item."""
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode('ascii')
    raise TypeError(f"{type(value).__name__} is not an item type")


_ENCODER = json.JSONEncoder(
    ensure_ascii=False, separators=(',', ':'), default=_json_default)



def _one_c_encoder():
    """The C encoder JSONEncoder.encode would build on every call, built once; or None."""
    make = getattr(json.encoder, 'c_make_encoder', None)
    if make is None:
        return None
    try:
        return make(None,       # no cycle check: decoded items cannot hold cycles
                    _json_default, json.encoder.encode_basestring, None, ':', ',',
                    False, False, True)     # sort_keys, skipkeys, allow_nan
    except TypeError:           # another signature than CPython 3.11 to 3.13 have
        return None


# building the encoder costs more than encoding a small item, so build it once
_ITERENCODE = _one_c_encoder()


def dumps_item(item):
    """Return the compact JSON text of one item."""
    if _ITERENCODE is not None:
        return ''.join(_ITERENCODE(item, 0))
    return _ENCODER.encode(item)


def dumps_lines(items):
    """Return the items as UTF-8 JSON lines, each ending in a newline.

    Raises UnrenderableItem naming the index of the first item that cannot be rendered,
    so the caller can name its item id; nothing is returned for a batch with such an item.
    """
    if not items:
        return b''
    try:
        text = '\n'.join([dumps_item(item) for item in items])
        return (text + '\n').encode('utf-8')
    except (TypeError, ValueError, RecursionError):
        pass

    # the slow path runs only to find the item to blame
    for index, item in enumerate(items):
        try:
            dumps_item(item).encode('utf-8')
        except (TypeError, ValueError, RecursionError) as exc:
            raise UnrenderableItem(index, f"{type(exc).__name__}: {exc}") from None
    raise AssertionError("dumps_lines failed on the batch but on none of its items")
