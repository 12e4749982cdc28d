"""How a producer gives its batches to consumers by their credit (rezina.pipe.outbox), on
stand-in links: which consumer gets which items is a decision, not a race."""

from rezina.pipe import codec, protocol
from rezina.pipe.outbox import Outbox


class Link:
    def __init__(self, name, credit):
        self.name = name
        self.credit = credit
        self.alive = True
        self.unacked = {}
        self.got = []

    def send(self, kind, header, payload):
        protocol.Batch.from_header(header, payload)      # it is a batch
        self.got.extend(codec.unpackb(payload))
        return True


class Network:
    def __init__(self, links):
        self.links = links

    def links_of(self, edge):
        return self.links


def sent(count, credits):
    links = [Link(str(i), credit) for i, credit in enumerate(credits)]
    outbox = Outbox(Network(links), on_acked=lambda batch: None)
    items = list(range(count))
    outbox.offer(protocol.Batch('r', 0, count, codec.packb(items)))
    outbox.pump()
    return [link.got for link in links]


def test_a_batch_goes_to_the_consumer_with_the_most_credit():
    assert sent(10, [24, 30]) == [[], list(range(10))]


def test_no_more_than_the_credit_goes_to_anyone():
    assert [len(got) for got in sent(5000, [1000, 3000])] == [1000, 3000]
    assert [len(got) for got in sent(5000, [1000, 1000])] == [1000, 1000]


def test_a_consumer_that_refuses_a_send_loses_its_batch_to_another():
    links = [Link('a', 30), Link('b', 40)]
    links[1].send = lambda kind, header, payload: False  # the ROUTER forgot this peer
    outbox = Outbox(Network(links), on_acked=lambda batch: None)
    outbox.offer(protocol.Batch('r', 0, 9, codec.packb(list(range(9)))))
    outbox.pump()
    assert links[0].got == list(range(9))
