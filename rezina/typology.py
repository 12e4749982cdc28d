"""TypologyBuilder: the original Python API, which describes a named typology and hands it
to rz-master (see docs/control-plane.md).

    tb = TypologyBuilder('127.0.0.1', 12345, 'weather')
    tb.add_hydrant(get_cities).add_notch(get_city_weather, 2, 5).add_bocca(Stdout)
    tb.restart(start_time='2016-12-03 20:18:10', interval=10)

Targets travel by name, as MODULE:QUALNAME, and are imported on the workers from the
master's workspace: a function must be defined at a module's top level, and a method
belongs to a class that is built with no arguments. A lambda, a closure, or a function
of the script being run (`__main__`) has no name a worker could import, and is refused
when it is added.
"""

import datetime
import inspect

from rezina import defaults
from rezina.control.plan import check_name
from rezina.control.protocol import Client
from rezina.control.results import LocalSink, comes_back
from rezina.errors import RezinaError, UsageError
from rezina.schedule import check_interval, check_start

MODES = ('batch', 'stream')
RUNNING_STATES = ('STARTING', 'RUNNING', 'DEGRADED')
API_NAMES = (('--every', 'interval'), ('--start', 'start_time'), ('--cron', 'cron'))


class TypologyError(UsageError):
    """A typology that cannot be built as described."""


def target_name(target, what):
    """MODULE:QUALNAME of a function, a method or a class, or TypologyError saying why it
    cannot travel."""
    if inspect.ismethod(target):            # bound: its class is built again, empty
        owner = target.__self__
        owner = owner if isinstance(owner, type) else type(owner)
        module, qualname = owner.__module__, f"{owner.__qualname__}.{target.__name__}"
    elif inspect.isfunction(target) or isinstance(target, type):
        module, qualname = target.__module__, target.__qualname__
    else:
        raise TypologyError(f"{what}: {target!r} is not a function, method or class")
    if '<' in qualname:
        raise TypologyError(f"{what}: {qualname} is a lambda or defined inside a function; "
                            f"define it at the top level of a module")
    if module == '__main__':
        raise TypologyError(f"{what}: {qualname} is defined in the script being run; put "
                            f"it in a module of the workspace, which workers can import")
    return f"{module}:{qualname}"


class TypologyBuilder:
    """A typology of one or more sources, any filters, and one sink, sent to rz-master at
    host:port under name; every add_ method returns the builder, so calls chain."""

    def __init__(self, host, port, name, timeout=defaults.MASTER_ANSWER_TIMEOUT):
        try:
            check_name(name)
        except UsageError as exc:
            raise TypologyError(str(exc)) from None
        self.host = host
        self.port = int(port)
        self.name = name
        self.timeout = timeout
        self.sources = []
        self.notches = []
        self.bocca = None

    def add_hydrant(self, target, args=(), kwargs=None):
        self.sources.append({'target': target_name(target, 'add_hydrant'),
                             'args': list(args), 'kwargs': dict(kwargs or {})})
        return self

    def add_notch(self, target, process_num=1, thread_num=1):
        """process_num nodes of thread_num threads each (coroutines, for an async def
        target)."""
        notch = {'target': target_name(target, 'add_notch'),
                 'processes': _count(process_num, 'add_notch: process_num'),
                 'threads': _count(thread_num, 'add_notch: thread_num')}
        if inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target):
            notch['async'] = True
        self.notches.append(notch)
        return self

    def add_bocca(self, target, args=(), kwargs=None, process_num=1,
                  persistent_mode='batch'):
        """target: a StorageBackend subclass, or any SINK of rz-bocca as text (such as
        'sqlite:/data/out.db'), stored on the workers."""
        if self.bocca is not None:
            raise TypologyError("add_bocca: a typology has one bocca; it is added already")
        if persistent_mode not in MODES:
            raise TypologyError(f"add_bocca: persistent_mode {persistent_mode!r}: expected "
                                f"'batch' or 'stream'")
        name = sink_text(target) if isinstance(target, str) else target_name(target,
                                                                             'add_bocca')
        self.bocca = {'target': name, 'args': list(args),
                      'kwargs': dict(kwargs or {}),
                      'processes': _count(process_num, 'add_bocca: process_num'),
                      'mode': persistent_mode}
        return self

    def spec(self, start_time=None, interval=None, cron=None):
        """The typology as the master takes it."""
        if not self.sources:
            raise TypologyError(f"typology {self.name!r} has no hydrant: add_hydrant first")
        if self.bocca is None:
            raise TypologyError(f"typology {self.name!r} has no bocca: add_bocca last")
        if interval is not None and cron is not None:
            raise TypologyError("interval and cron are two schedules: give one of them")
        if isinstance(start_time, datetime.datetime):
            start_time = start_time.timestamp()
        try:
            schedule = {'start': check_start(start_time),
                        'interval': check_interval(interval) if interval is not None
                        else None, 'cron': cron}
            if cron is not None:
                from rezina.cron import parse_cron      # croniter costs 20 ms to import
                schedule['cron'] = parse_cron(cron)
        except UsageError as exc:       # worded for the command line: name our arguments
            text = str(exc)
            for option, argument in API_NAMES:
                text = text.replace(option, argument)
            raise TypologyError(text) from None
        return {'name': self.name, 'schedule': schedule, 'sources': self.sources,
                'notches': self.notches, 'bocca': self.bocca}

    def start(self, start_time=None, interval=None, cron=None):
        """Start the typology; the master refuses a name it runs already.

        With a Stdout or PlainFile bocca, the results are stored here: the call returns
        when a one-shot run is stored, or on Ctrl-C, which stops the typology."""
        return self._submit('start', self.spec(start_time, interval, cron))

    def restart(self, start_time=None, interval=None, cron=None):
        """Start the typology as described now, stopping the one of this name first (as
        start() for a Stdout or PlainFile bocca)."""
        return self._submit('restart', self.spec(start_time, interval, cron))

    def _submit(self, op, spec):
        if not comes_back(spec['bocca']):
            return self._request(op, spec=spec)
        schedule = spec['schedule']
        sink = LocalSink(spec['bocca'], self.host, self.port,
                         follow=schedule['interval'] is not None or bool(schedule['cron']))
        try:
            spec['bocca']['remote'] = sink.endpoint
            answer = self._request(op, spec=spec)
        except BaseException:
            sink.close()
            raise
        sink.wait(on_interrupt=self.stop, still_wanted=self._running)
        return answer

    def _running(self):
        """False once the master says this typology is not running (True if it does
        not answer: the results flow without it)."""
        try:
            listed = self._request('ls')
        except RezinaError:
            return True
        return any(t.get('name') == self.name and t.get('state') in RUNNING_STATES
                   for t in listed)

    def stop(self):
        return self._request('stop', typology=self.name)

    def _request(self, op, **args):
        client = Client(self.host, self.port, timeout=self.timeout)
        try:
            return client.request(op, **args)
        finally:
            client.close()


def sink_text(text):
    """An rz-bocca SINK given as text, checked for what cannot work on a worker."""
    if text == 'stdout':
        raise TypologyError("add_bocca: 'stdout' would be a worker's; give Stdout (from "
                            "rezina.backends), whose results come back here")
    scheme, _, rest = text.partition(':')
    if scheme in ('jsonl', 'csv', 'sqlite') and not rest.startswith('/'):
        raise TypologyError(f"add_bocca: {text!r}: give an absolute path; the sink opens "
                            f"it on the workers")
    return text


def _count(value, what):
    if type(value) is not int or value < 1:
        raise TypologyError(f"{what} {value!r}: expected a whole number of at least 1")
    return value
