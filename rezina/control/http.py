"""rz-master's HTTP JSON API server (docs/control-plane.md, "HTTP"): it reads requests,
checks the token and the Origin of actions, and writes the answers.

Runs in the rz-master process, in a thread of its own. It reads nothing itself: what each
path answers is in rezina/control/api_routes.py, the console's files in web.py and the
metrics in metrics.py.

Answers are JSON: 200 {"result": ...}, or {"error": "one line"} with 400 (a bad request),
401 (a POST without the token), 403 (a POST from another origin), 404 (no such path, or a
typology the master does not know), 409 (the master refused), 413 (a body over 64 KiB),
415 (a body that is not application/json) or 502 (the master did not answer).

The token: a POST must carry `Authorization: Bearer TOKEN`. The token is the master's
secret in STATE_DIR/token: load_token() creates it on first use (32 random bytes,
URL-safe base64, mode 0600) and reads it afterwards, so it stays the same across restarts
of the master. Whoever can read that file can act on the master; delete it to make a new
one at the next start. A browser page from another origin cannot act either: a POST whose
Origin header is not the API's own is refused, and no answer carries CORS headers.
"""

import hmac
import http.server
import json
import logging
import os
import secrets
import socket
import threading
import time
import urllib.parse

from rezina import defaults
from rezina.control import api_routes
from rezina.control.api_routes import HttpError, Master, Raw
from rezina.control.protocol import Client
from rezina.errors import RezinaError
from rezina.security import is_loopback

log = logging.getLogger(__name__)

MAX_BODY = 64 << 10             # bytes of a request body, at most
TOKEN_NAME = 'token'
REQUEST_TIMEOUT = 10.0          # seconds a connection may take to send its request
LINGER = 2.0                    # seconds a refused body is read and dropped after the answer
LINGER_BYTES = 4 << 20          # ... and at most this many bytes of it
CLOSE_TIMEOUT = 2.0             # seconds close() waits for the serving thread


def load_token(state_dir):
    """The master's API token from STATE_DIR/token, made there (mode 0600) if missing."""
    path = os.path.join(state_dir, TOKEN_NAME)
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        if not os.path.exists(path):
            _create_token(path)
        with open(path, encoding='ascii') as file:
            token = file.read().strip()
        mode = os.stat(path).st_mode & 0o777
    except (OSError, ValueError) as exc:
        raise RezinaError(f"cannot read the API token {path}: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None
    if not token:
        raise RezinaError(f"cannot read the API token {path}: the file is empty")
    if mode & 0o077:
        log.warning("the API token %s can be read by others (mode %o); chmod 600 it",
                    path, mode)
    return token


def _create_token(path):
    """Write a new token to path, unless another process made one first: the file
    appears whole (a link to a written temporary file) or not at all."""
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (secrets.token_urlsafe(32) + '\n').encode('ascii'))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temporary, path)
        log.info("made a new API token in %s", path)
    except FileExistsError:
        pass
    finally:
        os.unlink(temporary)


class HttpApi:
    """The JSON API on HOST:PORT, answering from the master at control_host:control_port."""

    def __init__(self, host, port, control_host, control_port, token,
                 timeout=defaults.MASTER_ANSWER_TIMEOUT, security=None):
        self.host = host
        self.port = port
        self.control_host = control_host
        self.control_port = control_port
        self.token = token
        self.timeout = timeout
        self.security = security      # the master's: its own key is always let in
        self.server = None
        self.thread = None

    @property
    def address(self):
        """(host, port) as bound: the real port when port 0 was asked for."""
        if self.server is None:
            return (self.host, self.port)
        return tuple(self.server.server_address[:2])

    @property
    def origin(self):
        """The API's own origin, as a browser names it in an Origin header."""
        host, port = self.address
        return f"http://[{host}]:{port}" if ':' in host else f"http://{host}:{port}"

    def own_origin(self, origin):
        """Whether a browser's Origin header names this API: its address, or localhost
        where it binds loopback (a page opened as http://localhost:31218)."""
        if origin == self.origin:
            return True
        host, port = self.address
        return is_loopback(host) and origin == f"http://localhost:{port}"

    def start(self):
        """Bind and serve in a daemon thread."""
        server_class = _Server6 if ':' in self.host else _Server
        try:
            self.server = server_class((self.host, self.port), _Handler)
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise RezinaError(f"cannot serve HTTP on {self.host}:{self.port}: {why}") from None
        self.server.api = self
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.1,),
                                       name='rz-http', daemon=True)
        self.thread.start()
        log.info("HTTP API on %s", self.origin)
        return self

    def close(self):
        """Stop serving; requests in flight finish in their own daemon threads."""
        if self.server is None:
            return
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(CLOSE_TIMEOUT)
        self.server = None

    def client(self):
        return Client(self.control_host, self.control_port, timeout=self.timeout,
                      security=self.security, server_key=self.security and
                      self.security.keys and self.security.keys.public)

    def authorized(self, header):
        """Whether an Authorization header carries this API's token."""
        scheme, _, given = (header or '').partition(' ')
        if scheme.lower() != 'bearer':
            return False
        return hmac.compare_digest(given.strip().encode(), self.token.encode())


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False      # close() does not wait for requests the master is slow on

    def handle_error(self, request, client_address):
        """A connection that failed (a client gone mid-answer) is logged, not printed."""
        log.debug("HTTP connection from %s failed", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = 'rz-master'
    sys_version = ''
    timeout = REQUEST_TIMEOUT

    body_read = False

    def do_GET(self):
        self._serve(self._get)

    def do_POST(self):
        self._serve(self._post)

    def _refuse_method(self):
        self._send(405, {'error': f"method {self.command} is not allowed"})

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _refuse_method

    def _serve(self, answer):
        try:
            result = answer()
        except HttpError as exc:
            self._send(exc.status, {'error': exc.message})
        except Exception as exc:    # a bug here must not end the thread without an answer
            log.exception("HTTP %s %s failed", self.command, self.path)
            self._send(500, {'error': f"internal error: {type(exc).__name__}"})
        else:
            if isinstance(result, Raw):
                self._send_raw(result)
            else:
                self._send(200, {'result': result})

    def _route(self):
        """(path parts under /api/, query) of the request, no parts for /api itself; 404
        outside /api/."""
        url = urllib.parse.urlsplit(self.path)
        path = url.path.rstrip('/')
        if path == '/api':
            return [], urllib.parse.parse_qs(url.query, keep_blank_values=True)
        if not path.startswith('/api/'):
            raise HttpError(404, f"no such path: {url.path}")
        parts = [urllib.parse.unquote(part) for part in path[len('/api/'):].split('/')]
        if '' in parts:
            raise HttpError(404, f"no such path: {url.path}")
        return parts, urllib.parse.parse_qs(url.query, keep_blank_values=True)

    def _get(self):
        path = urllib.parse.urlsplit(self.path).path
        if path == '/metrics':
            self._body_length()
            from rezina.control import metrics
            with Master(self.server.api) as master:
                return metrics.render(master)
        if path != '/api' and not path.startswith('/api/'):
            self._body_length()
            from rezina.control import web
            return web.page(path)
        parts, query = self._route()
        self._body_length()         # a GET's body is not read, but a large one is refused
        return api_routes.answer_get(self.server.api, parts, query)

    def _post(self):
        api = self.server.api
        parts, _ = self._route()
        if len(parts) != 3 or parts[0] != 'typologies' or parts[2] not in api_routes.ACTIONS:
            raise HttpError(404, f"no such action: {urllib.parse.urlsplit(self.path).path}")
        origin = self.headers.get('Origin')
        if origin is not None and not api.own_origin(origin):
            raise HttpError(403, f"no actions from another origin ({origin})")
        if not api.authorized(self.headers.get('Authorization')):
            raise HttpError(401, "an action needs the header 'Authorization: Bearer TOKEN' "
                                 "with the master's token")
        body = self._read_body()
        return api_routes.answer_post(api, parts[1], parts[2], body)

    def _body_length(self):
        """The request body's length in bytes, up to MAX_BODY."""
        if self.headers.get('Transfer-Encoding'):
            raise HttpError(411, 'a request body needs a Content-Length')
        length = self.headers.get('Content-Length')
        try:
            length = int(length) if length is not None else 0
        except ValueError:
            raise HttpError(400, f"a Content-Length that is not a number: {length!r}") from None
        if length < 0:
            raise HttpError(400, f"a negative Content-Length: {length}")
        if length > MAX_BODY:
            raise HttpError(413, f"a request body over {MAX_BODY} bytes")
        return length

    def _read_body(self):
        """The request's JSON body, or None when it has none."""
        length = self._body_length()
        if length == 0:
            return None
        media_type = (self.headers.get('Content-Type') or '').split(';')[0].strip().lower()
        if media_type != 'application/json':
            raise HttpError(415, 'a request body must be application/json')
        raw = self.rfile.read(length)
        self.body_read = True
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise HttpError(400, f"a body that is not JSON: {exc}") from None

    def _send_raw(self, raw):
        self.send_response(raw.status)
        self.send_header('Content-Type', raw.content_type)
        self.send_header('Cache-Control', 'no-store')
        self.send_header('X-Content-Type-Options', 'nosniff')
        self.send_header('Content-Length', str(len(raw.body)))
        self.send_header('Connection', 'close')
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(raw.body)
        self.close_connection = True

    def _send(self, status, payload):
        body = json.dumps(payload, default=_plain).encode('utf-8') + b'\n'
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Cache-Control', 'no-store')
        self.send_header('X-Content-Type-Options', 'nosniff')
        self.send_header('Content-Length', str(len(body)))
        self.send_header('Connection', 'close')
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)
        self.close_connection = True

    def finish(self):
        super().finish()
        if not self.body_read and self._declared_length() > 0:
            self._drop_body()

    def _declared_length(self):
        headers = getattr(self, 'headers', None)
        try:
            return int(headers.get('Content-Length', 0)) if headers is not None else 0
        except ValueError:
            return 0

    def _drop_body(self):
        """Read what is left of a body that was refused unread: closing the socket on
        unread data would reset the connection, and the client could lose the answer."""
        connection = self.connection
        deadline = time.monotonic() + LINGER
        try:
            connection.shutdown(socket.SHUT_WR)
            for _ in range(LINGER_BYTES // 65536):
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                connection.settimeout(left)
                if not connection.recv(65536):
                    return
        except OSError:
            pass

    def send_error(self, code, message=None, explain=None):
        """Malformed requests that http.server refuses itself are answered in JSON too."""
        self.log_error("code %d, message %s", code, message)
        self._send(code, {'error': message or self.responses.get(code, ('error',))[0]})

    def log_message(self, format, *args):
        log.debug("HTTP %s %s", self.address_string(), format % args)


def _plain(value):
    """JSON for what msgpack can carry and JSON cannot: bytes as text."""
    if isinstance(value, bytes):
        return value.decode('utf-8', errors='replace')
    raise TypeError(f"{type(value).__name__} is not JSON")
