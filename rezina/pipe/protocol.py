"""The edge protocol's messages, and the batch they carry.

Every message is a ZeroMQ message of one frame, a kind byte then the msgpack header, or
for a batch two, the second the payload; a ROUTER socket prefixes the peer's routing id.
Kinds and headers:

    HELLO   {'node': str, 'session': str, 'role': 'producer'|'consumer', 'again': bool,
             'v': VERSION}
            sent first by the connecting side, answered by the bound side
    CREDIT  n                 consumer -> producer: n more items may be sent
    BATCH   [no, run, ids, count(, total)], payload
            producer -> consumer; `no` is the producer's batch number, `ids` the first
            sequence number of a plain range of `count` items or a list of `count` seqs;
            `total`, optional, the items the run's source yields when it is known (for
            a progress line); readers ignore fields after it
    ACK     [[[first, end], ...], n]   consumer -> producer: batch numbers finished, as
            ranges, and n more credit (acknowledgements and credit mean different things
            and are counted apart; they share a message only to save one)
    EOS     None              producer -> consumer: no batch will follow
    PING    None              both ways, every heartbeat interval
    BYE     None              consumer -> producer: leaving; redeliver what it held
    DRAIN   None              producer -> consumer: stopping; the stream ends soon (EOS)

Batches are the unit of flow and of acknowledgement: one wire batch carries items of one
run, and everything done to its items (credit, acks, redelivery) is done per batch.
"""

import os

from rezina.pipe import codec

VERSION = 1     # of this protocol, in every HELLO: a peer of another version is refused
HELLO = b'H'
CREDIT = b'C'
BATCH = b'B'
ACK = b'A'
EOS = b'E'
PING = b'P'
BYE = b'Q'
DRAIN = b'D'

KINDS = frozenset((HELLO, CREDIT, BATCH, ACK, EOS, PING, BYE, DRAIN))


def new_session():
    """A random tag a node sends in HELLO, so a peer can tell a restart from a reconnect."""
    return os.urandom(6).hex()


class Batch:
    """Items of one run on the wire: `payload` is their msgpack array."""

    __slots__ = ('no', 'run', 'ids', 'count', 'payload', 'origin', 'parts', 'total')

    def __init__(self, run, ids, count, payload, no=None, origin=None, total=None):
        self.no = no
        self.run = run
        self.ids = ids
        self.count = count
        self.payload = payload
        self.origin = origin    # the Link it came from, or the input batch it derives from
        self.parts = 0          # outputs derived from this batch not yet acknowledged
        self.total = total      # items the run's source yields, if known

    def header(self):
        fields = [self.no, self.run, self.ids, self.count]
        if self.total is not None:      # only then: a header as before for other runs
            fields.append(self.total)
        return codec.packb(fields)

    @classmethod
    def from_header(cls, header, payload):
        fields = codec.unpackb(header)
        if not isinstance(fields, list) or len(fields) < 4:
            raise ValueError("malformed batch header")
        no, run, ids, count = fields[:4]
        total = fields[4] if len(fields) > 4 else None
        if not isinstance(run, str) or not isinstance(count, int):
            raise ValueError("malformed batch header")
        if total is not None and (type(total) is not int or total < 0):
            total = None                # an optional hint: a bad one is ignored
        if not isinstance(ids, (int, list)) or (isinstance(ids, list) and len(ids) != count):
            raise ValueError("malformed batch ids")
        if not 0 <= count <= len(payload):     # an item takes at least a byte
            raise ValueError(f"a batch that claims {count} items in {len(payload)} bytes")
        return cls(run, ids, count, payload, no=no, total=total)

    def seqs(self):
        """The sequence numbers of the items, in order."""
        if isinstance(self.ids, int):
            return range(self.ids, self.ids + self.count)
        return self.ids

    def item_id(self, index):
        ids = self.ids
        seq = ids + index if isinstance(ids, int) else ids[index]
        return f"{self.run}:{seq}"



def seqs_without(seqs, bad):
    """seqs less those at the indexes of bad, a list of (index, reason)."""
    gone = {index for index, _ in bad}
    return [seq for index, seq in enumerate(seqs) if index not in gone]


def compact_ids(seqs):
    """A plain start when seqs are consecutive ints, else the list itself."""
    seqs = list(seqs)
    if seqs and type(seqs[0]) is int and seqs == list(range(seqs[0], seqs[0] + len(seqs))):
        return seqs[0]
    return seqs


def ranges_of(numbers):
    """[[first, end), ...] covering the sorted ints in numbers."""
    out = []
    for n in sorted(set(numbers)):
        if out and out[-1][1] == n:
            out[-1][1] = n + 1
        else:
            out.append([n, n + 1])
    return out


def numbers_in(ranges):
    for first, end in ranges:
        yield from range(first, end)
