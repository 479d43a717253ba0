"""The C scan_request against the pure-Python parse_head, decision for decision.

Both sides are reduced to a comparable outcome: ``("ok", fields)`` with the ten values parse_head
puts on the RequestHead, ``("error", status, reason)`` for a refusal (ProtocolError in Python,
HeadError in C), or ``("raised", type, message)`` for anything else either side raises (int()
refusing a Content-Length llhttp would not have passed). Heads come from the raw-request corpus
(parsed by llhttp as RequestParser does), a fixed list of tricky ones and a seeded generator; the
C must also survive, and agree on, header bytes llhttp never hands over.
"""

from __future__ import annotations

import contextlib
import gc
import random
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httptools
import pytest

from fastproxy.http import _speedups, request
from fastproxy.http.errors import ProtocolError

Fields = list[tuple[bytes, bytes]]
Outcome = tuple[Any, ...]

# parse_head is the reference while it is pure Python; once it calls scan_request, its Python twin.
reference: Callable[..., request.RequestHead] = getattr(request, "parse_head_reference", request.parse_head)

FIELDS = (
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
    "authorization",
    "api_key",
)
LIMIT = 1000  # tests/http/test_request.py's max_body_bytes
CREDENTIAL = b"x-api-key"  # the API key header every differential check names
CORPUS = Path(__file__).parent / "requests"
CORPUS_FILES = sorted(CORPUS.glob("*/*.http"))


def py_outcome(*args: Any) -> Outcome:
    try:
        head = reference(*args)
    except ProtocolError as exc:
        return ("error", exc.status, exc.reason)
    except Exception as exc:
        return ("raised", type(exc), str(exc))
    return ("ok", tuple(getattr(head, name) for name in FIELDS))


def c_outcome(*args: Any) -> Outcome:
    try:
        got = _speedups.scan_request(*args)
    except _speedups.HeadError as exc:
        status, reason, detail = exc.args
        assert isinstance(detail, str) and detail
        return ("error", status, reason)
    except Exception as exc:
        return ("raised", type(exc), str(exc))
    return ("ok", got)


def shape(value: Any) -> Any:
    """Types as well as values: 0 must not pass for False, nor a list of lists for one of tuples."""
    if isinstance(value, list | tuple):
        return type(value), [shape(item) for item in value]
    return type(value), value


def check(
    method: str,
    url: bytes,
    version: str,
    headers: Fields,
    keep_alive: bool = True,
    max_body_bytes: int = LIMIT,
    credential_header: bytes | None = CREDENTIAL,
) -> Outcome:
    args = (method, url, version, headers, keep_alive, max_body_bytes, credential_header)
    expected = py_outcome(*args)
    got = c_outcome(*args)
    assert shape(got) == shape(expected), args
    return got


# -- the corpus ------------------------------------------------------------------------------------


class _Heads:
    """httptools callbacks that keep, for each head llhttp completes, parse_head's arguments."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: Fields = []
        self.heads: list[tuple[str, bytes, str, Fields, bool]] = []

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        # As RequestParser.on_headers_complete calls parse_head.
        parser = self.parser
        method = parser.get_method().decode("ascii")
        keep_alive = parser.should_keep_alive()
        self.heads.append((method, self.url, parser.get_http_version(), self.headers, keep_alive))


def corpus_heads(path: Path) -> list[tuple[str, bytes, str, Fields, bool]]:
    """Every head of the file llhttp accepts; those after (or in) what it refuses are skipped."""
    heads = _Heads()
    with contextlib.suppress(httptools.HttpParserUpgrade, httptools.HttpParserError):
        heads.parser.feed_data(path.read_bytes())
    return heads.heads


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_corpus_heads_match_python(path: Path) -> None:
    for method, url, version, headers, keep_alive in corpus_heads(path):
        for limit in (LIMIT, 0, 2**63):
            got = check(method, url, version, headers, keep_alive, limit)
            if path.parent.name == "valid" and limit == LIMIT:
                assert got[0] == "ok", got


def test_the_corpus_gives_heads_of_every_outcome() -> None:
    outcomes = set()
    for path in CORPUS_FILES:
        for method, url, version, headers, keep_alive in corpus_heads(path):
            got = c_outcome(method, url, version, headers, keep_alive, LIMIT, CREDENTIAL)
            outcomes.add(got[:3] if got[0] == "error" else got[0])
    expected = {"bad_version", "bad_target", "bad_path", "bad_host", "bad_expect", "bad_framing", "too_large"}
    assert "ok" in outcomes
    assert expected <= {outcome[2] for outcome in outcomes if outcome[0] == "error"}, outcomes


# -- fixed heads -----------------------------------------------------------------------------------

H = [(b"Host", b"a.example")]
TRICKY: dict[str, tuple[str, bytes, str, Fields]] = {
    # Credentials: taken out of the headers into their own fields.
    "authorization": ("GET", b"/", "1.1", [*H, (b"Authorization", b"Bearer t"), (b"X-A", b"1")]),
    "authorization-upper": ("GET", b"/", "1.1", [(b"AUTHORIZATION", b"Basic x"), *H]),
    "authorization-repeated": ("GET", b"/", "1.1", [*H, (b"Authorization", b"a"), (b"authorization", b"b")]),
    "api-key": ("GET", b"/", "1.1", [*H, (b"X-Api-Key", b"k1"), (b"X-Api-Keys", b"no")]),
    "api-key-repeated": ("GET", b"/", "1.1", [*H, (b"x-api-key", b"a"), (b"X-API-KEY", b"b")]),
    "api-key-named-by-connection": (
        "GET",
        b"/",
        "1.1",
        [*H, (b"Connection", b"x-api-key"), (b"x-api-key", b"k")],
    ),
    "both-credentials": ("GET", b"/", "1.1", [(b"x-api-key", b"k"), *H, (b"Authorization", b"Bearer t")]),
    # Absolute form.
    "absolute": ("GET", b"http://a.example/x?y=1", "1.1", H),
    "absolute-upper-scheme": ("GET", b"HTTP://A.Example/x", "1.1", H),
    "absolute-https": ("GET", b"https://a.example:8443/p#frag", "1.1", H),
    "absolute-https-mixed-case": ("GET", b"hTtPs://a.example", "1.1", H),
    "absolute-empty-path": ("GET", b"http://a.example", "1.1", H),
    "absolute-empty-path-query": ("GET", b"http://a.example?q=1&r=/../x", "1.1", H),
    "absolute-empty-path-fragment": ("GET", b"http://a.example#/../x", "1.1", H),
    "absolute-query-then-fragment": ("GET", b"http://a.example?q#f", "1.1", H),
    "absolute-port": ("GET", b"http://a.example:80/", "1.1", H),
    "absolute-empty-port": ("GET", b"http://a.example:/", "1.1", H),
    "absolute-two-ports": ("GET", b"http://a.example:80:90/", "1.1", H),
    "absolute-bad-port": ("GET", b"http://a.example:8o/", "1.1", H),
    "absolute-userinfo": ("GET", b"http://user:pw@a.example/", "1.1", H),
    "absolute-at-in-path": ("GET", b"http://a.example/@me", "1.1", H),
    "absolute-ipv6": ("GET", b"http://[::1]:8080/x", "1.1", H),
    "absolute-ipv6-no-port": ("GET", b"http://[2001:db8::1]/x", "1.1", H),
    "absolute-ipv6-unclosed": ("GET", b"http://[::1/x", "1.1", H),
    "absolute-ipv6-empty": ("GET", b"http://[]/x", "1.1", H),
    "absolute-ipv6-zone": ("GET", b"http://[fe80::1%25en0]/x", "1.1", H),
    "absolute-empty-authority": ("GET", b"http:///x", "1.1", H),
    "absolute-scheme-only": ("GET", b"https://", "1.1", H),
    "absolute-percent-authority": ("GET", b"http://a%41.example/", "1.1", H),
    "absolute-space-authority": ("GET", b"http://a b/", "1.1", H),
    "absolute-backslash-authority": ("GET", b"http://a.example\\x/", "1.1", H),
    "absolute-dots-authority": ("GET", b"http://a.example../", "1.1", H),
    "absolute-dot-segment": ("GET", b"http://a.example/a/../b", "1.1", H),
    "absolute-without-host": ("GET", b"http://a.example/", "1.1", []),
    "absolute-without-host-http10": ("GET", b"http://a.example/", "1.0", []),
    "absolute-bad-host-header": ("GET", b"http://a.example/", "1.1", [(b"Host", b"bad host")]),
    "absolute-lowercase-host-header": ("GET", b"http://b/", "1.1", [(b"X-A", b"1"), (b"host", b"a")]),
    "asterisk": ("OPTIONS", b"*", "1.1", H),
    "authority-form": ("CONNECT", b"a.example:443", "1.1", H),
    "empty-target": ("GET", b"", "1.1", H),
    "ftp": ("GET", b"ftp://a.example/", "1.1", H),
    "scheme-relative": ("GET", b"//a.example/x", "1.1", H),
    "http-one-slash": ("GET", b"http:/a.example/x", "1.1", H),
    # Dot segments, plain and encoded.
    "dot-dot": ("GET", b"/a/../b", "1.1", H),
    "dot": ("GET", b"/a/./b", "1.1", H),
    "dot-dot-only": ("GET", b"/..", "1.1", H),
    "dot-only": ("GET", b"/.", "1.1", H),
    "dot-dot-end": ("GET", b"/a/..", "1.1", H),
    "three-dots": ("GET", b"/a/.../b", "1.1", H),
    "three-dots-end": ("GET", b"/a/...", "1.1", H),
    "dots-in-names": ("GET", b"/a/..b/c../.d/e.", "1.1", H),
    "encoded-lower": ("GET", b"/a/%2e%2e/b", "1.1", H),
    "encoded-upper": ("GET", b"/a/%2E%2E/b", "1.1", H),
    "encoded-half": ("GET", b"/a/.%2E/b", "1.1", H),
    "encoded-single": ("GET", b"/a/%2e/b", "1.1", H),
    "encoded-three": ("GET", b"/a/%2e%2e%2e/b", "1.1", H),
    "encoded-slash": ("GET", b"/a%2f..%2fb", "1.1", H),
    "encoded-slash-upper": ("GET", b"/a%2F..", "1.1", H),
    "encoded-backslash": ("GET", b"/a%5c..%5cb", "1.1", H),
    "encoded-backslash-upper": ("GET", b"/a%5C.", "1.1", H),
    "double-encoded": ("GET", b"/a/%252e%252e/b", "1.1", H),
    "percent-percent": ("GET", b"/a/%%2e%2e/b", "1.1", H),
    "percent-at-end": ("GET", b"/a/..%", "1.1", H),
    "percent-two-at-end": ("GET", b"/a/..%2", "1.1", H),
    "percent-other": ("GET", b"/a/%2d%2d/b%41", "1.1", H),
    "backslash": ("GET", b"/a\\..\\b", "1.1", H),
    "backslash-dot-end": ("GET", b"/a\\.", "1.1", H),
    "backslash-no-dots": ("GET", b"/a\\b", "1.1", H),
    "dots-in-query": ("GET", b"/a?x=/../b", "1.1", H),
    "dots-in-fragment": ("GET", b"/a#/../b", "1.1", H),
    "fragment-then-query": ("GET", b"/a#x?/../b", "1.1", H),
    "dot-dot-newline-end": ("GET", b"/a/..\n", "1.1", H),
    "dot-newline-end": ("GET", b"/.\n", "1.1", H),
    "dot-dot-newline-middle": ("GET", b"/a/..\nb", "1.1", H),
    "dot-dot-encoded-newline": ("GET", b"/a/..%0a", "1.1", H),
    "dot-dot-cr-end": ("GET", b"/a/..\r", "1.1", H),
    "latin-1-path": ("GET", b"/caf\xe9/\xff?\x80", "1.1", H),
    # Host.
    "host-port": ("GET", b"/", "1.1", [(b"Host", b"a.example:8080")]),
    "host-ipv6": ("GET", b"/", "1.1", [(b"Host", b"[::1]")]),
    "host-ipv6-port": ("GET", b"/", "1.1", [(b"Host", b"[2001:DB8::1]:443")]),
    "host-ipv4-in-ipv6": ("GET", b"/", "1.1", [(b"Host", b"[::ffff:192.0.2.1]")]),
    "host-ipv6-unbracketed": ("GET", b"/", "1.1", [(b"Host", b"::1")]),
    "host-ipv6-unclosed": ("GET", b"/", "1.1", [(b"Host", b"[::1")]),
    "host-ipv6-trailing": ("GET", b"/", "1.1", [(b"Host", b"[::1]x")]),
    "host-ipv6-vfuture": ("GET", b"/", "1.1", [(b"Host", b"[v1.fe80::a+en1]")]),
    "host-ipv6-empty-port": ("GET", b"/", "1.1", [(b"Host", b"[::1]:")]),
    "host-empty": ("GET", b"/", "1.1", [(b"Host", b"")]),
    "host-port-only": ("GET", b"/", "1.1", [(b"Host", b":80")]),
    "host-empty-port": ("GET", b"/", "1.1", [(b"Host", b"a.example:")]),
    "host-bad-port": ("GET", b"/", "1.1", [(b"Host", b"a.example:8o")]),
    "host-two-ports": ("GET", b"/", "1.1", [(b"Host", b"a:1:2")]),
    "host-space": ("GET", b"/", "1.1", [(b"Host", b"a example")]),
    "host-slash": ("GET", b"/", "1.1", [(b"Host", b"a/b")]),
    "host-at": ("GET", b"/", "1.1", [(b"Host", b"u@a")]),
    "host-nul": ("GET", b"/", "1.1", [(b"Host", b"a\x00b")]),
    "host-newline-end": ("GET", b"/", "1.1", [(b"Host", b"a.example\n")]),
    "host-non-ascii": ("GET", b"/", "1.1", [(b"Host", b"caf\xc3\xa9.example")]),
    "host-sub-delims": ("GET", b"/", "1.1", [(b"Host", b"a_b~!$&'()*+,;=%-.Z9")]),
    "host-upper-name": ("GET", b"/", "1.1", [(b"HOST", b"a")]),
    "host-repeated": ("GET", b"/", "1.1", [(b"Host", b"a"), (b"Host", b"a")]),
    "host-repeated-case": ("GET", b"/", "1.1", [(b"Host", b"a"), (b"X", b"1"), (b"hOsT", b"b")]),
    "host-repeated-http10": ("GET", b"/", "1.0", [(b"Host", b"a"), (b"host", b"b")]),
    "host-repeated-absolute": ("GET", b"http://a/", "1.1", [(b"Host", b"a"), (b"Host", b"a")]),
    "host-missing": ("GET", b"/", "1.1", [(b"Accept", b"*/*")]),
    "host-missing-http10": ("GET", b"/", "1.0", [(b"Accept", b"*/*")]),
    "host-bad-http10": ("GET", b"/", "1.0", [(b"Host", b"a b")]),
    "hosts-is-not-host": ("GET", b"/", "1.1", [(b"Hosts", b"a"), (b"Host", b"b")]),
    # X-Request-Id.
    "request-id": ("GET", b"/", "1.1", [*H, (b"X-Request-Id", b"abc-123_.XYZ")]),
    "request-id-space": ("GET", b"/", "1.1", [*H, (b"X-Request-Id", b"abc 123")]),
    "request-id-empty": ("GET", b"/", "1.1", [*H, (b"x-request-id", b"")]),
    "request-id-128": ("GET", b"/", "1.1", [*H, (b"X-Request-Id", b"a" * 128)]),
    "request-id-129": ("GET", b"/", "1.1", [*H, (b"X-Request-Id", b"a" * 129)]),
    "request-id-newline": ("GET", b"/", "1.1", [*H, (b"X-Request-Id", b"abc\n")]),
    "request-id-good-then-bad": (
        "GET",
        b"/",
        "1.1",
        [*H, (b"X-Request-Id", b"good"), (b"X-REQUEST-ID", b"b@d")],
    ),
    "request-id-bad-then-good": (
        "GET",
        b"/",
        "1.1",
        [*H, (b"X-Request-Id", b"b@d"), (b"X-Request-Id", b"ok")],
    ),
    # X-Forwarded-* and X-Auth-*.
    "forwarded-for": ("GET", b"/", "1.1", [*H, (b"X-Forwarded-For", b"198.51.100.7")]),
    "forwarded-for-joined": (
        "GET",
        b"/",
        "1.1",
        [
            *H,
            (b"X-Forwarded-For", b"1.1.1.1"),
            (b"x-forwarded-for", b"2.2.2.2, 3.3.3.3"),
            (b"X-Forwarded-For", b""),
        ],
    ),
    "forwarded-proto": (
        "GET",
        b"/",
        "1.1",
        [*H, (b"X-Forwarded-Proto", b"http"), (b"X-FORWARDED-PROTO", b"https")],
    ),
    "forwarded-others-dropped": (
        "GET",
        b"/",
        "1.1",
        [
            *H,
            (b"X-Forwarded-Host", b"evil"),
            (b"X-Forwarded-Port", b"1"),
            (b"x-forwarded-prefix", b"/admin"),
            (b"X-Forwarded-", b"x"),
            (b"X-Forwardedfor", b"kept"),
            (b"X-Forwarded", b"kept"),
        ],
    ),
    "auth-dropped": (
        "GET",
        b"/",
        "1.1",
        [
            *H,
            (b"X-Auth-Subject", b"admin"),
            (b"X-Auth-Roles", b"root"),
            (b"x-auth-method", b"none"),
            (b"X-Auth-Anything", b"x"),
            (b"X-Auth-", b"x"),
            (b"X-Auth", b"kept"),
            (b"X-Authorization", b"kept"),
        ],
    ),
    # Connection.
    "connection-close": ("GET", b"/", "1.1", [*H, (b"Connection", b"close")]),
    "connection-names": (
        "GET",
        b"/",
        "1.1",
        [
            *H,
            (b"Connection", b"keep-alive, X-A, x-b"),
            (b"X-A", b"1"),
            (b"x-a", b"2"),
            (b"X-B", b"3"),
            (b"X-C", b"4"),
        ],
    ),
    "connection-mixed-case": (
        "GET",
        b"/",
        "1.1",
        [*H, (b"CONNECTION", b"CLOSE, X-MiXeD"), (b"x-mixed", b"1"), (b"X-Kept", b"2")],
    ),
    "connection-repeated": (
        "GET",
        b"/",
        "1.1",
        [*H, (b"Connection", b"X-A"), (b"X-A", b"1"), (b"X-B", b"2"), (b"connection", b"x-b, close")],
    ),
    "connection-empty-tokens": ("GET", b"/", "1.1", [*H, (b"Connection", b" , ,,"), (b"X-A", b"1")]),
    "connection-empty": ("GET", b"/", "1.1", [*H, (b"Connection", b"")]),
    "connection-whitespace": (
        "GET",
        b"/",
        "1.1",
        [*H, (b"Connection", b"\tX-A \x0b,\x0cX-B\r"), (b"X-A", b"1"), (b"X-B", b"2")],
    ),
    "connection-names-host": ("GET", b"/", "1.1", [*H, (b"Connection", b"Host"), (b"X", b"1")]),
    "connection-names-host-absolute": ("GET", b"http://b.example/", "1.1", [*H, (b"Connection", b"host")]),
    "connection-names-dropped": (
        "GET",
        b"/",
        "1.1",
        [
            *H,
            (b"Connection", b"upgrade, x-request-id, te"),
            (b"Upgrade", b"websocket"),
            (b"X-Request-Id", b"r"),
        ],
    ),
    "connection-inner-space": ("GET", b"/", "1.1", [*H, (b"Connection", b"x a"), (b"x a", b"1")]),
    "connection-many-tokens": (
        "GET",
        b"/",
        "1.1",
        [
            *H,
            (b"Connection", b",".join(b"X-%d" % i for i in range(40))),
            *((b"x-%d" % i, b"v") for i in range(45)),
        ],
    ),
    "hop-by-hop": (
        "GET",
        b"/",
        "1.1",
        [
            *H,
            (b"Keep-Alive", b"timeout=5"),
            (b"Proxy-Connection", b"keep-alive"),
            (b"TE", b"trailers"),
            (b"Trailer", b"X-Sum"),
            (b"Proxy-Authorization", b"Basic x"),
            (b"Proxy-Authenticate", b"kept"),
            (b"Upgrade-Insecure-Requests", b"1"),
        ],
    ),
    # Transfer-Encoding.
    "te-chunked": ("POST", b"/", "1.1", [*H, (b"Transfer-Encoding", b"chunked")]),
    "te-chunked-case-space": ("POST", b"/", "1.1", [*H, (b"transfer-encoding", b" ChUnKeD\t")]),
    "te-chunked-chunked": ("POST", b"/", "1.1", [*H, (b"Transfer-Encoding", b"chunked, chunked")]),
    "te-chunked-twice": (
        "POST",
        b"/",
        "1.1",
        [*H, (b"Transfer-Encoding", b"chunked"), (b"Transfer-Encoding", b"chunked")],
    ),
    "te-chunked-then-empty": ("POST", b"/", "1.1", [*H, (b"Transfer-Encoding", b"chunked"), (b"TE", b"x")]),
    "te-gzip-chunked": ("POST", b"/", "1.1", [*H, (b"Transfer-Encoding", b"gzip, chunked")]),
    "te-identity": ("POST", b"/", "1.1", [*H, (b"Transfer-Encoding", b"identity")]),
    "te-empty": ("POST", b"/", "1.1", [*H, (b"Transfer-Encoding", b"")]),
    "te-http10": ("POST", b"/", "1.0", [(b"Transfer-Encoding", b"chunked")]),
    "te-and-length": (
        "POST",
        b"/",
        "1.1",
        [*H, (b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"5")],
    ),
    # Expect.
    "expect-continue": ("PUT", b"/", "1.1", [*H, (b"Expect", b"100-continue"), (b"Content-Length", b"5")]),
    "expect-continue-case": ("PUT", b"/", "1.1", [*H, (b"expect", b" 100-Continue ")]),
    "expect-http10": ("PUT", b"/", "1.0", [(b"Expect", b"100-continue")]),
    "expect-bad": ("PUT", b"/", "1.1", [*H, (b"Expect", b"200-ok")]),
    "expect-bad-http10": ("PUT", b"/", "1.0", [(b"Expect", b"200-ok")]),
    "expect-empty": ("PUT", b"/", "1.1", [*H, (b"Expect", b"")]),
    "expect-list": ("PUT", b"/", "1.1", [*H, (b"Expect", b"100-continue, foo")]),
    "expect-repeated": ("PUT", b"/", "1.1", [*H, (b"Expect", b"100-continue"), (b"Expect", b"100-continue")]),
    # Upgrade.
    "upgrade": ("GET", b"/ws", "1.1", [*H, (b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")]),
    "upgrade-length-zero": ("GET", b"/ws", "1.1", [*H, (b"Upgrade", b"h2c"), (b"Content-Length", b" 0 ")]),
    "upgrade-length": ("POST", b"/ws", "1.1", [*H, (b"Upgrade", b"h2c"), (b"Content-Length", b"5")]),
    "upgrade-chunked": ("POST", b"/ws", "1.1", [*H, (b"Transfer-Encoding", b"chunked"), (b"upgrade", b"x")]),
    "upgrade-empty": ("GET", b"/ws", "1.1", [*H, (b"Upgrade", b"")]),
    # Content-Length.
    "length-at-limit": ("POST", b"/", "1.1", [*H, (b"Content-Length", b"1000")]),
    "length-over-limit": ("POST", b"/", "1.1", [*H, (b"Content-Length", b"1001")]),
    "length-spaces": ("POST", b"/", "1.1", [*H, (b"Content-Length", b"  12 \t")]),
    "length-all-whitespace": ("POST", b"/", "1.1", [*H, (b"Content-Length", b"\x0b7\x0c\r\n")]),
    "length-zeros": ("POST", b"/", "1.1", [*H, (b"Content-Length", b"0000")]),
    "length-leading-zeros": ("POST", b"/", "1.1", [*H, (b"Content-Length", b"0" * 30 + b"12")]),
    "length-18-digits": ("POST", b"/", "1.1", [*H, (b"Content-Length", b"999999999999999999")]),
    "length-19-digits": ("POST", b"/", "1.1", [*H, (b"Content-Length", b"9999999999999999999")]),
    "length-huge": ("POST", b"/", "1.1", [*H, (b"Content-Length", b"9" * 40)]),
    "length-repeated": ("POST", b"/", "1.1", [*H, (b"Content-Length", b"5000"), (b"Content-Length", b"5")]),
    "length-plus": ("POST", b"/", "1.1", [*H, (b"Content-Length", b"+5")]),
    "length-minus": ("POST", b"/", "1.1", [*H, (b"Content-Length", b"-5")]),
    "length-minus-upgrade": ("POST", b"/", "1.1", [*H, (b"Content-Length", b"-5"), (b"Upgrade", b"x")]),
    "length-underscore": ("POST", b"/", "1.1", [*H, (b"Content-Length", b"1_000")]),
    "length-hex": ("POST", b"/", "1.1", [*H, (b"Content-Length", b"0x10")]),
    "length-empty": ("POST", b"/", "1.1", [*H, (b"Content-Length", b"")]),
    "length-inner-space": ("POST", b"/", "1.1", [*H, (b"Content-Length", b"1 2")]),
    "length-letters": ("POST", b"/", "1.1", [*H, (b"Content-Length", b"abc")]),
    "length-nul": ("POST", b"/", "1.1", [*H, (b"Content-Length", b"1\x00")]),
    "length-non-ascii": ("POST", b"/", "1.1", [*H, (b"Content-Length", b"\xd9\xa3")]),
    # Versions.
    "http10-no-host": ("GET", b"/", "1.0", []),
    "http09": ("GET", b"/", "0.9", H),
    "http20": ("GET", b"/", "2.0", H),
    "http12": ("GET", b"/", "1.2", H),
    "version-empty": ("GET", b"/", "", H),
    "version-padded": ("GET", b"/", "1.1 ", H),
    # Several faults at once: the first in parse_head's order wins.
    "fault-version-and-target": ("GET", b"*", "2.0", [(b"Host", b"a"), (b"Host", b"b")]),
    "fault-target-and-host": ("GET", b"ftp://x/", "1.1", [(b"Host", b"a"), (b"Host", b"b")]),
    "fault-path-and-host": ("GET", b"/../x", "1.1", [(b"Host", b"a"), (b"Host", b"b")]),
    "fault-host-then-expect": ("PUT", b"/", "1.1", [(b"Host", b"a"), (b"Host", b"b"), (b"Expect", b"x")]),
    "fault-expect-then-host": ("PUT", b"/", "1.1", [(b"Host", b"a"), (b"Expect", b"x"), (b"Host", b"b")]),
    "fault-length-then-host": (
        "PUT",
        b"/",
        "1.1",
        [(b"Host", b"a"), (b"Content-Length", b"x"), (b"Host", b"b")],
    ),
    "fault-host-then-length": (
        "PUT",
        b"/",
        "1.1",
        [(b"Host", b"a"), (b"Host", b"b"), (b"Content-Length", b"x")],
    ),
    "fault-framing-and-no-host": ("POST", b"/", "1.1", [(b"Transfer-Encoding", b"gzip")]),
    "fault-no-host-and-upgrade": ("POST", b"/", "1.1", [(b"Upgrade", b"x"), (b"Content-Length", b"9999")]),
    "fault-bad-host-and-upgrade": (
        "POST",
        b"/",
        "1.1",
        [(b"Host", b"a b"), (b"Upgrade", b"x"), (b"TE", b"x")],
    ),
    "fault-upgrade-and-too-large": (
        "POST",
        b"/",
        "1.1",
        [*H, (b"Upgrade", b"x"), (b"Content-Length", b"9999")],
    ),
    "fault-expect-http10-framing": (
        "POST",
        b"/",
        "1.0",
        [(b"Expect", b"nope"), (b"Transfer-Encoding", b"chunked")],
    ),
    # Names keep their case; everything else is passed on in order.
    "browser": (
        "GET",
        b"/api/v1/items?page=2",
        "1.1",
        [
            (b"Host", b"api.example.com"),
            (b"User-Agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"),
            (b"accept", b"application/json"),
            (b"ACCEPT-ENCODING", b"gzip, deflate, br"),
            (b"Cookie", b"a=1"),
            (b"cookie", b"b=2"),
            (b"X-Empty", b""),
            (b"X-Obs", b"\x80\xff"),
        ],
    ),
    "many-headers": ("GET", b"/", "1.1", [*H, *((b"X-H%d" % i, b"%d" % i) for i in range(100))]),
}


@pytest.mark.parametrize("name", sorted(TRICKY))
def test_tricky_heads_match_python(name: str) -> None:
    method, url, version, headers = TRICKY[name]
    for keep_alive in (True, False):
        check(method, url, version, list(headers), keep_alive)
    check(method, url, version, list(headers), True, 0)
    check(method, url, version, list(headers), True, 2**70)


def test_what_the_two_agree_on_is_right() -> None:
    # The differential tests prove the two agree; these pin down a few of the answers.
    assert check("GET", b"HTTP://A.Example?q#f", "1.1", [(b"X-A", b"1"), (b"host", b"b")]) == (
        "ok",
        (
            b"/?q",
            "/",
            [(b"Host", b"A.Example"), (b"X-A", b"1")],
            None,
            False,
            b"A.Example",
            None,
            None,
            None,
            False,
            None,
            None,
        ),
    )
    outcome = check("GET", *TRICKY["connection-names"][1:])
    assert outcome[1][2] == [(b"Host", b"a.example"), (b"X-C", b"4")]
    assert check("GET", *TRICKY["forwarded-for-joined"][1:])[1][7] == b"1.1.1.1, 2.2.2.2, 3.3.3.3, "
    assert check("POST", *TRICKY["te-chunked-case-space"][1:])[1][3:5] == (None, True)
    assert check("POST", *TRICKY["length-spaces"][1:])[1][3] == 12
    assert check("GET", *TRICKY["dot-dot-newline-end"][1:]) == ("error", 400, "bad_path")
    assert check("GET", *TRICKY["fault-length-then-host"][1:])[:2] == ("raised", ValueError)
    assert check("GET", *TRICKY["fault-host-then-length"][1:]) == ("error", 400, "bad_host")
    assert check("POST", *TRICKY["length-over-limit"][1:]) == ("error", 413, "too_large")


def test_kept_header_pairs_are_the_callers() -> None:
    headers = [(b"Host", b"a"), (b"X-A", b"1"), (b"Connection", b"close")]
    got = _speedups.scan_request("GET", b"/", "1.1", headers, True, LIMIT, None)
    assert got[2] == headers[:2]
    assert all(a is b for a, b in zip(got[2], headers, strict=False))
    assert got[5] is headers[0][1]
    url = b"/p?q"
    assert _speedups.scan_request("GET", url, "1.1", headers, True, LIMIT, None)[0] is url


# -- generated heads -------------------------------------------------------------------------------

PLAIN_SEGMENTS = ["api", "v1", "a", "b.c", "items", "..x", "%41", ""]
TRICKY_SEGMENTS = [".", "..", "...", "%2e", "%2E%2e", ".%2e", "%2f", "%", "%2", "x%"]
SEPARATORS = ["/"] * 6 + ["\\", "%2f", "%2F", "%5c", "%5C", "//"]
AUTHORITIES = [
    "a.example",
    "A.EXAMPLE:8080",
    "a.example:",
    "[::1]",
    "[::1]:443",
    "[::1",
    "u@a",
    "a b",
    "",
    "a:1:2",
    "xn--caf-dma.example",
]
VERSIONS = ["1.1"] * 12 + ["1.0"] * 5 + ["0.9", "2.0", "1.2"]


def gen_url(rng: random.Random) -> bytes:
    segments = PLAIN_SEGMENTS + TRICKY_SEGMENTS if rng.random() < 0.3 else PLAIN_SEGMENTS
    parts = []
    for _ in range(rng.randrange(0, 5)):
        parts.append(rng.choice(SEPARATORS) + rng.choice(segments))
    path = "".join(parts)
    if rng.random() < 0.3:
        path += "?" + rng.choice(["q=1", "x=/../y", "", "a?b#c"])
    if rng.random() < 0.15:
        path += "#" + rng.choice(["f", "/../x", "", "?q"])
    form = rng.random()
    if form < 0.2:
        scheme = rng.choice(["http://", "https://", "HTTP://", "Https://", "ftp://", "http:/"])
        url = scheme + rng.choice(AUTHORITIES) + path
    elif form < 0.22:
        url = rng.choice(["*", "a.example:443", "", "//a/b"])
    else:
        url = path if path.startswith("/") else "/" + path
    if rng.random() < 0.03:
        url += "\n"
    return url.encode("latin-1")


NAMES = [
    "Host",
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "X-Request-Id",
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "Expect",
    "Upgrade",
    "Keep-Alive",
    "Proxy-Connection",
    "TE",
    "Trailer",
    "Proxy-Authorization",
    "X-Forwarded-Host",
    "X-Forwarded-Prefix",
    "X-Auth-Subject",
    "X-Auth-Roles",
    "X-Auth-Other",
    "X-Custom",
    "X-Other",
    "Accept",
    "Cookie",
    "Hosts",
    "X-Auth",
]
CONNECTION_TOKENS = [
    "close",
    "keep-alive",
    "Keep-Alive",
    "upgrade",
    "x-custom",
    "X-Other",
    "host",
    "accept",
    "",
    " ",
]
VALUES: dict[str, list[str]] = {
    "host": ["a.example", "a.example:80", "[::1]:8080", "[::1", "a b", "", ":80", "a@b", "a.example:x"],
    "content-length": [
        "0",
        "5",
        " 12 ",
        "1000",
        "1001",
        "0" * 20 + "7",
        "9" * 25,
        "-1",
        "+3",
        "1_0",
        "x",
        "",
    ],
    "transfer-encoding": [
        "chunked",
        "Chunked",
        " chunked ",
        "gzip, chunked",
        "chunked, chunked",
        "identity",
        "",
    ],
    "x-request-id": ["abc-123", "a" * 128, "a" * 129, "bad id", "", "ok.ok_ok"],
    "x-forwarded-for": ["198.51.100.7", "10.0.0.1, 10.0.0.2", "", "2001:db8::1"],
    "x-forwarded-proto": ["http", "https", ""],
    "expect": ["100-continue", "100-CONTINUE", " 100-continue ", "200-ok", ""],
    "upgrade": ["websocket", "h2c", ""],
}
OTHER_VALUES = ["1", "text/html", "a=1; b=2", "", "  padded  ", "\x80\xff", "x, y"]


def gen_value(rng: random.Random, name: str) -> bytes:
    lname = name.lower()
    if lname == "connection":
        tokens = [rng.choice(CONNECTION_TOKENS) for _ in range(rng.randrange(1, 4))]
        return rng.choice([",", ", ", " , "]).join(tokens).encode("latin-1")
    return rng.choice(VALUES.get(lname, OTHER_VALUES)).encode("latin-1")


def gen_name(rng: random.Random) -> str:
    name = rng.choice(NAMES)
    style = rng.randrange(4)
    if style == 0:
        return name.lower()
    if style == 1:
        return name.upper()
    return name


def gen_head(rng: random.Random) -> tuple[str, bytes, str, Fields, bool, int]:
    headers = []
    if rng.random() < 0.9:
        headers.append((b"Host", rng.choice([b"a.example", gen_value(rng, "Host")])))
    for _ in range(rng.randrange(0, 8)):
        name = gen_name(rng)
        headers.append((name.encode("latin-1"), gen_value(rng, name)))
    rng.shuffle(headers)
    limit = rng.choice([LIMIT, LIMIT, 0, 10**30])
    return (
        rng.choice(["GET", "POST", "PUT"]),
        gen_url(rng),
        rng.choice(VERSIONS),
        headers,
        rng.random() < 0.7,
        limit,
    )


@pytest.mark.parametrize("seed", range(20))
def test_generated_heads_match_python(seed: int) -> None:
    rng = random.Random(seed)
    outcomes: dict[Any, int] = {}
    for _ in range(200):
        got = check(*gen_head(rng))
        key = got[0] if got[0] == "ok" else got[2] if got[0] == "error" else got[1]
        outcomes[key] = outcomes.get(key, 0) + 1
    # The grammar reaches acceptance and most refusals in every seed.
    assert outcomes.get("ok", 0) >= 40, outcomes
    assert len(outcomes) >= 6, outcomes


def byte_mutations(rng: random.Random, data: bytes) -> Iterator[bytes]:
    for _ in range(3):
        mutated = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            at = rng.randrange(len(mutated) + 1)
            mutated[at:at] = bytes([rng.randrange(256)])
        yield bytes(mutated)


@pytest.mark.parametrize("seed", range(5))
def test_any_bytes_in_any_field_match_python(seed: int) -> None:
    # llhttp never hands over a NUL, CR, LF, a space in a name or a non-token name; C must still
    # agree with Python (and not crash) whatever the bytes are.
    rng = random.Random(1000 + seed)
    for _ in range(200):
        method, url, version, headers, keep_alive, limit = gen_head(rng)
        for mutated in byte_mutations(rng, url):
            check(method, mutated, version, headers, keep_alive, limit)
        if headers:
            at = rng.randrange(len(headers))
            name, value = headers[at]
            for new_name, new_value in zip(
                byte_mutations(rng, name), byte_mutations(rng, value), strict=True
            ):
                changed = list(headers)
                changed[at] = (new_name, value) if rng.random() < 0.5 else (name, new_value)
                check(method, url, version, changed, keep_alive, limit)


# -- bad arguments ---------------------------------------------------------------------------------

GOOD_ARGS: tuple[Any, ...] = ("GET", b"/", "1.1", [(b"Host", b"h")], True, LIMIT, None)


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (0, b"GET"),
        (0, None),
        (1, "/"),
        (1, bytearray(b"/")),
        (1, memoryview(b"/")),
        (1, None),
        (2, b"1.1"),
        (2, 1.1),
        (2, None),
        (3, None),
        (3, {b"Host": b"h"}),
        (3, iter([(b"Host", b"h")])),
        (3, [(b"Host",)]),
        (3, [(b"Host", b"h", b"x")]),
        (3, [[b"Host", b"h"]]),
        (3, [(b"Host", "h")]),
        (3, [("Host", b"h")]),
        (3, [(b"Host", bytearray(b"h"))]),
        (3, [b"Host: h"]),
        (3, [(b"Host", b"h"), None]),
        (4, 1),
        (4, None),
        (5, None),
        (5, "1000"),
        (5, 1000.0),
    ],
)
def test_scan_request_rejects_wrong_types(index: int, value: object) -> None:
    args = list(GOOD_ARGS)
    args[index] = value
    with pytest.raises(TypeError):
        _speedups.scan_request(*args)


def test_argument_count_and_keywords_are_checked() -> None:
    with pytest.raises(TypeError):
        _speedups.scan_request(*GOOD_ARGS[:6])
    with pytest.raises(TypeError):
        _speedups.scan_request(*GOOD_ARGS, None)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _speedups.scan_request(*GOOD_ARGS[:5], max_body_bytes=LIMIT)  # type: ignore[call-arg]


def test_head_error_is_a_value_error_with_protocol_error_arguments() -> None:
    assert issubclass(_speedups.HeadError, ValueError)
    with pytest.raises(_speedups.HeadError) as info:
        _speedups.scan_request("GET", b"/", "2.0", [], True, LIMIT, None)
    status, reason, detail = info.value.args
    assert ProtocolError(status, reason, detail).reason == "bad_version"


def test_subclasses_are_read_like_python_reads_them() -> None:
    class Pair(tuple):  # type: ignore[type-arg]
        pass

    class Name(bytes):
        pass

    class Limit(int):
        pass

    headers: Any = (
        Pair((Name(b"Host"), b"a")),
        (Name(b"X-A"), Name(b"1")),
        Pair((b"Content-Length", Name(b" 7 "))),
        Pair((b"X-B", b"2")),
    )
    outcomes = [
        check("GET", Name(b"/p#f"), "1.1", headers, True, limit) for limit in (Limit(6), Limit(7), True)
    ]
    assert [outcome[0] for outcome in outcomes] == ["error", "ok", "error"]
    assert [type(pair) for pair in outcomes[1][1][2]] == [tuple, tuple, tuple]


def test_a_finalizer_that_empties_raw_headers_mid_call_is_harmless() -> None:
    # The pairs are held before the first allocation that can run the garbage collector, which
    # may run a finalizer that empties raw_headers and so frees every pair but for C's hold.
    class Clear:
        def __init__(self, headers: Fields) -> None:
            self.headers = headers
            self.cycle = self

        def __del__(self) -> None:
            self.headers.clear()

    threshold = gc.get_threshold()
    cleared_during = 0
    gc.collect()
    try:
        for _ in range(50):
            # Fresh objects, referenced by the list alone; version 1.0 needs no Host.
            host, name, value, named = (text.encode() for text in ("a.example", "X-Kept", "v" * 50, "x-kept"))
            headers = [(b"Host", host), (name, value), (b"Connection", named)]
            Clear(headers)
            # Lists taken from the free list are not counted towards a collection: empty it.
            drained: list[list[object]] = [[] for _ in range(200)]
            gc.set_threshold(1)
            got = _speedups.scan_request("GET", b"/", "1.0", headers, True, LIMIT, None)
            gc.set_threshold(*threshold)
            del drained
            if got[2]:
                assert got[2] == [(b"Host", b"a.example")]
                assert got[5] == b"a.example"
                cleared_during += not headers
    finally:
        gc.set_threshold(*threshold)
        gc.collect()
    assert cleared_during > 0


# -- memory ----------------------------------------------------------------------------------------


def test_no_memory_is_leaked_on_any_path() -> None:
    many = [(b"Host", b"a"), *((b"X-H%d" % i, b"v") for i in range(40))]
    names = [(b"Connection", b",".join(b"X-H%d" % i for i in range(30)))]
    calls: list[tuple[str, bytes, str, Any]] = [
        ("GET", b"/p?q", "1.1", [(b"Host", b"a")]),
        ("GET", b"http://b.example?q#f", "1.1", [(b"Host", b"a"), (b"Connection", b"x")]),  # authority
        ("GET", b"/", "1.1", many + names),  # fields and tokens on the heap
        ("GET", b"/", "1.1", [(b"Host", b"a"), (b"X-Forwarded-For", b"1"), (b"X-Forwarded-For", b"2")]),
        ("GET", b"/", "1.1", [(b"Host", b"a"), (b"Content-Length", b"9" * 30)]),  # int() and 413
        ("GET", b"/", "1.1", [(b"Host", b"a"), (b"Content-Length", b"x")]),  # int() refuses
        (
            "GET",
            b"/",
            "1.1",
            [*many, *names, (b"X-Forwarded-For", b"1"), (b"Content-Length", b"1"), (b"Host", b"b")],
        ),
        ("GET", b"/", "2.0", []),
        ("GET", b"/", "1.1", [(b"Host", b"a"), None]),  # TypeError after holding some pairs
        ("GET", b"/", "1.1", [*many, None]),
    ]

    def run() -> None:
        for method, url, version, headers in calls:
            with contextlib.suppress(ValueError, TypeError):
                _speedups.scan_request(method, url, version, headers, True, LIMIT)

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


def test_credentials_are_taken_out_of_the_headers() -> None:
    ok, fields = check("GET", *TRICKY["both-credentials"][1:])
    assert ok == "ok"
    assert fields[2] == [(b"Host", b"a.example")]
    assert fields[10:] == (b"Bearer t", b"k")
    for name in ("authorization-repeated", "api-key-repeated"):
        assert check("GET", *TRICKY[name][1:]) == ("error", 400, "bad_credentials")


def test_without_an_api_key_header_the_header_is_an_ordinary_one() -> None:
    headers = [*H, (b"x-api-key", b"a"), (b"X-API-KEY", b"b")]
    ok, fields = check("GET", b"/", "1.1", headers, True, LIMIT, None)
    assert ok == "ok"
    assert fields[2] == headers
    assert fields[11] is None
    ok, fields = check("GET", b"/", "1.1", [*H, (b"Token", b"t")], True, LIMIT, b"token")
    assert (fields[2], fields[11]) == (H, b"t")


def test_credential_header_must_be_lower_case_bytes() -> None:
    for bad in (b"X-Api-Key", "x-api-key", b""):
        with pytest.raises((TypeError, ValueError)):
            _speedups.scan_request("GET", b"/", "1.1", H, True, LIMIT, bad)
