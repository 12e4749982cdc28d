"""GET /metrics (rezina/control/metrics.py): the Prometheus text format from canned op
answers, and scraped twice from a real rz-master with workers and a periodic typology
(whose failed items the master also lists: the failures op and its HTTP route)."""

import http.client
import json
import re

import pytest

import fixtures_cluster as ws
from conftest import wait_for
from rezina import TypologyBuilder
from rezina.control import metrics

pytestmark = pytest.mark.timeout(120)

NAME = r'[a-zA-Z_:][a-zA-Z0-9_:]*'
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(rf'({NAME})(\{{{LABEL}(?:,{LABEL})*\}})? (\S+)')
LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
VALUE = re.compile(r'[+-]?(?:\d+(?:\.\d*)?(?:e[+-]?\d+)?|Inf)|NaN')


def parse(text):
    """{family: {'help', 'type', 'samples': [(labels, value)]}} of an exposition, checked
    line by line: HELP then TYPE once before a family's samples, samples of that family
    only, label values unescaped."""
    assert text.endswith('\n')
    families, current = {}, None
    for line in text[:-1].split('\n'):
        if line.startswith('# HELP '):
            name, _, help_text = line[len('# HELP '):].partition(' ')
            assert re.fullmatch(NAME, name) and name not in families, line
            current = families[name] = {'help': help_text, 'type': None, 'samples': []}
        elif line.startswith('# TYPE '):
            name, _, kind = line[len('# TYPE '):].partition(' ')
            assert name in families and families[name]['type'] is None, line
            assert kind in ('counter', 'gauge'), line
            families[name]['type'] = kind
            current = families[name]
        else:
            match = SAMPLE.fullmatch(line)
            assert match and VALUE.fullmatch(match.group(3)), line
            assert current is not None and match.group(1) == next(
                name for name, f in families.items() if f is current), line
            labels = {key: _unescape(value)
                      for key, value in LABEL_PAIR.findall(match.group(2) or '')}
            current['samples'].append((labels, float(match.group(3))))
    return families


def _unescape(value):
    return re.sub(r'\\(.)', lambda m: {'n': '\n'}.get(m.group(1), m.group(1)), value)


CANNED = {
    'workers': [{'id': 'w"1', 'host': 'a\\b', 'address': '127.0.0.2', 'slots': 4, 'load': 2,
                 'state': 'ONLINE', 'last_heartbeat': 990.5, 'nodes': 3},
                {'id': 'w2', 'host': 'h', 'address': '127.0.0.3', 'slots': 2, 'load': 0,
                 'state': 'OFFLINE', 'last_heartbeat': None, 'nodes': 0}],
    'ls': [{'name': 'new\nline', 'state': 'RUNNING', 'nodes': 3, 'failed_nodes': 0,
            'missed': 1, 'next_run': 1010.0}],
    'runs': [{'run_id': 'r2', 'started': 995.0, 'ended': None, 'items': None, 'failed': 0,
              'state': None},
             {'run_id': 'r1', 'started': 980.0, 'ended': 982.5, 'items': 10, 'failed': 1,
              'state': 'complete'}],
    'ps': [{'typology': 'new\nline', 'stage': 'double', 'index': 0, 'worker': 'w"1',
            'state': 'RUNNING', 'restarts': 1, 'items_in': 10, 'items_out': 9, 'failed': 1,
            'dropped': 2, 'redelivered': 3, 'rejected': 0, 'busy_seconds': 1.25,
            'rate': 4.5, 'in_flight': 0, 'oldest_age': None}],
}


class Canned:
    def request(self, op, **args):
        return CANNED[op]


def test_canned_answers_give_escaped_labels_and_one_help_and_type_per_family():
    raw = metrics.render(Canned())
    assert raw.content_type == 'text/plain; version=0.0.4; charset=utf-8'
    text = raw.body.decode()
    assert 'rezina_worker_up{worker="w\\"1",host="a\\\\b"} 1\n' in text
    assert 'typology="new\\nline"' in text
    families = parse(text)
    assert families['rezina_worker_up']['samples'][1] == ({'worker': 'w2', 'host': 'h'}, 0)
    [(labels, age)] = families['rezina_worker_heartbeat_age_seconds']['samples']
    assert labels['worker'] == 'w"1' and age > 0
    assert families['rezina_node_items_in_total']['type'] == 'counter'
    assert families['rezina_node_items_in_total']['samples'] == [
        ({'typology': 'new\nline', 'stage': 'double', 'node': '0', 'worker': 'w"1'}, 10)]
    assert families['rezina_last_run_duration_seconds']['samples'][0][1] == 2.5
    assert sorted(families['rezina_recent_runs']['samples'], key=str) == [
        ({'typology': 'new\nline', 'state': 'complete'}, 1),
        ({'typology': 'new\nline', 'state': 'unknown'}, 1)]
    assert 'rezina_node_oldest_item_age_seconds' not in families     # None: no sample
    for name, kind, expected in (('rezina_node_items_dropped_total', 'counter', 2),
                                 ('rezina_node_items_redelivered_total', 'counter', 3),
                                 ('rezina_node_frames_rejected_total', 'counter', 0),
                                 ('rezina_node_processing_seconds_total', 'counter', 1.25)):
        assert families[name]['type'] == kind
        assert [v for _, v in families[name]['samples']] == [expected]


def test_values_are_written_as_the_format_wants():
    assert [metrics.format_value(v) for v in (True, 3, 0.25, float('inf'), float('nan'))] \
        == ['1', '3', '0.25', '+Inf', 'NaN']
    assert metrics.escape_label('a\\b"c\nd') == 'a\\\\b\\"c\\nd'


def scrape(port):
    connection = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    try:
        connection.request('GET', '/metrics')
        response = connection.getresponse()
        body = response.read().decode()
    finally:
        connection.close()
    assert response.status == 200, body
    assert response.headers['Content-Type'] == metrics.CONTENT_TYPE
    return parse(body)


def value(families, name, **labels):
    return sum(v for have, v in families.get(name, {'samples': ()})['samples']
               if all(have.get(k) == want for k, want in labels.items()))


def get_json(port, path):
    connection = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    try:
        connection.request('GET', path)
        response = connection.getresponse()
        body = response.read().decode()
    finally:
        connection.close()
    assert response.status == 200, body
    return json.loads(body)['result']


def test_a_scrape_of_a_live_typology_shows_its_nodes_runs_and_workers(cluster, tmp_path):
    (TypologyBuilder('127.0.0.1', cluster.port, 'tick')
     .add_hydrant(ws.numbers, args=(5,))
     .add_notch(ws.picky, 1, 1)                 # 0 and 3 fail, each run
     .add_bocca(f"sqlite:{tmp_path / 'out.db'}")).start(interval=1)
    cluster.wait_running('tick', count=3)
    wait_for(lambda: value(scrape(cluster.http_port), 'rezina_node_items_in_total',
                           typology='tick', stage='picky') > 0, timeout=30,
             what='items through the notch')
    first = scrape(cluster.http_port)
    scrapes = []

    def rose():
        scrapes.append(scrape(cluster.http_port))
        return (value(scrapes[-1], 'rezina_node_items_in_total', typology='tick',
                      stage='picky')
                > value(first, 'rezina_node_items_in_total', typology='tick', stage='picky')
                and value(scrapes[-1], 'rezina_recent_runs', typology='tick',
                          state='complete') >= 1)
    wait_for(rose, timeout=30, what='the next run through the notch, and a run recorded')
    second = scrapes[-1]

    workers = {labels['worker'] for labels, _ in second['rezina_worker_up']['samples']}
    assert len(workers) == 2 and value(second, 'rezina_worker_up') == 2
    assert all(0 <= age < 5 for _, age in
               second['rezina_worker_heartbeat_age_seconds']['samples'])
    nodes = second['rezina_node_state']['samples']
    assert {(labels['stage'], labels['state']) for labels, _ in nodes} == {
        ('numbers', 'RUNNING'), ('picky', 'RUNNING'), ('sqlite', 'RUNNING')}
    assert all(labels['worker'] in workers for labels, _ in nodes)
    assert value(second, 'rezina_typology_state', typology='tick', state='RUNNING') == 1
    assert value(second, 'rezina_last_run_items', typology='tick') == 5
    assert 0 <= value(second, 'rezina_last_run_duration_seconds', typology='tick') < 5

    # every node counts its processing time, redeliveries and rejected frames; the notch
    # its dropped and failed items
    picky = {'typology': 'tick', 'stage': 'picky'}
    assert value(second, 'rezina_node_items_failed_total', **picky) >= 2
    assert value(second, 'rezina_node_items_dropped_total', **picky) == 0
    for name in ('rezina_node_processing_seconds_total', 'rezina_node_items_redelivered_total',
                 'rezina_node_frames_rejected_total'):
        assert {labels['stage'] for labels, _ in second[name]['samples']} >= {
            'numbers', 'picky'}, name
    assert value(second, 'rezina_node_items_redelivered_total', typology='tick') == 0

    # the master lists the failed items, newest first: by op and by the HTTP API
    failures = cluster.request('failures', typology='tick', limit=200)
    assert len(failures) >= 2
    assert {f['id'].rpartition(':')[2] for f in failures} == {'0', '3'}
    assert all(f['id'].startswith('tick.numbers/') and f['stage'] == 'picky'
               and f['error'] == 'ValueError' and f['attempts'] == 1
               and f['message'] == f"{f['id'].rpartition(':')[2]} is a multiple of 3"
               and 'picky' in f['traceback'] for f in failures)
    assert [f['at'] for f in failures] == sorted((f['at'] for f in failures), reverse=True)
    assert len({f['id'] for f in failures}) == len(failures)        # each taken once
    listed = get_json(cluster.http_port, '/api/typologies/tick/failures?limit=2')
    assert len(listed) == 2 and all(f['error'] == 'ValueError' for f in listed)
