"""Cut a batch payload by item without decoding the items."""

import msgpack

from rezina.pipe import codec


def item_bounds(payload):
    """Byte offsets of each item's start, then the end: len(items) + 1 offsets."""
    unpacker = msgpack.Unpacker()
    unpacker.feed(payload)
    count = unpacker.read_array_header()
    bounds = [unpacker.tell()]
    for _ in range(count):
        unpacker.skip()
        bounds.append(unpacker.tell())
    return bounds


def slice_payload(payload, bounds, start, end):
    """The payload of items start..end-1."""
    return codec.array_header(end - start) + payload[bounds[start]:bounds[end]]


def without_items(payload, indexes):
    """The payload less the items at indexes."""
    bounds = item_bounds(payload)
    skip = set(indexes)
    keep = [payload[bounds[i]:bounds[i + 1]] for i in range(len(bounds) - 1) if i not in skip]
    return codec.join_packed(keep)
