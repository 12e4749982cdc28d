"""Results that come back to the submitting process: a typology whose bocca is Stdout or
PlainFile stores its items where it was submitted (see docs/control-plane.md,
"TypologyBuilder and results that come back").

Runs in the process that calls TypologyBuilder.start() or restart(). It starts a real
`rz-bocca` child bound on an address the workers can reach (`--in @tcp://IP:*`), learns
its port over a `--control-fd` socketpair, and the typology's last stage writes to it.
The call then waits: until the bocca ends (a one-shot typology's run is stored), or until
Ctrl-C, which stops the typology on the master and then drains the bocca.
"""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import msgpack

from rezina import defaults
from rezina.control.child_process import die_with_parent
from rezina.errors import RezinaError

log = logging.getLogger(__name__)

LOCAL_TARGETS = ('rezina.backends.textfiles:Stdout', 'rezina.backends.textfiles:PlainFile')
BOUND_TIMEOUT = 10.0            # seconds the bocca has to bind and say on which port
CHECK_INTERVAL = 2.0            # seconds between asks whether the typology still runs


def comes_back(bocca):
    """True if a bocca spec stores where the typology is submitted."""
    return bocca['target'] in LOCAL_TARGETS


def address_towards(host, port):
    """This machine's address on the route to host (no packet is sent)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        family, _, _, _, addr = infos[0]
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            return s.getsockname()[0]
    except OSError as exc:
        raise RezinaError(f"cannot find this machine's address towards {host}: "
                          f"{exc}") from None


class LocalSink:
    """A running rz-bocca child that the typology's last stage writes to."""

    def __init__(self, bocca, master_host, master_port, follow):
        ip = address_towards(master_host, master_port)
        ours, theirs = socket.socketpair()
        argv = [_command('rz-bocca'), '--in', f"@tcp://{ip}:*", '--mode', bocca['mode'],
                *(['--follow'] if follow else []),
                '--control-fd', str(theirs.fileno()), '--log-level', 'warning',
                bocca['target']]
        if bocca.get('args'):
            argv += ['--args', json.dumps(bocca['args'])]
        if bocca.get('kwargs'):
            argv += ['--kwargs', json.dumps(bocca['kwargs'])]
        try:
            # its own session: a Ctrl-C reaches this process, which stops the typology
            # first, and only then the bocca
            # and it dies with this process, should that be killed
            self.proc = subprocess.Popen(argv, pass_fds=(theirs.fileno(),),
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=die_with_parent())
        finally:
            theirs.close()
        self.sock = ours
        self.endpoint = self._bound()

    def _bound(self):
        unpacker = msgpack.Unpacker(raw=False)
        deadline = time.monotonic() + BOUND_TIMEOUT
        while (left := deadline - time.monotonic()) > 0 and self.proc.poll() is None:
            self.sock.settimeout(min(left, 0.2))
            try:
                data = self.sock.recv(1 << 16)
            except socket.timeout:
                continue
            if not data:
                break
            unpacker.feed(data)
            for record in unpacker:
                if isinstance(record, dict) and record.get('op') == 'bound':
                    return record['endpoint']
        self.close()
        raise RezinaError("the local rz-bocca for the results did not start (see its "
                          "error above)")

    def wait(self, on_interrupt, still_wanted):
        """Wait for the bocca to end, or for still_wanted() to say no (the typology was
        stopped elsewhere); on Ctrl-C, SIGTERM or SIGHUP call on_interrupt() first. Then
        drain the bocca."""
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGHUP):
                previous[signum] = signal.signal(signum, _interrupt)
        try:
            next_check = time.monotonic() + CHECK_INTERVAL
            while self.proc.poll() is None:
                try:
                    self.proc.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    pass
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + CHECK_INTERVAL
                    if not still_wanted():
                        log.warning("the typology was stopped elsewhere: no more results")
                        break
        except KeyboardInterrupt:
            print(file=sys.stderr)
            try:
                on_interrupt()
            except RezinaError as exc:
                log.error("%s", exc)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.close()
        return self.proc.returncode

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)       # it stores what it holds, then ends
            try:
                self.proc.wait(timeout=defaults.DRAIN_TIMEOUT + 5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.sock.close()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _command(name):
    path = os.path.join(os.path.dirname(sys.executable), name)
    return path if os.access(path, os.X_OK) else name
