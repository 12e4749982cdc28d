"""What tests/test_sink_outages.py runs: a source that waits for the test between two
waves of items, a backend that stores items on a server over TCP, and (run as a script)
that server, or a process that holds an SQLite database locked."""

import json
import os
import select
import socket
import sqlite3
import sys
import time

from rezina.backends import StorageBackend

GATE_TIMEOUT = 30.0     # seconds a source waits for its gate before it gives up
HOLD_TIMEOUT = 30.0     # seconds a lock is held at most, should the test never release it


def waves(first, total, gate):
    """Yield 0 .. first-1, then, once the file `gate` exists, first .. total-1."""
    yield from range(first)
    deadline = time.monotonic() + GATE_TIMEOUT
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} was never opened")
        time.sleep(0.01)
    yield from range(first, total)


def hold_lock(path):
    """Take the write lock of the database at `path`, say 'locked' on stdout, and keep it
    until stdin ends (or HOLD_TIMEOUT passes)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute('BEGIN EXCLUSIVE')
    print('locked', flush=True)
    deadline = time.monotonic() + HOLD_TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sys.stdin], [], [], deadline - time.monotonic())
        if ready and not os.read(sys.stdin.fileno(), 4096):
            break
    conn.execute('COMMIT')
    conn.close()


class LineServer(StorageBackend):
    """Stores each write on the server at 127.0.0.1:`port` (see serve): one JSON line, then
    its answer 'ok'. Like a database client, it connects again after a lost connection."""

    def __init__(self, logger, port):
        super().__init__(logger, port)
        self.port = port
        self.conn = None

    def write(self, message):
        if self.conn is None:
            self.conn = socket.create_connection(('127.0.0.1', self.port), timeout=5)
        try:
            self.conn.sendall(json.dumps(message).encode() + b'\n')
            if self.conn.makefile('rb').readline() != b'ok\n':
                raise ConnectionResetError("the server went away before it answered")
        except OSError:
            self.close()
            raise

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def serve(port, path):
    """The server of LineServer: append each item of each line to the file `path`, a JSON
    line each, then answer 'ok'; one client at a time, until killed."""
    listener = socket.create_server(('127.0.0.1', port))
    print('listening', flush=True)
    with open(path, 'a', encoding='utf-8') as out:
        while True:
            conn, _ = listener.accept()
            with conn, conn.makefile('rwb') as stream:
                for line in stream:
                    for item in json.loads(line):
                        out.write(json.dumps(item) + '\n')
                    out.flush()
                    stream.write(b'ok\n')
                    stream.flush()


if __name__ == '__main__':
    if sys.argv[1] == 'serve':
        serve(int(sys.argv[2]), sys.argv[3])
    else:
        hold_lock(sys.argv[2])
