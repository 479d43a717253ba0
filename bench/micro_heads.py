"""Per-call cost of the two head rewrites, pure Python against fastproxy.http._speedups.

``python -m bench.micro_heads [--number N] [--repeat R]`` prints microseconds per call (the
minimum over the repeats) for typical heads: an nginx response head (the fast path), one whose
Connection header names another header (the slow path), and a browser-like request head, read
(parse_head against scan_request, alone and with the RequestHead built from its tuple) and written,
and the llhttp callbacks of a whole browser-like GET (request.RequestCallbacks against its C twin).
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

import httptools

from fastproxy.http import _speedups
from fastproxy.http.errors import ProtocolError
from fastproxy.http.forward import request_head_reference
from fastproxy.http.request import RequestCallbacks, RequestHead, parse_head, parse_head_reference
from fastproxy.http.response import response_head_reference

NGINX = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: nginx/1.24.0\r\n"
    b"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 1234\r\n"
    b"Connection: keep-alive\r\n"
    b'ETag: "65a1-4d2"\r\n'
    b"Accept-Ranges: bytes\r\n"
    b"\r\n"
)
NAMING = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: gunicorn\r\n"
    b"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
    b"Connection: keep-alive, X-Internal\r\n"
    b"X-Internal: 1\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n"
)
REQUEST_ID = b"7f3c2a9e4b1d4c8e"
BROWSER_HEADERS = [
    (b"Host", b"api.example.com"),
    (b"User-Agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"),
    (b"Accept", b"application/json"),
    (b"Accept-Encoding", b"gzip, deflate, br"),
    (b"Authorization", b"Bearer eyJhbGciOiJIUzI1NiJ9.e30.ZRrHA1JJJW8opsbCGfG_HACGpVUMN_a9IV7pAx_Zmeo"),
]


def request() -> RequestHead:
    return RequestHead("GET", b"/api/v1/items?page=2", "/api/v1/items", "1.1", list(BROWSER_HEADERS), True)


# parse_head's arguments as RequestParser passes them: a browser-like GET, and a POST that goes
# through more of the rules (absolute form, Connection naming a header, X-Forwarded-For, a length).
READ_BROWSER = ("GET", b"/api/v1/items?page=2", "1.1", BROWSER_HEADERS, True, 1 << 20)
READ_RULES = (
    "POST",
    b"http://api.example.com/api/v1/items",
    "1.1",
    [
        (b"Host", b"api.example.com"),
        (b"Connection", b"keep-alive, X-Trace"),
        (b"X-Trace", b"1"),
        (b"X-Forwarded-For", b"198.51.100.7"),
        (b"Content-Type", b"application/json"),
        (b"Content-Length", b"512"),
    ],
    True,
    1 << 20,
)
HEAD_FIELDS = (
    "target",
    "path",
    "headers",
    "content_length",
    "chunked",
    "host",
    "request_id",
    "forwarded_for",
    "forwarded_proto",
    "expect_continue",
)


BROWSER_GET = (
    b"GET /api/v1/items?page=2 HTTP/1.1\r\n"
    + b"".join(name + b": " + value + b"\r\n" for name, value in BROWSER_HEADERS)
    + b"Accept-Language: en-US,en;q=0.5\r\n\r\n"
)


class Discard:
    def on_request(self, head: RequestHead) -> None:
        pass

    def on_body(self, chunk: bytes) -> None:
        pass

    def on_request_end(self) -> None:
        pass


def feeding(callbacks: RequestCallbacks | _speedups.RequestCallbacks) -> Callable[[], object]:
    # One keep-alive connection's llhttp parser, fed one whole request per call.
    parser = httptools.HttpRequestParser(callbacks)
    callbacks.parser = parser
    return lambda: parser.feed_data(BROWSER_GET)


def head_fields(head: object) -> tuple[object, ...]:
    return tuple(getattr(head, name) for name in HEAD_FIELDS)


def per_call_us(stmt: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(stmt, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=100_000, help="calls per timing")
    parser.add_argument("--repeat", type=int, default=7, help="timings; the fastest is kept")
    args = parser.parse_args()

    head = request()
    extra = [(b"X-Auth-Subject", b"alice"), (b"X-Auth-Method", b"jwt")]
    peer, proto = b"203.0.113.9", b"http"
    cases: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
        (
            "response_head (nginx, fast path)",
            lambda: response_head_reference(NGINX, REQUEST_ID, 200, False, True, True),
            lambda: _speedups.response_head(NGINX, REQUEST_ID, 200, False, True, True),
        ),
        (
            "response_head (Connection names a header)",
            lambda: response_head_reference(NAMING, REQUEST_ID, 200, False, True, True),
            lambda: _speedups.response_head(NAMING, REQUEST_ID, 200, False, True, True),
        ),
        (
            "request_head (5 headers, 2 extra)",
            lambda: request_head_reference(
                head.method, head.target, head.headers, peer, proto, REQUEST_ID, extra, head.chunked, -1
            ),
            lambda: _speedups.request_head(
                head.method, head.target, head.headers, peer, proto, REQUEST_ID, extra, head.chunked, -1
            ),
        ),
        (
            "parse_head (5 headers) / scan_request",
            lambda: parse_head_reference(*READ_BROWSER),
            lambda: _speedups.scan_request(*READ_BROWSER),
        ),
        (
            "parse_head (5 headers) / + RequestHead",
            lambda: parse_head_reference(*READ_BROWSER),
            lambda: parse_head(*READ_BROWSER),
        ),
        (
            "parse_head (absolute, Connection) / scan",
            lambda: parse_head_reference(*READ_RULES),
            lambda: _speedups.scan_request(*READ_RULES),
        ),
        (
            "parse_head (absolute, Connection) / + head",
            lambda: parse_head_reference(*READ_RULES),
            lambda: parse_head(*READ_RULES),
        ),
        (
            "RequestCallbacks (browser GET, 6 headers)",
            feeding(RequestCallbacks(Discard(), 8192, 100, 32768, 1 << 20)),
            feeding(
                _speedups.RequestCallbacks(Discard(), 8192, 100, 32768, 1 << 20, RequestHead, ProtocolError)
            ),
        ),
    ]
    for name, python, c in cases:
        expected, got = python(), c()
        if isinstance(expected, RequestHead):
            expected = head_fields(expected)
            got = head_fields(got) if isinstance(got, RequestHead) else got
        assert expected == got, name
    print(f"{'':44} {'Python us':>10} {'C us':>8} {'speedup':>8}")
    for name, python, c in cases:
        py_us = per_call_us(python, args.number, args.repeat)
        c_us = per_call_us(c, args.number, args.repeat)
        print(f"{name:44} {py_us:10.3f} {c_us:8.3f} {py_us / c_us:7.1f}x")


if __name__ == "__main__":
    main()
