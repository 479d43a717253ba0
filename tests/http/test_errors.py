"""Answers the proxy makes itself: status line, framing, and a JSON body that never says why."""

from __future__ import annotations

import orjson
import pytest

from fastproxy.http.errors import ProtocolError, error_response, public_code

STATUSES = [400, 401, 403, 404, 408, 413, 414, 429, 431, 500, 502, 503, 504]


def split(response: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    head, sep, body = response.partition(b"\r\n\r\n")
    assert sep, "no end of head"
    status_line, *lines = head.split(b"\r\n")
    headers = []
    for line in lines:
        name, colon, value = line.partition(b": ")
        assert colon, line
        headers.append((name, value))
    return status_line, headers, body


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [v for n, v in headers if n.lower() == name.lower()]


@pytest.mark.parametrize("status", STATUSES)
def test_body_is_exactly_error_code_and_request_id(status: int) -> None:
    status_line, headers, body = split(error_response(status, b"req-1"))
    assert status_line.startswith(b"HTTP/1.1 %d " % status)
    assert orjson.loads(body) == {"error": public_code(status), "request_id": "req-1"}
    assert header(headers, b"Content-Type") == [b"application/json"]
    assert header(headers, b"Content-Length") == [b"%d" % len(body)]
    assert header(headers, b"X-Request-Id") == [b"req-1"]


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "bad_request"),
        (401, "unauthorized"),
        (403, "forbidden"),
        (404, "not_found"),
        (408, "request_timeout"),
        (413, "payload_too_large"),
        (414, "uri_too_long"),
        (429, "rate_limited"),
        (431, "headers_too_large"),
        (502, "bad_gateway"),
        (503, "unavailable"),
        (504, "gateway_timeout"),
        (599, "error"),
    ],
)
def test_public_codes(status: int, code: str) -> None:
    assert public_code(status) == code


def test_status_lines_carry_the_standard_reason_phrase() -> None:
    assert error_response(404, b"r").startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert error_response(431, b"r").startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert error_response(599, b"r").startswith(b"HTTP/1.1 599 Unknown\r\n")


def test_a_protocol_error_detail_never_reaches_the_client() -> None:
    exc = ProtocolError(400, "bad_framing", "Transfer-Encoding other than a lone chunked")
    assert exc.status == 400
    assert exc.reason == "bad_framing"
    assert exc.detail in str(exc)
    response = error_response(exc.status, b"rid")
    assert b"Transfer-Encoding" not in response
    assert b"bad_framing" not in response
    assert orjson.loads(split(response)[2]) == {"error": "bad_request", "request_id": "rid"}


def test_close_adds_connection_close() -> None:
    _, headers, _ = split(error_response(400, b"r", close=True))
    assert header(headers, b"Connection") == [b"close"]
    _, headers, _ = split(error_response(400, b"r"))
    assert header(headers, b"Connection") == []


def test_extra_headers_are_sent() -> None:
    extra = ((b"Retry-After", b"3"), (b"WWW-Authenticate", b'Bearer realm="api"'))
    _, headers, _ = split(error_response(429, b"r", headers=extra))
    assert header(headers, b"Retry-After") == [b"3"]
    assert header(headers, b"WWW-Authenticate") == [b'Bearer realm="api"']


def test_head_only_keeps_the_length_and_drops_the_body() -> None:
    full = error_response(404, b"r")
    head = error_response(404, b"r", head_only=True)
    assert head.endswith(b"\r\n\r\n")
    assert full.startswith(head)
    assert len(full) > len(head)
    _, headers, body = split(head)
    assert body == b""
    assert int(header(headers, b"Content-Length")[0]) == len(split(full)[2]) > 0
