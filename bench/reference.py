"""The reference: a bare pyzmq chain of three processes doing what a rezina pipeline does,
with the same batching and nothing else (no ids, credit or acknowledgements).

    python reference.py producer N ENDPOINT      binds PUSH, sends N items in batches
    python reference.py worker IN OUT            connects PULL to IN and PUSH to OUT
    python reference.py sink ENDPOINT            binds PULL, counts; prints a JSON line

Each message is a msgpack list of up to BATCH items; an empty message ends the stream.
PUSH/PULL over tcp loopback: with one worker it is the fastest ZeroMQ pattern, and it still
pushes back: the high-water marks (HWM messages a socket) block a producer that runs ahead,
so the queues are bounded like a rezina edge's credit window and the sink's first-to-last
time measures a steady flow rather than the draining of a queue filled before it woke.
The sink prints {"items", "first", "last"}: time.monotonic() (system-wide on Linux) at the
first message received and after the last message counted.
"""

import itertools
import json
import sys
import time

import msgpack
import zmq

from bench_funcs import identity, items

BATCH = 1000
END = b''
HWM = 8         # messages queued per socket: 8000 items, about rezina's credit window (8192)


def socket(context, kind):
    sock = context.socket(kind)
    sock.sndhwm = sock.rcvhwm = HWM
    return sock


def produce(n, endpoint):
    context = zmq.Context()
    push = socket(context, zmq.PUSH)
    push.bind(endpoint)
    source = items(n)
    while True:
        batch = list(itertools.islice(source, BATCH))
        if not batch:
            break
        push.send(msgpack.packb(batch))
    push.send(END)
    push.close(linger=-1)      # deliver everything before exiting
    context.term()


def work(in_endpoint, out_endpoint):
    context = zmq.Context()
    pull = socket(context, zmq.PULL)
    pull.connect(in_endpoint)
    push = socket(context, zmq.PUSH)
    push.connect(out_endpoint)
    while True:
        message = pull.recv()
        if message == END:
            break
        push.send(msgpack.packb([identity(item) for item in msgpack.unpackb(message)]))
    push.send(END)
    pull.close(linger=0)
    push.close(linger=-1)
    context.term()


def sink(endpoint):
    context = zmq.Context()
    pull = socket(context, zmq.PULL)
    pull.bind(endpoint)
    count = 0
    first = last = None
    while True:
        message = pull.recv()
        if first is None:
            first = time.monotonic()
        if message == END:
            break
        count += len(msgpack.unpackb(message))
        last = time.monotonic()
    pull.close(linger=0)
    context.term()
    print(json.dumps({'items': count, 'first': first, 'last': last}), flush=True)


def main(argv):
    role, args = argv[0], argv[1:]
    if role == 'producer':
        produce(int(args[0]), args[1])
    elif role == 'worker':
        work(args[0], args[1])
    elif role == 'sink':
        sink(args[0])
    else:
        print(f"reference.py: unknown role {role!r}: expected producer, worker or sink",
              file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
