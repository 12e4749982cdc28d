"""Benchmark rezina against a bare pyzmq chain and multiprocessing.Pool, and against the
performance goals of DESIGN.md.

Usage: python bench/run.py [--items N | --long | --quick] [--timeout SECONDS]

Prints the tables on stdout (progress on stderr) and writes the same as JSON to
bench/results/latest.json. See bench/README.md for what each figure means.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import stages  # noqa: E402  (bench/ is put on sys.path first)

DEFAULT_ITEMS = 2_000_000
LONG_ITEMS = 20_000_000
QUICK_ITEMS = 200_000
DEFAULT_TIMEOUT = 300.0
ONE_LINER_RUNS = 5
IO_ITEMS, IO_PROCESSES, IO_THREADS = 400, 2, 10
RESULTS = os.path.join(stages.BENCH_DIR, 'results', 'latest.json')

# the goals of DESIGN.md, "Performance goals"
MIN_VS_REFERENCE = 0.5
MIN_VS_PEER = 1.0
MAX_STARTUP_S = 0.3
MAX_IO_RATIO = 1.1
MAX_RSS_RATIO = 1.1


def parse_args(argv):
    parser = argparse.ArgumentParser(prog='bench/run.py', description=__doc__.split('\n')[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument('--items', type=int, default=DEFAULT_ITEMS,
                      help=f'items per throughput run [default: {DEFAULT_ITEMS}]')
    size.add_argument('--long', action='store_const', dest='items', const=LONG_ITEMS,
                      help=f'{LONG_ITEMS} items')
    size.add_argument('--quick', action='store_const', dest='items', const=QUICK_ITEMS,
                      help=f'{QUICK_ITEMS} items, a fast smoke run')
    parser.add_argument('--timeout', type=float, default=DEFAULT_TIMEOUT,
                        help=f'seconds each stage may take [default: {DEFAULT_TIMEOUT:g}]')
    args = parser.parse_args(argv)
    if args.items < 10:
        parser.error('--items: at least 10 (the RSS check also runs a tenth of it)')
    return args


def progress(text):
    print(f"bench: {text}", file=sys.stderr, flush=True)


def measure(n, timeout):
    """Every stage, in order; the raw results."""
    results = {}
    progress(f"reference (bare pyzmq chain), {n} items")
    results['reference'] = stages.reference(n, timeout)
    progress(f"peer (multiprocessing.Pool(2).imap), {n} items")
    results['peer'] = stages.peer(n, timeout)
    progress(f"rezina over ZeroMQ, {n} items")
    results['rezina_zmq'] = stages.rezina('rezina-zmq', n, 'zmq', timeout)
    progress(f"rezina over ZeroMQ with CURVE, {n} items")
    results['rezina_curve'] = stages.rezina('rezina-curve', n, 'curve', timeout)
    progress(f"rezina over OS pipes, {n} items")
    results['rezina_pipes'] = stages.rezina('rezina-pipes', n, 'pipes', timeout)
    progress(f"one-item one-liner over pipes, {ONE_LINER_RUNS} runs")
    results['one_liner'] = stages.one_liner(ONE_LINER_RUNS, timeout)
    progress(f"I/O-bound: {IO_ITEMS} sleeps through rz-notch -p {IO_PROCESSES} "
             f"-t {IO_THREADS}")
    results['io_bound'] = stages.io_bound(IO_ITEMS, IO_PROCESSES, IO_THREADS, timeout)
    progress(f"rezina over ZeroMQ, {n // 10} items (for RSS flatness)")
    small = stages.rezina('rezina-zmq-small', n // 10, 'zmq', timeout)
    results['rss_flatness'] = stages.rss_flatness(small, results['rezina_zmq'])
    results['rss_flatness']['small_run'] = small
    return results


def ratio(a, b):
    return a / b if a is not None and b else None


def goals(results):
    """Rows of (goal, measured, target, verdict)."""
    ref = results['reference'].get('items_per_s')
    peer = results['peer'].get('items_per_s')
    rows = []
    for key, label in (('rezina_zmq', 'over ZeroMQ'), ('rezina_pipes', 'over pipes')):
        rate = results[key].get('items_per_s')
        rows.append((f"throughput {label} / reference", ratio(rate, ref),
                     f">= {MIN_VS_REFERENCE}", lambda v: v >= MIN_VS_REFERENCE))
        rows.append((f"throughput {label} / peer", ratio(rate, peer),
                     f"> {MIN_VS_PEER:g}", lambda v: v > MIN_VS_PEER))
    rows.append((f"one-liner start-up, median of {ONE_LINER_RUNS} (s)",
                 results['one_liner']['median_s'], f"< {MAX_STARTUP_S}",
                 lambda v: v < MAX_STARTUP_S))
    rows.append((f"I/O-bound -p {IO_PROCESSES} -t {IO_THREADS}: time / ideal",
                 results['io_bound'].get('ratio'), f"<= {MAX_IO_RATIO}",
                 lambda v: v <= MAX_IO_RATIO))
    rows.append(("peak RSS at N / at N/10, worst rz process",
                 results['rss_flatness']['worst'], f"<= {MAX_RSS_RATIO}",
                 lambda v: v <= MAX_RSS_RATIO))
    return [{'goal': goal, 'measured': value, 'target': target,
             'verdict': 'n/a' if value is None else ('PASS' if test(value) else 'FAIL')}
            for goal, value, target, test in rows]


# printing

def fmt(value, spec, none='-'):
    return none if value is None else format(value, spec)


def mib(kib):
    return fmt(kib / 1024 if kib is not None else None, '.1f')


def rss_text(processes):
    parts = []
    for proc in processes:
        text = f"{proc['command']} {mib(proc['peak_rss_kib'])}"
        children = proc['children_peak_rss_kib']
        if children:
            text += f" (children {', '.join(mib(kib) for kib in children)})"
        parts.append(text)
    return '; '.join(parts)


def print_tables(n, results, rows):
    ref = results['reference'].get('items_per_s')
    peer = results['peer'].get('items_per_s')
    print(f"\nThroughput: {n:,} items through an identity function "
          f"(steady state: first to last item at the sink)")
    print(f"{'contender':<26}{'items/s':>12}{'/ ref':>8}{'/ peer':>8}{'start-up':>10}"
          f"   peak RSS, MiB")
    names = (('reference', 'reference (bare pyzmq)'), ('peer', 'peer (Pool(2).imap)'),
             ('rezina_zmq', 'rezina over ZeroMQ'), ('rezina_curve', '... with CURVE'),
             ('rezina_pipes', 'rezina over pipes'))
    for key, label in names:
        result = results[key]
        rate = result.get('items_per_s')
        print(f"{label:<26}{fmt(rate, ',.0f'):>12}{fmt(ratio(rate, ref), '.2f'):>8}"
              f"{fmt(ratio(rate, peer), '.2f'):>8}{fmt(result.get('startup_s'), '.3f'):>8} s"
              f"   {rss_text(result['processes'])}")
    for key, _ in names:
        if results[key]['error']:
            print(f"  {key} FAILED: {results[key]['error']}")

    one = results['one_liner']
    walls = ', '.join(fmt(w, '.3f') for w in one['walls_s'])
    print(f"\nOne-item one-liner over pipes, wall time: best {fmt(one['best_s'], '.3f')} s, "
          f"median {fmt(one['median_s'], '.3f')} s (runs: {walls})")
    if one['error']:
        print(f"  FAILED: {one['error']}")

    io = results['io_bound']
    print(f"\nI/O-bound: {IO_ITEMS} x {stages.SLEEP_SECONDS} s through rz-notch "
          f"-p {IO_PROCESSES} -t {IO_THREADS} (pipes): first to last "
          f"{fmt(io.get('seconds'), '.3f')} s + one latency = {fmt(io.get('busy_s'), '.3f')} s"
          f", ideal {io['ideal_s']:.3f} s, ratio {fmt(io.get('ratio'), '.3f')}; "
          f"whole wall {fmt(io.get('wall_s'), '.3f')} s")
    if io['error']:
        print(f"  FAILED: {io['error']}")

    flat = results['rss_flatness']
    print(f"\nRSS flatness (rezina over ZeroMQ): peak RSS at {flat['large_items']:,} items "
          f"/ at {flat['small_items']:,} items")
    for label, value in flat['ratios'].items():
        sizes = ''
        if label in flat['small']:
            sizes = f"   ({mib(flat['small'][label])} -> {mib(flat['large'][label])} MiB)"
        print(f"  {label:<22}{value:6.3f}{sizes}")
    if flat['error']:
        print(f"  FAILED: {flat['error']}")

    print("\nSummary against the goals (DESIGN.md, Performance goals)")
    print(f"{'goal':<48}{'measured':>10}  {'target':<9}verdict")
    for row in rows:
        print(f"{row['goal']:<48}{fmt(row['measured'], '.3f'):>10}  {row['target']:<9}"
              f"{row['verdict']}")


def configuration(n, timeout):
    try:
        commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=stages.BENCH_DIR,
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {'items': n, 'timeout_s': timeout, 'python': platform.python_version(),
            'cpus': os.cpu_count(), 'machine': platform.machine(), 'commit': commit or None,
            'when': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    config = configuration(args.items, args.timeout)
    results = measure(args.items, args.timeout)
    rows = goals(results)
    print_tables(args.items, results, rows)
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, 'w') as out:
        json.dump({'config': config, 'results': results, 'goals': rows}, out, indent=2)
    print(f"\nwritten: {os.path.relpath(RESULTS)}")
    return 0 if all(row['verdict'] == 'PASS' for row in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
