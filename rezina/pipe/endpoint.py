"""Endpoints as written on the command line: '-', or a ZeroMQ address to bind or connect.

A bare --out address binds and a bare --in address connects; '@addr' forces a bind and
'>addr' a connect. A bound tcp port may be '*' (any free port; the node logs the one it got).
A connected address may end in '#KEY': the CURVE public key of the server there (40 Z85
characters, or a public key file).
"""

import re
from dataclasses import dataclass

from rezina.errors import BadEndpoint
from rezina.security import public_key

_TCP = re.compile(r'^tcp://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.\-*]+):(\*|\d{1,5})')


@dataclass(frozen=True)
class Endpoint:
    """Where an edge goes: stdio, or a ZeroMQ address and whether this side binds."""

    address: str      # '-' for stdin/stdout
    bind: bool = False
    fmt: str = 'msgpack'      # on stdin/stdout: msgpack (rz records), json or lines
    ids: bool = False         # json output: each item wrapped as {"id": ..., "item": ...}
    server_key: bytes | None = None   # the CURVE public key of the server connected to

    @property
    def is_stdio(self):
        return self.address == '-'

    def __str__(self):
        if self.is_stdio:
            return '-'
        return ('@' if self.bind else '>') + self.address


def parse_endpoint(text, option, bind_by_default):
    """Parse TEXT given to OPTION ('--in' or '--out')."""
    if text == '-':
        return Endpoint('-')
    bind = bind_by_default
    address, mark, key_text = text.partition('#')
    if address[:1] in ('@', '>'):
        bind = address[0] == '@'
        address = address[1:]
    server_key = None
    if mark:
        if bind:
            raise BadEndpoint(f"{option} {text!r}: a server key ('#KEY') is for an address "
                              f"connected to, not one bound")
        server_key = public_key(key_text, f"{option} {text!r}")
    if address.startswith('tcp://'):
        match = _TCP.fullmatch(address)
        if not match:
            raise BadEndpoint(f"{option} {text!r}: expected tcp://HOST:PORT")
        host, port = match.groups()
        if port == '*':
            if not bind:
                raise BadEndpoint(f"{option} {text!r}: a port of '*' only works when binding")
        elif not 0 < int(port) < 65536:
            raise BadEndpoint(f"{option} {text!r}: port {port} is not between 1 and 65535")
        if host == '*' and not bind:
            raise BadEndpoint(f"{option} {text!r}: cannot connect to host '*'")
    elif address.startswith('ipc://'):
        if len(address) == len('ipc://'):
            raise BadEndpoint(f"{option} {text!r}: expected ipc://PATH")
        if len(address.encode()) - len('ipc://') > 107:
            raise BadEndpoint(f"{option} {text!r}: an ipc path may have at most 107 bytes")
    else:
        raise BadEndpoint(
            f"{option} {text!r}: expected '-', tcp://HOST:PORT or ipc://PATH "
            f"(prefix '@' to bind, '>' to connect)")
    return Endpoint(address, bind, server_key=server_key)
