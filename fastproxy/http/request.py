"""Reading requests from clients: limits and smuggling defences, sans-I/O.

Theory of operation
-------------------
:class:`~fastproxy.http.parser.RequestParser` wraps httptools' strict llhttp parser (no lenient
flag is ever set) and feeds a :class:`RequestHandler` with one :class:`RequestHead`, zero or more
body chunks and an end per request. Limits are enforced inside the parser callbacks, so an
oversized URL or header block is refused as soon as it is seen rather than after it was buffered:

* the URL is capped at ``max_url_bytes`` (414), the header fields at ``max_headers`` and the whole
  head at ``max_header_bytes`` (431). httptools joins a header field before handing it over, so a
  single endless header is also caught by counting the bytes fed while a head is still open;
* a declared ``Content-Length`` over ``max_body_bytes`` is refused before any of the body is read,
  and a chunked body as soon as it passes the limit (413).

llhttp itself rejects most framing attacks: Content-Length with Transfer-Encoding, a duplicate or
malformed Content-Length, a malformed chunk size, obs-fold, bare LF, NUL and other control bytes.
:func:`parse_head` adds what llhttp leaves to the application: a request line without a version
(HTTP/0.9) or with a version other than 1.0/1.1, a Transfer-Encoding other than a lone
``chunked`` (and any Transfer-Encoding on HTTP/1.0), a missing or repeated Host, a target that is
not origin- or absolute-form, and dot segments that an upstream could resolve out of the routed
prefix. Every such error is a :class:`ProtocolError`; the caller answers it and closes the
connection, so nothing after a bad request can reach the upstream as a request of its own.

The credentials are taken out of the header list into their own fields, ``authorization`` and
``api_key`` (the configured API key header, when there is one): a stage that authenticates reads
them there, and they reach an upstream only when the route says so (a repeated one is a 400).

The head given to the handler has the hop-by-hop headers already removed (Connection and every
header it names, Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade,
Proxy-Authorization), as are the headers the proxy sets itself (framing, X-Forwarded-*,
X-Request-Id, X-Auth-*): the proxy re-serializes all of them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol

import httptools

from fastproxy.http.errors import ProtocolError
from fastproxy.http.head import RequestHead

if TYPE_CHECKING:
    from fastproxy.config.schema import LimitsSettings
    from fastproxy.http._speedups import RequestCallbacks as _CCallbacks

__all__ = [
    "RequestCallbacks",
    "RequestHandler",
    "RequestHead",
    "make_callbacks",
    "parse_head",
    "parse_head_reference",
]

# Removed in both directions (RFC 9110 7.6.1 plus the proxy-specific ones).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
    }
)

# Headers of the request the proxy sets itself: a client's copy is dropped, never passed on.
_PROXY_SET = frozenset(
    {
        b"content-length",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-request-id",
        b"x-auth-subject",
        b"x-auth-roles",
        b"x-auth-method",
        b"expect",
    }
)

_DROPPED = HOP_BY_HOP | _PROXY_SET
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")
# RFC 3986 host (reg-name, IPv4, or an IP literal in brackets) with an optional port.
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]*)?")
# A segment of one or two dots, alone or with a path parameter ("..;x", which Tomcat reads as "..").
_DOT_SEGMENT = re.compile(r"(?:^|[/\\])\.{1,2}(?:[/\\;]|$)")


class RequestHandler(Protocol):
    def on_request(self, head: RequestHead) -> None: ...

    def on_body(self, chunk: bytes) -> None: ...

    def on_request_end(self) -> None: ...


def _split_target(url: bytes) -> tuple[bytes, str, bytes | None]:
    """(origin-form target, path, authority of an absolute-form target), or ProtocolError."""
    authority = None
    if url[:1] != b"/":
        # Absolute form (RFC 9112 3.2.2) is accepted and reduced to origin form; nothing else
        # (authority form is CONNECT's, asterisk form OPTIONS *) is proxied.
        lowered = url[:8].lower()
        if lowered.startswith(b"http://"):
            rest = url[7:]
        elif lowered.startswith(b"https://"):
            rest = url[8:]
        else:
            raise ProtocolError(400, "bad_target", "request target is not origin or absolute form")
        end = len(rest)
        for mark in b"/?#":
            found = rest.find(bytes((mark,)))
            if found != -1 and found < end:
                end = found
        authority = rest[:end]
        if not authority or b"@" in authority or not _HOST.fullmatch(authority):
            raise ProtocolError(400, "bad_target", "bad authority in absolute-form target")
        url = rest[end:]
        if url[:1] != b"/":
            url = b"/" + url
    fragment = url.find(b"#")
    if fragment != -1:
        url = url[:fragment]
    query = url.find(b"?")
    path = (url if query == -1 else url[:query]).decode("latin-1")
    if "." in path or "%" in path or "\\" in path:
        # An upstream that decodes %2E / %2F or resolves dot segments would otherwise see a path
        # outside the prefix the route matched.
        decoded = path.replace("%2e", ".").replace("%2E", ".")
        decoded = decoded.replace("%2f", "/").replace("%2F", "/").replace("%5c", "\\").replace("%5C", "\\")
        if _DOT_SEGMENT.search(decoded):
            raise ProtocolError(400, "bad_path", "dot segment in path")
    return url, path, authority


def parse_head_reference(
    method: str,
    url: bytes,
    version: str,
    raw_headers: list[tuple[bytes, bytes]],
    keep_alive: bool,
    max_body_bytes: int,
    credential_header: bytes | None = None,
) -> RequestHead:
    """Check a request head and strip it of what the proxy re-serializes; raises ProtocolError.

    ``credential_header`` is the API key header's lower-case name. The pure-Python reference of
    ``_speedups.scan_request`` (see :func:`parse_head`).
    """
    if version != "1.1" and version != "1.0":
        raise ProtocolError(400, "bad_version", f"HTTP version {version} not supported")
    target, path, authority = _split_target(url)
    headers: list[tuple[bytes, bytes]] = []
    head = RequestHead(method, target, path, version, headers, keep_alive)
    connection_tokens: list[bytes] | None = None
    transfer_encoding: bytes | None = None
    upgrade = False
    for name, value in raw_headers:
        lname = name.lower()
        if lname == b"authorization":
            if head.authorization is not None:
                raise ProtocolError(400, "bad_credentials", "repeated Authorization header")
            head.authorization = value
        elif lname == credential_header and lname not in _DROPPED:
            if head.api_key is not None:
                raise ProtocolError(400, "bad_credentials", "repeated API key header")
            head.api_key = value
        elif lname not in _DROPPED:
            if lname[:2] == b"x-" and (lname.startswith(b"x-forwarded-") or lname.startswith(b"x-auth-")):
                continue  # the proxy's to set: X-Forwarded-Host, -Port, -Prefix, X-Auth-*
            if lname == b"host":
                if head.host is not None:
                    raise ProtocolError(400, "bad_host", "repeated Host header")
                head.host = value
            headers.append((name, value))
        elif lname == b"content-length":
            # llhttp already refused duplicates and non-digits; it allows surrounding spaces.
            head.content_length = int(value.strip())
        elif lname == b"transfer-encoding":
            transfer_encoding = value if transfer_encoding is None else transfer_encoding + b"," + value
        elif lname == b"connection":
            tokens = [t.strip().lower() for t in value.split(b",")]
            connection_tokens = tokens if connection_tokens is None else connection_tokens + tokens
        elif lname == b"x-request-id":
            head.request_id = value if _REQUEST_ID.fullmatch(value) else None
        elif lname == b"x-forwarded-for":
            head.forwarded_for = value if head.forwarded_for is None else head.forwarded_for + b", " + value
        elif lname == b"x-forwarded-proto":
            head.forwarded_proto = value
        elif lname == b"expect":
            # RFC 9110 10.1.1: an expectation in an HTTP/1.0 request is ignored.
            if version == "1.1":
                if value.strip().lower() != b"100-continue":
                    raise ProtocolError(400, "bad_expect", "unsupported Expect")
                head.expect_continue = True
        elif lname == b"upgrade":
            upgrade = True

    if transfer_encoding is not None:
        if version != "1.1" or transfer_encoding.strip().lower() != b"chunked":
            raise ProtocolError(400, "bad_framing", "Transfer-Encoding other than a lone chunked")
        head.chunked = True
    if version == "1.1" and head.host is None:
        raise ProtocolError(400, "bad_host", "HTTP/1.1 request without Host")
    if authority is not None:
        # RFC 9112 3.2.2: the target's authority replaces whatever Host was received.
        headers[:] = [(n, v) for n, v in headers if n.lower() != b"host"]
        headers.insert(0, (b"Host", authority))
        head.host = authority
    elif head.host is not None and not _HOST.fullmatch(head.host):
        raise ProtocolError(400, "bad_host", "Host is not a valid host[:port]")
    if upgrade and head.has_body:
        # llhttp hands an Upgrade request's body over as upgrade data; refuse rather than lose it.
        raise ProtocolError(400, "bad_upgrade", "Upgrade request with a body")
    if connection_tokens:
        # Connection can name any end-to-end header away, except Host (which the upstream needs).
        named = frozenset(connection_tokens) - {b"close", b"keep-alive", b"", b"host"}
        if named:
            headers[:] = [(n, v) for n, v in headers if n.lower() not in named]
    if head.content_length is not None and head.content_length > max_body_bytes:
        raise ProtocolError(413, "too_large", "declared Content-Length over max_body_bytes")
    return head


try:
    from fastproxy.http._speedups import HeadError, scan_request
except ImportError:  # pragma: no cover - only without a compiler
    parse_head = parse_head_reference
else:

    def parse_head(
        method: str,
        url: bytes,
        version: str,
        raw_headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        max_body_bytes: int,
        credential_header: bytes | None = None,
    ) -> RequestHead:
        """:func:`parse_head_reference`, done by its C twin (tested to decide identically)."""
        try:
            fields = scan_request(
                method, url, version, raw_headers, keep_alive, max_body_bytes, credential_header
            )
        except HeadError as exc:
            raise ProtocolError(*exc.args) from None
        return RequestHead(method, fields[0], fields[1], version, fields[2], keep_alive, *fields[3:])


class RequestCallbacks:
    """llhttp's callbacks for one connection: collect a head, enforce limits, feed the handler.

    The pure-Python reference of ``_speedups.RequestCallbacks`` (tested to behave identically);
    :class:`RequestParser` uses the C one when it is built. :meth:`start` and :meth:`finish`,
    which :meth:`RequestParser.feed` calls around each feed, keep the cross-read accounting of
    an open head (``head_seen``).
    """

    __slots__ = (
        "_body_bytes",
        "_credential_header",
        "_handler",
        "_header_bytes",
        "_headers",
        "_max_body",
        "_max_header_bytes",
        "_max_headers",
        "_max_url",
        "_url",
        "began",
        "chunk",
        "head_seen",
        "in_head",
        "parser",
    )

    def __init__(
        self,
        handler: RequestHandler,
        max_url: int,
        max_headers: int,
        max_header_bytes: int,
        max_body: int,
        credential_header: bytes | None = None,
    ) -> None:
        self._handler = handler
        self._credential_header = credential_header
        self._max_url = max_url
        self._max_headers = max_headers
        self._max_header_bytes = max_header_bytes
        self._max_body = max_body
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._body_bytes = 0
        self.in_head = False  # a request has begun and its head is not complete
        self.head_seen = 0  # bytes fed while the head is open (see RequestParser.feed)
        self.began = False  # a head began during the current feed
        # The bytes being fed (RequestParser.feed): the C twin reads a request's version from
        # its request line there instead of asking llhttp; here it is only kept.
        self.chunk: bytes | None = None
        self.parser: httptools.HttpRequestParser | None = None  # set by RequestParser

    def start(self, data: bytes) -> None:
        """Before ``data`` is fed (RequestParser.feed): count it into an open head, and keep it."""
        if self.in_head:
            self.head_seen += len(data)
        self.began = False
        self.chunk = data

    def finish(self, data: bytes) -> int:
        """After ``data`` was fed: ``head_seen`` while a head is open, else -1."""
        self.chunk = None  # a connection keeps no read it is done with
        if not self.in_head:
            return -1
        if self.began:
            # The head began in this chunk. An open head holds no blank line, so it is at most
            # what follows the chunk's last one: count that (exact without bodies).
            last = data.rfind(b"\r\n\r\n")
            self.head_seen = len(data) - (last + 4 if last != -1 else 0)
        return self.head_seen

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._body_bytes = 0
        self.in_head = True
        self.head_seen = 0
        self.began = True

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._max_url:
            raise ProtocolError(414, "url_too_long", "request target over max_url_bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._header_bytes += len(name) + len(value) + 4
        if len(self._headers) > self._max_headers:
            raise ProtocolError(431, "too_many_headers", "more than max_headers header fields")
        if self._header_bytes > self._max_header_bytes:
            raise ProtocolError(431, "headers_too_large", "headers over max_header_bytes")

    def on_headers_complete(self) -> None:
        self.in_head = False
        parser = self.parser
        assert parser is not None
        head = parse_head(
            parser.get_method().decode("ascii"),
            self._url,
            parser.get_http_version(),
            self._headers,
            parser.should_keep_alive(),
            self._max_body,
            self._credential_header,
        )
        self._handler.on_request(head)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self._max_body:
            raise ProtocolError(413, "too_large", "body over max_body_bytes")
        self._handler.on_body(body)

    def on_message_complete(self) -> None:
        self._handler.on_request_end()


def make_callbacks(
    handler: RequestHandler, limits: LimitsSettings, credential_header: bytes | None
) -> RequestCallbacks | _CCallbacks:
    """The C RequestCallbacks when the extension is built (no Python frame per callback)."""
    args = (handler, limits.max_url_bytes, limits.max_headers, limits.max_header_bytes, limits.max_body_bytes)
    if _CRequestCallbacks is not None:
        return _CRequestCallbacks(*args, RequestHead, ProtocolError, credential_header)
    return RequestCallbacks(*args, credential_header)


try:
    from fastproxy.http._speedups import RequestCallbacks as _CRequestCallbacks
except ImportError:  # pragma: no cover - only without a compiler
    _CRequestCallbacks = None  # type: ignore[assignment,misc]
