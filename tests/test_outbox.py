"""How a producer shares its batches among consumers by their credit (rezina.pipe.outbox),
on stand-in links: which consumer gets which items is a decision, not a race."""

from rezina.pipe import codec, protocol
from rezina.pipe.outbox import SPREAD_BELOW, Outbox


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


def batch_of(items):
    return protocol.Batch('r', 0, len(items), codec.packb(items))


def sent(count, credits):
    links = [Link(str(i), credit) for i, credit in enumerate(credits)]
    outbox = Outbox(Network(links), on_acked=lambda batch: None)
    outbox.offer(batch_of(list(range(count))))
    outbox.pump()
    return [link.got for link in links]


def test_a_few_items_are_shared_by_credit():
    assert sent(10, [24, 24]) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert sent(9, [30, 10, 0]) == [[0, 1, 2, 3, 4, 5, 6], [7, 8], []]


def test_a_big_batch_goes_whole_to_a_consumer_with_room():
    big = SPREAD_BELOW + 1
    assert [len(got) for got in sent(big, [10000, 10000])] == [big, 0]


def test_no_more_than_the_credit_goes_to_anyone():
    assert [len(got) for got in sent(5000, [1000, 3000])] == [1000, 3000]
    assert sent(1, [5, 5]) == [[0], []]


def test_a_part_set_aside_for_a_consumer_that_refused_a_send_goes_to_another():
    links = [Link('a', 30), Link('b', 30), Link('c', 30)]
    refused = []

    def refuse(kind, header, payload):
        refused.append(payload)
        return False                        # the ROUTER no longer knows this peer

    links[1].send = refuse
    outbox = Outbox(Network(links), on_acked=lambda batch: None)
    outbox.offer(batch_of(list(range(9))))
    outbox.pump()
    assert refused
    assert sorted(links[0].got + links[2].got) == list(range(9))
