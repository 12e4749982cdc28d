"""The web console: pages served from files in the package (issue 6, not built yet)."""

from rezina.control.http import HttpError


def page(path):
    """The file of the console at path, as a Raw answer; HttpError 404 if none."""
    raise HttpError(404, f"no such path: {path}")
