"""Items on the wire: msgpack with datetime, checked where they are encoded.

A batch payload is one msgpack array of items. Encoding a batch that holds an item the wire
cannot carry fails that item only: the rest are encoded and the bad ones are returned with
the reason. Decoding isolates an item that does not decode (a dict key msgpack can carry
but Python cannot hash) in the same way.
"""

import datetime

import msgpack

from rezina import defaults

DATETIME_EXT = 1
_MAX_INT = 2 ** 64 - 1
_MIN_INT = -2 ** 63


def _default(obj):
    if isinstance(obj, datetime.datetime):
        return msgpack.ExtType(DATETIME_EXT, obj.isoformat().encode())
    raise TypeError(f"type {type(obj).__name__} is not supported")


def _ext_hook(code, data):
    if code == DATETIME_EXT:
        return datetime.datetime.fromisoformat(data.decode())
    raise ValueError(f"unknown msgpack extension type {code}")


def packb(obj):
    """Encode one value (an item, or a control header)."""
    return msgpack.packb(obj, default=_default, use_bin_type=True)


def unpackb(data):
    """Decode one value encoded by packb."""
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)


def stream_unpacker():
    """An Unpacker for a stream of values encoded by packb (records that hold items)."""
    return msgpack.Unpacker(ext_hook=_ext_hook, raw=False, strict_map_key=False,
                            max_buffer_size=0)


def array_header(count):
    return msgpack.Packer().pack_array_header(count)


def join_packed(parts):
    """A batch payload from items packed one by one."""
    return array_header(len(parts)) + b''.join(parts)


max_item_bytes = defaults.MAX_ITEM_BYTES    # --max-item-bytes, set once at start


def set_max_item_bytes(limit):
    """The largest encoded item this process sends (the forked notch children too)."""
    global max_item_bytes
    max_item_bytes = limit


def encode_items(items):
    """Return (payload, bad): the payload holds every item that encodes, in order, and is
    at most max_item_bytes; bad lists (index, reason) of the ones that do not."""
    try:
        payload = packb(items)
        if len(payload) <= max_item_bytes:     # then no item of it can be larger
            return payload, []
    except Exception:
        pass
    parts, bad = [], []
    for index, item in enumerate(items):
        try:
            part = packb(item)
        except Exception as exc:
            bad.append((index, why_not_encodable(item, exc)))
            continue
        if len(part) > max_item_bytes:
            bad.append((index, f"it is {len(part)} bytes encoded, more than "
                               f"--max-item-bytes {max_item_bytes}"))
        else:
            parts.append(part)
    return join_packed(parts), bad


def decode_items(payload):
    """Return (items, bad): the items that decode, in order, and (index, reason) of the
    ones that do not. A payload that is not a msgpack array raises ValueError."""
    try:
        items = unpackb(payload)
    except Exception:
        return _decode_one_by_one(payload)
    if not isinstance(items, list):
        raise ValueError("batch payload is not an array")
    return items, []


def _decode_one_by_one(payload):
    unpacker = msgpack.Unpacker(ext_hook=_ext_hook, raw=False, strict_map_key=False)
    unpacker.feed(payload)
    try:
        count = unpacker.read_array_header()
        bounds = [unpacker.tell()]
        for _ in range(count):
            unpacker.skip()
            bounds.append(unpacker.tell())
    except Exception as exc:
        raise ValueError(f"batch payload does not decode: {_decode_reason(exc)}") from None
    if bounds[-1] != len(payload):
        raise ValueError("batch payload has bytes after its last item")
    items, bad = [], []
    for index in range(count):
        raw = payload[bounds[index]:bounds[index + 1]]
        try:
            items.append(unpackb(raw))
        except Exception as exc:
            bad.append((index, f"does not decode: {_decode_reason(exc)}"))
    return items, bad


def _decode_reason(exc):
    if isinstance(exc, TypeError) and 'unhashable' in str(exc):
        return "a dict key is a list, tuple or dict (keys must be str or int)"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def why_not_encodable(item, exc=None):
    """One phrase naming the first value in item the wire cannot carry."""
    found = _find_bad(item, depth=0)
    if found:
        return found
    return f"{type(exc).__name__}: {exc}" if exc else "cannot be encoded"


def _find_bad(value, depth):
    if depth > 500:
        return "nesting is too deep"
    if value is None or isinstance(value, (bool, float, bytes, datetime.datetime)):
        return None
    if isinstance(value, int):
        if _MIN_INT <= value <= _MAX_INT:
            return None
        return f"int {_short(value)} does not fit in 64 bits"
    if isinstance(value, str):
        try:
            value.encode('utf-8')
        except UnicodeEncodeError as exc:
            return f"str holds a lone surrogate {value[exc.start]!r}"
        return None
    if isinstance(value, (list, tuple)):
        for element in value:
            found = _find_bad(element, depth + 1)
            if found:
                return found
        return None
    if isinstance(value, dict):
        for key, element in value.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                return f"dict key of type {type(key).__name__} (keys must be str or int)"
            found = _find_bad(key, depth + 1) or _find_bad(element, depth + 1)
            if found:
                return found
        return None
    return f"type {type(value).__name__} is not supported"


def _short(number):
    text = str(number)
    return text if len(text) <= 24 else f"{text[:10]}...({len(text)} digits)"

