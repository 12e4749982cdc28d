"""rz-worker: runs the nodes rz-master places on this machine, as rz-hydrant, rz-notch and
rz-bocca child processes, restarts those that fail, and reports them every second.

Usage:
  rz-worker [options]
  rz-worker (-h | --help | --version)

Options:
  -H, --host=MASTER      rz-master's address [default: 127.0.0.1].
  -P, --port=PORT        rz-master's control port [default: 12345].
  --worker-ip=IP         The address this machine's nodes bind, which the other workers
                         reach [default: 127.0.0.1].
  --slots=N              Threads and coroutines this machine runs before the master
                         prefers another (default: the CPU count).
  --curve-key=FILE       This machine's CURVE secret key file (see rz keygen), for the
                         master's socket and every edge of its nodes (or
                         REZINA_CURVE_KEY).
  --curve-allow=DIR      The public key files (*.key) of the machines whose nodes may read
                         from this one's, besides its own (or REZINA_CURVE_ALLOW).
  --master-key=KEY       rz-master's public key, a file or 40 Z85 characters (or
                         REZINA_MASTER_KEY; by default this machine's own).
  --insecure             Let the nodes bind --worker-ip outside loopback without CURVE
                         keys.
  --root=DIR             Where the code snapshots are kept [default: ~/.rezina/worker].
  -D, --daemon           Run in the background: the pid in ROOT/worker-IP.pid, the log in
                         ROOT/worker-IP.log.
  --log-level=LEVEL      debug, info, warning or error [default: info].
  -h, --help             Show this help.
  --version              Show the version.
"""

import ipaddress
import logging
import os
import signal
import sys

from rezina import defaults, notify
from rezina.cli import int_option, port_option, run_command
from rezina.control.agent import Agent
from rezina.errors import RezinaError, UsageError
from rezina.security import Security, master_key

log = logging.getLogger(__name__)
PROG = 'rz-worker'


def _serve(args):
    port = port_option(args, '--port')
    ip = args['--worker-ip']
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise UsageError(f"--worker-ip {ip!r}: expected an IP address") from None
    slots = int_option(args, '--slots', 1) if args['--slots'] else os.cpu_count() or 1
    root = os.path.abspath(os.path.expanduser(args['--root']))     # before -D moves to /
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise RezinaError(f"cannot use --root {root}: {exc.strerror}") from None
    security = Security.from_args(args)
    server_key = master_key(args['--master-key'])
    if not security.keys:
        security.check_plain_bind(f"tcp://{ip}:*", PROG)    # the nodes bind --worker-ip
    os.environ.update(security.environ())                  # for the nodes
    if args['--daemon']:
        from rezina.control.daemon import daemonize
        daemonize(os.path.join(root, f'worker-{ip}.pid'), os.path.join(root, f'worker-{ip}.log'))

    agent = Agent(args['--host'], port, ip, slots, root, security=security,
                  master_key=server_key)
    stopping = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda n, f: stopping.append(n))
    log.info("rz-worker %s: %d slots, master %s:%d, %s", agent.worker_id, slots,
             args['--host'], port, security.describe())
    notifier = notify.default()
    notifier.ready(f"worker {agent.worker_id}: {slots} slots, master {args['--host']}:{port}")
    try:
        while not stopping:
            agent.step(0.1)
            notifier.watchdog()
        notifier.stopping("stopping: the nodes drain")
        log.info("rz-worker %s stopping: its nodes drain (at most %g s)", agent.worker_id,
                 defaults.DRAIN_TIMEOUT)
    finally:
        agent.close()
    return 0


def main(argv=None):
    return run_command(PROG, __doc__, sys.argv[1:] if argv is None else argv, _serve)
