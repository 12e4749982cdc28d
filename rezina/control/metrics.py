"""GET /metrics: the master's counters in the Prometheus text format (issue 6, not built
yet)."""

from rezina.control.http import HttpError


def render(master):
    """The metrics page, from master (requests to rz-master); a Raw answer."""
    raise HttpError(501, "/metrics is not built yet")
