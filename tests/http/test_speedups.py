"""The C head rewrites against their pure-Python references, byte for byte.

``response_head`` must give what parse_response_head + choose_framing + build_response_head give
together (``py_response_head`` below is that composition), and ``request_head`` what
upstream_request_head gives once X-Forwarded-For and X-Forwarded-Proto are resolved. Heads come
from a fixed list of realistic ones and from a seeded generator; every generated response head is
first fed to llhttp (httptools) and dropped when it refuses it, since only accepted heads reach
the proxy's response path.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import random
import re
import tracemalloc
from collections.abc import Iterator

import httptools
import pytest

from fastproxy.http import _speedups
from fastproxy.http.forward import request_head_reference, upstream_request_head
from fastproxy.http.request import RequestHead
from fastproxy.http.response import Framing, media_fields_reference, response_head_reference

ResponseResult = tuple[bytes, int, int, bool, bool]
Fields = list[tuple[bytes, bytes]]

FLAGS = list(itertools.product((False, True), repeat=3))  # is_head, client_http11, keep_alive


# The reference for _speedups.response_head.
py_response_head = response_head_reference


def py_request_head(
    method: bytes,
    target: bytes,
    headers: Fields,
    forwarded_for: bytes,
    proto: bytes,
    request_id: bytes,
    extra: Fields,
    chunked: bool,
    content_length: int,
    masked: bool = False,
) -> bytes:
    """The reference for _speedups.request_head."""
    return request_head_reference(
        method, target, headers, forwarded_for, proto, request_id, extra, chunked, content_length, masked
    )


def resolved_forwarding(
    head: RequestHead, peer: bytes, peer_trusted: bool, proto: bytes
) -> tuple[bytes, bytes]:
    """The final X-Forwarded-For and X-Forwarded-Proto, as upstream_request_head decides them."""
    forwarded_for = peer
    if peer_trusted and head.forwarded_for is not None:
        forwarded_for = head.forwarded_for + b", " + peer
    if peer_trusted and head.forwarded_proto is not None:
        proto = head.forwarded_proto
    return forwarded_for, proto


def status_of(raw: bytes) -> int:
    return int(raw[9:12])


class _Accept:
    def __init__(self) -> None:
        self.complete = False

    def on_headers_complete(self) -> None:
        self.complete = True


def llhttp_accepts(raw: bytes) -> bool:
    """Whether llhttp takes raw as one whole response head, as the proxy hands heads over."""
    if raw.find(b"\r\n\r\n") != len(raw) - 4:
        return False
    accept = _Accept()
    try:
        httptools.HttpResponseParser(accept).feed_data(raw)
    except httptools.HttpParserUpgrade:
        pass  # raised after the head was complete
    except httptools.HttpParserError:
        return False
    return accept.complete


def check_response(raw: bytes, request_id: bytes = b"rid-1") -> ResponseResult:
    """Asserts C == Python for every flag combination; returns the plain GET/1.1/keep-alive one."""
    status = status_of(raw)
    for is_head, client_http11, keep_alive in FLAGS:
        expected = py_response_head(raw, request_id, status, is_head, client_http11, keep_alive)
        got = _speedups.response_head(raw, request_id, status, is_head, client_http11, keep_alive)
        assert got == expected, (raw, is_head, client_http11, keep_alive)
    return _speedups.response_head(raw, request_id, status, False, True, True)


def response(status_line: str, *headers: str) -> bytes:
    return (status_line + "\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode("latin-1")


# -- response_head: fixed heads --------------------------------------------------------------------

FIXED_RESPONSES = {
    "nginx": response(
        "HTTP/1.1 200 OK",
        "Server: nginx/1.24.0",
        "Date: Mon, 01 Jan 2024 00:00:00 GMT",
        "Content-Type: application/json",
        "Content-Length: 1234",
        "Connection: keep-alive",
        'ETag: "65a1-4d2"',
        "Accept-Ranges: bytes",
    ),
    "gunicorn": response(
        "HTTP/1.1 201 Created",
        "Server: gunicorn",
        "Date: Mon, 01 Jan 2024 00:00:00 GMT",
        "Connection: close",
        "Content-Type: text/html; charset=utf-8",
        "Content-Length: 0",
    ),
    "chunked": response(
        "HTTP/1.1 200 OK",
        "Content-Type: text/plain",
        "Transfer-Encoding: chunked",
        "Vary: Accept-Encoding",
    ),
    "chunked-gzip": response("HTTP/1.1 200 OK", "Transfer-Encoding: gzip, chunked"),
    "te-not-chunked": response("HTTP/1.1 200 OK", "Transfer-Encoding: gzip"),
    "http10-upstream": response("HTTP/1.0 200 OK", "Content-Type: text/plain", "Content-Length: 5"),
    "http10-close-delimited": response("HTTP/1.0 200 OK", "Content-Type: text/plain"),
    "no-content": response("HTTP/1.1 204 No Content", "Date: Mon, 01 Jan 2024 00:00:00 GMT"),
    "no-content-with-length": response("HTTP/1.1 204 No Content", "Content-Length: 0"),
    "not-modified": response("HTTP/1.1 304 Not Modified", 'ETag: "x"', "Content-Length: 99"),
    "head-answer": response("HTTP/1.1 200 OK", "Content-Length: 1048576", "Content-Type: video/mp4"),
    "interim": response("HTTP/1.1 103 Early Hints", "Link: </style.css>; rel=preload"),
    "connection-names": response(
        "HTTP/1.1 200 OK",
        "Connection: keep-alive, X-Secret, content-type",
        "X-Secret: s3cr3t",
        "Content-Type: text/plain",
        "Content-Length: 3",
        "x-secret: again",
        "X-Kept: yes",
    ),
    "connection-repeated": response(
        "HTTP/1.1 200 OK", "Connection: close", "Connection: X-Foo", "X-Foo: 1", "Content-Length: 2"
    ),
    "connection-repeated-plain": response(
        "HTTP/1.1 200 OK", "Connection: keep-alive", "Connection: close", "Content-Length: 2"
    ),
    "connection-empty-tokens": response("HTTP/1.1 200 OK", "Connection: , ,close,", "Content-Length: 2"),
    "connection-upper": response("HTTP/1.1 200 OK", "CONNECTION: CLOSE", "Content-Length: 2"),
    "connection-empty": response("HTTP/1.1 200 OK", "Connection:", "Content-Length: 2"),
    "proxy-headers": response(
        "HTTP/1.1 407 Proxy Authentication Required",
        "Proxy-Authenticate: Basic realm=x",
        "Proxy-Connection: keep-alive",
        "Proxy-Authorization: Basic Zm9vOmJhcg==",
        "Proxy-Status: origin; error=x",
        "Proxy-X1: digits are not [a-z-]",
        "Content-Length: 0",
    ),
    "keep-alive": response("HTTP/1.1 200 OK", "Keep-Alive: timeout=5, max=100", "Content-Length: 10"),
    "upstream-request-id": response("HTTP/1.1 200 OK", "X-Request-Id: upstream-id", "Content-Length: 1"),
    "hop-by-hop-all": response(
        "HTTP/1.1 200 OK",
        "TE: trailers",
        "Trailer: Expires",
        "Upgrade: h2c",
        "Content-Length: 7",
        "X-End: 1",
    ),
    "length-spaces": response("HTTP/1.1 200 OK", "Content-Length: \t 42 \t"),
    "length-zeros": response("HTTP/1.1 200 OK", "Content-Length: 000"),
    "length-leading-zeros": response("HTTP/1.1 200 OK", "Content-Length: 0000000000000000000000000017"),
    "length-max": response("HTTP/1.1 200 OK", "Content-Length: 18446744073709551615"),
    "length-2-63": response("HTTP/1.1 200 OK", "Content-Length: 9223372036854775808"),
    "length-no-space": response("HTTP/1.1 200 OK", "content-length:5"),
    "mixed-case": response(
        "HTTP/1.1 200 OK",
        "cOnTeNt-LeNgTh: 5",
        "CoNnEcTiOn: KeEp-AlIvE",
        "X-MiXeD: VaLuE",
    ),
    "mixed-case-slow": response(
        "HTTP/1.1 200 OK",
        "TRANSFER-encoding: ChUnKeD",
        "CoNnEcTiOn: X-MiXeD",
        "x-mIxEd: gone",
        "X-rEqUeSt-Id: gone too",
    ),
    "no-headers": response("HTTP/1.1 200 OK"),
    "no-headers-http10": response("HTTP/1.0 404 Not Found"),
    "no-reason": response("HTTP/1.1 200"),
    "empty-reason": response("HTTP/1.1 200 "),
    "obs-text-reason": b"HTTP/1.1 200 \xc3\xa9t\xc3\xa9\r\nContent-Length: 1\r\n\r\n",
    "empty-value": response("HTTP/1.1 200 OK", "X-Empty:", "Content-Length: 1"),
    "colons-in-value": response("HTTP/1.1 302 Found", "Location: http://a:8080/b?c=d:e", "Content-Length: 0"),
    "set-cookies": response(
        "HTTP/1.1 200 OK",
        "Set-Cookie: a=1; Path=/",
        "set-cookie: b=2",
        "SET-COOKIE: c=3",
        "Content-Length: 0",
    ),
    "near-names": response(
        "HTTP/1.1 200 OK",
        "Connections: x",
        "Content-Lengths: 3",
        "Tea: earl grey",
        "T: 1",
        "Keep-Alive-Timeout: 5",
        "X-Request-Ids: a",
        "Upgrades: b",
        "Proxy: c",
    ),
    "proxy-empty-suffix": response("HTTP/1.1 200 OK", "Proxy-: odd but a token", "Content-Length: 1"),
    "server-error": response("HTTP/1.1 502 Bad Gateway", "Content-Type: text/html", "Content-Length: 157"),
}


@pytest.mark.parametrize("name", sorted(FIXED_RESPONSES))
def test_fixed_response_heads_match_python(name: str) -> None:
    raw = FIXED_RESPONSES[name]
    assert llhttp_accepts(raw), name
    check_response(raw)


def test_the_rewrite_does_what_it_should() -> None:
    # The differential tests prove the two agree; these pin down that what they agree on is right.
    head, framing, length, chunked, keep_alive = check_response(FIXED_RESPONSES["connection-names"], b"abc")
    assert head == (b"HTTP/1.1 200 OK\r\nX-Kept: yes\r\nX-Request-Id: abc\r\nContent-Length: 3\r\n\r\n")
    assert (framing, length, chunked, keep_alive) == (Framing.LENGTH, 3, False, True)

    head, framing, length, chunked, _ = check_response(FIXED_RESPONSES["chunked"])
    assert b"Transfer-Encoding: chunked\r\n" in head
    assert (framing, length, chunked) == (Framing.CHUNKED, -1, True)

    status = 200
    raw = FIXED_RESPONSES["http10-close-delimited"]
    head, framing, length, chunked, keep_alive = _speedups.response_head(
        raw, b"r", status, False, False, True
    )
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert head.endswith(b"Connection: close\r\n\r\n")
    assert (framing, length, chunked, keep_alive) == (Framing.CLOSE, -1, False, False)

    length = _speedups.response_head(FIXED_RESPONSES["length-max"], b"r", 200, False, True, True)[2]
    assert length == 2**64 - 1


def test_status_outside_a_c_long_is_compared_like_a_python_int() -> None:
    raw = FIXED_RESPONSES["nginx"]
    for status in (2**70, -(2**70), True, 0):
        for is_head, client_http11, keep_alive in FLAGS:
            expected = py_response_head(raw, b"r", status, is_head, client_http11, keep_alive)
            assert _speedups.response_head(raw, b"r", status, is_head, client_http11, keep_alive) == expected


# -- response_head: generated heads ---------------------------------------------------------------

# Names the proxy never touches, and names it cuts or that push it onto the slow path.
COMMON_NAMES = [
    "Content-Type",
    "Date",
    "Server",
    "ETag",
    "Cache-Control",
    "Vary",
    "Set-Cookie",
    "Location",
    "Content-Encoding",
    "Last-Modified",
    "X-Custom",
    "Connections",
    "Content-Lengths",
    "Tea",
    "T",
    "Proxy-X1",
    "Proxy",
    "X-Request-Ids",
]
HOP_NAMES = [
    "Content-Length",
    "Connection",
    "Keep-Alive",
    "Proxy-Connection",
    "Proxy-Authorization",
    "Proxy-Authenticate",
    "Proxy-Status",
    "Proxy-",
    "TE",
    "Trailer",
    "Transfer-Encoding",
    "Upgrade",
    "X-Request-Id",
]
CONNECTION_TOKENS = [
    "close",
    "keep-alive",
    "Keep-Alive",
    "CLOSE",
    "upgrade",
    "X-Custom",
    "x-custom",
    "content-type",
    "Set-Cookie",
    "date",
    "te",
    "server",
    "",
    " ",
    "foo bar",
]
TRANSFER_CODINGS = ["chunked", "Chunked", "gzip", "gzip, chunked", "chunked , ", "xchunked", "chunked, gzip"]
VALUES = [
    "",
    "text/html; charset=utf-8",
    "a=1; Path=/; HttpOnly",
    "  two  spaces",
    'W/"abc"',
    "x, y",
    "a:b:c",
    "tab\there",
    "Thu, 01 Jan 1970 00:00:00 GMT",
    "v \t",
    "\x80\xff obs-text",
    "close",
    "chunked",
]
LENGTHS = [0, 1, 12, 4096, 2**31, 2**63 - 1, 2**63, 2**64 - 1, 2**64]
STATUSES = [100, 103, 200, 200, 200, 201, 204, 206, 301, 304, 404, 500, 502, 599]


def mangle_case(rng: random.Random, name: str) -> str:
    style = rng.randrange(5)
    if style == 0:
        return name.lower()
    if style == 1:
        return name.upper()
    if style == 2:
        return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in name)
    return name


def header_value(rng: random.Random, name: str) -> str:
    lname = name.lower()
    if lname == "content-length":
        pad = ["", " ", "\t", " \t "]
        zeros = "0" * rng.choice([0, 0, 0, 1, 5, 25])
        return rng.choice(pad) + zeros + str(rng.choice(LENGTHS)) + rng.choice(pad)
    if lname in ("connection", "proxy-connection"):
        separators = [",", ", ", " , ", ",,"]
        tokens = [rng.choice(CONNECTION_TOKENS) for _ in range(rng.randrange(1, 4))]
        return rng.choice(separators).join(tokens)
    if lname == "transfer-encoding":
        return rng.choice(TRANSFER_CODINGS)
    return rng.choice(VALUES)


def generated_response(rng: random.Random) -> bytes:
    version = rng.choice(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"])
    status = rng.choice(STATUSES)
    reason = rng.choice([" OK", " Whatever Reason", " ", ""])
    # Half the heads stay on the fast path (no rare header), half mix in hop-by-hop ones.
    pool = ["Content-Length", "Connection", *COMMON_NAMES]
    if rng.random() < 0.5:
        pool += HOP_NAMES
    lines = []
    for _ in range(rng.randrange(0, 12)):
        name = mangle_case(rng, rng.choice(pool))
        # A space before the colon is refused by llhttp: it checks the filter as well.
        colon = " :" if rng.random() < 0.02 else rng.choice([":", ": ", ": ", ":  ", ":\t"])
        lines.append(name + colon + header_value(rng, name))
    return response(f"{version} {status}{reason}", *lines)


def generated_responses(seed: int, count: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    for _ in range(count):
        yield generated_response(rng)


# What sends parse_response_head onto its slow path (a copy of response._RARE).
SLOW_PATH = re.compile(
    rb"\n(?:keep-alive|proxy-[a-z-]*|te|trailer|transfer-encoding|upgrade|x-request-id)[ \t]*:"
)


def refused_or_identical(raw: bytes) -> bool:
    """True when C refuses raw with ValueError; otherwise asserts C == Python."""
    try:
        got = _speedups.response_head(raw, b"r", 200, False, True, True)
    except ValueError:
        return True
    assert got == py_response_head(raw, b"r", 200, False, True, True), raw
    return False


@pytest.mark.parametrize("seed", range(20))
def test_generated_response_heads_match_python(seed: int) -> None:
    rng = random.Random(seed * 7919)
    accepted = 0
    seen = {"fast": 0, "slow": 0, "chunked": 0, "length": 0, "named": 0}
    for raw in generated_responses(seed, 250):
        if not llhttp_accepts(raw):
            refused_or_identical(raw)
            continue
        accepted += 1
        request_id = rng.choice([b"rid-1", b"", b"a" * 128])
        head, _, length, chunked, _ = check_response(raw, request_id)
        low = raw.lower()
        seen["slow" if SLOW_PATH.search(low) else "fast"] += 1
        seen["chunked"] += chunked
        seen["length"] += length != -1
        seen["named"] += b"\nconnection:" in low and b"x-custom" in low and b"x-custom" not in head.lower()
    assert accepted >= 150, accepted
    assert min(seen.values()) >= 3, seen


def mutations(rng: random.Random, raw: bytes) -> Iterator[bytes]:
    data = bytearray(raw)
    for _ in range(8):
        choice = rng.randrange(5)
        at = rng.randrange(len(data) + 1)
        if choice == 0 and data:
            del data[min(at, len(data) - 1)]
        elif choice == 1:
            data[at:at] = bytes([rng.choice(b"\r\n: ,\t\x00\xffaZ")])
        elif choice == 2:
            data = data[:at]
        elif choice == 3:
            data[at:at] = b"\r\n"
        else:
            data[at:at] = rng.choice([b"\r\nConnection: x-custom", b"\r\nContent-Length: 1", b"\r\n\r\n"])
        yield bytes(data)


@pytest.mark.parametrize("seed", range(5))
def test_any_bytes_give_a_python_identical_head_or_value_error(seed: int) -> None:
    # C checks the structure llhttp guarantees and refuses what breaks it (ValueError), where
    # Python may answer with something odd; whenever C answers, the answer is Python's.
    rng = random.Random(seed)
    answered = refused = 0
    for raw in generated_responses(1000 + seed, 300):
        for mutated in mutations(rng, raw):
            if refused_or_identical(mutated):
                refused += 1
                assert not llhttp_accepts(mutated) or mutated[:1] in (b"\r", b"\n"), mutated
            else:
                answered += 1
    assert answered > 100
    assert refused > 100


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r\n\r\n",
        b"HTTP/1.\r\n\r\n",  # a status line shorter than "HTTP/1.1"
        b"HTTP/1.1 200 OK\r\n",  # no blank line
        b"HTTP/1.1 200 OK\r\nX: y\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\nb\r\n\r\n",  # bare LF
        b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",  # bare CR
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 12a\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        # int() would take these; llhttp refuses them first, and so does C.
        b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1_0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nUpgrade: x\r\nContent-Length: 0x10\r\n\r\n",
    ],
)
def test_malformed_response_heads_raise_value_error(raw: bytes) -> None:
    assert not llhttp_accepts(raw)
    with pytest.raises(ValueError):
        _speedups.response_head(raw, b"r", 200, False, True, True)


@pytest.mark.parametrize(
    "after",
    [b"\r", b"X: y\r\n\r\n", b"hello", b"\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", b"Content-Type: x\r\n"],
)
@pytest.mark.parametrize("name", ["nginx", "chunked", "http10-close-delimited", "no-headers", "interim"])
def test_bytes_after_the_head_are_not_looked_at(name: str, after: bytes) -> None:
    # The connection hands over the head with whatever was read with it (the start of the body).
    raw = FIXED_RESPONSES[name]
    for response_head in (_speedups.response_head, py_response_head):
        assert response_head(raw + after, b"r", 200, False, True, True) == response_head(
            raw, b"r", 200, False, True, True
        )


@pytest.mark.parametrize("prefix", [b"\r\n", b"\n", b"\r\n\r\n"])
def test_a_head_after_empty_lines_is_refused(prefix: bytes) -> None:
    # llhttp skips empty lines before a status line; parse_response_head takes the first 8 bytes
    # for "HTTP/1.x" and would send the client "HTTP/1.1HTTP/1.1 200 OK". C refuses instead.
    raw = prefix + FIXED_RESPONSES["nginx"]
    with pytest.raises(ValueError):
        _speedups.response_head(raw, b"r", 200, False, True, True)


# -- request_head ---------------------------------------------------------------------------------


def check_request(
    method: bytes,
    target: bytes,
    headers: Fields,
    forwarded_for: bytes,
    proto: bytes,
    request_id: bytes,
    extra: Fields,
    chunked: bool,
    content_length: int,
    masked: bool = False,
) -> bytes:
    args = (method, target, headers, forwarded_for, proto, request_id, extra, chunked, content_length, masked)
    expected = py_request_head(*args)
    assert _speedups.request_head(*args) == expected
    # The method may be given as RequestHead keeps it, a str.
    str_args = (method.decode("ascii"), *args[1:])
    assert _speedups.request_head(*str_args) == expected
    return expected


BROWSER = [
    (b"Host", b"api.example.com"),
    (b"User-Agent", b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"),
    (b"Accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    (b"Accept-Language", b"en-US,en;q=0.5"),
    (b"Accept-Encoding", b"gzip, deflate, br"),
    (b"Cookie", b"session=abc; theme=dark"),
]


@pytest.mark.parametrize(
    ("method", "target", "headers", "extra", "chunked", "content_length"),
    [
        (b"GET", b"/", BROWSER, [], False, -1),
        (b"GET", b"/api/items?q=1&r=%20", BROWSER, [(b"X-Auth-Subject", b"alice")], False, -1),
        (b"POST", b"/upload", [(b"Host", b"h")], [], False, 0),
        (b"POST", b"/upload", [(b"Host", b"h")], [], False, 1048576),
        (b"PUT", b"/x", [(b"host", b"h"), (b"content-type", b"a/b")], [], True, -1),
        (b"PUT", b"/x", [(b"Host", b"h")], [], True, 99),  # chunked wins, as in Python
        (b"PATCH", b"/x", [], [(b"X-Auth-Subject", b"s"), (b"X-Auth-Roles", b"a,b")], False, 2**63 - 1),
        (b"DELETE", b"/x", [], [], False, 2**63),
        (b"DELETE", b"/x", [], [], False, 2**64 - 1),
        (b"OPTIONS", b"/x", [], [], False, 10**40),
        (b"M-SEARCH", b"/", [(b"X-Empty", b"")], [], False, -1),
        (b"GET", b"", [], [], False, -1),
    ],
)
def test_fixed_request_heads_match_python(
    method: bytes, target: bytes, headers: Fields, extra: Fields, chunked: bool, content_length: int
) -> None:
    check_request(method, target, headers, b"203.0.113.9", b"https", b"rid-1", extra, chunked, content_length)


def test_request_head_layout() -> None:
    head = check_request(
        b"POST", b"/p?x", [(b"Host", b"h")], b"1.2.3.4, 10.0.0.1", b"https", b"id", [(b"X-A", b"1")], False, 5
    )
    assert head == (
        b"POST /p?x HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4, 10.0.0.1\r\n"
        b"X-Forwarded-Proto: https\r\nX-Request-Id: id\r\nX-A: 1\r\nContent-Length: 5\r\n\r\n"
    )


def test_a_masked_request_asks_for_a_whole_identity_document() -> None:
    headers = [
        (b"Host", b"h"),
        (b"accept-encoding", b"gzip"),
        (b"Range", b"bytes=0-9"),
        (b"X-Range", b"kept"),
        (b"IF-RANGE", b'"e"'),
        (b"Accept", b"application/json"),
    ]
    head = check_request(b"GET", b"/d", headers, b"a", b"http", b"id", [(b"X-A", b"1")], False, -1, True)
    assert head == (
        b"GET /d HTTP/1.1\r\nHost: h\r\nX-Range: kept\r\nAccept: application/json\r\n"
        b"X-Forwarded-For: a\r\nX-Forwarded-Proto: http\r\nX-Request-Id: id\r\nX-A: 1\r\n"
        b"Accept-Encoding: identity\r\n\r\n"
    )
    # Unmasked, all of them go through.
    assert check_request(b"GET", b"/d", headers, b"a", b"http", b"id", [], False, -1).count(b"\r\n") == 11


@pytest.mark.parametrize("trusted", [False, True])
@pytest.mark.parametrize("client_forwarded", [None, b"198.51.100.7"])
@pytest.mark.parametrize("client_proto", [None, b"https"])
def test_resolved_forwarding_matches_upstream_request_head(
    trusted: bool, client_forwarded: bytes | None, client_proto: bytes | None
) -> None:
    head = RequestHead("GET", b"/x", "/x", "1.1", list(BROWSER), True)
    head.forwarded_for = client_forwarded
    head.forwarded_proto = client_proto
    head.content_length = 3
    peer, proto, extra = b"10.0.0.5", b"http", [(b"X-Auth-Method", b"jwt")]
    expected = upstream_request_head(head, peer, trusted, proto, b"rid", extra)
    forwarded_for, final_proto = resolved_forwarding(head, peer, trusted, proto)
    got = _speedups.request_head(
        head.method,
        head.target,
        head.headers,
        forwarded_for,
        final_proto,
        b"rid",
        extra,
        head.chunked,
        3,
        False,
    )
    assert got == expected


TOKEN = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."


def random_bytes(rng: random.Random, alphabet: bytes, low: int, high: int) -> bytes:
    return bytes(rng.choice(alphabet) for _ in range(rng.randrange(low, high)))


def random_fields(rng: random.Random, count: int) -> Fields:
    value_alphabet = TOKEN + b" ,;=/\t\x80\xff"
    return [
        (random_bytes(rng, TOKEN, 1, 20), random_bytes(rng, value_alphabet, 0, 60))
        for _ in range(rng.randrange(count))
    ]


@pytest.mark.parametrize("seed", range(10))
def test_generated_request_heads_match_python(seed: int) -> None:
    rng = random.Random(seed)
    methods = [b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"HEAD", b"OPTIONS", b"M-SEARCH"]
    for _ in range(300):
        check_request(
            rng.choice(methods),
            b"/" + random_bytes(rng, TOKEN + b"/?&=%", 0, 80),
            random_fields(rng, 25),
            rng.choice([b"203.0.113.9", b"198.51.100.7, 10.0.0.1", b"", b"2001:db8::1"]),
            rng.choice([b"http", b"https", b""]),
            random_bytes(rng, TOKEN, 0, 129),
            random_fields(rng, 4),
            rng.random() < 0.2,
            rng.choice([-1, -1, 0, rng.randrange(10**6), 2**63 - 1, 2**63, 2**64 + 5, 10**30]),
            rng.random() < 0.3,
        )


# -- bad arguments ---------------------------------------------------------------------------------

RAW = FIXED_RESPONSES["nginx"]
GOOD_RESPONSE_ARGS = (RAW, b"rid", 200, False, True, True)
GOOD_REQUEST_ARGS = (b"GET", b"/", [(b"Host", b"h")], b"1.2.3.4", b"http", b"rid", [], False, -1, False)


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (0, RAW.decode("latin-1")),
        (0, bytearray(RAW)),
        (0, memoryview(RAW)),
        (0, None),
        (1, "rid"),
        (1, None),
        (2, "200"),
        (2, 200.0),
        (2, None),
        (3, 0),
        (3, None),
        (4, "1.1"),  # exchange.head.version would be truthy for "1.0" too
        (4, 1),
        (5, "yes"),
    ],
)
def test_response_head_rejects_wrong_types(index: int, value: object) -> None:
    args = list(GOOD_RESPONSE_ARGS)
    args[index] = value
    with pytest.raises(TypeError):
        _speedups.response_head(*args)


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (0, None),
        (0, 1),
        (0, bytearray(b"GET")),
        (1, "/"),
        (1, None),
        (2, None),
        (2, {b"Host": b"h"}),
        (2, [(b"Host",)]),
        (2, [(b"Host", b"h", b"x")]),
        (2, [[b"Host", b"h"]]),
        (2, [(b"Host", "h")]),
        (2, [("Host", b"h")]),
        (2, [b"Host: h"]),
        (2, [(b"A", b"1"), None]),
        (3, "1.2.3.4"),
        (4, None),
        (5, "rid"),
        (6, None),
        (6, [(b"X", None)]),
        (7, 1),
        (7, None),
        (8, None),
        (8, "5"),
        (8, 5.0),
        (9, 1),
        (9, None),
    ],
)
def test_request_head_rejects_wrong_types(index: int, value: object) -> None:
    args = list(GOOD_REQUEST_ARGS)
    args[index] = value
    with pytest.raises(TypeError):
        _speedups.request_head(*args)


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (0, "GÉT"),  # as str.encode("ascii") would
        (8, -2),
        (8, -(2**70)),
    ],
)
def test_request_head_rejects_bad_values(index: int, value: object) -> None:
    args = list(GOOD_REQUEST_ARGS)
    args[index] = value
    with pytest.raises(ValueError):
        _speedups.request_head(*args)


def test_argument_count_and_keywords_are_checked() -> None:
    with pytest.raises(TypeError):
        _speedups.response_head(*GOOD_RESPONSE_ARGS[:5])
    with pytest.raises(TypeError):
        _speedups.response_head(*GOOD_RESPONSE_ARGS, None)
    with pytest.raises(TypeError):
        _speedups.request_head(*GOOD_REQUEST_ARGS[:9])
    with pytest.raises(TypeError):
        _speedups.response_head(*GOOD_RESPONSE_ARGS[:5], keep_alive=True)


def test_headers_may_be_a_tuple_and_items_bytes_subclasses() -> None:
    class Name(bytes):
        pass

    headers = ((Name(b"Host"), b"h"),)
    got = _speedups.request_head(b"GET", b"/", headers, b"a", b"http", b"r", (), False, -1, False)
    assert got == py_request_head(b"GET", b"/", list(headers), b"a", b"http", b"r", [], False, -1)


# -- memory ----------------------------------------------------------------------------------------


def test_no_memory_is_leaked_on_any_path() -> None:
    raws = [
        FIXED_RESPONSES["nginx"],  # fast path
        FIXED_RESPONSES["connection-names"],  # slow path with the named set
        FIXED_RESPONSES["length-leading-zeros"],  # a length over 18 digits
        b"HTTP/1.1 200 OK\r\nConnection: x\r\nContent-Length: 1x\r\n\r\n",  # error after the set
    ]
    requests = [
        GOOD_REQUEST_ARGS,
        (b"GET", b"/", BROWSER, b"a", b"http", b"r", [], False, 10**30, True),
        (b"GET", b"/", [(b"A", b"1"), None], b"a", b"http", b"r", [], False, 10**30, False),  # error
    ]

    def run() -> None:
        for raw in raws:
            with contextlib.suppress(ValueError):
                _speedups.response_head(raw, b"rid", 200, False, True, True)
        for args in requests:
            with contextlib.suppress(TypeError):
                _speedups.request_head(*args)

    run()
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(2000):
            run()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 20_000, grown  # one leaked object per call would be well over 100 kB


# -- media_fields --------------------------------------------------------------------------------------

MEDIA_NAMES = [
    "Content-Type",
    "content-type",
    "CONTENT-ENCODING",
    "Content-Encoding",
    "Content-Types",
    "X-Content-Type",
    "Content-Typ",
    "Content-Encodings",
    "Content-Length",
    "Server",
]
MEDIA_VALUES = [
    "application/json",
    " application/json ",
    "\ta/b+json; charset=utf-8",
    "",
    "gzip",
    "identity ",
    "x\ty",
]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (response("HTTP/1.1 200 OK"), (None, None)),
        (response("HTTP/1.1 200 OK", "Content-Type: application/json"), (b"application/json", None)),
        (response("HTTP/1.1 200 OK", "content-encoding:\tgzip \t", "CONTENT-TYPE:x/y"), (b"x/y", b"gzip")),
        (response("HTTP/1.1 200 OK", "Content-Type: a/b", "Content-Type: c/d"), (b"a/b", None)),  # the first
        (response("HTTP/1.1 200 OK", "X-Content-Type: a/b", "Content-Types: c/d"), (None, None)),
        (response("HTTP/1.1 200 OK", "Content-Type:"), (b"", None)),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: br", (None, b"br")),  # no CRLF after it: to the end
    ],
)
def test_media_fields_fixed(raw: bytes, expected: tuple[bytes | None, bytes | None]) -> None:
    assert _speedups.media_fields(raw) == expected
    if raw.endswith(b"\r\n\r\n"):
        assert media_fields_reference(raw) == expected


@pytest.mark.parametrize("seed", range(5))
def test_media_fields_match_python_on_generated_heads(seed: int) -> None:
    rng = random.Random(seed)
    found = 0
    for _ in range(400):
        names = [mangle_case(rng, rng.choice(MEDIA_NAMES)) for _ in range(rng.randrange(0, 6))]
        lines = [name + rng.choice([":", ": ", ":\t"]) + rng.choice(MEDIA_VALUES) for name in names]
        raw = response(rng.choice(["HTTP/1.1 200 OK", "HTTP/1.0 404 Content-Type: no"]), *lines)
        if not llhttp_accepts(raw):
            continue
        expected = media_fields_reference(raw)
        assert _speedups.media_fields(raw) == expected, raw
        found += expected != (None, None)
    assert found > 100  # the generator does reach the fields


def test_media_fields_takes_bytes_only() -> None:
    with pytest.raises(TypeError):
        _speedups.media_fields("HTTP/1.1 200 OK\r\n\r\n")  # type: ignore[arg-type]
