"""Telling systemd how a command is doing, for units of Type=notify (see systemd/).

Runs in rz-master, rz-worker and every stage process that serves its own edges. A message
is one datagram of `KEY=VALUE` lines on the AF_UNIX socket named by $NOTIFY_SOCKET (a path,
or `@name` for the abstract namespace): `READY=1` once the command serves, `WATCHDOG=1`
every WATCHDOG_USEC / 2 while it is healthy, `STOPPING=1` when it begins to drain, and
`STATUS=...` a short line for `systemctl status`. Without $NOTIFY_SOCKET nothing is sent.
Nothing here raises into the caller, and the environment is left as it is, so the nodes
that rz-worker starts see it too (they report to rz-worker instead: see Node).
"""

import logging
import os
import socket
import time

log = logging.getLogger(__name__)

SEND_TIMEOUT = 0.1      # seconds a datagram may wait for room: a loop must not stall on it
STATUS_CHARS = 200      # a STATUS line is one short line, cut to this


class Notifier:
    """The notification socket of this process's service manager, if it has one."""

    def __init__(self, environ=None):
        environ = os.environ if environ is None else environ
        self.socket_name = environ.get('NOTIFY_SOCKET', '')
        self.address = _address(self.socket_name)
        self.watchdog_interval = _watchdog_interval(environ)
        self.watchdog_pid = environ.get('WATCHDOG_PID', '')
        self._next_watchdog = 0.0
        self._complained = False

    @property
    def enabled(self):
        return self.address is not None

    def watchdog_enabled(self):
        """True when the manager expects WATCHDOG=1 from this very process."""
        if not self.enabled or self.watchdog_interval is None:
            return False
        return not self.watchdog_pid or self.watchdog_pid == str(os.getpid())

    def send(self, *fields, status=None):
        """Send fields (`READY=1` ...) and a STATUS line; True when the datagram went."""
        if not self.enabled:
            return False
        lines = list(fields)
        if status:
            lines.append('STATUS=' + ' '.join(str(status).split())[:STATUS_CHARS])
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(SEND_TIMEOUT)
                sock.sendto('\n'.join(lines).encode('utf-8', 'replace'), self.address)
            return True
        except Exception as exc:        # never the caller's problem; said once
            if not self._complained:
                self._complained = True
                log.warning("cannot notify the service manager at %s: %s",
                            self.socket_name, exc)
            return False

    def ready(self, status=None):
        return self.send('READY=1', status=status)

    def stopping(self, status=None):
        return self.send('STOPPING=1', status=status)

    def status(self, status):
        return self.send(status=status)

    def watchdog(self):
        """Send WATCHDOG=1 if the manager wants it and half its interval has passed."""
        if not self.watchdog_enabled():
            return False
        now = time.monotonic()
        if now < self._next_watchdog:
            return False
        self._next_watchdog = now + self.watchdog_interval / 2
        return self.send('WATCHDOG=1')


_default = None


def default():
    """This process's notifier, from the environment at the first call."""
    global _default
    if _default is None:
        _default = Notifier()
    return _default


def _address(text):
    """The socket address $NOTIFY_SOCKET names, or None for none that we can use."""
    if text.startswith('@') and len(text) > 1:
        return b'\0' + os.fsencode(text[1:])      # the abstract namespace
    if text.startswith('/'):
        return text
    if text:
        log.debug("NOTIFY_SOCKET %r is not a unix socket path: not notifying", text)
    return None


def _watchdog_interval(environ):
    """WATCHDOG_USEC in seconds, or None when unset or not a positive number."""
    try:
        usec = int(environ.get('WATCHDOG_USEC', ''))
    except ValueError:
        return None
    return usec / 1e6 if usec > 0 else None


SILENT = Notifier({})       # sends nothing: for a process whose supervisor is not systemd
