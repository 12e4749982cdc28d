"""What every rz command does around its work: parse the usage, set up logging, and turn
errors into one line on stderr and an exit status."""

import logging
import re
import signal
import sys

from docopt import DocoptExit, docopt

from rezina import __version__, exitcodes
from rezina.errors import RezinaError, UsageError
from rezina.pipe.loop import Interrupted
from rezina.pipe.stream import DownstreamClosed

LOG_LEVELS = {'debug': logging.DEBUG, 'info': logging.INFO,
              'warning': logging.WARNING, 'error': logging.ERROR}


def parse(doc, argv, prog):
    """docopt's parse of argv; a usage error becomes UsageError (exit 2, not docopt's 1)."""
    try:
        return docopt(doc, argv, version=f"{prog} {__version__}")
    except DocoptExit as exc:
        raise UsageError(f"{_usage_problem(str(exc))} (see {prog} --help)") from None


def _usage_problem(text):
    """docopt's complaint, in the words of the command line."""
    first = text.strip().splitlines()[0] if text.strip() else ''
    if 'unmatched' in first:
        names = re.findall(r"Option\(.*?'(--?[\w-]+)'|Argument\(None, '([^']*)'", first)
        words = [option or argument for option, argument in names]
        return "unexpected or repeated " + ', '.join(repr(w) for w in words)
    if not first or first.lower().startswith('usage:'):
        return 'missing or misplaced arguments'
    return first


def setup_logging(level_name, prog):
    level = LOG_LEVELS.get((level_name or 'info').lower())
    if level is None:
        raise UsageError(f"--log-level {level_name!r}: expected debug, info, warning or error")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        f'%(asctime)s {prog}[%(process)d] %(levelname)s %(message)s', '%H:%M:%S'))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def int_option(args, option, minimum=0):
    return number_option(args, option, int, minimum)


def port_option(args, option, minimum=1):
    """A port number option (0 where minimum allows it: none, or any free one)."""
    port = int_option(args, option, minimum)
    if port > 65535:
        raise UsageError(f"{option} {args[option]!r}: expected a port number up to 65535")
    return port


def float_option(args, option, minimum=0.0):
    return number_option(args, option, float, minimum)


def number_option(args, option, kind, minimum):
    """The value of a numeric option, at least minimum, or a UsageError naming it."""
    text = args[option]
    try:
        value = kind(text)
    except (TypeError, ValueError):
        expected = 'a whole number' if kind is int else 'a number'
        raise UsageError(f"{option} {text!r}: expected {expected}") from None
    if not value >= minimum:
        raise UsageError(f"{option} {text!r}: must be at least {minimum:g}")
    return value


MIN_ITEM_BYTES = 1024


def set_max_item_bytes(args):
    """Apply --max-item-bytes to the encoding of this process's items."""
    from rezina.pipe import codec
    codec.set_max_item_bytes(int_option(args, '--max-item-bytes', MIN_ITEM_BYTES))


def run_command(prog, doc, argv, body):
    """Run body(args) for command prog and return its exit status."""
    try:
        args = parse(doc, argv, prog)
        setup_logging(args.get('--log-level'), prog)
        return body(args)
    except UsageError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    except RezinaError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exitcodes.FAILED
    except (DownstreamClosed, BrokenPipeError):
        return exitcodes.DOWNSTREAM_CLOSED
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except Interrupted as exc:
        print(f"{prog}: stopped before the items in flight were done", file=sys.stderr)
        return 128 + exc.signum
    finally:
        _quiet_stdout_at_exit()


def _quiet_stdout_at_exit():
    """A closed downstream must not produce a traceback when Python flushes stdout."""
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError, OSError):
        try:
            sys.stdout = open('/dev/null', 'w')
        except OSError:
            pass
