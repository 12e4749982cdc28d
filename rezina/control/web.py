"""The web console: one page and its assets, served by rz-master's HTTP thread from the
files in rezina/control/console_files (no build step; nothing is fetched from elsewhere).

    GET /                    the console (index.html)
    GET /console/NAME        a file of the console: app.js, style.css ...

The page reads the JSON API under /api/ and acts through it with the master's token; this
module only hands out the files. A path that names anything outside that directory, a
hidden file or a type not listed here is a 404.
"""

import os
import urllib.parse

from rezina.control.api_routes import HttpError, Raw

FILES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'console_files')
INDEX = 'index.html'
PREFIX = '/console/'
TYPES = {
    '.html': 'text/html; charset=utf-8',
    '.js': 'text/javascript; charset=utf-8',
    '.css': 'text/css; charset=utf-8',
    '.svg': 'image/svg+xml',
    '.png': 'image/png',
    '.ico': 'image/x-icon',
}


def page(path):
    """The file of the console at path, as a Raw answer; HttpError 404 if none."""
    name = _file_name(path)
    content_type = TYPES.get(os.path.splitext(name or '')[1])
    if name is None or content_type is None:
        raise HttpError(404, f"no such path: {path}")
    try:
        with open(os.path.join(FILES, name), 'rb') as file:
            return Raw(content_type, file.read())
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise HttpError(404, f"no such path: {path}") from None


def _file_name(path):
    """The name of the file under FILES that path asks for, or None if it asks for none:
    one plain name, never a directory, a hidden file or a way out."""
    if path in ('/', '/' + INDEX, PREFIX.rstrip('/'), PREFIX):
        return INDEX
    if not path.startswith(PREFIX):
        return None
    name = urllib.parse.unquote(path[len(PREFIX):])
    if not name or name.startswith('.') or any(c in name for c in '/\\\0'):
        return None
    # FILES is flat, so a plain name stays inside it; the check holds if that changes
    full = os.path.realpath(os.path.join(FILES, name))
    if os.path.dirname(full) != os.path.realpath(FILES):
        return None
    return name
