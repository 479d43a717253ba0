"""The client's response head: hop-by-hop headers cut, framing re-serialized, X-Request-Id set."""

from __future__ import annotations

import httptools
import pytest

from fastproxy.http.response import (
    Framing,
    ResponseHead,
    build_response_head,
    choose_framing,
    no_body_status,
    parse_response_head,
)


def raw(status_line: str, *headers: str) -> bytes:
    return (status_line + "\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode("latin-1")


def field_lines(head: ResponseHead) -> list[bytes]:
    assert head.fields == b"" or head.fields.endswith(b"\r\n")
    return head.fields.split(b"\r\n")[:-1] if head.fields else []


def names(head: ResponseHead) -> list[bytes]:
    return [line.split(b":")[0].lower() for line in field_lines(head)]


class _Collect:
    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


def client_view(head: bytes, body: bytes = b"") -> _Collect:
    """What a strict HTTP/1.1 client parses from the proxy's answer."""
    collect = _Collect()
    httptools.HttpResponseParser(collect).feed_data(head + body)
    return collect


# -- parse_response_head ------------------------------------------------------------------------


def test_end_to_end_headers_are_kept_as_received_in_order() -> None:
    head = parse_response_head(
        raw(
            "HTTP/1.1 200 OK",
            "Content-Type: application/json",
            "Set-Cookie: a=1",
            "set-cookie: b=2",
            "X-Custom:  two  spaces",
            "Content-Length: 12",
        )
    )
    assert field_lines(head) == [
        b"Content-Type: application/json",
        b"Set-Cookie: a=1",
        b"set-cookie: b=2",
        b"X-Custom:  two  spaces",
    ]
    assert head.content_length == 12
    assert not head.upstream_chunked
    assert head.status_line == b"HTTP/1.1 200 OK\r\n"


def test_the_client_always_sees_http11() -> None:
    head = parse_response_head(raw("HTTP/1.0 404 Not Found", "Content-Length: 0"))
    assert head.status_line == b"HTTP/1.1 404 Not Found\r\n"
    assert head.content_length == 0


def test_no_headers() -> None:
    head = parse_response_head(raw("HTTP/1.1 204 No Content"))
    assert head.fields == b""
    assert head.content_length is None


@pytest.mark.parametrize(
    "header",
    [
        "Connection: keep-alive",
        "Connection: close",
        "Keep-Alive: timeout=5, max=100",
        pytest.param(
            "Proxy-Connection: keep-alive",
        ),
        "TE: trailers",
        "Trailer: X-Checksum",
        "Upgrade: h2c",
        pytest.param(
            "Proxy-Authorization: Basic eA==",
        ),
        "X-Request-Id: upstream-id",
        "content-length: 5",
        "CONNECTION: close",
    ],
)
def test_hop_by_hop_and_proxy_set_headers_are_cut(header: str) -> None:
    head = parse_response_head(raw("HTTP/1.1 200 OK", "X-Before: 1", header, "X-After: 2"))
    assert field_lines(head) == [b"X-Before: 1", b"X-After: 2"]


@pytest.mark.parametrize(
    "header",
    ["Proxy-Connection: keep-alive", "Proxy-Authorization: Basic eA==", "Keep-Alive: 5"],
)
def test_hop_by_hop_headers_are_cut_next_to_transfer_encoding(header: str) -> None:
    head = parse_response_head(
        raw("HTTP/1.1 200 OK", "X-Before: 1", header, "Transfer-Encoding: chunked", "X-After: 2")
    )
    assert field_lines(head) == [b"X-Before: 1", b"X-After: 2"]
    assert head.upstream_chunked
    assert head.content_length is None


def test_headers_named_by_connection_are_cut() -> None:
    head = parse_response_head(
        raw(
            "HTTP/1.1 200 OK",
            "Connection: close, X-Secret, x-other",
            "X-Secret: s",
            "X-Kept: k",
            "X-OTHER: o",
            "Content-Length: 3",
        )
    )
    assert field_lines(head) == [b"X-Kept: k"]
    assert head.content_length == 3


def test_every_connection_header_counts() -> None:
    head = parse_response_head(
        raw(
            "HTTP/1.1 200 OK",
            "Connection: keep-alive",
            "X-Secret: s",
            "Connection: X-Secret",
            "X-Kept: k",
            "Content-Length: 3",
        )
    )
    assert field_lines(head) == [b"X-Kept: k"]


def test_transfer_encoding_marks_the_upstream_body_chunked() -> None:
    head = parse_response_head(raw("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", "X-A: 1"))
    assert head.upstream_chunked
    assert head.content_length is None
    assert field_lines(head) == [b"X-A: 1"]


def test_get_returns_the_first_value() -> None:
    head = parse_response_head(
        raw("HTTP/1.1 200 OK", "Content-Type: text/plain", "Vary: a", "vary: b", "Content-Length: 1")
    )
    assert head.get(b"vary") == b"a"
    assert head.get(b"content-type") == b"text/plain"
    assert head.get(b"content-length") is None
    assert head.get(b"missing") is None


# -- framing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "method", "none"),
    [
        (200, "HEAD", True),
        (204, "GET", True),
        (304, "GET", True),
        (100, "GET", True),
        (101, "GET", True),
        (200, "GET", False),
        (201, "POST", False),
        (404, "GET", False),
        (205, "GET", False),
    ],
)
def test_no_body_status(status: int, method: str, none: bool) -> None:
    assert no_body_status(status, method) is none


def _head(content_length: int | None = None, chunked: bool = False) -> ResponseHead:
    return ResponseHead(b"HTTP/1.1 200 OK\r\n", b"X-A: 1\r\n", content_length, chunked)


@pytest.mark.parametrize(
    ("status", "method", "content_length", "chunked", "version", "framing"),
    [
        (200, "GET", 10, False, "1.1", Framing.LENGTH),
        (200, "GET", 0, False, "1.0", Framing.LENGTH),
        (200, "GET", None, True, "1.1", Framing.CHUNKED),
        (200, "GET", None, False, "1.1", Framing.CHUNKED),
        (200, "GET", None, True, "1.0", Framing.CLOSE),
        (200, "GET", None, False, "1.0", Framing.CLOSE),
        (200, "HEAD", 10, False, "1.1", Framing.NONE),
        (200, "HEAD", None, True, "1.0", Framing.NONE),
        (204, "DELETE", None, False, "1.1", Framing.NONE),
        (304, "GET", 10, False, "1.1", Framing.NONE),
    ],
)
def test_choose_framing(
    status: int,
    method: str,
    content_length: int | None,
    chunked: bool,
    version: str,
    framing: int,
) -> None:
    assert choose_framing(status, method, _head(content_length, chunked), version) == framing


def _framing_lines(out: bytes) -> list[bytes]:
    lines = out[:-4].split(b"\r\n")[1:]
    return [
        line
        for line in lines
        if line.lower().startswith((b"content-length:", b"transfer-encoding:", b"connection:"))
    ]


@pytest.mark.parametrize(
    ("status", "framing", "content_length", "close", "expected"),
    [
        (200, Framing.LENGTH, 10, False, [b"Content-Length: 10"]),
        (200, Framing.LENGTH, 0, True, [b"Content-Length: 0", b"Connection: close"]),
        (200, Framing.CHUNKED, None, False, [b"Transfer-Encoding: chunked"]),
        (200, Framing.CLOSE, None, True, [b"Connection: close"]),
        # HEAD and 304 keep the length the full response would have had.
        (200, Framing.NONE, 10, False, [b"Content-Length: 10"]),
        (304, Framing.NONE, 10, False, [b"Content-Length: 10"]),
        (200, Framing.NONE, None, False, []),
        # RFC 9110 8.6: never a Content-Length on a 204.
        (204, Framing.NONE, 10, False, []),
    ],
)
def test_build_response_head_framing(
    status: int, framing: int, content_length: int | None, close: bool, expected: list[bytes]
) -> None:
    head = ResponseHead(b"HTTP/1.1 %d X\r\n" % status, b"X-A: 1\r\n", content_length, False)
    out = build_response_head(status, head, framing, b"rid-7", close)
    assert out.startswith(b"HTTP/1.1 %d X\r\nX-A: 1\r\n" % status)
    assert out.endswith(b"\r\n\r\n")
    assert b"X-Request-Id: rid-7\r\n" in out
    assert _framing_lines(out) == expected


@pytest.mark.parametrize(
    ("upstream", "method", "version", "body", "expected_body"),
    [
        (
            raw("HTTP/1.1 200 OK", "Content-Length: 5", "Connection: keep-alive", "X-A: 1"),
            "GET",
            "1.1",
            b"hello",
            b"hello",
        ),
        (
            raw("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", "X-A: 1"),
            "GET",
            "1.1",
            b"5\r\nhello\r\n0\r\n\r\n",
            b"hello",
        ),
        (
            raw("HTTP/1.0 200 OK", "X-A: 1", "X-Request-Id: theirs"),
            "GET",
            "1.1",
            b"5\r\nhello\r\n0\r\n\r\n",
            b"hello",
        ),
        (raw("HTTP/1.1 200 OK", "Content-Length: 5", "X-A: 1"), "HEAD", "1.1", b"", b""),
        (raw("HTTP/1.1 204 No Content", "X-A: 1", "Content-Length: 0"), "GET", "1.1", b"", b""),
    ],
)
def test_a_strict_client_parses_the_rewritten_head(
    upstream: bytes, method: str, version: str, body: bytes, expected_body: bytes
) -> None:
    status = int(upstream[9:12])
    head = parse_response_head(upstream)
    framing = choose_framing(status, method, head, version)
    out = build_response_head(status, head, framing, b"rid-1", close=False)
    headers = [
        (line.split(b":")[0].lower(), line.split(b":", 1)[1].strip()) for line in out[:-4].split(b"\r\n")[1:]
    ]
    if method != "HEAD":
        view = client_view(out, body)
        assert view.done
        assert view.body == expected_body
        assert view.headers == headers
    assert (b"x-a", b"1") in headers
    assert [v for n, v in headers if n == b"x-request-id"] == [b"rid-1"]
    assert len([n for n, _ in headers if n in (b"content-length", b"transfer-encoding")]) <= 1
    assert not [n for n, _ in headers if n in (b"connection", b"keep-alive")]
