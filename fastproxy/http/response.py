"""Turning an upstream's response head into the client's, sans-I/O.

The proxy re-serializes framing: the upstream's hop-by-hop headers (and every header its
Connection names) are dropped, and the client gets ``Content-Length`` when the upstream declared
one, chunked encoding when it did not and the client speaks HTTP/1.1, or a close-delimited body
for an HTTP/1.0 client.

Theory of operation
-------------------
This is the proxy's hottest path, so the head is rewritten as bytes rather than rebuilt field by
field: llhttp has already validated the head (the caller only hands over one llhttp accepted), so
every header line is ``\\n<name>:<value>\\r``. One regular-expression scan of the lower-cased
header block finds the lines to cut (hop-by-hop headers, the framing the proxy re-serializes,
the upstream's X-Request-Id) and the untouched lines in between are copied as they are. Only a
Connection header that names other headers takes the slow, line-by-line path.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "Framing",
    "ResponseHead",
    "build_response_head",
    "choose_framing",
    "head_field",
    "media_fields",
    "no_body_status",
    "parse_response_head",
]

_CUT = re.compile(
    rb"\n(connection|keep-alive|proxy-connection|te|trailer|transfer-encoding|upgrade"
    rb"|proxy-authorization|content-length|x-request-id)[ \t]*:"
)
# Headers other than Content-Length and Connection that are cut; rare in responses.
_RARE = re.compile(
    rb"\n(?:keep-alive|proxy-[a-z-]*|te|trailer|transfer-encoding|upgrade|x-request-id)[ \t]*:"
)
_NOT_NAMED = frozenset({b"close", b"keep-alive", b""})


class Framing:
    """How a response body is delimited towards the client."""

    NONE: Final = 0  # no body (HEAD, 1xx, 204, 304)
    LENGTH: Final = 1
    CHUNKED: Final = 2
    CLOSE: Final = 3  # until the connection closes (HTTP/1.0 clients only)


class ResponseHead:
    __slots__ = ("content_length", "fields", "status_line", "upstream_chunked")

    def __init__(self, status_line: bytes, fields: bytes, content_length: int | None, chunked: bool) -> None:
        self.status_line = status_line  # "HTTP/1.1 200 OK\r\n"
        self.fields = fields  # the end-to-end header lines, each ending in CRLF
        self.content_length = content_length
        self.upstream_chunked = chunked

    def get(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (given in lower case), or None."""
        fields = b"\n" + self.fields
        start = fields.lower().find(b"\n" + name + b":")
        if start == -1:
            return None
        start += len(name) + 2
        return fields[start : fields.index(b"\r", start)].strip()


def no_body_status(status: int, method: str) -> bool:
    return method == "HEAD" or status == 204 or status == 304 or status < 200


def parse_response_head(raw: bytes) -> ResponseHead:
    """Split a complete head (status line to the blank line) that llhttp accepted."""
    first = raw.find(b"\r\n") + 2
    # The client always talks to an HTTP/1.1 proxy, whatever version the upstream spoke.
    status_line = b"HTTP/1.1" + raw[8:first]
    block = raw[first - 1 : -2]  # "\n" + header lines, so every line starts after a "\n"
    low = block.lower()
    if _RARE.search(low) is None:
        # The common case: at most Content-Length and a plain Connection header to cut.
        content_length: int | None = None
        cuts = []
        at = low.find(b"\ncontent-length:")
        if at != -1:
            end = low.index(b"\r", at)
            content_length = int(block[at + 16 : end])
            cuts.append((at + 1, end + 2))
        at = low.find(b"\nconnection:")
        if at != -1:
            end = low.index(b"\r", at)
            if low[at + 12 : end].strip() not in _NOT_NAMED or low.find(b"\nconnection:", end) != -1:
                return _parse_slow(status_line, block, low)
            cuts.append((at + 1, end + 2))
        if not cuts:
            return ResponseHead(status_line, block[1:], None, False)
        if len(cuts) == 2 and cuts[0][0] > cuts[1][0]:
            cuts.reverse()
        pieces = []
        pos = 1
        for start, stop in cuts:
            pieces.append(block[pos:start])
            pos = stop
        pieces.append(block[pos:])
        return ResponseHead(status_line, b"".join(pieces), content_length, False)
    return _parse_slow(status_line, block, low)


def _parse_slow(status_line: bytes, block: bytes, low: bytes) -> ResponseHead:
    content_length: int | None = None
    chunked = False
    named: set[bytes] | None = None
    pieces = []
    pos = 1
    for match in _CUT.finditer(low):
        start = match.start() + 1
        end = low.index(b"\r", start)
        name = match.group(1)
        if name == b"content-length":
            content_length = int(block[match.end() : end])
        elif name == b"transfer-encoding":
            chunked = low[match.end() : end].rstrip().endswith(b"chunked")
        elif name == b"connection":
            tokens = {t.strip() for t in low[match.end() : end].split(b",")} - _NOT_NAMED
            if tokens:
                named = tokens if named is None else named | tokens
        pieces.append(block[pos:start])
        pos = end + 2
    pieces.append(block[pos:])
    fields = b"".join(pieces)
    if named:
        fields = b"".join(
            line + b"\r\n"
            for line in fields.split(b"\r\n")
            if line and line.split(b":", 1)[0].strip().lower() not in named
        )
    return ResponseHead(status_line, fields, content_length, chunked)


def choose_framing(status: int, method: str, head: ResponseHead, client_version: str) -> int:
    if no_body_status(status, method):
        return Framing.NONE
    if head.content_length is not None and not head.upstream_chunked:
        return Framing.LENGTH
    if client_version == "1.1":
        return Framing.CHUNKED
    return Framing.CLOSE


def build_response_head(
    status: int,
    head: ResponseHead,
    framing: int,
    request_id: bytes,
    close: bool,
) -> bytes:
    if framing == Framing.CHUNKED:
        framing_line = b"Transfer-Encoding: chunked\r\n"
    elif framing != Framing.CLOSE and head.content_length is not None and status != 204:
        # A LENGTH body, or a HEAD (or 304) answer keeping the length the full response has.
        framing_line = b"Content-Length: %d\r\n" % head.content_length
    else:
        framing_line = b""
    return b"".join(
        (
            head.status_line,
            head.fields,
            b"X-Request-Id: ",
            request_id,
            b"\r\n",
            framing_line,
            b"Connection: close\r\n\r\n" if close else b"\r\n",
        )
    )


def head_field(raw: bytes, name: bytes, lowered: bytes | None = None) -> bytes | None:
    """The first value of header ``name`` (lower case) in a head llhttp accepted, or None.

    ``lowered`` is ``raw.lower()`` when the caller already has it (several fields of one head).
    """
    at = (raw.lower() if lowered is None else lowered).find(b"\n" + name + b":")
    if at == -1:
        return None
    start = at + len(name) + 2
    return raw[start : raw.index(b"\r", start)].strip()


def media_fields_reference(raw: bytes) -> tuple[bytes | None, bytes | None]:
    """(Content-Type, Content-Encoding) of a head: what masking asks of it. The pure-Python
    reference of ``_speedups.media_fields``."""
    lowered = raw.lower()
    return head_field(raw, b"content-type", lowered), head_field(raw, b"content-encoding", lowered)


def response_head_reference(
    raw: bytes, request_id: bytes, status: int, is_head: bool, client_http11: bool, keep_alive: bool
) -> tuple[bytes, int, int, bool, bool]:
    """The client's head for the upstream head ``raw`` begins with (llhttp-accepted, from its
    status line to its blank line; bytes after that are ignored).

    Returns (client head, framing, declared length or -1, upstream chunked, keep the client
    connection alive). The pure-Python reference of ``_speedups.response_head``.
    """
    blank = raw.find(b"\r\n\r\n")
    if blank != -1:
        raw = raw[: blank + 4]
    head = parse_response_head(raw)
    framing = choose_framing(status, "HEAD" if is_head else "GET", head, "1.1" if client_http11 else "1.0")
    keep_alive = keep_alive and framing != Framing.CLOSE
    client_head = build_response_head(status, head, framing, request_id, not keep_alive)
    length = -1 if head.content_length is None else head.content_length
    return client_head, framing, length, head.upstream_chunked, keep_alive


try:
    from fastproxy.http._speedups import media_fields as media_fields
    from fastproxy.http._speedups import response_head as response_head
except ImportError:  # pragma: no cover - only without a compiler
    media_fields = media_fields_reference
    response_head = response_head_reference
