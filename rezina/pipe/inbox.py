"""The consumer end of edges over ZeroMQ: grant credit, take batches, acknowledge them in
ranges, and know when every producer has ended its stream."""

import logging
import time

from rezina import defaults
from rezina.pipe import codec, protocol

log = logging.getLogger(__name__)


class Inbox:
    """Credit and acknowledgements towards every producer of one node."""

    role = 'consumer'
    truncated = False       # a ZeroMQ edge knows when a producer died: never cut short

    def __init__(self, network, on_batch, window, producers=0, follow=False):
        self.network = network
        self.follow = follow          # --follow: never ended by producers, only by a stop
        self.on_batch = on_batch
        self.window = window
        self.producers = producers    # --producers: how many must be heard from
        self.heard = set()
        self.eos_seen = False
        self.ack_due = None           # when waiting acknowledgements must go
        self.grants_made = 0          # a clock of grants, so that ties take turns

    def handle(self, link, kind, header, payload):
        if kind == protocol.BATCH:
            if payload is None:
                raise ValueError("a batch without payload")
            batch = protocol.Batch.from_header(header, payload)
            if batch.count > link.granted + self.window:
                # beyond any credit a race could explain: a producer that is not rezina's
                raise ValueError(f"a batch of {batch.count} items beyond the credit of "
                                 f"{link.granted}")
            batch.origin = link
            link.granted = max(0, link.granted - batch.count)
            self.on_batch(batch)
        elif kind == protocol.DRAIN:
            link.draining = True
        elif kind == protocol.EOS:
            link.eos = True
            self.eos_seen = True
            log.debug("%s: end of stream from %s", self.network.node_name, link.node)
        else:
            raise ValueError(f"unexpected {kind!r} from a producer")

    def ack(self, batch):
        """Acknowledge batch to the producer it came from, with the next flush."""
        link = batch.origin
        if link is not None:
            link.acks.append(batch.no)
            if self.ack_due is None:
                self.ack_due = time.monotonic() + defaults.ACK_DELAY

    def link_added(self, link):
        if link.session is not None or link.port.bound:
            self.heard.add((link.port, link.key))

    def link_lost(self, link):
        link.granted = 0

    def link_reset(self, link):
        link.granted = 0
        link.eos = False
        link.draining = False
        link.acks.clear()
        self.heard.add((link.port, link.key))

    def flush(self, used, force=False):
        """Send credit up to window - used items, and acknowledgements with it or once
        they have waited ACK_DELAY: one message to each producer at most."""
        links = self.network.links_of(self)
        grants = self._grants(links, used)
        due = force or (self.ack_due is not None and time.monotonic() >= self.ack_due)
        waiting = False
        for link in links:
            give = grants.get(link, 0)
            if link.acks and not (give or due or len(link.acks) >= defaults.ACKS_AT_ONCE):
                waiting = True
            elif link.acks:
                if link.alive:
                    ranges = protocol.ranges_of(link.acks)
                    link.send(protocol.ACK, codec.packb([ranges, give]))
                link.acks.clear()
            elif give:
                link.send(protocol.CREDIT, codec.packb(give))
        if not waiting:
            self.ack_due = None

    def _grants(self, links, used):
        """link -> credit to give now: the free part of the window, shared out.

        Credit given cannot be taken back, so a producer that joins while another holds
        credit it does not use (an idle source of a periodic run) could wait for ever on
        a full window: a producer left with none is given a floor (a wire batch's worth,
        at most a quarter of the window) even past the window whenever another holds
        credit. Items held stay below window + floor * producers."""
        live = [link for link in links if link.alive and not link.eos]
        if not live:
            return {}
        outstanding = sum(link.granted for link in live)
        starving = [link for link in live if link.granted == 0]
        grants = {}
        # not for a consumer that takes nothing now (a stopping one passes used=window)
        if starving and outstanding and used < self.window:
            floor = max(1, min(defaults.WIRE_BATCH_ITEMS, self.window // 4))
            spare = self.window + floor * len(live) - used - outstanding
            for link in starving:
                give = min(floor, spare)
                if give <= 0:
                    break
                grants[link] = give
                spare -= give
        free = self.window - used - outstanding - sum(grants.values())
        if free <= 0 or (free < min(self.window // 4, 2 * defaults.WIRE_BATCH_ITEMS)
                         and not starving):
            return self._give(grants)
        share = max(1, free // len(live))
        for link in sorted(live, key=_granted_of):     # ties: the one given to longest ago
            give = min(share, free)
            if give <= 0:
                break
            grants[link] = grants.get(link, 0) + give
            free -= give
        return self._give(grants)

    def _give(self, grants):
        for link, give in grants.items():
            link.granted += give
            self.grants_made += 1
            link.given_at = self.grants_made
        return grants

    def leave(self):
        """Tell every producer this consumer is gone (it holds nothing unacknowledged)."""
        self.flush(self.window, force=True)
        for link in self.network.links_of(self):
            if link.alive:
                link.send(protocol.BYE)

    def all_draining(self):
        """True when every live producer that has not ended announced it is stopping:
        then a stopping consumer reads on to their ends, as on a pipe."""
        live = [link for link in self.network.links_of(self) if link.alive and not link.eos]
        return bool(live) and all(link.draining for link in live)

    def ended(self):
        """True when every producer heard from (and at least --producers) said EOS; a bound
        input forgets a producer gone silent, but ends only once one said EOS."""
        links = self.network.links_of(self)
        for link in links:
            if link.session is not None:
                self.heard.add((link.port, link.key))
        if self.follow or len(self.heard) < max(1, self.producers) or not self.eos_seen:
            return False
        return all(link.eos for link in links if link.alive or not link.port.bound)


def _granted_of(link):
    return link.granted, link.given_at
