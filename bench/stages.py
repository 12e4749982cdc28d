"""The stages of the benchmark: each starts its contender's processes, waits for them within
a deadline and returns what it measured as a dict (JSON-ready).

Runs in the bench's own process (bench/run.py). Every command runs with bench/ as its
current directory, so `bench_funcs` imports as rezina's commands and the scripts expect.
"""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench_funcs import SLEEP_SECONDS
from procs import Stage, StageTimeout, free_ports
from rezina.security import write_key_pair

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
PYTHON = sys.executable
LOOPBACK = 'tcp://127.0.0.1:{}'
STORED_LINE = re.compile(r'stored (\d+) items in ([\d.]+) s first to last .*, (\d+) failed')
STDERR_TAIL = 5             # lines of a failed process's stderr kept in the results


def command(name):
    """The path of an rz command: next to this Python first, then on PATH."""
    beside = os.path.join(os.path.dirname(PYTHON), name)
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"bench: cannot find {name}: install rezina into this Python's "
                         f"environment (pip install -e .)")
    return found


def script(name):
    return [PYTHON, os.path.join(BENCH_DIR, name)]


def failure(stage, reason):
    """The error text of a stage: the reason and the last lines of each process's stderr."""
    parts = [reason]
    for proc in stage.procs:
        tail = proc.stderr_text().strip().splitlines()[-STDERR_TAIL:]
        if tail:
            parts.append(f"[{proc.label} exit {proc.exit_code}] " + ' | '.join(tail))
    return '\n'.join(parts)


def outcome(name, stage, launch, count, first, last, expected):
    """The result dict of a throughput run, from what the sink saw."""
    span = last - first if first is not None and last is not None else 0.0
    result = {
        'name': name,
        'items': count,
        'seconds': span,
        'items_per_s': count / span if span > 0 else None,
        'startup_s': first - launch if first is not None else None,
        'wall_s': max(proc.ended for proc in stage.procs) - launch,
        'processes': [proc.summary() for proc in stage.procs],
        'stragglers': stage.stragglers,
        'error': None,
    }
    bad_exits = [f"{proc.label} exited {proc.exit_code}" for proc in stage.procs
                 if proc.exit_code != 0]
    if bad_exits or count != expected:
        result['error'] = failure(stage, f"{', '.join(bad_exits) or 'all exited 0'}; "
                                         f"{count} of {expected} items arrived")
    return result


def broken(name, stage, reason):
    return {'name': name, 'items': 0, 'items_per_s': None, 'startup_s': None,
            'processes': [proc.summary() for proc in stage.procs],
            'stragglers': stage.stragglers, 'error': failure(stage, reason)}


# the reference and the peer

def reference(n, timeout):
    """The bare pyzmq chain: producer, worker, sink, PUSH/PULL over tcp loopback."""
    near, far = (LOOPBACK.format(port) for port in free_ports(2))
    report = tempfile.TemporaryFile()
    timed_out = None
    with Stage('reference', timeout, BENCH_DIR) as stage:
        try:
            launch = time.monotonic()
            sink = stage.start('sink', script('reference.py') + ['sink', far], stdout=report)
            stage.start('worker', script('reference.py') + ['worker', near, far])
            stage.start('producer', script('reference.py') + ['producer', str(n), near])
            stage.wait_all()
        except StageTimeout as exc:
            timed_out = str(exc)
    if timed_out:
        return broken('reference', stage, timed_out)
    seen = read_report(report)
    if seen is None:
        return broken('reference', stage, f"the sink (pid {sink.pid}) printed no report")
    return outcome('reference', stage, launch, seen['items'], seen['first'], seen['last'], n)


def read_report(report):
    """The JSON a contender printed into the temporary file report, or None."""
    report.seek(0)
    try:
        return json.loads(report.read())
    except ValueError:
        return None


def peer(n, timeout):
    """multiprocessing.Pool(2).imap(identity, range(N), chunksize=256)."""
    report = tempfile.TemporaryFile()
    timed_out = None
    with Stage('peer', timeout, BENCH_DIR) as stage:
        try:
            launch = time.monotonic()
            parent = stage.start('pool parent', script('peer.py') + [str(n)], stdout=report)
            stage.wait_all()
        except StageTimeout as exc:
            timed_out = str(exc)
    if timed_out:
        return broken('peer', stage, timed_out)
    seen = read_report(report)
    if seen is None:
        return broken('peer', stage, f"peer.py (pid {parent.pid}) printed no report")
    # the pool's parent read its workers' peaks just before closing them: exact
    parent.children_hwm_kib = {f'worker{i}': kib for i, kib in enumerate(seen['workers'])}
    result = outcome('peer', stage, launch, seen['items'], seen['first'], seen['last'], n)
    result['processes'] = [proc.summary() for proc in stage.procs]
    return result


# rezina

def bocca_report(bocca):
    """(items stored, first-to-last seconds, failed, arrival time of the line) or None."""
    for at, line in bocca.stderr_lines:
        match = STORED_LINE.search(line)
        if match:
            return int(match[1]), float(match[2]), int(match[3]), at
    return None


def rezina(name, n, transport, timeout, func='identity', notch_options=()):
    """hydrant | notch | bocca over 'zmq' (tcp loopback), 'curve' (the same with a CURVE key
    pair shared by the three) or 'pipes' (OS pipes).

    Start-up is the time from launching the first command to the first item stored: the
    bocca's closing line arrives at a known time and gives the first-to-last span, so the
    first item was stored span seconds before that line (an over-estimate by the time the
    end of stream takes to travel after the last item).
    """
    hydrant = [command('rz-hydrant'), 'bench_funcs:items', str(n)]
    notch = [command('rz-notch'), *notch_options, f'bench_funcs:{func}']
    bocca = [command('rz-bocca'), 'null']
    if transport == 'curve':
        with tempfile.TemporaryDirectory() as keys:
            _, secret = write_key_pair(keys, 'bench')
            hydrant, notch, bocca = ([argv[0], '--curve-key', secret, *argv[1:]]
                                     for argv in (hydrant, notch, bocca))
            return _rezina_run(name, n, transport, timeout, hydrant, notch, bocca)
    return _rezina_run(name, n, transport, timeout, hydrant, notch, bocca)


def _rezina_run(name, n, transport, timeout, hydrant, notch, bocca):
    timed_out = None
    with Stage(name, timeout, BENCH_DIR) as stage:
        try:
            launch = time.monotonic()
            if transport in ('zmq', 'curve'):
                near, far = (LOOPBACK.format(port) for port in free_ports(2))
                sink = stage.start('rz-bocca', bocca + ['--in', '@' + far], timed_stderr=True)
                stage.start('rz-notch', notch + ['--in', near, '--out', '>' + far])
                stage.start('rz-hydrant', hydrant + ['--out', near])
            else:
                source = stage.start('rz-hydrant', hydrant, stdout=subprocess.PIPE)
                middle = stage.start('rz-notch', notch, stdin=source.popen.stdout,
                                     stdout=subprocess.PIPE)
                source.popen.stdout.close()
                sink = stage.start('rz-bocca', bocca, stdin=middle.popen.stdout,
                                   timed_stderr=True)
                middle.popen.stdout.close()
            stage.wait_all()
        except StageTimeout as exc:
            timed_out = str(exc)
    if timed_out:
        return broken(name, stage, timed_out)
    report = bocca_report(sink)
    if report is None:
        return broken(name, stage, f"rz-bocca (pid {sink.pid}) logged no 'stored' line")
    stored, span, failed, line_at = report
    result = outcome(name, stage, launch, stored, line_at - span, line_at, n)
    result['failed'] = failed
    return result


def one_liner(runs, timeout):
    """Wall time of `rz-hydrant bench_funcs:items 1 | rz-notch ... | rz-bocca null`."""
    walls = []
    errors = []
    for _ in range(runs):
        result = rezina('one-liner', 1, 'pipes', timeout)
        if result['error']:
            errors.append(result['error'])
        else:
            walls.append(result['wall_s'])
    return {'runs': runs, 'walls_s': walls,
            'best_s': min(walls) if walls else None,
            'median_s': statistics.median(walls) if walls else None,
            'error': '\n'.join(errors) or None}


def io_bound(items, processes, threads, timeout):
    """items of a SLEEP_SECONDS wait through rz-notch -p P -t T over pipes, against the
    ideal items * latency / (P * T)."""
    options = ['-p', str(processes), '-t', str(threads)]
    result = rezina('io-bound', items, 'pipes', timeout, func='sleepy',
                    notch_options=options)
    ideal = items * SLEEP_SECONDS / (processes * threads)
    # the first item took one latency before it arrived: first-to-last misses it
    busy = result['seconds'] + SLEEP_SECONDS if not result['error'] else None
    result.update({'ideal_s': ideal, 'busy_s': busy,
                   'ratio': busy / ideal if busy is not None else None,
                   'latency_s': SLEEP_SECONDS, 'processes_option': processes,
                   'threads_option': threads})
    return result


def rss_flatness(small, large):
    """Peak RSS of each rz process at the large size against the small one."""
    if small['error'] or large['error']:
        return {'small_items': small['items'], 'large_items': large['items'],
                'ratios': {}, 'worst': None, 'error': small['error'] or large['error']}
    ratios = {}
    for before, after in zip(small['processes'], large['processes']):
        label = before['command']
        ratios[label] = after['peak_rss_kib'] / before['peak_rss_kib']
        if before['children_peak_rss_kib'] and after['children_peak_rss_kib']:
            ratios[label + ' children'] = (max(after['children_peak_rss_kib'])
                                           / max(before['children_peak_rss_kib']))
    return {'small_items': small['items'], 'large_items': large['items'],
            'small': {p['command']: p['peak_rss_kib'] for p in small['processes']},
            'large': {p['command']: p['peak_rss_kib'] for p in large['processes']},
            'ratios': ratios, 'worst': max(ratios.values()), 'error': None}
