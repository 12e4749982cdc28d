"""What each path of rz-master's JSON API answers: the route table, and the answers that
are not a 200 of JSON (docs/control-plane.md, "HTTP" and "Client ops").

Runs in a thread of rz-master's HTTP server (rezina/control/http.py), which parses the
request and writes the answer; each route here becomes control-socket requests to the
master, through a Client of its own for that request, so it answers exactly what `rz`
would.

    GET  /api/                                 INDEX: every path and what it answers
    GET  /api/workers                          workers
    GET  /api/typologies                       ls
    GET  /api/typologies/NAME                  {typology: its ls entry, stages, nodes}
    GET  /api/typologies/NAME/nodes            ps of NAME
    GET  /api/typologies/NAME/runs?limit=N     runs (limit 50 by default)
    GET  /api/typologies/NAME/failures?limit=N failures: failed items, newest first (50)
    GET  /api/typologies/NAME/logs?cursor=C&limit=N
                                               logs (no cursor: the last lines; limit 100)
    GET  /api/nodes                            ps of every typology
    POST /api/typologies/NAME/start|stop|restart|remove
    POST /api/typologies/NAME/scale            body {"stage": NAME or NUMBER, "n": N}
"""

from rezina.errors import RezinaError

ACTIONS = frozenset(('start', 'stop', 'restart', 'remove', 'scale'))
NOT_KNOWN = ('unknown typology', 'no typology')     # master errors that are a 404
NO_ANSWER = 'no answer from rz-master'

INDEX = {       # the answer of GET /api/: the routes, as rz-master(1) lists them
    'GET /api/': 'this list of the paths of the API',
    'GET /api/workers': 'the workers, as rz workers',
    'GET /api/typologies': 'the typologies, as rz ls',
    'GET /api/typologies/NAME': 'a typology: its ls entry, its stages and its nodes',
    'GET /api/typologies/NAME/nodes': 'its nodes, as rz ps NAME',
    'GET /api/typologies/NAME/runs?limit=N': 'its runs, newest first (50 by default)',
    'GET /api/typologies/NAME/failures?limit=N':
        'its failed items, newest first (50 by default)',
    'GET /api/typologies/NAME/logs?cursor=C&limit=N':
        'its log: the last N lines (100), or those since the cursor C of an answer',
    'GET /api/nodes': 'the nodes of every typology',
    'GET /metrics': 'the figures of workers, typologies, runs and nodes for Prometheus',
    'POST /api/typologies/NAME/start|stop|restart|remove':
        'that action, as rz does it; needs the header Authorization: Bearer TOKEN',
    'POST /api/typologies/NAME/scale':
        'body {"stage": NAME or NUMBER, "n": N}, as rz scale; needs the token',
}


class HttpError(Exception):
    """An answer other than 200: its status and one-line error."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class Raw:
    """An answer that is not the API's JSON: a page of the console, the metrics."""

    def __init__(self, content_type, body, status=200):
        self.content_type = content_type
        self.body = body if isinstance(body, bytes) else body.encode('utf-8')
        self.status = status


class Master:
    """A Client for one HTTP request (a Client is not safe to share between threads);
    master errors become HTTP errors."""

    def __init__(self, api):
        self.client = api.client()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.client.close()

    def request(self, op, **args):
        try:
            return self.client.request(op, **args)
        except RezinaError as exc:
            message = str(exc)
            if message.startswith(NO_ANSWER):
                raise HttpError(502, message) from None
            if any(words in message.lower() for words in NOT_KNOWN):
                raise HttpError(404, message) from None
            raise HttpError(409, message) from None


def answer_get(api, parts, query):
    """The result of a GET of /api/PARTS... from the master behind api."""
    if not parts:
        return INDEX
    with Master(api) as master:
        if parts == ['workers']:
            return master.request('workers')
        if parts == ['nodes']:
            return master.request('ps', typology=(query.get('typology') or [''])[-1]
                                  or None)
        if parts == ['typologies']:
            return master.request('ls')
        if len(parts) == 2 and parts[0] == 'typologies':
            return _typology(master, parts[1])
        if len(parts) == 3 and parts[0] == 'typologies':
            name, what = parts[1], parts[2]
            if what == 'nodes':
                return master.request('ps', typology=name)
            if what in ('runs', 'failures'):
                return master.request(what, typology=name,
                                      limit=_count(query, 'limit', 50))
            if what == 'logs':
                cursor = _number(query, 'cursor')
                return master.request('logs', typology=name, cursor=cursor,
                                      limit=_count(query, 'limit', 100))
    raise HttpError(404, f"no such path: /api/{'/'.join(parts)}")


def _typology(master, name):
    known = [t for t in master.request('ls') if t.get('name') == name]
    if not known:
        raise HttpError(404, f"no typology {name!r}")
    return {'typology': known[0],
            'stages': master.request('stages', typology=name),
            'nodes': master.request('ps', typology=name)}


def answer_post(api, name, action, body):
    """The result of a POST of an action to a typology, from the master behind api."""
    args = {'typology': name}
    if action == 'scale':
        if not isinstance(body, dict):
            raise HttpError(400, 'scale needs a JSON object {"stage": ..., "n": ...}')
        stage, n = body.get('stage'), body.get('n')
        if isinstance(stage, bool) or not isinstance(stage, (str, int)):
            raise HttpError(400, 'scale needs "stage": a stage name or number')
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise HttpError(400, 'scale needs "n": a number of nodes from 1')
        args.update(stage=stage, n=n)
    with Master(api) as master:
        return master.request(action, **args)


def _count(query, key, default):
    value = _number(query, key)
    if value is None:
        return default
    if value < 1:
        raise HttpError(400, f"{key} must be at least 1")
    return value


def _number(query, key):
    """The integer value of a query parameter, or None if it is absent or empty."""
    values = query.get(key)
    if not values or values[-1] == '':
        return None
    try:
        return int(values[-1])
    except ValueError:
        raise HttpError(400, f"{key} must be an integer, not {values[-1]!r}") from None
