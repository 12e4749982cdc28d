"""GET /metrics: the master's view of workers, typologies, runs and nodes in the Prometheus
text exposition format, version 0.0.4.

Runs in a thread of rz-master's HTTP server; every figure comes from the client ops
(workers, ls, runs, ps), asked afresh on each scrape, so the page holds no state.
"""

import math
import time

from rezina.control.api_routes import HttpError, Raw

CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'
RUNS_WINDOW = 100           # the runs of a typology that the run figures look at

# (ps field, metric, type, help) of the counters and gauges of each node; a field that
# the answer lacks or holds as None gives no sample (dropped: a notch's only).
NODE_FIGURES = (
    ('items_in', 'rezina_node_items_in_total', 'counter', 'Items the node took in.'),
    ('items_out', 'rezina_node_items_out_total', 'counter',
     'Items the node sent on (for a sink: stored).'),
    ('failed', 'rezina_node_items_failed_total', 'counter',
     'Items that failed at the node (sent to the error channel).'),
    ('dropped', 'rezina_node_items_dropped_total', 'counter',
     'Items the node dropped: its function returned None for them.'),
    ('rejected', 'rezina_node_frames_rejected_total', 'counter',
     'Frames the node refused: undecodable, oversize or from unknown peers.'),
    ('redelivered', 'rezina_node_items_redelivered_total', 'counter',
     "Items the node sent again: a lost consumer's to the others, or a dead worker "
     "process's to a new one."),
    ('busy_seconds', 'rezina_node_processing_seconds_total', 'counter',
     "Seconds the node's function ran, summed over its threads (a sink: its writes)."),
    ('in_flight', 'rezina_node_items_in_flight', 'gauge',
     'Items (runs, for a source) the node holds unfinished.'),
    ('oldest_age', 'rezina_node_oldest_item_age_seconds', 'gauge',
     'Seconds since the oldest item the node holds unfinished came in.'),
    ('rate', 'rezina_node_items_per_second', 'gauge',
     'Items per second through the node, between its last two reports.'),
    ('restarts', 'rezina_node_restarts_total', 'counter',
     'Times the node was restarted.'),
)


class Family:
    """One metric family: its name, type, help and samples ((labels, value) pairs)."""

    def __init__(self, name, kind, help_text):
        self.name = name
        self.kind = kind
        self.help = help_text
        self.samples = []

    def add(self, labels, value):
        """A sample; a value that is not a number (None: not known) gives none."""
        if isinstance(value, (int, float)):
            self.samples.append((labels, value))


class Families:
    """The families of one page, in the order they are first asked for."""

    def __init__(self):
        self.by_name = {}

    def __call__(self, name, kind, help_text):
        family = self.by_name.get(name)
        if family is None:
            family = self.by_name[name] = Family(name, kind, help_text)
        return family

    def __iter__(self):
        return iter(self.by_name.values())


def render(master):
    """The metrics page, from master (requests to rz-master); a Raw answer."""
    return Raw(CONTENT_TYPE, exposition(collect(master.request, time.time())))


def collect(request, now):
    """The families of the page, from request(op, **args) (rz-master's answers), with now
    the wall-clock time in seconds."""
    families = Families()
    add_workers(families, request('workers'), now)
    typologies = request('ls')
    add_typologies(families, typologies)
    for t in typologies:
        try:
            runs = request('runs', typology=t['name'], limit=RUNS_WINDOW)
        except HttpError:
            continue                # removed since ls answered
        add_runs(families, t['name'], runs)
    add_nodes(families, request('ps'))
    return families


def add_workers(families, workers, now):
    up = families('rezina_worker_up', 'gauge', '1 if the worker is online, else 0.')
    age = families('rezina_worker_heartbeat_age_seconds', 'gauge',
                   "Seconds since the worker's last heartbeat.")
    slots = families('rezina_worker_slots', 'gauge', 'Slots the worker offers.')
    load = families('rezina_worker_load', 'gauge',
                    'Threads and coroutines of the nodes placed on the worker.')
    nodes = families('rezina_worker_nodes', 'gauge', 'Nodes the worker last reported.')
    for w in workers:
        labels = {'worker': w['id'], 'host': w.get('host') or ''}
        up.add(labels, int(w.get('state') == 'ONLINE'))
        seen = w.get('last_heartbeat')
        if isinstance(seen, (int, float)):
            age.add(labels, round(max(0.0, now - seen), 3))
        slots.add(labels, w.get('slots'))
        load.add(labels, w.get('load'))
        nodes.add(labels, w.get('nodes'))


def add_typologies(families, typologies):
    state = families('rezina_typology_state', 'gauge',
                     "1 for the typology's current state.")
    nodes = families('rezina_typology_nodes', 'gauge', 'Nodes placed for the typology.')
    failed = families('rezina_typology_failed_nodes', 'gauge',
                      'Nodes of the typology marked FAILED.')
    missed = families('rezina_typology_missed_ticks_total', 'counter',
                      "Schedule ticks missed while the typology's sources were down.")
    next_run = families('rezina_typology_next_run_timestamp_seconds', 'gauge',
                        'When the next scheduled run fires, in seconds since the epoch.')
    for t in typologies:
        labels = {'typology': t['name']}
        state.add({**labels, 'state': t.get('state') or ''}, 1)
        nodes.add(labels, t.get('nodes'))
        failed.add(labels, t.get('failed_nodes'))
        missed.add(labels, t.get('missed'))
        next_run.add(labels, t.get('next_run'))


def add_runs(families, typology, runs):
    by_state = families('rezina_recent_runs', 'gauge',
                        f'Runs by state among the last {RUNS_WINDOW} of the typology.')
    seconds = families('rezina_last_run_duration_seconds', 'gauge',
                       'How long the last ended run of the typology took.')
    items = families('rezina_last_run_items', 'gauge',
                     'Items the last ended run of the typology yielded.')
    failed = families('rezina_last_run_failed_items', 'gauge',
                      'Items of the last ended run of the typology that failed.')
    ended = families('rezina_last_run_end_timestamp_seconds', 'gauge',
                     'When the last ended run of the typology ended, in seconds since '
                     'the epoch.')
    counts = {}
    for run in runs:
        key = run.get('state') or 'unknown'
        counts[key] = counts.get(key, 0) + 1
    for key in sorted(counts):
        by_state.add({'typology': typology, 'state': key}, counts[key])
    last = next((r for r in runs if r.get('ended') is not None), None)   # newest first
    if last is None:
        return
    labels = {'typology': typology}
    if last.get('started') is not None:
        seconds.add(labels, round(max(0.0, last['ended'] - last['started']), 3))
    items.add(labels, last.get('items'))
    failed.add(labels, last.get('failed'))
    ended.add(labels, last['ended'])


def add_nodes(families, nodes):
    figures = [(field, families(name, kind, help_text))
               for field, name, kind, help_text in NODE_FIGURES]
    state = families('rezina_node_state', 'gauge', "1 for the node's current state.")
    for n in nodes:
        labels = {'typology': n['typology'], 'stage': n['stage'], 'node': str(n['index']),
                  'worker': n.get('worker') or ''}
        for field, family in figures:
            family.add(labels, n.get(field))
        state.add({**labels, 'state': n.get('state') or ''}, 1)


def exposition(families):
    """The text of families: HELP and TYPE once per family, then its samples; a family
    without samples is left out."""
    lines = []
    for family in families:
        if not family.samples:
            continue
        lines.append(f"# HELP {family.name} {escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for labels, value in family.samples:
            lines.append(f"{family.name}{format_labels(labels)} {format_value(value)}")
    return ''.join(line + '\n' for line in lines)


def format_labels(labels):
    if not labels:
        return ''
    return '{' + ','.join(f'{key}="{escape_label(str(value))}"'
                          for key, value in labels.items()) + '}'


def escape_label(value):
    """A label value as the format writes it: backslash, double quote and newline
    escaped."""
    return value.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')


def escape_help(text):
    return text.replace('\\', '\\\\').replace('\n', '\\n')


def format_value(value):
    if isinstance(value, bool):
        return '1' if value else '0'
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return 'NaN'
    if math.isinf(value):
        return '+Inf' if value > 0 else '-Inf'
    return repr(value)
