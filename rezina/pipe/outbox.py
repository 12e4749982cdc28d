"""The producer end of an edge over ZeroMQ: send batches against credit, redeliver the
batches of a lost consumer, and report each batch once it is acknowledged."""

import logging
from collections import deque

from rezina import defaults
from rezina.pipe import codec, protocol, slicing

log = logging.getLogger(__name__)


class Outbox:
    """Batches waiting for credit, and batches sent and not yet acknowledged."""

    role = 'producer'

    def __init__(self, network, on_acked, unacked_max=defaults.UNACKED_MAX, consumers=0):
        self.network = network
        self.consumers = consumers      # --consumers: how many must be heard from
        self.heard = set()
        self.on_acked = on_acked
        self.unacked_max = unacked_max
        self.pending = deque()
        self.pending_items = 0
        self.unacked_items = 0
        self.next_no = 0
        self.redelivered = 0
        self.eos_sent = False
        self.told_waiting = False       # the wait for --consumers was logged

    def offer(self, batch):
        batch.no = self.next_no
        self.next_no += 1
        self.pending.append(batch)
        self.pending_items += batch.count

    def capacity(self):
        """Items the consumers would take now, all together."""
        return sum(link.credit for link in self.network.links_of(self) if link.alive)

    def pump(self):
        """Send pending batches to the consumers with the most credit."""
        links = [link for link in self.network.links_of(self) if link.alive]
        while self.pending and self.unacked_items < self.unacked_max:
            link = max(links, key=_credit_of, default=None)
            if link is None or link.credit <= 0:
                return
            batch = self.pending.popleft()
            if batch.count > link.credit:
                batch, rest = split_batch(batch, link.credit)
                rest.no = self.next_no
                self.next_no += 1
                self.pending.appendleft(rest)
                if batch.origin is not None:
                    batch.origin.parts += 1
            self.pending_items -= batch.count
            if not link.send(protocol.BATCH, batch.header(), batch.payload):
                self.pending.appendleft(batch)
                self.pending_items += batch.count
                links.remove(link)
                continue
            link.credit -= batch.count
            link.unacked[batch.no] = batch
            self.unacked_items += batch.count

    def handle(self, link, kind, header, payload):
        if kind == protocol.CREDIT:
            credit = codec.unpackb(header)
            if not isinstance(credit, int) or credit < 0:
                raise ValueError("credit is not a count")
            link.credit += credit
        elif kind == protocol.ACK:
            ranges, credit = codec.unpackb(header)
            if not isinstance(credit, int) or credit < 0:
                raise ValueError("credit is not a count")
            link.credit += credit
            for no in protocol.numbers_in(ranges):
                batch = link.unacked.pop(no, None)
                if batch is not None:
                    self.unacked_items -= batch.count
                    self.on_acked(batch)
        elif kind == protocol.BYE:
            self.link_lost(link)
        else:
            raise ValueError(f"unexpected {kind!r} from a consumer")

    def link_added(self, link):
        if self.eos_sent:
            link.send(protocol.EOS)

    def link_lost(self, link):
        """Give the lost consumer's unacknowledged batches to the others, oldest first."""
        link.credit = 0
        if not link.unacked:
            return
        batches = sorted(link.unacked.values(), key=lambda b: b.no)
        link.unacked.clear()
        for batch in reversed(batches):
            self.pending.appendleft(batch)
            self.pending_items += batch.count
            self.unacked_items -= batch.count
        self.redelivered += sum(b.count for b in batches)
        log.warning("%s: redelivering %d items that %s held", self.network.node_name,
                    sum(b.count for b in batches), link.node)

    link_reset = link_lost

    @property
    def idle(self):
        return not self.pending and not self.unacked_items

    def ready_to_finish(self):
        """True once a consumer is there to be told end of stream (and, with --consumers
        N, once N have been heard from: a bound output cannot know how many will come)."""
        links = self.network.links_of(self)
        connecting = [link for link in links if not link.port.bound]
        if any(link.session is None for link in connecting):
            return False
        self.heard.update((link.port, link.key) for link in links)
        if len(self.heard) < self.consumers:
            self._tell_waiting(self.consumers - len(self.heard))
            return False
        return any(link.alive for link in links)

    def _tell_waiting(self, more):
        """Say once that nothing but --consumers keeps this node from ending."""
        if not self.told_waiting:
            self.told_waiting = True
            log.info("%s: done; waiting for %d more consumer%s (--consumers %d) before "
                     "ending", self.network.node_name, more, '' if more == 1 else 's',
                     self.consumers)

    def announce_drain(self):
        """Tell every consumer this producer is stopping: its stream ends soon."""
        for link in self.network.links_of(self):
            if link.alive:
                link.send(protocol.DRAIN)

    def finish(self, clean=True):
        """Tell every consumer that no batch will follow."""
        self.eos_sent = True
        for link in self.network.links_of(self):
            if link.alive:
                link.send(protocol.EOS)


def _credit_of(link):
    return link.credit


def split_batch(batch, count):
    """Two batches: the first `count` items of batch, and the rest."""
    bounds = slicing.item_bounds(batch.payload)
    head = slicing.slice_payload(batch.payload, bounds, 0, count)
    tail = slicing.slice_payload(batch.payload, bounds, count, batch.count)
    if isinstance(batch.ids, int):
        head_ids, tail_ids = batch.ids, batch.ids + count
    else:
        head_ids, tail_ids = batch.ids[:count], batch.ids[count:]
    first = protocol.Batch(batch.run, head_ids, count, head, origin=batch.origin)
    rest = protocol.Batch(batch.run, tail_ids, batch.count - count, tail,
                          origin=batch.origin)
    first.no = batch.no
    return first, rest
