"""Find the user's callable named by MOD:FUNC or MOD:Class.method, and parse JSON arguments."""

import importlib
import json
import os
import sys

from rezina.errors import BadArgument, UnknownFunction


def add_search_path(extra=()):
    """Put the current directory, then each extra directory, first on sys.path."""
    for path in reversed([os.getcwd(), *extra]):
        path = os.path.abspath(path)
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)


def split_spec(spec):
    """Split 'pkg.mod:attr.path' into ('pkg.mod', ['attr', 'path'])."""
    module, sep, attrs = spec.partition(':')
    if not sep or not module or not attrs or '' in attrs.split('.'):
        raise UnknownFunction(f"cannot use {spec!r}: expected MODULE:FUNCTION")
    return module, attrs.split('.')


def import_target(spec):
    """Return the object MOD:NAME[.NAME] names, without instantiating anything."""
    module_name, attrs = split_spec(spec)
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownFunction(f"cannot import {spec!r}: {exc}") from None
    except (Exception, SystemExit) as exc:  # the user's module raised while importing
        raise UnknownFunction(
            f"cannot import {spec!r}: {type(exc).__name__}: {exc}") from None
    for name in attrs:
        try:
            obj = getattr(obj, name)
        except AttributeError:
            raise UnknownFunction(
                f"cannot import {spec!r}: "
                f"{getattr(obj, '__name__', type(obj).__name__)!r} has no attribute {name!r}"
            ) from None
    return obj


def resolve_callable(spec):
    """Return a callable for MOD:FUNC; MOD:Class.method binds a Class() built here."""
    module_name, attrs = split_spec(spec)
    owner = import_target(f"{module_name}:{'.'.join(attrs[:-1])}") if len(attrs) > 1 else None
    target = import_target(spec)
    if isinstance(owner, type):
        try:
            instance = owner()
        except Exception as exc:
            raise UnknownFunction(
                f"cannot build {owner.__name__}() for {spec!r}: {type(exc).__name__}: {exc}"
            ) from None
        target = getattr(instance, attrs[-1])
    if not callable(target):
        raise UnknownFunction(f"cannot call {spec!r}: it is a {type(target).__name__}")
    return target


def parse_arg(text):
    """A command-line ARG: its JSON value where it parses as JSON, else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_json(text, option, kind):
    """Parse the JSON value of OPTION and check it is a KIND (dict or list)."""
    if text is None:
        return kind()
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise BadArgument(f"{option} is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        raise BadArgument(
            f"{option} must be a JSON {'object' if kind is dict else 'array'}, "
            f"not {type(value).__name__}")
    return value
