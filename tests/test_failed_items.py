"""rz-master's list of failed items (rezina/control/failed_items.py): each failure a node's
statuses carry is kept once, the newest first, the last KEPT of a typology."""

from rezina.control.failed_items import FailedItems
from rezina.control.records import Placement


def failure(seq, at, item=None):
    return {'seq': seq, 'id': item or f"t.src/r1:{seq}", 'run': 't.src/r1',
            'error': 'ValueError', 'message': f"bad {seq}", 'traceback': 'tail',
            'attempts': 1, 'at': at}


def status(pid, *records):
    return {'pid': pid, 'recent_failures': list(records)}


def test_a_failure_carried_by_several_statuses_is_kept_once():
    items = FailedItems()
    node = Placement('t::fetch::1', 't', 'fetch', 1)
    items.take(node, status(40, failure(1, 10.0)), 'w1')
    items.take(node, status(40, failure(1, 10.0), failure(2, 11.0)), 'w1')
    items.take(node, status(40, failure(2, 11.0)), 'w1')
    assert [f['id'] for f in items.newest('t', 50)] == ['t.src/r1:2', 't.src/r1:1']
    assert items.newest('t', 1)[0] == {
        'id': 't.src/r1:2', 'run': 't.src/r1', 'error': 'ValueError', 'message': 'bad 2',
        'traceback': 'tail', 'attempts': 1, 'at': 11.0, 'stage': 'fetch', 'index': 1,
        'node_id': 't::fetch::1', 'worker': 'w1', 'pid': 40}


def test_a_restarted_node_numbers_again_and_is_heard():
    items = FailedItems()
    node = Placement('t::fetch::0', 't', 'fetch', 0)
    items.take(node, status(40, failure(1, 10.0), failure(2, 11.0)))
    items.take(node, status(41, failure(1, 12.0, 't.src/r2:5')))     # a new process
    assert [f['id'] for f in items.newest('t', 50)] == [
        't.src/r2:5', 't.src/r1:2', 't.src/r1:1']


def test_the_newest_are_kept_and_listed_by_time_across_nodes():
    items = FailedItems(kept=3)
    first, second = Placement('t::a::0', 't', 'a', 0), Placement('t::b::0', 't', 'b', 0)
    items.take(first, status(1, failure(1, 5.0), failure(2, 8.0)))
    items.take(second, status(2, failure(1, 6.0, 'x:1'), failure(2, 9.0, 'x:2')))
    assert [(f['stage'], f['at']) for f in items.newest('t', 10)] == [
        ('b', 9.0), ('a', 8.0), ('b', 6.0)]
    items.forget('t')
    assert items.newest('t', 10) == [] and not items.known('t')
