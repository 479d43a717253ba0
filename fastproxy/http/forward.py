"""What the upstream receives: the request head re-serialized by the proxy, sans-I/O.

The client's end-to-end headers go through as received (names and values untouched, order kept).
The proxy then adds its own: ``X-Forwarded-For`` (the peer address, appended to the client's list
only when the peer is a trusted proxy), ``X-Forwarded-Proto`` (the client's, again only from a
trusted proxy), ``X-Request-Id``, whatever the policy stages set (``X-Auth-*``), and the framing
(``Content-Length`` or ``Transfer-Encoding: chunked``). The upstream connection is always
HTTP/1.1 keep-alive, so no Connection header is sent.
"""

from __future__ import annotations

from typing import Final

from fastproxy.http.head import RequestHead
from fastproxy.net import Network, in_networks

__all__ = ["chunk", "client_address", "request_head", "request_head_reference", "upstream_request_head"]

LAST_CHUNK: Final = b"0\r\n\r\n"

# Request headers a masked exchange does not forward (see request_head_reference).
_MASKING_DROPS: Final = frozenset({b"accept-encoding", b"range", b"if-range"})


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


def request_head_reference(
    method: bytes | str,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    forwarded_for: bytes,
    proto: bytes,
    request_id: bytes,
    extra: list[tuple[bytes, bytes]],
    chunked: bool,
    content_length: int,
    masked: bool,
) -> bytes:
    """The head sent upstream (content_length -1: none); pure-Python twin of _speedups.request_head.

    ``masked``: the response is to be masked, so it must be a whole, uncompressed document. A
    compressed body or a part of one (Range) cannot be masked, and with on_unmaskable = "pass"
    it would reach the client as it is: the client's Accept-Encoding, Range and If-Range are
    not forwarded, and Accept-Encoding says identity (none would mean "any coding", RFC 9110
    12.5.3).
    """
    if isinstance(method, str):
        method = method.encode("ascii")
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        if masked and name.lower() in _MASKING_DROPS:
            continue
        parts.append(name + b": " + value + b"\r\n")
    parts.append(b"X-Forwarded-For: " + forwarded_for + b"\r\n")
    parts.append(b"X-Forwarded-Proto: " + proto + b"\r\n")
    parts.append(b"X-Request-Id: " + request_id + b"\r\n")
    for name, value in extra:
        parts.append(name + b": " + value + b"\r\n")
    if masked:
        parts.append(b"Accept-Encoding: identity\r\n")
    if chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif content_length != -1:
        parts.append(b"Content-Length: %d\r\n" % content_length)
    parts.append(b"\r\n")
    return b"".join(parts)


try:
    from fastproxy.http._speedups import request_head as request_head
except ImportError:  # pragma: no cover - only without a compiler
    request_head = request_head_reference

# Bound once for upstream_request_head: compiled code looks a plain module global up in the
# module's dict at every call, and a Final is a C static.
_request_head: Final = request_head


def upstream_request_head(
    head: RequestHead,
    peer: bytes,
    peer_trusted: bool,
    proto: bytes,
    request_id: bytes,
    extra: list[tuple[bytes, bytes]],
    masked: bool = False,
) -> bytes:
    forwarded_for = peer
    if peer_trusted:
        if head.forwarded_for is not None:
            forwarded_for = head.forwarded_for + b", " + peer
        if head.forwarded_proto is not None:
            proto = head.forwarded_proto
    return _request_head(
        head.method,
        head.target,
        head.headers,
        forwarded_for,
        proto,
        request_id,
        extra,
        head.chunked,
        -1 if head.content_length is None else head.content_length,
        masked,
    )


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)
