"""From a typology spec to its stages, its nodes and each node's command line (see
docs/control-plane.md, "Placement").

Runs in rz-master. A spec is what TypologyBuilder.spec() gives:

    {name, schedule: {start, interval, cron}, sources: [{target, args, kwargs}],
     notches: [{target, processes, threads}],
     bocca: {target, args, kwargs, processes, mode, remote?}, counts?: {stage: n}}

The stages are levels of a pipeline: every hydrant is a stage at level 0, each notch one
level more, and the bocca last. The nodes of a level read from every node of the level
before. A bocca with `remote` (a Stdout or PlainFile sink running in the submitting
process, bound at that endpoint) has no nodes: the level before writes to it.

A node is one stage command: a hydrant or a bocca weighs 1, a notch its threads. A node id
is TYPOLOGY::STAGE::INDEX, which is why a typology's name may not hold '::'.
"""

import hashlib
import json
import re

from rezina.errors import UsageError

HYDRANT, NOTCH, BOCCA = 'hydrant', 'notch', 'bocca'
SEP = '::'
SINK_SCHEMES = ('stdout', 'null', 'jsonl', 'csv', 'sqlite')


class Stage:
    """One stage of a typology: its name, kind, level and what its nodes run."""

    def __init__(self, name, kind, level, index, target, count, weight, extra):
        self.name = name
        self.kind = kind
        self.level = level
        self.index = index          # its number in the typology, from 0
        self.target = target
        self.count = count          # nodes wanted
        self.weight = weight
        self.extra = extra          # the rest of its spec entry

    @property
    def scalable(self):
        """False for a hydrant (one node per source) and for a bocca that runs in the
        submitting process: `rz scale` refuses both."""
        if self.kind == HYDRANT:
            return False
        return not (self.kind == BOCCA and self.extra.get('remote'))

    def describe(self):
        return {'stage': self.name, 'index': self.index, 'kind': self.kind,
                'target': self.target, 'nodes': self.count, 'scalable': self.scalable}


def stages(spec):
    """The stages of spec, in order; names are the targets' last names, made unique."""
    counts = spec.get('counts') or {}
    taken, out = {}, []

    def add(kind, level, entry, count, weight):
        target = entry['target']
        scheme = target.split(':', 1)[0]
        if kind == BOCCA and (':' not in target or scheme in SINK_SCHEMES):
            base = scheme                   # stdout, null, sqlite:PATH ...
        else:
            base = target.rsplit(':', 1)[-1].rsplit('.', 1)[-1] or kind
        taken[base] = taken.get(base, 0) + 1
        name = base if taken[base] == 1 else f"{base}-{taken[base]}"
        out.append(Stage(name, kind, level, len(out), entry['target'],
                         int(counts.get(name, count)), weight, entry))

    for source in spec['sources']:
        add(HYDRANT, 0, source, 1, 1)
    for level, notch in enumerate(spec['notches'], start=1):
        add(NOTCH, level, notch, notch.get('processes', 1), notch.get('threads', 1))
    bocca = spec['bocca']
    add(BOCCA, len(spec['notches']) + 1, bocca,
        0 if bocca.get('remote') else bocca.get('processes', 1), 1)
    return out


def find_stage(spec, which):
    """The stage named `which`, or numbered so; UsageError naming it otherwise."""
    all_stages = stages(spec)
    for stage in all_stages:
        if stage.name == str(which) or str(stage.index) == str(which):
            return stage
    names = ', '.join(s.name for s in all_stages)
    raise UsageError(f"typology {spec['name']}: no stage {which!r} (its stages: {names})")


def producers_of(all_stages, stage):
    """The stages whose nodes the nodes of `stage` read from."""
    return [s for s in all_stages if s.level == stage.level - 1]


def node_id(typology, stage_name, index):
    return f"{typology}{SEP}{stage_name}{SEP}{index}"


def safe_name(text):
    """text as a source name or a file name: no '/', ':' or spaces; a text that had to
    change gets a hash of itself, so that 'a b' and 'a_b' stay apart."""
    name = re.sub(r'[^A-Za-z0-9_.-]', '_', text)
    if name != text:
        name += '-' + hashlib.sha256(text.encode()).hexdigest()[:8]
    return name


def base_argv(spec, stage, address, run_id=None):
    """The command line of a node of `stage` on a worker at `address`, without the
    producers to read from (the master adds those as --in when it starts the node)."""
    extra = stage.extra
    name = f"{safe_name(spec['name'])}.{safe_name(stage.name)}"
    if stage.kind == HYDRANT:
        argv = ['rz-hydrant', '--name', name, '--out', output(spec, stage, address)]
        schedule = spec.get('schedule') or {}
        if schedule.get('cron'):
            argv += ['--cron', schedule['cron']]
        elif schedule.get('interval') is not None:
            argv += ['--every', repr(float(schedule['interval']))]
        elif run_id is not None:
            argv += ['--run-id', run_id]
        if schedule.get('start') is not None:
            argv += ['--start', repr(float(schedule['start']))]
        if extra.get('kwargs'):
            argv += ['--kwargs', json.dumps(extra['kwargs'])]
        return argv + [extra['target'], *(json.dumps(a) for a in extra.get('args', ()))]
    # the consumers of a periodic typology outlive their producers, which come and go
    follow = ['--follow'] if periodic(spec) else []
    if stage.kind == NOTCH:
        argv = ['rz-notch', '--name', name, '--out', output(spec, stage, address), *follow]
        if extra.get('async'):
            argv += ['-c', str(extra.get('threads', 1))]
        elif extra.get('threads', 1) > 1:
            argv += ['-t', str(extra['threads'])]
        return argv + [extra['target']]
    argv = ['rz-bocca', '--name', name, '--mode', extra.get('mode', 'batch'), *follow]
    if extra.get('args'):
        argv += ['--args', json.dumps(extra['args'])]
    if extra.get('kwargs'):
        argv += ['--kwargs', json.dumps(extra['kwargs'])]
    return argv + [extra['target']]


def periodic(spec):
    schedule = spec.get('schedule') or {}
    return schedule.get('interval') is not None or bool(schedule.get('cron'))


def output(spec, stage, address):
    """Where a node of `stage` sends its items: its own bound port, or the remote sink."""
    remote = spec['bocca'].get('remote')
    if remote and stage.level == len(spec['notches']):
        return f">{remote}"
    return f"tcp://{address}:*"


def writes_remote(spec, stage):
    return bool(spec['bocca'].get('remote')) and stage.level == len(spec['notches'])


def with_inputs(argv, endpoints):
    """argv with an --in for each producer endpoint, before the target."""
    inputs = [arg for endpoint in endpoints for arg in ('--in', endpoint)]
    return [argv[0], *inputs, *argv[1:]]


NAME_MAX = 100                  # characters of a typology's name


def check_name(name):
    """UsageError naming what is wrong with a typology name, else None."""
    if not isinstance(name, str) or not name or SEP in name or not name.isprintable() \
            or name.startswith('-') or len(name) > NAME_MAX:
        raise UsageError(f"typology name {name!r}: expected printable text of at most "
                         f"{NAME_MAX} characters, without '::' and not starting with '-'")


def check_spec(spec):
    """A UsageError naming what is wrong with a spec from a client, else None."""
    if not isinstance(spec, dict) or not isinstance(spec.get('name'), str):
        raise UsageError("a typology spec must be a map with a name")
    check_name(spec['name'])
    name = spec['name']
    if not spec.get('sources'):
        raise UsageError(f"typology {name!r} has no hydrant")
    if not isinstance(spec.get('bocca'), dict):
        raise UsageError(f"typology {name!r} has no bocca")
    for entry in [*spec['sources'], *spec.get('notches', ()), spec['bocca']]:
        target = entry.get('target') if isinstance(entry, dict) else None
        if entry is spec['bocca'] and target in ('stdout', 'null'):
            continue
        if not isinstance(target, str) or ':' not in target:
            raise UsageError(f"typology {name!r}: a target must be MODULE:NAME, "
                             f"not {target!r}")
