"""A socket guard for running release code: only loopback connections and lookups, the others refused and recorded.

Older unsloth releases fetch a model-name mapper from GitHub at run time; under the guard that
connection is refused, and the release code falls back to its bundled mapper.
"""

from __future__ import annotations

import ipaddress
import socket
from contextlib import contextmanager


@contextmanager
def loopback_only():
    """Refuse (and record) every connection and name lookup that is not loopback, in or out of pytest.

    Yields the list of refused targets ("host:port"), so a caller can report what release code tried.
    """
    refused: list[str] = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def is_loopback(host) -> bool:
        if not isinstance(host, str):
            return True  # unix sockets and the like
        try:
            return ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            return host == "localhost"

    def connect(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        if not is_loopback(host):
            refused.append(f"{host}:{address[1]}")
            raise ConnectionRefusedError(f"qvl-harness: network access to {host} refused (hermetic run)")
        return real_connect(sock, address)

    def getaddrinfo(host, port, *args, **kwargs):
        if host is not None and not is_loopback(host if isinstance(host, str) else host.decode()):
            refused.append(f"{host}:{port}")
            raise socket.gaierror(socket.EAI_NONAME, f"qvl-harness: lookup of {host} refused (hermetic run)")
        return real_getaddrinfo(host, port, *args, **kwargs)

    socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
    try:
        yield refused
    finally:
        socket.socket.connect, socket.getaddrinfo = real_connect, real_getaddrinfo
