"""A unit of rz-notch's work: items of one input batch given to one worker child at a
time, and what happened to each of them there (deaths, timeouts)."""

import msgpack

from rezina.pipe import codec, protocol, slicing


class Unit:
    """Items of one input batch given to one child at a time."""

    __slots__ = ('no', 'batch', 'ids', 'count', 'payload', 'deaths', 'timeouts', 'child',
                 'bounds', 'base', 'order')

    def __init__(self, no, batch, ids, count, payload):
        self.no = no
        self.batch = batch
        self.ids = ids
        self.count = count
        self.payload = payload
        self.deaths = {}          # item index -> deaths of a child while running it
        self.timeouts = {}        # item index -> children killed as its call ran too long
        self.child = None
        self.bounds = None        # item offsets in payload, once a unit has been cut
        self.base = 0             # index in bounds of this unit's first item
        self.order = None         # its place in the input, set when first assigned

    def cut(self, count, no):
        """A new unit of this unit's first count items; this unit keeps the rest."""
        if self.bounds is None:
            self.bounds = slicing.item_bounds(self.payload)
        base = self.base
        payload = slicing.slice_payload(self.payload, self.bounds, base, base + count)
        if isinstance(self.ids, int):
            head_ids, self.ids = self.ids, self.ids + count
        else:
            head_ids, self.ids = self.ids[:count], self.ids[count:]
        self.base += count
        self.count -= count
        self.batch.parts += 1
        head = Unit(no, self.batch, head_ids, count, payload)
        head.deaths, self.deaths = split_marks(self.deaths, count)
        head.timeouts, self.timeouts = split_marks(self.timeouts, count)
        return head

    def settle(self):
        """Make payload hold exactly this unit's items."""
        if self.bounds is not None:
            self.payload = slicing.slice_payload(self.payload, self.bounds, self.base,
                                                 self.base + self.count)
            self.bounds = None
            self.base = 0

    def record(self):
        return msgpack.packb(['U', self.no, self.batch.run, self.ids, self.count,
                              self.payload], use_bin_type=True)

    def seq(self, index):
        return self.ids + index if isinstance(self.ids, int) else self.ids[index]

    def drop(self, index):
        """Take item index out of this unit; returns (seq, item), item None if it does
        not decode."""
        seq = self.seq(index)
        self.settle()
        try:
            item = codec.decode_items(self.payload)[0][index]
        except (ValueError, IndexError):
            item = None
        self.payload = slicing.without_items(self.payload, [index])
        if isinstance(self.ids, int):
            seqs = list(range(self.ids, self.ids + self.count))
        else:
            seqs = list(self.ids)
        del seqs[index]
        self.ids = protocol.compact_ids(seqs) if seqs else []
        self.count -= 1
        self.deaths = without_mark(self.deaths, index)
        self.timeouts = without_mark(self.timeouts, index)
        return seq, item


def split_marks(marks, count):
    """(marks of the first count items, marks of the rest renumbered from 0)."""
    if not marks:
        return {}, marks
    return ({i: n for i, n in marks.items() if i < count},
            {i - count: n for i, n in marks.items() if i >= count})


def without_mark(marks, index):
    """marks once item index is taken out: the later items' indexes move down by one."""
    return {(i if i < index else i - 1): n for i, n in marks.items() if i != index}
