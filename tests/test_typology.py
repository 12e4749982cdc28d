"""TypologyBuilder: the original API's signatures, what it refuses, and the requests it
makes of a stand-in master on loopback."""

import datetime
import time

import pytest

import fixtures_typology as ws
from rezina import TypologyBuilder
from rezina.backends import Null, PlainFile, Stdout, StorageBackend
from rezina.errors import RezinaError
from rezina.typology import TypologyError


def weather(port=1, bocca=Stdout):
    """The original example's typology; with a bocca other than Stdout, start() and
    restart() only ask the master (Stdout would wait for the results here)."""
    return (TypologyBuilder('127.0.0.1', port, 'weather')
            .add_hydrant(ws.get_cities)
            .add_notch(ws.get_city_weather, 2, 5)
            .add_notch(ws.Shouter.shout)
            .add_bocca(bocca, persistent_mode='stream'))


def test_the_original_example_builds_its_spec():
    spec = weather().spec(start_time='2016-12-03 20:18:10', interval=10)
    assert spec['name'] == 'weather'
    assert spec['sources'] == [{'target': 'fixtures_typology:get_cities', 'args': [],
                                'kwargs': {}}]
    assert spec['notches'] == [
        {'target': 'fixtures_typology:get_city_weather', 'processes': 2, 'threads': 5},
        {'target': 'fixtures_typology:Shouter.shout', 'processes': 1, 'threads': 1}]
    assert spec['bocca'] == {'target': 'rezina.backends.textfiles:Stdout', 'args': [],
                             'kwargs': {}, 'processes': 1, 'mode': 'stream'}
    start = datetime.datetime(2016, 12, 3, 20, 18, 10).timestamp()    # local time
    assert spec['schedule'] == {'start': start, 'interval': 10.0, 'cron': None}


def test_several_sources_a_bound_method_a_user_backend_and_cron():
    spec = (TypologyBuilder('127.0.0.1', 1, 'two')
            .add_hydrant(ws.get_cities).add_hydrant(ws.get_cities, args=(3,),
                                                    kwargs={'x': 1})
            .add_notch(ws.Shouter().shout)
            .add_bocca(ws.Rows, args=('a',)).spec(cron='*/5 * * * *'))
    assert [s['args'] for s in spec['sources']] == [[], [3]]
    assert spec['notches'][0]['target'] == 'fixtures_typology:Shouter.shout'
    assert spec['bocca']['target'] == 'fixtures_typology:Rows'
    assert spec['schedule']['cron'] == '*/5 * * * *'
    assert all(issubclass(c, StorageBackend) for c in (Stdout, PlainFile, Null))


@pytest.mark.parametrize('build, says', [
    (lambda: TypologyBuilder('h', 1, 'a::b'), "typology name 'a::b'"),
    (lambda: TypologyBuilder('h', 1, 'x').add_bocca(Null).spec(), 'has no hydrant'),
    (lambda: TypologyBuilder('h', 1, 'x').add_hydrant(ws.get_cities).spec(), 'has no bocca'),
    (lambda: TypologyBuilder('h', 1, 'x').add_notch(lambda item: item),
     'add_notch: <lambda>.<locals>.<lambda> is a lambda or defined inside a function'),
    (lambda: TypologyBuilder('h', 1, 'x').add_notch(ws.make_closure()),
     'is a lambda or defined inside a function'),
    (lambda: TypologyBuilder('h', 1, 'x').add_notch(ws.get_city_weather, 0),
     'add_notch: process_num 0'),
    (lambda: TypologyBuilder('h', 1, 'x').add_bocca(Null, persistent_mode='now'),
     "persistent_mode 'now'"),
    (lambda: weather().spec(interval=5, cron='* * * * *'), 'two schedules'),
    (lambda: weather().spec(interval=-1), "interval '-1'"),
    (lambda: weather().spec(cron='61 * * * *'), "cron '61 * * * *': minute field"),
    (lambda: TypologyBuilder('h', 1, 'x').add_notch('mod:f'), 'is not a function'),
    (lambda: TypologyBuilder('h', 1, 'x').add_bocca('stdout'), "give Stdout"),
    (lambda: TypologyBuilder('h', 1, 'x').add_bocca('sqlite:out.db'),
     "add_bocca: 'sqlite:out.db': give an absolute path"),
])
def test_what_cannot_be_a_typology_is_refused_with_a_clear_error(build, says):
    with pytest.raises(RezinaError) as caught:
        build()
    assert says in str(caught.value)
    assert '\n' not in str(caught.value)


def test_a_function_of_the_script_being_run_is_refused():
    def fake():
        pass
    fake.__module__, fake.__qualname__ = '__main__', 'fake'
    with pytest.raises(TypologyError, match='defined in the script being run'):
        TypologyBuilder('h', 1, 'x').add_hydrant(fake)


def test_start_restart_and_stop_ask_the_master(master):
    server = master(lambda h: {'rid': h['rid'], 'ok': True, 'result': h['op']})
    tb = weather(server.port, Null)
    assert tb.restart(start_time='2016-12-03 20:18:10', interval=10) == 'restart'
    assert tb.start(cron='0 * * * *') == 'start'
    assert tb.stop() == 'stop'
    ops = [(h['op'], sorted(h['args'])) for h in server.seen]
    assert ops == [('restart', ['spec']), ('start', ['spec']), ('stop', ['typology'])]
    assert server.seen[0]['args']['spec']['schedule']['interval'] == 10.0


def test_a_master_that_does_not_answer_within_3_s_is_named(master):
    server = master(lambda h: None)             # takes the request, never answers
    tb = weather(server.port, Null)
    began = time.monotonic()
    with pytest.raises(RezinaError) as caught:
        tb.start(interval=10)
    assert str(caught.value) == \
        f"no answer from rz-master at 127.0.0.1:{server.port} within 3 s"
    assert 2.5 < time.monotonic() - began < 10


def test_an_async_notch_gets_coroutines_and_a_sink_may_be_text():
    spec = (TypologyBuilder('h', 1, 'x').add_hydrant(ws.get_cities)
            .add_notch(ws.fetch, 2, 8).add_notch(ws.get_city_weather, 1, 3)
            .add_bocca('sqlite:/data/out.db').spec())
    assert spec['notches'][0] == {'target': 'fixtures_typology:fetch', 'processes': 2,
                                  'threads': 8, 'async': True}
    assert 'async' not in spec['notches'][1]
    assert spec['bocca']['target'] == 'sqlite:/data/out.db'
    from rezina.control import plan
    stages = plan.stages(spec)
    assert [s.name for s in stages] == ['get_cities', 'fetch', 'get_city_weather', 'sqlite']
    assert plan.base_argv(spec, stages[1], '10.0.0.1')[-3:] == ['-c', '8',
                                                                'fixtures_typology:fetch']
    assert plan.base_argv(spec, stages[2], '10.0.0.1')[-3:] == [
        '-t', '3', 'fixtures_typology:get_city_weather']


@pytest.mark.parametrize('bocca, name', [('sqlite:/data/out.db', 'sqlite'),
                                         (Stdout, 'Stdout')])
def test_a_stage_is_described_as_scalable_exactly_when_the_master_would_scale_it(
        tmp_path, bocca, name):
    from rezina.control import plan
    from rezina.control.registry import Registry
    from rezina.control.state import State
    spec = (TypologyBuilder('h', 1, 'x').add_hydrant(ws.get_cities)
            .add_notch(ws.get_city_weather, 1, 3).add_bocca(bocca).spec())
    if bocca is Stdout:
        spec['bocca']['remote'] = 'tcp://127.0.0.1:5000'    # as start() gives it
    state = State.open(tmp_path / 'state')
    try:
        registry = Registry(state)
        registry.put(spec, None)
        described = {s['stage']: s['scalable']
                     for s in (stage.describe() for stage in plan.stages(spec))}
        accepted = {}
        for stage in described:
            try:
                registry.scale('x', stage, 1)
                accepted[stage] = True
            except RezinaError:
                accepted[stage] = False
    finally:
        state.close()
    assert described == accepted
    assert described == {'get_cities': False, 'get_city_weather': True,
                         name: bocca is not Stdout}
