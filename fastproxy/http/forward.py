"""What the upstream receives: the request head re-serialized by the proxy, sans-I/O.

The client's end-to-end headers go through as received (names and values untouched, order kept).
The proxy then adds its own: ``X-Forwarded-For`` (the peer address, appended to the client's list
only when the peer is a trusted proxy), ``X-Forwarded-Proto`` (the client's, again only from a
trusted proxy), ``X-Request-Id``, whatever the policy stages set (``X-Auth-*``), and the framing
(``Content-Length`` or ``Transfer-Encoding: chunked``). The upstream connection is always
HTTP/1.1 keep-alive, so no Connection header is sent.
"""

from __future__ import annotations

from fastproxy.http.request import RequestHead
from fastproxy.net import Network, in_networks

__all__ = ["chunk", "client_address", "upstream_request_head"]

LAST_CHUNK = b"0\r\n\r\n"


def client_address(peer: str, forwarded_for: bytes | None, trusted: tuple[Network, ...]) -> str:
    """The address a request is attributed to (IP rules, audit, rate-limit keys).

    Walk X-Forwarded-For from the right while the hop that added the entry is trusted: the first
    untrusted address is the client. Without trusted proxies this is always the peer.
    """
    if forwarded_for is None or not trusted or not in_networks(peer, trusted):
        return peer
    hops = [h.strip() for h in forwarded_for.decode("latin-1").split(",")]
    for hop in reversed(hops):
        if not in_networks(hop, trusted):
            return hop if hop else peer
    return hops[0] or peer


def upstream_request_head(
    head: RequestHead,
    peer: bytes,
    peer_trusted: bool,
    proto: bytes,
    request_id: bytes,
    extra: list[tuple[bytes, bytes]],
) -> bytes:
    parts = [head.method.encode("ascii"), b" ", head.target, b" HTTP/1.1\r\n"]
    for name, value in head.headers:
        parts.append(name + b": " + value + b"\r\n")
    if peer_trusted and head.forwarded_for is not None:
        parts.append(b"X-Forwarded-For: " + head.forwarded_for + b", " + peer + b"\r\n")
    else:
        parts.append(b"X-Forwarded-For: " + peer + b"\r\n")
    if peer_trusted and head.forwarded_proto is not None:
        proto = head.forwarded_proto
    parts.append(b"X-Forwarded-Proto: " + proto + b"\r\n")
    parts.append(b"X-Request-Id: " + request_id + b"\r\n")
    for name, value in extra:
        parts.append(name + b": " + value + b"\r\n")
    if head.chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif head.content_length is not None:
        parts.append(b"Content-Length: %d\r\n" % head.content_length)
    parts.append(b"\r\n")
    return b"".join(parts)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)
