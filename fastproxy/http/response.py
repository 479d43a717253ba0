"""Turning an upstream's response head into the client's, sans-I/O.

The proxy re-serializes framing: the upstream's hop-by-hop headers (and every header its
Connection names) are dropped, and the client gets ``Content-Length`` when the upstream declared
one, chunked encoding when it did not and the client speaks HTTP/1.1, or a close-delimited body
for an HTTP/1.0 client.
"""

from __future__ import annotations

from fastproxy.http.request import HOP_BY_HOP

__all__ = ["Framing", "ResponseHead", "build_response_head", "no_body_status", "scan_response_headers"]

# The proxy sets these itself on the way back.
_DROPPED = HOP_BY_HOP | {b"content-length", b"x-request-id"}


class Framing:
    """How a response body is delimited towards the client."""

    NONE = 0  # no body (HEAD, 1xx, 204, 304)
    LENGTH = 1
    CHUNKED = 2
    CLOSE = 3  # until the connection closes (HTTP/1.0 clients only)


class ResponseHead:
    __slots__ = ("content_length", "headers", "upstream_chunked")

    def __init__(self, headers: list[tuple[bytes, bytes]], content_length: int | None, chunked: bool) -> None:
        self.headers = headers
        self.content_length = content_length
        self.upstream_chunked = chunked


def no_body_status(status: int, method: str) -> bool:
    return method == "HEAD" or status == 204 or status == 304 or status < 200


def scan_response_headers(raw: list[tuple[bytes, bytes]]) -> ResponseHead:
    """The end-to-end headers of an upstream response, and its declared length."""
    headers: list[tuple[bytes, bytes]] = []
    content_length: int | None = None
    chunked = False
    named: set[bytes] | None = None
    for name, value in raw:
        lname = name.lower()
        if lname not in _DROPPED:
            headers.append((name, value))
        elif lname == b"content-length":
            content_length = int(value.strip())
        elif lname == b"transfer-encoding":
            chunked = True
        elif lname == b"connection":
            tokens = {t.strip().lower() for t in value.split(b",")} - {b"close", b"keep-alive", b""}
            if tokens:
                named = tokens if named is None else named | tokens
    if named:
        headers = [(n, v) for n, v in headers if n.lower() not in named]
    return ResponseHead(headers, content_length, chunked)


def build_response_head(
    status: int,
    reason: bytes,
    head: ResponseHead,
    framing: int,
    request_id: bytes,
    close: bool,
) -> bytes:
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    for name, value in head.headers:
        parts.append(name + b": " + value + b"\r\n")
    parts.append(b"X-Request-Id: " + request_id + b"\r\n")
    if framing == Framing.LENGTH:
        parts.append(b"Content-Length: %d\r\n" % head.content_length)
    elif framing == Framing.CHUNKED:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif framing == Framing.NONE and head.content_length is not None:
        # A HEAD response keeps the length the GET would have had.
        parts.append(b"Content-Length: %d\r\n" % head.content_length)
    if close:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def choose_framing(status: int, method: str, head: ResponseHead, client_version: str) -> int:
    if no_body_status(status, method):
        return Framing.NONE
    if head.content_length is not None and not head.upstream_chunked:
        return Framing.LENGTH
    if client_version == "1.1":
        return Framing.CHUNKED
    return Framing.CLOSE
