"""Checks, at submit time, that a typology's code can be found: each target's module is in
the workspace snapshot (and compiles) or is installed where rz-master runs. Without this,
a typology whose module was left out of the workspace would be accepted and only fail on
the workers, after five restarts, long after the submitter moved on.

Runs in rz-master, on the snapshot just taken.
"""

import importlib.util

from rezina.control import plan, snapshot
from rezina.errors import RezinaError


def check(spec, store, snapshot_id, workspace):
    """RezinaError naming the first target whose module cannot be found or compiled."""
    files = {entry[0]: entry[1] for entry in snapshot.manifest(store, snapshot_id)}
    for stage in plan.stages(spec):
        target = stage.target
        if stage.kind == plan.BOCCA and (':' not in target
                                         or target.split(':')[0] in plan.SINK_SCHEMES):
            continue
        module = target.split(':', 1)[0]
        base = module.replace('.', '/')
        path = next((p for p in (f"{base}.py", f"{base}/__init__.py") if p in files), None)
        if path is not None:
            _compile(spec['name'], snapshot.blob(store, files[path]), path, workspace)
        elif not _installed(module):
            raise RezinaError(f"typology {spec['name']}: module {module!r} (of {target}) is "
                              f"not in the workspace {workspace}, nor installed where "
                              f"rz-master runs")


def _compile(name, source, path, workspace):
    try:
        compile(source, path, 'exec', dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        where = f"{workspace}/{path}" + (f" line {exc.lineno}" if getattr(exc, 'lineno', None)
                                         else '')
        raise RezinaError(f"typology {name}: {where}: {getattr(exc, 'msg', exc)}") from None


def _installed(module):
    try:
        return importlib.util.find_spec(module.split('.')[0]) is not None
    except (ImportError, ValueError):
        return False
