"""rz-master: knows the workers, places the nodes of named typologies on them, records
their runs, restarts what fails and scales stages at run time.

Usage:
  rz-master [options]
  rz-master (-h | --help | --version)

Options:
  -H, --host=HOST        The address the control socket binds [default: 127.0.0.1].
  -P, --port=PORT        The control socket's port [default: 12345].
  -W, --workspace=DIR    The code typologies run: snapshotted at each start and sent to
                         the workers [default: ~/rezina/workspace].
  -L, --logdir=DIR       One log file per typology, with its nodes' stderr
                         [default: ~/rezina/logs].
  --http-port=PORT       The HTTP JSON API's port, on --http-host; 0 for none
                         [default: 31218].
  --http-host=HOST       The address the HTTP API binds [default: 127.0.0.1].
  --state-dir=DIR        Workers, typologies, placements and runs, in SQLite
                         [default: ~/.rezina].
  --curve-key=FILE       The master's CURVE secret key file (see rz keygen): the control
                         socket lets in only CURVE clients with an allowed key (or
                         REZINA_CURVE_KEY).
  --curve-allow=DIR      The public key files (*.key) of the workers and clients let in,
                         besides the master's own (or REZINA_CURVE_ALLOW).
  --insecure             Bind a --host outside loopback without CURVE keys, or an HTTP
                         API (--http-host) outside loopback: it is plain HTTP, the
                         token is sent in clear.
  -R, --reset            Forget the saved state (it is renamed aside, not deleted): the
                         workers stop the nodes of the typologies it held.
  -D, --daemon           Run in the background: the pid in STATE-DIR/master.pid, the log
                         in LOGDIR/master.log.
  --log-level=LEVEL      debug, info, warning or error [default: info].
  -h, --help             Show this help.
  --version              Show the version.
"""

import logging
import os
import signal
import sys

from rezina import notify
from rezina.cli import port_option, run_command
from rezina.control.master import Master
from rezina.control.state import State
from rezina.errors import UsageError
from rezina.security import Security, is_loopback

log = logging.getLogger(__name__)
PROG = 'rz-master'


def _serve(args):
    port = port_option(args, '--port', 0)
    http_port = port_option(args, '--http-port', 0)
    # absolute before -D moves to /
    state_dir = os.path.abspath(os.path.expanduser(args['--state-dir']))
    logdir = os.path.abspath(os.path.expanduser(args['--logdir']))
    workspace = os.path.abspath(os.path.expanduser(args['--workspace']))
    security = Security.from_args(args)
    if not security.keys:      # refused here, not in the background, nor after -R
        security.check_plain_bind(f"tcp://{args['--host']}:{port}", PROG)
    if http_port and not is_loopback(args['--http-host']):
        if not security.insecure:
            raise UsageError(f"--http-host {args['--http-host']}: the HTTP API is plain "
                             f"HTTP, its token sent in clear: it binds outside loopback "
                             f"only with --insecure (or put a TLS proxy in front of it)")
        log.warning("the HTTP API binds %s outside loopback (--insecure): its token "
                    "travels in clear", args['--http-host'])
    if args['--daemon']:
        State.open(state_dir).close()           # refuse here, not in the background
        from rezina.control.daemon import daemonize
        daemonize(os.path.join(state_dir, 'master.pid'), os.path.join(logdir, 'master.log'))

    state = State.open(state_dir, forget=args['--reset'])
    stopping = []
    http = master = None
    try:
        master = Master(state, args['--host'], port, workspace, logdir, security=security)
        if http_port:
            from rezina.control.http import HttpApi, load_token
            # the API asks the master as any client does, over loopback when it binds all
            control_host = args['--host']
            if control_host in ('*', '0.0.0.0', '::'):
                control_host = '127.0.0.1'
            http = HttpApi(args['--http-host'], http_port, control_host, master.port,
                           load_token(state_dir), security=security)
            http.start()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda n, f: stopping.append(n))
        notifier = notify.default()
        notifier.ready(f"control {args['--host']}:{master.port}, HTTP "
                       + (f"{args['--http-host']}:{http_port}" if http else "off"))

        def should_stop():
            notifier.watchdog()
            return stopping
        master.run(should_stop)
        notifier.stopping("stopping; the nodes run on")
        log.info("rz-master stopping (signal %d); the nodes run on", stopping[0])
        return 0
    finally:
        if http is not None:
            http.close()
        if master is not None:
            master.close()
        state.close()


def main(argv=None):
    return run_command(PROG, __doc__, sys.argv[1:] if argv is None else argv, _serve)
