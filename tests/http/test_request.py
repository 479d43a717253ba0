"""RequestParser and parse_head: the raw-request corpus, limits, smuggling defences, header rules.

The corpus lives in ``requests/{valid,invalid}/*.http`` (see its README). Every test here uses the
small limits below so the limit cases stay a few kilobytes.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fastproxy.config.schema import LimitsSettings
from fastproxy.http.errors import ProtocolError
from fastproxy.http.parser import RequestParser
from fastproxy.http.request import RequestHead, parse_head, parse_head_reference

LIMITS = LimitsSettings(max_url_bytes=1024, max_headers=20, max_header_bytes=4096, max_body_bytes=1000)
CORPUS = Path(__file__).parent / "requests"
VALID_FILES = sorted((CORPUS / "valid").glob("*.http"))
INVALID_FILES = sorted((CORPUS / "invalid").glob("*.http"))


@dataclass
class Parsed:
    """What a handler saw of one request (body chunks joined)."""

    method: str
    target: bytes
    path: str
    version: str = "1.1"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    keep_alive: bool = True
    host: bytes | None = None
    content_length: int | None = None
    chunked: bool = False
    request_id: bytes | None = None
    forwarded_for: bytes | None = None
    forwarded_proto: bytes | None = None
    expect_continue: bool = False
    body: bytes = b""
    complete: bool = True  # the handler saw on_request_end


class Recorder:
    """A RequestHandler that records what it is given, and checks the call order."""

    def __init__(self) -> None:
        self.requests: list[Parsed] = []
        self.heads: list[RequestHead] = []

    def on_request(self, head: RequestHead) -> None:
        assert not self.requests or self.requests[-1].complete, "head before the previous end"
        self.heads.append(head)
        self.requests.append(
            Parsed(
                method=head.method,
                target=head.target,
                path=head.path,
                version=head.version,
                headers=list(head.headers),
                keep_alive=head.keep_alive,
                host=head.host,
                content_length=head.content_length,
                chunked=head.chunked,
                request_id=head.request_id,
                forwarded_for=head.forwarded_for,
                forwarded_proto=head.forwarded_proto,
                expect_continue=head.expect_continue,
                complete=False,
            )
        )

    def on_body(self, chunk: bytes) -> None:
        assert self.requests, "body before any head"
        assert not self.requests[-1].complete, "body after the end"
        assert chunk, "empty body chunk"
        self.requests[-1].body += chunk

    def on_request_end(self) -> None:
        assert self.requests, "end before any head"
        assert not self.requests[-1].complete, "two ends for one request"
        self.requests[-1].complete = True


def feed(
    data: bytes | list[bytes], limits: LimitsSettings = LIMITS
) -> tuple[Recorder, RequestParser, ProtocolError | None]:
    """Feed ``data`` (or each of its pieces); the first ProtocolError is returned, not raised."""
    recorder = Recorder()
    parser = RequestParser(recorder, limits)
    error = None
    try:
        for piece in [data] if isinstance(data, bytes) else data:
            parser.feed(piece)
    except ProtocolError as exc:
        error = exc
    return recorder, parser, error


def random_pieces(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 40))))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def wire(*lines: str | bytes, body: bytes = b"") -> bytes:
    encoded = (x.encode("latin-1") if isinstance(x, str) else x for x in lines)
    return b"".join(line + b"\r\n" for line in encoded) + b"\r\n" + body


def parse_one(data: bytes, limits: LimitsSettings = LIMITS) -> Parsed:
    recorder, _, error = feed(data, limits=limits)
    assert error is None, f"unexpected {error.status} {error.reason}: {error}"
    assert len(recorder.requests) == 1
    return recorder.requests[0]


H_API = (b"Host", b"api.example.com")
H_A = (b"Host", b"a.example")

VALID: dict[str, list[Parsed]] = {
    "get-simple": [
        Parsed(
            "GET",
            b"/api/orders/7?expand=items&x=1",
            "/api/orders/7",
            headers=[H_API, (b"User-Agent", b"corpus/1.0"), (b"Accept", b"application/json")],
            host=b"api.example.com",
        )
    ],
    "post-content-length": [
        Parsed(
            "POST",
            b"/api/orders",
            "/api/orders",
            headers=[H_API, (b"Content-Type", b"application/json")],
            host=b"api.example.com",
            content_length=16,
            body=b'{"item": "book"}',
        )
    ],
    "post-chunked-extensions-trailers": [
        Parsed(
            "POST",
            b"/upload",
            "/upload",
            headers=[H_API],
            host=b"api.example.com",
            chunked=True,
            body=b"hello, world0123456789",
        )
    ],
    "pipelined": [
        Parsed("GET", b"/one", "/one", headers=[H_A], host=b"a.example"),
        Parsed(
            "POST",
            b"/two",
            "/two",
            headers=[H_A],
            host=b"a.example",
            content_length=3,
            body=b"abc",
        ),
        Parsed("PUT", b"/three", "/three", headers=[H_A], host=b"a.example", chunked=True, body=b"xy"),
        Parsed("DELETE", b"/four", "/four", headers=[H_A], host=b"a.example", keep_alive=False),
    ],
    "absolute-form": [
        Parsed(
            "GET",
            b"/api/items?page=2",
            "/api/items",
            headers=[(b"Host", b"api.example.com:8080")],
            host=b"api.example.com:8080",
        )
    ],
    "absolute-form-no-path": [
        Parsed("GET", b"/", "/", headers=[H_API], host=b"api.example.com"),
    ],
    "http10-keep-alive": [
        Parsed("GET", b"/status", "/status", version="1.0", headers=[(b"Accept", b"*/*")]),
    ],
    "http10-close": [
        Parsed(
            "GET",
            b"/status",
            "/status",
            version="1.0",
            headers=[(b"Accept", b"*/*")],
            keep_alive=False,
        ),
    ],
    "http11-connection-close": [
        Parsed("GET", b"/bye", "/bye", headers=[H_A], host=b"a.example", keep_alive=False),
    ],
    "connection-names-headers": [
        Parsed("GET", b"/c", "/c", headers=[H_A, (b"X-End", b"3")], host=b"a.example"),
    ],
    "hop-by-hop": [
        Parsed(
            "GET",
            b"/h",
            "/h",
            headers=[H_A, (b"Upgrade-Insecure-Requests", b"1"), (b"X-Kept", b"yes")],
            host=b"a.example",
        ),
    ],
    "expect-100-continue": [
        Parsed(
            "PUT",
            b"/big",
            "/big",
            headers=[H_A],
            host=b"a.example",
            content_length=4,
            expect_continue=True,
            body=b"data",
        ),
    ],
    "obs-text-values": [
        Parsed(
            "GET",
            b"/o",
            "/o",
            headers=[H_A, (b"X-Name", b"caf\xe9 \x80\xff"), (b"X-Tab", b"a\tb")],
            host=b"a.example",
        ),
    ],
    "x-forwarded-from-client": [
        Parsed(
            "GET",
            b"/xff",
            "/xff",
            headers=[H_A, (b"Accept", b"*/*")],
            host=b"a.example",
            request_id=b"client-id_1.2",
            forwarded_for=b"203.0.113.7, 198.51.100.2",
            forwarded_proto=b"https",
        ),
    ],
    "bad-request-id-dropped": [
        Parsed("GET", b"/rid", "/rid", headers=[H_A], host=b"a.example"),
    ],
    "dots-outside-segments": [
        Parsed(
            "GET",
            b"/files/v1.2/report..final.json?next=/../up",
            "/files/v1.2/report..final.json",
            headers=[H_A],
            host=b"a.example",
        ),
    ],
    "fragment-dropped": [
        Parsed("GET", b"/page", "/page", headers=[H_A], host=b"a.example"),
    ],
    "content-length-zero": [
        Parsed("POST", b"/empty", "/empty", headers=[H_A], host=b"a.example", content_length=0),
    ],
    "content-length-whitespace": [
        Parsed(
            "POST",
            b"/ws",
            "/ws",
            headers=[H_A],
            host=b"a.example",
            content_length=2,
            body=b"ok",
        ),
    ],
    "leading-empty-line": [
        Parsed("GET", b"/after-crlf", "/after-crlf", headers=[H_A], host=b"a.example"),
    ],
}


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


# -- the corpus itself ------------------------------------------------------------------------------


def test_corpus_is_not_empty_and_every_valid_file_has_an_expectation() -> None:
    assert len(INVALID_FILES) >= 20
    assert {p.stem for p in VALID_FILES} == set(VALID)


@pytest.mark.parametrize("path", INVALID_FILES, ids=_ids(INVALID_FILES))
def test_invalid_file_names_start_with_a_status(path: Path) -> None:
    assert re.match(r"^(400|408|413|414|431)-[a-z0-9-]+$", path.stem)


@pytest.mark.parametrize("path", VALID_FILES, ids=_ids(VALID_FILES))
def test_valid_files_use_crlf_only(path: Path) -> None:
    data = path.read_bytes()
    assert b"\n" in data
    assert data.count(b"\n") == data.count(b"\r\n")
    assert data.count(b"\r") == data.count(b"\r\n")


# -- the corpus through the parser --------------------------------------------------------------------


@pytest.mark.parametrize("path", VALID_FILES, ids=_ids(VALID_FILES))
def test_valid_request(path: Path) -> None:
    recorder, parser, error = feed(path.read_bytes())
    assert error is None, f"{error.status} {error.reason}: {error}"
    assert recorder.requests == VALID[path.stem]
    assert not parser.upgraded
    assert not parser.in_head


@pytest.mark.parametrize("path", INVALID_FILES, ids=_ids(INVALID_FILES))
def test_invalid_request(path: Path) -> None:
    _, _, error = feed(path.read_bytes())
    assert error is not None, "accepted"
    assert error.status == int(path.stem[:3]), f"{error.status} {error.reason}: {error}"


@pytest.mark.parametrize("path", VALID_FILES, ids=_ids(VALID_FILES))
def test_valid_request_fed_in_pieces(path: Path) -> None:
    data = path.read_bytes()
    expected = VALID[path.stem]
    recorder, _, error = feed([data[i : i + 1] for i in range(len(data))])
    assert error is None
    assert recorder.requests == expected
    rng = random.Random(f"split:{path.stem}")
    for _ in range(10):
        recorder, _, error = feed(random_pieces(data, rng))
        assert error is None
        assert recorder.requests == expected


@pytest.mark.parametrize("path", INVALID_FILES, ids=_ids(INVALID_FILES))
def test_invalid_request_fed_in_pieces(path: Path) -> None:
    data = path.read_bytes()
    status = int(path.stem[:3])
    whole, _, _ = feed(data)
    heads = [(r.method, r.target) for r in whole.requests]
    recorder, _, error = feed([data[i : i + 1] for i in range(len(data))])
    assert error is not None
    assert error.status == status
    assert [(r.method, r.target) for r in recorder.requests] == heads
    rng = random.Random(f"split:{path.stem}")
    for _ in range(10):
        recorder, _, error = feed(random_pieces(data, rng))
        assert error is not None
        assert error.status == status
        assert [(r.method, r.target) for r in recorder.requests] == heads


def test_nothing_after_a_bad_request_reaches_the_handler() -> None:
    # The second request hides behind the first one's conflicting framing.
    smuggled = wire(
        "POST /p HTTP/1.1",
        "Host: a.example",
        "Content-Length: 40",
        "Transfer-Encoding: chunked",
        body=b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a.example\r\n\r\n",
    )
    recorder, _, error = feed(smuggled)
    assert error is not None
    assert error.status == 400
    assert recorder.requests == []


# -- hop-by-hop and proxy-set headers -------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        b"Keep-Alive",
        b"Proxy-Connection",
        b"TE",
        b"Trailer",
        b"Transfer-Encoding",
        b"Upgrade",
        b"Proxy-Authorization",
        b"CONNECTION",
        b"proxy-authorization",
    ],
)
def test_hop_by_hop_headers_are_removed(name: bytes) -> None:
    raw = [H_A, (name, b"chunked"), (b"X-Kept", b"1")]
    head = parse_head("GET", b"/", "1.1", raw, True, 1000)
    assert head.headers == [H_A, (b"X-Kept", b"1")]


def test_every_header_named_by_connection_is_removed() -> None:
    request = parse_one(
        wire(
            "GET / HTTP/1.1",
            "Host: a.example",
            "Connection: X-One ,x-two",
            "X-One: 1",
            "x-TWO: 2",
            "X-Three: 3",
            "Connection: keep-alive, X-Four",
            "X-FOUR: 4",
            "Cookie: c=1",
        )
    )
    assert request.headers == [H_A, (b"X-Three", b"3"), (b"Cookie", b"c=1")]
    assert request.keep_alive


@pytest.mark.parametrize(
    "name",
    [
        b"X-Forwarded-For",
        b"x-forwarded-proto",
        b"X-Request-Id",
        b"X-Auth-Subject",
        b"X-AUTH-ROLES",
        b"x-auth-method",
        pytest.param(
            b"X-Forwarded-Host",
        ),
        pytest.param(
            b"X-Forwarded-Port",
        ),
        pytest.param(
            b"X-Forwarded-Prefix",
        ),
        pytest.param(
            b"X-Auth-Tenant",
        ),
    ],
)
def test_headers_the_proxy_sets_never_come_from_the_client(name: bytes) -> None:
    request = parse_one(wire("GET / HTTP/1.1", "Host: a.example", name + b": forged", "Accept: x"))
    assert [n.lower() for n, _ in request.headers] == [b"host", b"accept"]


def test_framing_headers_are_not_in_head_headers() -> None:
    request = parse_one(
        wire(
            "POST / HTTP/1.1",
            "Host: a.example",
            "Transfer-Encoding: chunked",
            body=b"1\r\nz\r\n0\r\n\r\n",
        )
    )
    assert request.headers == [H_A]
    assert request.chunked
    assert request.body == b"z"
    request = parse_one(wire("POST / HTTP/1.1", "Host: a.example", "Content-Length: 1", body=b"z"))
    assert request.headers == [H_A]
    assert request.content_length == 1


# -- request ids, forwarded headers, keep-alive ---------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        (b"a", True),
        (b"Req-1.2_3", True),
        (b"0" * 128, True),
        (b"0" * 129, False),
        (b"", False),
        (b"has space", False),
        (b"a/b", False),
        (b"a:b", False),
        (b"a\tb", False),
        (b"caf\xe9", False),
        (b"{injected}", False),
    ],
)
def test_client_request_id_kept_only_when_well_formed(value: bytes, kept: bool) -> None:
    request = parse_one(wire("GET / HTTP/1.1", "Host: a.example", b"X-Request-Id: " + value))
    assert request.request_id == (value if kept else None)
    assert request.headers == [H_A]


def test_request_id_with_trailing_newline_is_refused_by_parse_head() -> None:
    head = parse_head("GET", b"/", "1.1", [H_A, (b"X-Request-Id", b"abc\n")], True, 1000)
    assert head.request_id is None


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        ("1.1", None, True),
        ("1.1", "keep-alive", True),
        ("1.1", "close", False),
        ("1.1", "Close", False),
        ("1.1", "keep-alive, close", False),
        ("1.0", None, False),
        ("1.0", "keep-alive", True),
        ("1.0", "Keep-Alive", True),
        ("1.0", "close", False),
    ],
)
def test_keep_alive(version: str, connection: str | None, keep_alive: bool) -> None:
    lines = [f"GET / HTTP/{version}", "Host: a.example"]
    if connection is not None:
        lines.append(f"Connection: {connection}")
    request = parse_one(wire(*lines))
    assert request.keep_alive is keep_alive
    assert request.headers == [H_A]


def test_http10_without_host_is_accepted() -> None:
    request = parse_one(wire("GET / HTTP/1.0"))
    assert request.host is None
    assert request.version == "1.0"


def test_expect_100_continue_is_ignored_on_http10() -> None:
    request = parse_one(wire("PUT / HTTP/1.0", "Expect: 100-continue", "Content-Length: 2", body=b"ok"))
    assert request.expect_continue is False


# -- limits ---------------------------------------------------------------------------------------


def test_url_at_the_limit_is_accepted_and_one_more_byte_is_414() -> None:
    at_limit = "/" + "u" * (LIMITS.max_url_bytes - 1)
    assert parse_one(wire(f"GET {at_limit} HTTP/1.1", "Host: a")).target == at_limit.encode()
    _, _, error = feed(wire(f"GET {at_limit}u HTTP/1.1", "Host: a"))
    assert error is not None
    assert error.status == 414


def test_max_headers_fields_are_accepted_and_one_more_is_431() -> None:
    headers = ["Host: a", *(f"X-{i}: v" for i in range(LIMITS.max_headers - 1))]
    assert len(parse_one(wire("GET / HTTP/1.1", *headers)).headers) == LIMITS.max_headers
    _, _, error = feed(wire("GET / HTTP/1.1", *headers, "X-Last: v"))
    assert error is not None
    assert error.status == 431


def test_header_bytes_under_the_limit_are_accepted() -> None:
    # Each field counts as name + value + 4 (": " and CRLF).
    value = "v" * (LIMITS.max_header_bytes - len("Host") - 1 - 4 - len("X-Big") - 4)
    request = parse_one(wire("GET / HTTP/1.1", "Host: a", f"X-Big: {value}"))
    assert request.headers[1] == (b"X-Big", value.encode())
    _, _, error = feed(wire("GET / HTTP/1.1", "Host: a", f"X-Big: {value}v"))
    assert error is not None
    assert error.status == 431


def test_body_at_the_limit_is_accepted() -> None:
    body = b"b" * LIMITS.max_body_bytes
    request = parse_one(wire("POST / HTTP/1.1", "Host: a", f"Content-Length: {len(body)}", body=body))
    assert request.body == body
    chunks = b"".join(b"%x\r\n%s\r\n" % (250, b"c" * 250) for _ in range(4))
    request = parse_one(
        wire("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", body=chunks + b"0\r\n\r\n")
    )
    assert request.body == b"c" * 1000


def test_declared_length_over_the_limit_is_refused_before_any_body() -> None:
    recorder, _, error = feed(wire("POST / HTTP/1.1", "Host: a", "Content-Length: 1001"))
    assert error is not None
    assert error.status == 413
    assert recorder.requests == []


def test_chunked_body_over_the_limit_is_413_once_it_passes_the_limit() -> None:
    head = wire("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked")
    chunks = [b"%x\r\n%s\r\n" % (100, b"c" * 100)] * 10 + [b"1\r\nc\r\n"]
    recorder, _, error = feed([head, *chunks])
    assert error is not None
    assert error.status == 413
    assert len(recorder.requests[0].body) <= LIMITS.max_body_bytes
    assert not recorder.requests[0].complete


def _feed_until_error(first: bytes, more: bytes, times: int) -> tuple[ProtocolError, int]:
    recorder = Recorder()
    parser = RequestParser(recorder, LIMITS)
    parser.feed(first)
    sent = len(first)
    for _ in range(times):
        try:
            parser.feed(more)
        except ProtocolError as exc:
            return exc, sent + len(more)
        sent += len(more)
    pytest.fail(f"no error after {sent} bytes")


def test_endless_header_value_over_several_feeds_is_431() -> None:
    error, sent = _feed_until_error(b"GET / HTTP/1.1\r\nHost: a\r\nX-Endless: ", b"e" * 100, 200)
    assert error.status == 431
    assert sent <= LIMITS.max_header_bytes + LIMITS.max_url_bytes + 200


def test_endless_header_name_over_several_feeds_is_431() -> None:
    error, sent = _feed_until_error(b"GET / HTTP/1.1\r\nHost: a\r\nX-", b"n" * 100, 200)
    assert error.status == 431
    assert sent <= LIMITS.max_header_bytes + LIMITS.max_url_bytes + 200


def test_endless_url_over_several_feeds_is_414() -> None:
    error, sent = _feed_until_error(b"GET /", b"u" * 100, 200)
    assert error.status == 414
    assert sent <= LIMITS.max_url_bytes + 200


def test_header_fields_one_per_feed_are_counted() -> None:
    error, _ = _feed_until_error(b"GET / HTTP/1.1\r\n", b"X-A: b\r\n", 200)
    assert error.status == 431


def test_pipelined_requests_in_one_large_read_are_not_431() -> None:
    one = wire("GET /a HTTP/1.1", "Host: a", "User-Agent: " + "x" * 150)
    count = 40
    data = one * count + b"GET /b HTTP/1.1\r\nHo"
    assert len(data) > LIMITS.max_header_bytes + LIMITS.max_url_bytes
    recorder, parser, error = feed(data)
    assert error is None
    assert len(recorder.requests) == count
    parser.feed(b"st: a\r\n\r\n")
    assert recorder.requests[-1].target == b"/b"


def test_limits_reset_between_pipelined_requests() -> None:
    # Each request is under every limit; together they are far over them.
    headers = [f"X-{i}: " + "v" * 150 for i in range(LIMITS.max_headers - 2)]
    one = wire("POST /p HTTP/1.1", "Host: a", *headers, "Content-Length: 900", body=b"b" * 900)
    recorder, _, error = feed([one] * 5)
    assert error is None
    assert len(recorder.requests) == 5
    assert all(r.complete and len(r.body) == 900 for r in recorder.requests)


# -- parser state ---------------------------------------------------------------------------------


def test_in_head_tracks_an_incomplete_head() -> None:
    recorder = Recorder()
    parser = RequestParser(recorder, LIMITS)
    assert not parser.in_head
    parser.feed(b"GET / HT")
    assert parser.in_head
    parser.feed(b"TP/1.1\r\nHost: a\r\n")
    assert parser.in_head
    parser.feed(b"\r\n")
    assert not parser.in_head
    assert recorder.requests[0].complete


def test_upgrade_request_sets_upgraded_and_stops_parsing() -> None:
    data = wire(
        "GET /ws HTTP/1.1",
        "Host: a",
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Sec-WebSocket-Key: k",
        body=b"GET /hidden HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    recorder, parser, error = feed(data)
    assert error is None
    assert parser.upgraded
    assert [r.target for r in recorder.requests] == [b"/ws"]
    assert recorder.requests[0].complete
    assert recorder.requests[0].headers == [(b"Host", b"a"), (b"Sec-WebSocket-Key", b"k")]


def test_h2c_upgrade_drops_the_settings_header_connection_names() -> None:
    data = wire(
        "GET / HTTP/1.1",
        "Host: a",
        "Connection: Upgrade, HTTP2-Settings",
        "Upgrade: h2c",
        "HTTP2-Settings: AAMAAABkAAQAAP__",
    )
    recorder, parser, error = feed(data)
    assert error is None
    assert parser.upgraded
    assert recorder.requests[0].headers == [(b"Host", b"a")]


def test_upgrade_header_without_connection_upgrade_is_plain_http() -> None:
    data = wire("GET /a HTTP/1.1", "Host: a", "Upgrade: websocket") + wire("GET /b HTTP/1.1", "Host: a")
    recorder, parser, error = feed(data)
    assert error is None
    assert not parser.upgraded
    assert [r.target for r in recorder.requests] == [b"/a", b"/b"]
    assert recorder.requests[0].headers == [(b"Host", b"a")]


def test_upgrade_request_with_a_body_never_ends_short_of_its_declared_length() -> None:
    data = wire(
        "POST /ws HTTP/1.1",
        "Host: a",
        "Connection: upgrade",
        "Upgrade: websocket",
        "Content-Length: 3",
        body=b"abc",
    )
    recorder, _, error = feed(data)
    if error is None:
        request = recorder.requests[0]
        assert request.complete
        assert len(request.body) == request.content_length
    else:
        assert error.status == 400


# -- request target and Host ----------------------------------------------------------------------


def test_absolute_form_with_empty_path_keeps_the_query() -> None:
    request = parse_one(wire("GET http://a.example?q=1 HTTP/1.1", "Host: a.example"))
    assert request.target == b"/?q=1"
    assert request.path == "/"


@pytest.mark.parametrize("host", ["a b", "a/b", "evil@a.example", "a.example:port"])
def test_invalid_host_value_is_400(host: str) -> None:
    _, _, error = feed(wire("GET / HTTP/1.1", f"Host: {host}"))
    assert error is not None
    assert error.status == 400


@pytest.mark.parametrize("host", ["a.example", "a.example:8080", "[::1]:8080", "127.0.0.1", ""])
def test_valid_host_values(host: str) -> None:
    assert parse_one(wire("GET / HTTP/1.1", f"Host: {host}")).host == host.encode()


@pytest.mark.parametrize("target", ["/api%2Fadmin", "/a/%252e%252e/b", "/v1.0/..x/y", "/a/...", "/a/.b"])
def test_targets_without_dot_segments_are_accepted(target: str) -> None:
    request = parse_one(wire(f"GET {target} HTTP/1.1", "Host: a"))
    assert request.target == target.encode()
    assert request.path == target


@pytest.mark.parametrize("parse", [parse_head, parse_head_reference], ids=["parse_head", "reference"])
def test_connection_never_names_host_away(parse: Callable[..., RequestHead]) -> None:
    head = parse(
        "GET", b"/", "1.1", [(b"Host", b"a.example"), (b"Connection", b"Host, X-A"), (b"X-A", b"1")], True, 10
    )
    assert head.headers == [(b"Host", b"a.example")]
    absolute = parse(
        "GET", b"http://b.example/x", "1.1", [(b"Host", b"a"), (b"Connection", b"host")], True, 10
    )
    assert absolute.headers == [(b"Host", b"b.example")]


@pytest.mark.parametrize("parse", [parse_head, parse_head_reference], ids=["parse_head", "reference"])
@pytest.mark.parametrize("target", [b"/api/..;/admin", b"/api/.;x/admin", b"/api/%2e%2e;jsessionid=1/admin"])
def test_dot_segment_with_a_path_parameter_is_refused(
    parse: Callable[..., RequestHead], target: bytes
) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse("GET", target, "1.1", [(b"Host", b"a")], True, 10)
    assert (caught.value.status, caught.value.reason) == (400, "bad_path")


@pytest.mark.parametrize("parse", [parse_head, parse_head_reference], ids=["parse_head", "reference"])
def test_dots_inside_a_segment_are_fine(parse: Callable[..., RequestHead]) -> None:
    assert (
        parse("GET", b"/a/..b/c...;x/.well-known", "1.1", [(b"Host", b"a")], True, 10).path
        == "/a/..b/c...;x/.well-known"
    )


def test_a_heads_repr_never_shows_its_credentials() -> None:
    head = RequestHead("GET", b"/", "/", "1.1", [], True, authorization=b"Bearer s3cret", api_key=b"k3y")
    text = repr(head)
    assert "s3cret" not in text and "k3y" not in text
    assert "authorization=<hidden>" in text and "method='GET'" in text
    assert "api_key=None" in repr(RequestHead("GET", b"/", "/", "1.1", [], True))
