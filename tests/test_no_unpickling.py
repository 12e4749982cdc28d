"""Nothing that comes over the network is unpickled, or evaluated: the package imports no
module that turns bytes into code or objects of any class."""

import ast
import os

import rezina

FORBIDDEN_MODULES = {'pickle', 'cPickle', '_pickle', 'marshal', 'shelve', 'dill',
                     'cloudpickle', 'jsonpickle', 'copyreg', 'multiprocessing'}
FORBIDDEN_CALLS = {'eval', 'exec', '__import__'}


def sources():
    top = os.path.dirname(rezina.__file__)
    for dirpath, _, filenames in os.walk(top):
        for name in filenames:
            if name.endswith('.py'):
                yield os.path.join(dirpath, name)


def test_the_package_neither_unpickles_nor_evaluates():
    found = []
    for path in sources():
        with open(path, encoding='utf-8') as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name.split('.')[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or '').split('.')[0]]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                names = [node.func.id] if node.func.id in FORBIDDEN_CALLS else []
            else:
                continue
            found += [f"{path}:{node.lineno}: {name}" for name in names
                      if name in FORBIDDEN_MODULES or name in FORBIDDEN_CALLS]
    assert found == []
    assert len(list(sources())) > 40            # the scan saw the package
