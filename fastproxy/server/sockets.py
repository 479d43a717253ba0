"""Listening sockets, bound by the master before any worker exists."""

from __future__ import annotations

import socket

from fastproxy.net import Address

__all__ = ["BACKLOG", "bind"]

# The kernel caps this at net.core.somaxconn; asking for more costs nothing.
BACKLOG = 4096


def bind(address: Address) -> socket.socket:
    """A listening TCP socket with SO_REUSEADDR and SO_REUSEPORT, inheritable by forked workers.

    SO_REUSEPORT lets a new fastproxy (a binary upgrade, or a second instance during a
    migration) bind the same address while this one still serves.
    """
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    infos = socket.getaddrinfo(address.host, address.port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
