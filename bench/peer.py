"""The peer: multiprocessing.Pool(2).imap(identity, range(N), chunksize=256), consumed in
the parent.

    python peer.py N

Prints one JSON line: {"items", "first", "last", "workers"}; first and last are
time.monotonic() at the first and the last result, workers the peak RSS (VmHWM, KiB) of
each pool process, read from /proc while they still run.
"""

import json
import multiprocessing
import sys
import time

from bench_funcs import identity
from procs import read_hwm_kib

PROCESSES = 2
CHUNKSIZE = 256


def main(argv):
    n = int(argv[0])
    count = 0
    first = None
    with multiprocessing.Pool(PROCESSES) as pool:
        for _ in pool.imap(identity, range(n), chunksize=CHUNKSIZE):
            if first is None:
                first = time.monotonic()
            count += 1
        last = time.monotonic()
        workers = [read_hwm_kib(child.pid) for child in multiprocessing.active_children()]
    print(json.dumps({'items': count, 'first': first, 'last': last, 'workers': workers}),
          flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
