"""Listening sockets opened by us, so that a busy port is reported plainly rather than by uvicorn."""

from __future__ import annotations

import errno
import socket


class PortUnavailable(Exception):
    pass


def bind(host: str, port: int, *, how_to_change: str) -> socket.socket:
    """A socket listening on host:port; PortUnavailable naming the port and `how_to_change` it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            reason = f"port {port} on {host} is already in use (is another server running there?)"
        elif exc.errno == errno.EACCES:
            reason = f"port {port} on {host} needs privileges this process lacks"
        elif exc.errno == errno.EADDRNOTAVAIL:
            reason = f"{host} is not an address of this machine"
        else:
            reason = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        raise PortUnavailable(f"{reason}; {how_to_change}") from None
    sock.set_inheritable(True)
    return sock
