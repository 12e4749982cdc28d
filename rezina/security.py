"""CURVE keys and who may connect.

Every command that opens a ZeroMQ socket takes `--curve-key FILE` (a secret key file as
`rz keygen` writes it), `--curve-allow DIR` (the public key files of the peers let in) and
`--insecure`; where an option is not given its environment variable is read
(REZINA_CURVE_KEY, REZINA_CURVE_ALLOW, REZINA_INSECURE=1), so that rz-worker hands them to
the stage commands it starts.

With a key every socket is CURVE: a bound socket is a CURVE server that admits a client
only if its public key is this process's own or one in DIR (a ZAP handler, the Gate, asks;
a refusal is logged once per address and key); a connecting socket needs the server's
public key: written after the address as `tcp://HOST:PORT#KEY` (40 Z85 characters or a
public key file), or this process's own public key when none is written, which is right
where one key pair is shared by every machine.

Without a key a socket is plain, and binding a TCP address outside loopback is refused
unless --insecure is given.
"""

import ipaddress
import logging
import os
import threading
import time
from dataclasses import dataclass

import zmq
from zmq.utils import z85

from rezina.errors import UsageError

log = logging.getLogger(__name__)

ZAP_ENDPOINT = 'inproc://zeromq.zap.01'      # where libzmq asks, fixed by ZAP (RFC 27)
ZAP_DOMAIN = b'rezina'
KEY_CHARS = 40                               # a Z85 CURVE key
REMEMBERED_REFUSALS = 10_000                 # peers whose refusal was logged (bounded)
ENV_KEY, ENV_ALLOW, ENV_INSECURE = 'REZINA_CURVE_KEY', 'REZINA_CURVE_ALLOW', 'REZINA_INSECURE'
ENV_MASTER_KEY = 'REZINA_MASTER_KEY'
_MISMATCH = ("the handshake failed: one side uses CURVE and the other not, or the server "
             "key is wrong")
HANDSHAKE_FAILURES = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "it refused us (is our public key in its "
                                     "--curve-allow?)",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: _MISMATCH,
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: _MISMATCH,
}


@dataclass(frozen=True)
class Keys:
    """This process's key pair and where the public keys it admits are."""

    public: bytes
    secret: bytes
    path: str                       # the secret key file
    allow_dir: str | None = None


def _certificate(path, what):
    """(public, secret or None) of a key file in the format zmq.auth reads."""
    from zmq.auth.certs import load_certificate     # only where keys are used
    try:
        public, secret = load_certificate(path)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else \
            'not a CURVE key file (no public-key line)'
        if not os.path.exists(path):
            reason = 'no such file'
        raise UsageError(f"{what} {path}: {reason}") from None
    if len(public) != KEY_CHARS or (secret is not None and len(secret) != KEY_CHARS):
        raise UsageError(f"{what} {path}: a key is not {KEY_CHARS} Z85 characters")
    return public, secret


def load_keys(key_file, allow_dir=None):
    """Keys from a secret key file and an optional directory of allowed public keys."""
    key_file = os.path.abspath(os.path.expanduser(key_file))
    public, secret = _certificate(key_file, '--curve-key')
    if secret is None:
        raise UsageError(f"--curve-key {key_file}: a public key file; give the secret one "
                         f"(NAME.key_secret, as rz keygen writes it)")
    if allow_dir is not None:
        allow_dir = os.path.abspath(os.path.expanduser(allow_dir))
        if not os.path.isdir(allow_dir):
            raise UsageError(f"--curve-allow {allow_dir}: not a directory")
        read_allowed(allow_dir)             # a bad file is an error now, not at a refusal
    return Keys(public, secret, key_file, allow_dir)


def read_allowed(allow_dir):
    """The public keys of the *.key files in allow_dir."""
    keys = set()
    for name in sorted(os.listdir(allow_dir)):
        if name.endswith('.key'):
            public, _ = _certificate(os.path.join(allow_dir, name), '--curve-allow')
            keys.add(public)
    return keys


def public_key(text, what):
    """A server's public key: 40 Z85 characters, or the file that holds it."""
    if len(text) == KEY_CHARS and not os.path.exists(text):
        try:
            z85.decode(text.encode())
        except (ValueError, KeyError):
            raise UsageError(f"{what}: {text!r} is not a Z85 key") from None
        return text.encode()
    public, _ = _certificate(os.path.expanduser(text), what)
    return public


def is_loopback(host):
    """True if a bind to host can only be reached from this machine."""
    host = host.strip('[]')
    if host in ('localhost', 'lo'):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False            # '*', an interface or a name: it may face the network


class Security:
    """What this process does about CURVE: its keys (None: plain sockets), whether plain
    binds outside loopback are allowed, and the Gate of each context it serves."""

    def __init__(self, keys=None, insecure=False):
        self.keys = keys
        self.insecure = insecure
        self._gates = {}
        self._warned = set()

    @classmethod
    def from_options(cls, key_file=None, allow_dir=None, insecure=False):
        """Security from command-line options, each defaulting to its environment
        variable."""
        key_file = key_file or os.environ.get(ENV_KEY) or None
        allow_dir = allow_dir or os.environ.get(ENV_ALLOW) or None
        insecure = insecure or os.environ.get(ENV_INSECURE, '') not in ('', '0')
        if allow_dir and not key_file:
            raise UsageError("--curve-allow needs --curve-key (the allowed keys are those "
                             "of CURVE clients)")
        return cls(load_keys(key_file, allow_dir) if key_file else None, insecure)

    @classmethod
    def from_args(cls, args):
        """Security from a docopt result with --curve-key, --curve-allow and --insecure."""
        return cls.from_options(args.get('--curve-key'), args.get('--curve-allow'),
                                bool(args.get('--insecure')))

    def environ(self):
        """The environment variables that hand this security to a child command."""
        env = {ENV_INSECURE: '1' if self.insecure else ''}
        env[ENV_KEY] = self.keys.path if self.keys else ''
        env[ENV_ALLOW] = (self.keys.allow_dir or '') if self.keys else ''
        return env

    def bind(self, sock, address, name):
        """Make sock a CURVE server before it binds address, or check a plain bind."""
        if self.keys is None:
            self.check_plain_bind(address, name)
            return
        self._gate(sock.context, name)
        sock.curve_secretkey = self.keys.secret
        sock.curve_publickey = self.keys.public
        sock.curve_server = True
        sock.zap_domain = ZAP_DOMAIN

    def connect(self, sock, server_key=None):
        """Make sock a CURVE client of server_key (our own public key if None); False if
        this process has no keys (a plain socket)."""
        if self.keys is None:
            return False
        sock.curve_secretkey = self.keys.secret
        sock.curve_publickey = self.keys.public
        sock.curve_serverkey = server_key or self.keys.public
        return True

    def check_plain_bind(self, address, name):
        if not address.startswith('tcp://'):
            return              # ipc and inproc do not leave the machine
        host = address[len('tcp://'):].rsplit(':', 1)[0]
        if is_loopback(host):
            return
        if not self.insecure:
            raise UsageError(
                f"cannot bind {address} without CURVE keys: it is outside loopback; give "
                f"--curve-key FILE (see rz keygen), or --insecure to let in anyone who "
                f"reaches it")
        if address not in self._warned:
            self._warned.add(address)
            log.warning("%s: %s is bound without CURVE keys (--insecure): anyone who "
                        "reaches it may connect", name, address)

    def describe(self):
        """For a start-up log line: whether the sockets are CURVE ones."""
        if self.keys is None:
            return "no CURVE keys (plain sockets)"
        return f"CURVE, public key {self.keys.public.decode()}"

    def advertised(self, address):
        """address as others connect to it: with our public key where we have one."""
        return f"{address}#{self.keys.public.decode()}" if self.keys else address

    def _gate(self, context, name):
        gate = self._gates.get(id(context))
        if gate is None:
            gate = self._gates[id(context)] = Gate(context, self.keys, name)
        return gate

    def close(self):
        """Stop the Gates (before their contexts are terminated)."""
        for gate in self._gates.values():
            gate.stop()
        self._gates.clear()


class Gate(threading.Thread):
    """The ZAP handler of one context: admits CURVE clients whose public key is ours or
    in the allowed directory (re-read when it changes); refuses the rest, logging each
    address and key once."""

    def __init__(self, context, keys, name):
        super().__init__(name='rezina-zap', daemon=True)
        self.keys = keys
        self.node = name
        self.allowed = {keys.public}
        self._dir_stamp = None
        self._refused = set()
        self._stopping = threading.Event()
        self.socket = context.socket(zmq.REP)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(ZAP_ENDPOINT)
        self._reload()
        self.start()

    def _reload(self):
        directory = self.keys.allow_dir
        if directory is None:
            return
        try:
            stamp = os.stat(directory).st_mtime_ns
        except OSError as exc:
            log.warning("--curve-allow %s: %s; keeping the keys read before",
                        directory, exc.strerror)
            return
        if stamp == self._dir_stamp:
            return
        try:
            self.allowed = read_allowed(directory) | {self.keys.public}
            self._dir_stamp = stamp
        except (UsageError, OSError) as exc:
            log.warning("%s; keeping the keys read before", exc)

    def run(self):
        try:
            while not self._stopping.is_set():
                if self.socket.poll(200):
                    self.socket.send_multipart(self._answer(self.socket.recv_multipart()))
        except zmq.ContextTerminated:
            pass
        finally:
            self.socket.close(linger=0)

    def _answer(self, frames):
        if len(frames) < 6:
            return [b'1.0', frames[1] if len(frames) > 1 else b'', b'500',
                    b'malformed ZAP request', b'', b'']
        version, request_id, _domain, address, _identity, mechanism = frames[:6]
        client = frames[6] if len(frames) > 6 else b''
        key = z85.encode(client) if len(client) == 32 else b''
        if mechanism == b'CURVE' and key:
            self._reload()
            if key in self.allowed:
                return [version, request_id, b'200', b'OK', key, b'']
        self._refuse(address.decode(errors='replace'), mechanism.decode(errors='replace'),
                     key.decode())
        return [version, request_id, b'400', b'not an allowed key', b'', b'']

    def _refuse(self, address, mechanism, key):
        if (address, key) in self._refused:
            return
        if len(self._refused) < REMEMBERED_REFUSALS:
            self._refused.add((address, key))
        if mechanism != 'CURVE':
            log.warning("%s: refused a %s peer from %s: only CURVE clients are let in",
                        self.node, mechanism, address)
        else:
            where = f"in {self.keys.allow_dir}" if self.keys.allow_dir else \
                "ours (no --curve-allow)"
            log.warning("%s: refused a CURVE peer from %s: its key %s is not %s",
                        self.node, address, key, where)

    def stop(self):
        self._stopping.set()
        if self.is_alive() and self is not threading.current_thread():
            self.join(timeout=2.0)


def watch_handshake(sock):
    """A monitor socket that hears of sock's failed handshakes."""
    return sock.get_monitor_socket(sum(HANDSHAKE_FAILURES))


def handshake_failure(monitor):
    """Why a handshake failed, if the monitor says one did since it was last asked."""
    from zmq.utils.monitor import recv_monitor_message
    reason = None
    while True:
        try:
            event = recv_monitor_message(monitor, zmq.NOBLOCK)
        except zmq.Again:
            return reason
        reason = HANDSHAKE_FAILURES.get(event['event'], reason)


def unwatch_handshake(sock, monitor):
    sock.disable_monitor()
    monitor.close(linger=0)


def master_key(text=None):
    """rz-master's public key for a client: text (a key or a file), else
    REZINA_MASTER_KEY, else None (the client's own key)."""
    text = text or os.environ.get(ENV_MASTER_KEY)
    return public_key(text, '--master-key') if text else None


def write_key_pair(directory, name, now=None):
    """Write NAME.key (public) and NAME.key_secret (mode 0600) in directory, in the format
    zmq.auth reads; refuse to overwrite either. Returns the two paths."""
    public, secret = zmq.curve_keypair()
    stamp = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now))
    paths = [os.path.join(directory, f"{name}.key"),
             os.path.join(directory, f"{name}.key_secret")]
    for path in paths:
        if os.path.exists(path):
            raise UsageError(f"{path}: already exists; remove it or choose another NAME")
    bodies = [
        (f"#   CURVE public key {name}, written by rz keygen on {stamp}\n"
         f"#   Give it to the peers that should let this one in (their --curve-allow).\n\n"
         f"metadata\ncurve\n    public-key = \"{public.decode()}\"\n", 0o644),
        (f"#   CURVE secret key {name}, written by rz keygen on {stamp}\n"
         f"#   Keep it here, readable by its owner only (--curve-key).\n\n"
         f"metadata\ncurve\n    public-key = \"{public.decode()}\"\n"
         f"    secret-key = \"{secret.decode()}\"\n", 0o600)]
    for path, (body, mode) in zip(paths, bodies):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, 'w') as f:
            f.write(body)
    return paths
