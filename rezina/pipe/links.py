"""Peers over ZeroMQ ports: greeting, heartbeats and loss, for both ends of an edge.

A Link is one peer seen through one Port. The connecting side greets first (HELLO); the
bound side answers, and answers HELLO to anything from a peer it does not know, so a peer
that reconnects after a restart greets again. Every link is pinged each heartbeat interval;
a peer silent for PEER_LOST_AFTER is lost. A lost link on a ROUTER is forgotten (a peer
that comes back has a new routing id); a lost link on a DEALER waits for its peer.
"""

import logging
import time

from rezina import defaults
from rezina.pipe import codec, protocol

log = logging.getLogger(__name__)

UNANSWERED_TOLD_AFTER = 5.0     # seconds a connecting port waits before it says so
_NO_HEADER = codec.packb(None)


class Link:
    """One peer through one port."""

    __slots__ = ('port', 'key', 'session', 'node', 'last_seen', 'last_sent', 'alive',
                 'credit', 'unacked', 'granted', 'eos', 'acks', 'name', 'draining',
                 'opened', 'told_waiting', 'given_at')

    def __init__(self, port, key, now):
        self.port = port
        self.key = key
        self.session = None
        self.node = '?'
        self.last_seen = now
        self.last_sent = 0.0
        self.alive = True
        self.credit = 0        # producer side: items the consumer will take
        self.unacked = {}      # producer side: batch no -> Batch sent, not acknowledged
        self.granted = 0       # consumer side: credit given and not yet used
        self.eos = False       # consumer side: the producer said end of stream
        self.acks = []         # consumer side: batch numbers to acknowledge
        self.draining = False  # consumer side: the producer is stopping (DRAIN)
        self.name = port.address
        self.opened = now
        self.told_waiting = False   # its wait for a first answer was logged
        self.given_at = 0      # consumer side: when it was last given credit (Inbox's count)

    def send(self, kind, header=_NO_HEADER, payload=None, now=None):
        frame = kind + header
        frames = [frame] if payload is None else [frame, payload]
        self.last_sent = now or time.monotonic()
        return self.port.send(self.key, frames)

    def __repr__(self):
        return f"<Link {self.node} via {self.name}>"


class Network:
    """All ports of a node, one role each; dispatches their messages to the role's edge."""

    def __init__(self, node_name, clock=time.monotonic):
        self.node_name = node_name
        self.session = protocol.new_session()
        self.clock = clock
        self.links = {}          # (port, key) -> Link
        self.roles = {}          # port -> edge object (Inbox or Outbox)
        self.rejected = 0
        self._rejected_logged_at = float('-inf')
        self._rejected_shown = 0    # the count in the last line logged
        self.wait_level = logging.INFO  # unanswered ports; DEBUG under rz-worker

    def hello_header(self, role, again=False):
        """A greeting; `again` says the sender has reset its side of a link it had."""
        return codec.packb({'node': self.node_name, 'session': self.session, 'role': role,
                            'again': again, 'v': protocol.VERSION})

    def add_port(self, port, edge):
        """Attach port to edge; a connecting port greets its peer at once."""
        self.roles[port] = edge
        if not port.bound:
            link = Link(port, None, self.clock())
            self.links[(port, None)] = link
            link.send(protocol.HELLO, self.hello_header(edge.role))
            edge.link_added(link)

    def receive(self, port):
        """Handle every message waiting on port."""
        edge = self.roles[port]
        now = self.clock()
        while True:
            message = port.recv()
            if message is None:
                return
            key, frames = message
            kind = frames[0][:1]
            if len(frames) > 2 or kind not in protocol.KINDS:
                self._reject(port, "a frame that is not rezina's protocol")
                continue
            header = frames[0][1:]
            link = self.links.get((port, key))
            if kind == protocol.HELLO:
                link = self._greeted(port, key, link, header, edge, now)
                continue
            if link is None:
                # a peer we do not know (we restarted, or it was lost): ask it to greet
                port.send(key, [protocol.HELLO + self.hello_header(edge.role)])
                continue
            link.last_seen = now
            if not link.alive:
                self._revive(link, edge)
            if kind != protocol.PING:
                try:
                    edge.handle(link, kind, header, frames[1] if len(frames) > 1 else None)
                except (ValueError, TypeError, KeyError) as exc:
                    self._reject(port, f"a malformed message ({exc})")

    def _greeted(self, port, key, link, header, edge, now):
        try:
            hello = codec.unpackb(header)
            session, node = hello['session'], hello['node']
            again = bool(hello.get('again'))
            version = hello.get('v')
        except Exception:
            self._reject(port, "a malformed greeting")
            return link
        if version != protocol.VERSION:
            self._reject(port, f"a greeting of protocol version {version!r} (this node "
                               f"speaks {protocol.VERSION})")
            return link
        if link is None:
            link = self.links[(port, key)] = Link(port, key, now)
            link.session, link.node = session, node
            link.send(protocol.HELLO, self.hello_header(edge.role))
            log.debug("%s: %s joined via %s", self.node_name, node, port.address)
            edge.link_added(link)
            return link
        link.last_seen = now
        link.node = node
        if link.session != session:
            restarted = link.session is not None
            if link.told_waiting and not restarted:
                log.log(self.wait_level, "%s: %s answered at %s after %.0f s",
                        self.node_name, node, port.address, now - link.opened)
            link.session = session
            if not port.bound:
                link.send(protocol.HELLO, self.hello_header(edge.role))
            if restarted:
                log.info("%s: %s at %s restarted", self.node_name, node, port.address)
                edge.link_reset(link)
        elif again and link.alive:
            # the peer lost us and reset its side: reset ours, so that credit and
            # unacknowledged batches agree again
            log.info("%s: %s at %s is back", self.node_name, node, port.address)
            edge.link_reset(link)
            return link
        if not link.alive:
            self._revive(link, edge)
        return link

    def _revive(self, link, edge):
        """A lost peer speaks again: reset our side and greet it, so it resets its own."""
        link.alive = True
        log.info("%s: %s at %s is back", self.node_name, link.node, link.name)
        edge.link_reset(link)
        link.send(protocol.HELLO, self.hello_header(edge.role, again=True))

    def _reject(self, port, what):
        """Drop a message that is not rezina's: counted, and logged at most once a
        second (with the count of those dropped since)."""
        self.rejected += 1
        now = self.clock()
        if now - self._rejected_logged_at >= 1.0:
            log.warning("%s: dropped %s on %s (%d dropped so far)",
                        self.node_name, what, port.address, self.rejected)
            self._rejected_logged_at, self._rejected_shown = now, self.rejected

    def tick(self):
        """Ping quiet links and lose silent ones; call at least once a heartbeat interval."""
        now = self.clock()
        if self.rejected > self._rejected_shown and now - self._rejected_logged_at >= 1.0:
            log.warning("%s: dropped %d messages that are not rezina's protocol (%d "
                        "dropped so far)", self.node_name,
                        self.rejected - self._rejected_shown, self.rejected)
            self._rejected_logged_at, self._rejected_shown = now, self.rejected
        for (port, key), link in list(self.links.items()):
            if link.session is None and not port.bound:
                # never answered yet: nothing to lose (it may start later)
                if not link.told_waiting and now - link.opened >= UNANSWERED_TOLD_AFTER:
                    self._tell_waiting(link)
                continue
            if link.alive and now - link.last_seen > defaults.PEER_LOST_AFTER:
                link.alive = False
                # a producer that ended its stream is expected to go quiet
                log.log(logging.DEBUG if link.eos else logging.WARNING,
                        "%s: lost %s at %s (silent for %.0f s)", self.node_name,
                        link.node, link.name, now - link.last_seen)
                self.roles[port].link_lost(link)
                if port.bound:
                    del self.links[(port, key)]
                continue
            if now - link.last_sent >= defaults.HEARTBEAT_INTERVAL:
                if not link.send(protocol.PING, now=now) and port.bound:
                    # the ROUTER no longer knows it: lose it at the next tick
                    link.last_seen = now - defaults.PEER_LOST_AFTER - 1

    def _tell_waiting(self, link):
        """Say once that a connecting port's peer has not answered (it may not be up)."""
        link.told_waiting = True
        peer = 'producer' if self.roles[link.port].role == 'consumer' else 'consumer'
        log.log(self.wait_level, "%s: waiting for a %s at %s", self.node_name, peer,
                link.name)

    def links_of(self, edge):
        return [link for link in self.links.values() if self.roles[link.port] is edge]

    def close(self, linger=None, ended=None):
        """Close every port; those of the edge `ended` (an input every producer has ended)
        at once: what is left to send there, a BYE, no one waits for."""
        for port, edge in self.roles.items():
            port.close(0 if ended is not None and edge is ended else linger)
