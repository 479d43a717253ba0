"""Response masking through a running proxy: who sees what, which responses are masked, framing, limits.

One proxy (one worker, debug log) serves the module. Its upstreams are a RecordingUpstream whose answers
the tests choose byte for byte (the last path segment of a request names its canned answer), a second one
that closes each connection after its answer (for close-delimited bodies), and the devserver (its /json
document). Masks: ``pii`` (the three demo fields, ``auditor`` exempt, 1 MiB), ``small`` (the same fields,
64 bytes at most, on_unmaskable pass) and ``strict`` (64 bytes, on_unmaskable refuse).

The count of masked values (``exchange.masked``, the audit record's ``masked``) and why a response went
out unmasked (``exchange.mask_skipped``) are in no log line: they are left to the audit record's tests.
"""

from __future__ import annotations

import gzip
import itertools
import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fastproxy.http.response import head_field, response_head, response_head_reference
from fastproxy.identity.mint import mint, public_jwks
from fastproxy.masking import CompiledMask
from fastproxy.server.upstream import _Masking

from .helpers import (
    Client,
    DevServer,
    Proxy,
    ProxyLauncher,
    Recorded,
    RecordingUpstream,
    Response,
    assert_error,
    build_request,
    config_toml,
    wait_for,
)

ISSUER = "https://idp.masking.test/"
AUDIENCE = "masking-api"
FIELDS = ["ssn", "owner.email", "items[*].card.number"]
PII_MASK = CompiledMask("pii", FIELDS)

# What the upstream sends, with its own spacing: a masked body keeps it (only the named values change).
DOCUMENT: dict[str, Any] = {
    "id": 7,
    "owner": {"name": "Alice", "email": "alice@example.com"},
    "ssn": "078-05-1120",
    "items": [
        {"sku": "A1", "card": {"number": "4111111111111111"}},
        {"sku": "B2", "card": {"number": "5500000000000004"}},
    ],
}
RAW = json.dumps(DOCUMENT).encode()
MASKED = (
    b'{"id": 7, "owner": {"name": "Alice", "email": "***"}, "ssn": "***", '
    b'"items": [{"sku": "A1", "card": {"number": "***"}}, {"sku": "B2", "card": {"number": "***"}}]}'
)
# The devserver's /json, raw and masked.
DEV_RAW = (
    b'{"id":7,"owner":{"name":"Alice","email":"alice@example.com"},"ssn":"078-05-1120",'
    b'"items":[{"sku":"A1","card":{"number":"4111111111111111"}}]}'
)
DEV_MASKED = (
    b'{"id":7,"owner":{"name":"Alice","email":"***"},"ssn":"***",'
    b'"items":[{"sku":"A1","card":{"number":"***"}}]}'
)
# Under the 64 bytes of the small and strict masks.
SHORT = b'{"ssn": "078-05-1120", "id": 7}'
SHORT_MASKED = b'{"ssn": "***", "id": 7}'
# Over the 64 bytes of the small and strict masks, and not masked when streamed.
LARGE = json.dumps({"ssn": "078-05-1120", "padding": "x" * 150}).encode()


def http(
    body: bytes,
    content_type: str | None = "application/json",
    *,
    status: int = 200,
    extra: tuple[str, ...] = (),
    framing: str = "length",
    version: str = "1.1",
) -> bytes:
    """A whole upstream response; ``framing`` is length, chunked (one chunk per 20 bytes) or close."""
    lines = [f"HTTP/{version} {status} X"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines.extend(extra)
    if framing == "length":
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    elif framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
        payload = b"".join(chunk(body[i : i + 20]) for i in range(0, len(body), 20)) + b"0\r\n\r\n"
    else:
        assert framing == "close"
        payload = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


CHUNKED_HEAD = b"HTTP/1.1 200 X\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Gated(list[bytes]):
    """Response pieces written in order (0.1 s apart); the last waits until the test opens the gate.

    RecordingUpstream iterates an answer that is a list: this one blocks before its last piece, so a
    test can read what the proxy sent of a response before the upstream has finished it.
    """

    def __init__(self, *pieces: bytes) -> None:
        super().__init__(pieces)
        self.gate = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        pieces = list(super().__iter__())
        for index, piece in enumerate(pieces):
            if index == len(pieces) - 1:
                self.gate.wait(10)
            yield piece


# Canned answers by name (the last path segment); a test may add its own before it sends.
ANSWERS: dict[str, bytes | list[bytes]] = {
    "doc": http(RAW),
    "short": http(SHORT),
    "doc-utf8": http(RAW, "application/json; charset=utf-8"),
    "doc-problem": http(RAW, "application/problem+json"),
    "doc-upper": http(RAW, "Application/JSON"),
    "doc-chunked": http(RAW, framing="chunked"),
    "doc-trailers": http(RAW, framing="chunked")[:-2] + b"X-Checksum: 1\r\n\r\n",
    "doc-split": [http(RAW)[:30], http(RAW)[30:90], http(RAW)[90:]],
    "text": http(RAW, "text/plain"),
    "octets": http(RAW, "application/octet-stream"),
    "untyped": http(RAW, None),
    "nothing-matched": http(b'{ "id" : 7, "n": 123456789012345678901234567890, "s": "caf\\u00e9" }'),
    "invalid": http(b'{"ssn": "078-05-1120", '),
    "invalid-chunked": http(b'{"ssn": "078-05-1120"} trailing', framing="chunked"),
    "gzip": http(gzip.compress(RAW, mtime=0), extra=("Content-Encoding: gzip",)),
    "identity": http(RAW, extra=("Content-Encoding: identity",)),
    "empty": http(b""),
    "empty-chunked": http(b"", framing="chunked"),
    "large": http(LARGE),
    "large-chunked": http(LARGE, framing="chunked"),
    "not-found": http(RAW, status=404),
    "no-content": b"HTTP/1.1 204 No Content\r\nContent-Type: application/json\r\n\r\n",
    "not-modified": (
        b"HTTP/1.1 304 Not Modified\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % len(RAW)
    ),
    "early-hints": b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + http(RAW),
    "close": http(RAW, framing="close", version="1.0"),
    "close-invalid": http(b'{"ssn": ', framing="close", version="1.0"),
    "close-large": http(LARGE, framing="close", version="1.0"),
    "truncated": http(RAW)[:-10],
}


def negotiated(request: Recorded) -> bytes:
    """What an origin that honours Accept-Encoding and Range (most do) answers for the document."""
    headers = {name.lower(): value for name, value in request.headers}
    if "gzip" in headers.get("accept-encoding", ""):
        return http(gzip.compress(RAW, mtime=0), extra=("Content-Encoding: gzip", "Vary: Accept-Encoding"))
    match = re.fullmatch(r"bytes=(\d+)-", headers.get("range", ""))
    if match:
        start = int(match.group(1))
        return http(
            RAW[start:], status=206, extra=(f"Content-Range: bytes {start}-{len(RAW) - 1}/{len(RAW)}",)
        )
    return http(RAW)


def respond(request: Recorded) -> bytes | list[bytes] | None:
    name = request.target.split("?", 1)[0].rsplit("/", 1)[-1]
    if name == "negotiated":
        return negotiated(request)
    answer = ANSWERS[name]
    if request.method == "HEAD" and isinstance(answer, bytes):
        return answer[: answer.index(b"\r\n\r\n") + 4]
    return answer


# -- the proxy ----------------------------------------------------------------------------------------


@dataclass
class Env:
    proxy: Proxy
    upstream: RecordingUpstream  # keeps its connections
    closing: RecordingUpstream  # closes each connection after its answer
    pem: bytes

    def token(self, *roles: str, sub: str = "alice") -> str:
        return mint(
            self.pem, sub=sub, roles=roles, aud=AUDIENCE, iss=ISSUER, now=time.time(), kid="it-1"
        ).decode()


def config(upstream: str, closing: str, dev: str) -> str:
    masks = "\n".join(
        f"[masks.{name}]\nfields = {json.dumps(FIELDS)}\n{options}\n"
        for name, options in (
            ("pii", 'exempt_roles = ["auditor"]'),
            ("small", "max_bytes = 64"),
            ("strict", 'max_bytes = 64\non_unmaskable = "refuse"'),
        )
    )
    routes = [
        {"name": "dev-json", "path": "/json", "upstream": "dev", "identity": ["jwt:it"], "mask": "pii"},
        {"name": "pii", "path": "/pii/*", "upstream": "api", "identity": ["jwt:it"], "mask": "pii"},
        {"name": "public", "path": "/public/*", "upstream": "api", "public": True, "mask": "pii"},
        {"name": "small", "path": "/small/*", "upstream": "api", "public": True, "mask": "small"},
        {"name": "strict", "path": "/strict/*", "upstream": "api", "public": True, "mask": "strict"},
        {"name": "closing", "path": "/closing/*", "upstream": "closing", "public": True, "mask": "pii"},
        {"name": "closing-strict", "path": "/closing-strict/*", "upstream": "closing", "public": True,
         "mask": "strict"},
        {"name": "closing-small", "path": "/closing-small/*", "upstream": "closing", "public": True,
         "mask": "small"},
        {"name": "slow", "path": "/slow/*", "upstream": "slow", "public": True, "mask": "pii"},
        {"name": "plain", "path": "/plain/*", "upstream": "api", "public": True},
        {"name": "limited", "path": "/limited/*", "upstream": "api", "public": True, "mask": "pii",
         "rate_limit": "lots"},
    ]  # fmt: skip
    route_text = "\n".join(
        "[[routes]]\n" + "\n".join(f"{key} = {json.dumps(value)}" for key, value in route.items()) + "\n"
        for route in routes
    )
    return f"""
[upstreams.api]
url = "{upstream}"

[upstreams.closing]
url = "{closing}"

[upstreams.slow]
url = "{upstream}"
timeout = 1.0

[upstreams.dev]
url = "{dev}"

[rate_limits.lots]
key = "ip"
rate = 1000
per = 1.0
burst = 1000

[identity.jwt.it]
issuer = "{ISSUER}"
audience = ["{AUDIENCE}"]
algorithms = ["ES256"]
jwks_file = "masking-jwks.json"

{masks}
{route_text}
"""


@pytest.fixture(scope="module")
def env(module_launcher: ProxyLauncher, devserver: DevServer) -> Iterator[Env]:
    upstream = RecordingUpstream(respond)
    closing = RecordingUpstream(respond, close_after_reply=True)
    try:
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        (module_launcher.directory / "masking-jwks.json").write_text(json.dumps(public_jwks(pem, "it-1")))
        proxy = module_launcher.start(
            config=config(upstream.url, closing.url, devserver.url), args=["--log-level", "debug"]
        )
        yield Env(proxy, upstream, closing, pem)
        proxy.assert_clean_log()
    finally:
        upstream.close()
        closing.close()


_ids = itertools.count()


def get(env: Env, path: str, *headers: tuple[str, str]) -> Response:
    with env.proxy.client() as client:
        return client.request("GET", path, headers)


def bearer(env: Env, *roles: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {env.token(*roles)}")


def assert_length_framed(response: Response, body: bytes, status: int = 200) -> None:
    """Sent whole with its own Content-Length (the helper read exactly that many bytes)."""
    assert response.status == status, (response.status, response.body[:200])
    assert response.framing == "length"
    assert response.header("transfer-encoding") is None
    assert response.header_all("content-length") == [str(len(body))]
    assert response.body == body


def reason(env: Env, response: Response) -> str:
    """Why the proxy answered a request itself, from its debug log line."""
    request_id = response.header("x-request-id")
    line = re.compile(rf"request {re.escape(str(request_id))}: {response.status} (\S+)")
    found = wait_for(lambda: line.search(env.proxy.log()), 5, f"the log line of {request_id}")
    return str(found.group(1))


def assert_refused(env: Env, response: Response, why: str) -> None:
    """The 502 the proxy answers for an unmaskable response, and its reason in the debug log."""
    assert_error(response, 502, "bad_gateway")
    assert reason(env, response) == "unmaskable:" + why


def read_head(client: Client) -> tuple[int, dict[str, str]]:
    status_line = client.rfile.readline()
    assert status_line, "connection closed before a response"
    headers = {}
    while (line := client.rfile.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


def read_chunks(client: Client, at_least: int) -> bytes:
    """Chunks of a chunked body until ``at_least`` bytes of data have come (never the last chunk)."""
    data = b""
    while len(data) < at_least:
        size = int(client.rfile.readline(), 16)
        assert size, "the body ended early"
        data += client.rfile.read(size)
        assert client.rfile.read(2) == b"\r\n"
    return data


# -- who sees what ------------------------------------------------------------------------------------


def test_reader_gets_masked_fields(env: Env) -> None:
    response = get(env, "/pii/doc", bearer(env, "reader"))
    assert_length_framed(response, MASKED)
    assert json.loads(response.body) == {
        **DOCUMENT,
        "owner": {"name": "Alice", "email": "***"},
        "ssn": "***",
        "items": [{"sku": "A1", "card": {"number": "***"}}, {"sku": "B2", "card": {"number": "***"}}],
    }
    assert response.header("content-type") == "application/json"
    assert response.header("x-request-id")


@pytest.mark.parametrize("roles", [("auditor",), ("reader", "auditor")])
def test_exempt_role_gets_the_raw_body(env: Env, roles: tuple[str, ...]) -> None:
    response = get(env, "/pii/doc", bearer(env, *roles))
    assert_length_framed(response, RAW)


def test_devserver_json_masked_for_a_reader_raw_for_an_auditor(env: Env) -> None:
    assert_length_framed(get(env, "/json", bearer(env, "reader")), DEV_MASKED)
    assert_length_framed(get(env, "/json", bearer(env, "auditor")), DEV_RAW)


def test_public_masked_route_masks(env: Env) -> None:
    assert_length_framed(get(env, "/public/doc"), MASKED)


def test_unmasked_route_passes_the_same_answer(env: Env) -> None:
    assert_length_framed(get(env, "/plain/doc"), RAW)


def test_stage_headers_go_out_with_the_masked_head(env: Env) -> None:
    response = get(env, "/limited/doc-chunked")
    assert_length_framed(response, MASKED)
    assert response.header("ratelimit-limit") == "1001"


# -- which responses are masked -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["doc-utf8", "doc-problem", "doc-upper", "identity", "not-found"])
def test_json_media_types_are_masked(env: Env, name: str) -> None:
    assert_length_framed(get(env, f"/public/{name}"), MASKED, 404 if name == "not-found" else 200)


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("text", "text/plain"), ("octets", "application/octet-stream"), ("untyped", None)],
)
def test_other_media_types_pass_untouched(env: Env, name: str, content_type: str | None) -> None:
    response = get(env, f"/public/{name}")
    assert_length_framed(response, RAW)
    assert response.header("content-type") == content_type


def test_nothing_matched_is_byte_identical(env: Env) -> None:
    original = ANSWERS["nothing-matched"]
    assert isinstance(original, bytes)
    response = get(env, "/public/nothing-matched")
    assert_length_framed(response, original[original.index(b"\r\n\r\n") + 4 :])


@pytest.mark.parametrize("name", ["empty", "empty-chunked"])
def test_empty_body_on_a_masked_route(env: Env, name: str) -> None:
    response = get(env, f"/strict/{name}")  # nothing to hide: never refused
    assert response.status == 200
    assert response.body == b""
    assert response.header("content-length") == "0"


@pytest.mark.parametrize("name", ["doc-chunked", "doc-trailers"])
def test_chunked_json_is_buffered_and_sent_with_a_length(env: Env, name: str) -> None:
    with env.proxy.client() as client:
        assert_length_framed(client.request("GET", f"/public/{name}"), MASKED)
        assert_length_framed(client.request("GET", f"/public/{name}"), MASKED)


def test_response_in_pieces_is_masked(env: Env) -> None:
    assert_length_framed(get(env, "/public/doc-split"), MASKED)


def test_interim_response_then_masked_final_one(env: Env) -> None:
    assert_length_framed(get(env, "/public/early-hints"), MASKED)


def test_close_delimited_json_is_masked(env: Env) -> None:
    with env.proxy.client() as client:
        response = client.request("GET", "/closing/close")
        assert_length_framed(response, MASKED)
        # The client connection outlived the upstream's close.
        assert_length_framed(client.request("GET", "/public/doc"), MASKED)


def test_http10_client_gets_a_masked_body_with_its_length(env: Env) -> None:
    with env.proxy.client() as client:
        response = client.request("GET", "/public/doc-chunked", version="1.0")
        assert_length_framed(response, MASKED)
        assert response.closes
        assert client.closed_by_peer()


def test_head_on_a_masked_route(env: Env) -> None:
    with env.proxy.client() as client:
        response = client.request("HEAD", "/public/doc")
        assert response.status == 200
        assert response.body == b""
        # HEAD carries the upstream's length: the proxy cannot know the masked one without the body.
        assert response.header("content-length") == str(len(RAW))
        assert_length_framed(client.request("GET", "/public/doc"), MASKED)


@pytest.mark.parametrize("name", ["no-content", "not-modified"])
def test_bodiless_statuses_are_never_masked(env: Env, name: str) -> None:
    with env.proxy.client() as client:
        response = client.request("GET", f"/strict/{name}")
        assert response.status == {"no-content": 204, "not-modified": 304}[name]
        assert response.body == b""
        assert_length_framed(client.request("GET", "/public/doc"), MASKED)


def test_pipelined_masked_responses_come_in_order(env: Env) -> None:
    with env.proxy.client() as client:
        client.send(
            b"".join(build_request("GET", path) for path in ("/public/doc", "/plain/doc", "/public/doc"))
        )
        assert_length_framed(client.read_response(), MASKED)
        assert_length_framed(client.read_response(), RAW)
        assert_length_framed(client.read_response(), MASKED)


def test_client_accepting_gzip_still_gets_masked_fields(env: Env) -> None:
    response = get(env, "/public/negotiated", ("Accept-Encoding", "gzip"))
    assert response.status == 200
    body = gzip.decompress(response.body) if response.header("content-encoding") == "gzip" else response.body
    assert json.loads(body)["ssn"] == "***"


def test_range_request_cannot_read_past_the_mask(env: Env) -> None:
    response = get(env, "/public/negotiated", ("Range", "bytes=1-"))
    assert b"078-05-1120" not in response.body, response.body


# -- unmaskable responses -----------------------------------------------------------------------------


def test_invalid_json_passes_unchanged(env: Env) -> None:
    assert_length_framed(get(env, "/public/invalid"), b'{"ssn": "078-05-1120", ')
    assert_length_framed(get(env, "/public/invalid-chunked"), b'{"ssn": "078-05-1120"} trailing')
    assert_length_framed(get(env, "/closing/close-invalid"), b'{"ssn": ')


@pytest.mark.parametrize(
    "path", ["/strict/invalid", "/strict/invalid-chunked", "/closing-strict/close-invalid"]
)
def test_invalid_json_refused(env: Env, path: str) -> None:
    with env.proxy.client() as client:
        assert_refused(env, client.request("GET", path), "invalid_json")
        assert_length_framed(client.request("GET", "/public/doc"), MASKED)


def test_compressed_json_passes_unmasked(env: Env) -> None:
    response = get(env, "/public/gzip")
    assert_length_framed(response, gzip.compress(RAW, mtime=0))
    assert response.header("content-encoding") == "gzip"


def test_compressed_json_refused(env: Env) -> None:
    with env.proxy.client() as client:
        assert_refused(env, client.request("GET", "/strict/gzip"), "encoded")
        assert_length_framed(client.request("GET", "/strict/short"), SHORT_MASKED)


def test_not_json_refused_by_a_refusing_mask(env: Env) -> None:
    assert_refused(env, get(env, "/strict/text"), "not_json")


def test_too_large_passes_unchanged(env: Env) -> None:
    assert_length_framed(get(env, "/small/large"), LARGE)
    chunked = get(env, "/small/large-chunked")
    assert chunked.status == 200
    assert chunked.framing == "chunked"
    assert chunked.body == LARGE
    # Close-delimited and too large: what was held, then the rest, chunked to an HTTP/1.1 client.
    closed = get(env, "/closing-small/close-large")
    assert (closed.status, closed.framing, closed.body) == (200, "chunked", LARGE)


def test_too_large_declared_is_streamed(env: Env) -> None:
    """A declared length over max_bytes: the head and the first bytes come before the upstream is done."""
    head = http(LARGE)[: -len(LARGE)]
    answer = Gated(head + LARGE[:100], LARGE[100:])
    ANSWERS["large-gated"] = answer
    try:
        with env.proxy.client(timeout=5) as client:
            client.send(build_request("GET", "/small/large-gated"))
            status, headers = read_head(client)
            assert (status, headers["content-length"]) == (200, str(len(LARGE)))
            assert client.rfile.read(100) == LARGE[:100]
            answer.gate.set()
            assert client.rfile.read(len(LARGE) - 100) == LARGE[100:]
            assert_length_framed(client.request("GET", "/small/short"), SHORT_MASKED)
    finally:
        answer.gate.set()


def test_too_large_chunked_is_streamed(env: Env) -> None:
    """A chunked body growing over max_bytes: what was held goes out, then the rest as it comes."""
    answer = Gated(CHUNKED_HEAD + chunk(LARGE[:40]), chunk(LARGE[40:80]), chunk(LARGE[80:]) + b"0\r\n\r\n")
    ANSWERS["large-chunked-gated"] = answer
    try:
        with env.proxy.client(timeout=5) as client:
            client.send(build_request("GET", "/small/large-chunked-gated"))
            status, headers = read_head(client)
            assert (status, headers["transfer-encoding"]) == (200, "chunked")
            assert "content-length" not in headers
            held = read_chunks(client, 80)
            assert held == LARGE[:80]
            answer.gate.set()
            rest = read_chunks(client, len(LARGE) - 80)
            assert held + rest == LARGE
            assert client.rfile.readline() == b"0\r\n" and client.rfile.readline() == b"\r\n"
            assert_length_framed(client.request("GET", "/small/short"), SHORT_MASKED)
    finally:
        answer.gate.set()


@pytest.mark.parametrize("name", ["large", "large-chunked"])
def test_too_large_refused_and_the_client_connection_lives_on(env: Env, name: str) -> None:
    with env.proxy.client() as client:
        assert_refused(env, client.request("GET", f"/strict/{name}"), "too_large")
        assert_length_framed(client.request("GET", "/strict/short"), SHORT_MASKED)


def test_close_delimited_too_large_refused(env: Env) -> None:
    assert_refused(env, get(env, "/closing-strict/close-large"), "too_large")


# -- upstream failures while a response is held -------------------------------------------------------


def test_upstream_closing_inside_a_held_body_is_502(env: Env) -> None:
    """Nothing of the response has reached the client yet: it gets an answer, not a cut connection."""
    with env.proxy.client() as client:
        response = client.request("GET", "/closing/truncated")
        assert_error(response, 502, "bad_gateway")
        assert reason(env, response) == "upstream_reset"
        assert_length_framed(client.request("GET", "/public/doc"), MASKED)


def test_upstream_too_slow_inside_a_held_body_is_504(env: Env) -> None:
    answer = Gated(http(RAW)[:-10], http(RAW)[-10:])
    ANSWERS["slow-gated"] = answer
    try:
        with env.proxy.client() as client:
            response = client.request("GET", "/slow/slow-gated")
            assert_error(response, 504, "gateway_timeout")
            assert reason(env, response) == "upstream_timeout"
            assert_length_framed(client.request("GET", "/public/doc"), MASKED)
    finally:
        answer.gate.set()


def test_malformed_chunk_inside_a_held_body_is_502(env: Env) -> None:
    ANSWERS["bad-chunk"] = http(RAW[:20], framing="chunked")[:-5] + b"zz\r\n\r\n"
    with env.proxy.client() as client:
        response = client.request("GET", "/public/bad-chunk")
        assert_error(response, 502, "bad_gateway")
        assert reason(env, response) == "upstream_bad_response"
        assert_length_framed(client.request("GET", "/public/doc"), MASKED)


# -- upstream connections -----------------------------------------------------------------------------


def test_upstream_keep_alive_survives_masked_responses(env: Env) -> None:
    tag = f"reuse-{next(_ids)}"
    names = ["doc", "doc-chunked", "invalid", "text", "large", "doc-trailers", "doc-utf8", "empty-chunked"]
    with env.proxy.client() as client:
        for name in names:
            path = f"/small/{name}" if name == "large" else f"/public/{name}"
            response = client.request("GET", f"{path}?{tag}")
            assert response.status == 200, (name, response.body)
    seen = [r for r in env.upstream.snapshot() if r.target.endswith(tag)]
    assert len(seen) == len(names)
    # One upstream connection carried them all, one after the other.
    assert len({r.connection for r in seen}) == 1, [(r.target, r.connection) for r in seen]
    assert [r.index for r in seen] == list(range(seen[0].index, seen[0].index + len(names)))


# -- the head rewrite, sans-I/O ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "client_http11", "keep_alive"),
    [
        (b"Content-Type: application/json\r\nContent-Length: 10\r\n", True, True),
        (b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n", True, True),
        (b"Content-Type: application/json\r\n", True, True),  # close-delimited
        (b"Content-Type: application/json\r\n", False, False),  # and to an HTTP/1.0 client
        (b"X-Content-Length: 5\r\ncontent-length: 10\r\nX-Transfer-Encoding: chunked\r\n", True, True),
    ],
)
@pytest.mark.parametrize("make_head", [response_head, response_head_reference])
def test_a_held_head_gets_the_new_length_in_place_of_its_framing(
    fields: bytes, client_http11: bool, keep_alive: bool, make_head: Any
) -> None:
    upstream_head = b"HTTP/1.1 200 OK\r\n" + fields + b"\r\n"
    made = make_head(upstream_head, b"rid", 200, False, client_http11, keep_alive)
    client_head, framing, _, _, kept = made
    extra = b"RateLimit-Limit: 3\r\n"
    held = _Masking(PII_MASK, client_head, framing, not kept, extra)
    assert held.head(kept) == client_head[:-2] + extra + b"\r\n"  # as it would have gone out
    body = b"x" * 1234
    response = held.response(kept, body)
    assert response.endswith(b"\r\n\r\n" + body)
    head = response[: -len(body)]
    assert head.count(b"\r\n\r\n") == 1
    lines = head[:-4].split(b"\r\n")
    framing_names = (b"content-length:", b"transfer-encoding:")
    framing_lines = [line for line in lines if line.lower().startswith(framing_names)]
    assert framing_lines == [b"Content-Length: 1234"]
    assert (b"Connection: close" in lines) == (not keep_alive)
    assert lines[-1] == b"RateLimit-Limit: 3"
    # Look-alike fields of the upstream's are kept as they were.
    assert [line for line in lines if line.startswith(b"X-")] == [
        line for line in upstream_head.split(b"\r\n") if line.startswith(b"X-")
    ] + [b"X-Request-Id: rid"]
    # Keep-alive that ended while the head was held: the head says close after all.
    assert b"\r\nConnection: close\r\n" in held.response(False, body)
    assert b"\r\nConnection: close\r\n" in held.head(False)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n", b"application/json"),
        (b"HTTP/1.1 200 OK\r\ncontent-type:\tapplication/json \r\n\r\n", b"application/json"),
        (b"HTTP/1.1 200 OK\r\nX-Content-Type: text/plain\r\nContent-Type: a/b+json\r\n\r\n", b"a/b+json"),
        (b"HTTP/1.1 200 OK\r\nX-Content-Type: text/plain\r\n\r\n", None),
        (b"HTTP/1.1 200 OK\r\nContent-Type:\r\n\r\n", b""),
    ],
)
def test_head_field(raw: bytes, value: bytes | None) -> None:
    assert head_field(raw, b"content-type") == value


# -- a graceful stop while a response is held ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "answer"),
    [
        # Masked once whole: the head goes out with the masked body.
        ("/p/held", Gated(http(RAW)[:-40], http(RAW)[-40:])),
        # Over max_bytes only with its last piece: the held head goes out then, unmasked.
        ("/s/held", Gated(CHUNKED_HEAD + chunk(LARGE[:40]), chunk(LARGE[40:]) + b"0\r\n\r\n")),
    ],
)  # fmt: skip
def test_held_response_says_close_at_a_graceful_stop(
    launcher: ProxyLauncher, path: str, answer: Gated
) -> None:
    """The proxy began to stop while the head waited: it tells the client the connection ends with it."""
    upstream = RecordingUpstream(lambda request: answer)
    masks = "\n".join(
        f"[masks.{name}]\nfields = {json.dumps(FIELDS)}\nmax_bytes = {size}\n"
        for name, size in (("pii", 1 << 20), ("small", 64))
    )
    try:
        proxy = launcher.start(
            config=config_toml(
                upstream.url,
                [
                    {"name": "p", "path": "/p/*", "mask": "pii"},
                    {"name": "s", "path": "/s/*", "mask": "small"},
                ],
                extra=masks,
            )
        )
        with proxy.client() as client, proxy.client() as idle:
            assert idle.request("GET", "/nowhere").status == 404
            client.send(build_request("GET", path))
            wait_for(upstream.snapshot, 5, "the request to reach the upstream")
            proxy.signal(signal.SIGTERM)
            # The worker has begun to stop once it answers the idle connection with a close (it does
            # so in the same step that marks the response under way as the connection's last).
            wait_for(lambda: idle.request("GET", "/nowhere").closes, 5, "the worker to begin its stop")
            answer.gate.set()
            response = client.read_response()
            assert response.status == 200
            assert response.closes, response.headers
            if path == "/p/held":
                assert_length_framed(response, MASKED)
            else:
                assert (response.framing, response.body) == ("chunked", LARGE)
            assert client.closed_by_peer()
        assert proxy.wait_exit() == 0
    finally:
        answer.gate.set()
        upstream.close()
