"""The hydrant stage of the filehash job: every regular file under a directory.

    rz-hydrant files:list_files /usr/lib/python3.11
"""

import logging
import os
import stat

log = logging.getLogger(__name__)


def list_files(root):
    """Yield the absolute path of every regular file under ROOT, in sorted walk order.

    Symbolic links are neither followed nor listed; directories that cannot be read
    are logged and skipped.
    """
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise NotADirectoryError(f"not a directory: {root!r}")

    for directory, subdirectories, names in os.walk(root, onerror=_skip_directory):
        subdirectories.sort()  # os.walk descends in this order
        for name in sorted(names):
            path = os.path.join(directory, name)
            try:
                mode = os.lstat(path).st_mode
            except OSError as exc:
                log.warning('skipping %s: %s', path, exc.strerror or exc)
                continue
            if stat.S_ISREG(mode):
                yield path


def _skip_directory(error):
    log.warning('skipping directory %s: %s', error.filename, error.strerror or error)
