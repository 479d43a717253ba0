"""Answers the proxy makes itself: a short JSON body, never a detail of which check failed."""

from __future__ import annotations

from http import HTTPStatus

import orjson

__all__ = ["ProtocolError", "error_response", "public_code"]

_PUBLIC_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    408: "request_timeout",
    413: "payload_too_large",
    414: "uri_too_long",
    429: "rate_limited",
    431: "headers_too_large",
    500: "internal_error",
    502: "bad_gateway",
    503: "unavailable",
    504: "gateway_timeout",
}


class ProtocolError(Exception):
    """A request the proxy refuses to parse further: ``status`` for the client, ``reason`` for logs.

    Every protocol error closes the connection: after one, the framing of what follows on the
    connection cannot be trusted (that is how smuggling works).
    """

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.status = status
        self.reason = reason
        self.detail = detail


def public_code(status: int) -> str:
    return _PUBLIC_CODES.get(status, "error")


def _reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


def error_response(
    status: int,
    request_id: bytes,
    *,
    close: bool = False,
    headers: tuple[tuple[bytes, bytes], ...] = (),
    head_only: bool = False,
) -> bytes:
    """The whole response, head and body, for an error the proxy answers itself."""
    body = orjson.dumps({"error": public_code(status), "request_id": request_id.decode("latin-1")})
    lines = [
        b"HTTP/1.1 %d %s\r\n" % (status, _reason_phrase(status)),
        b"Content-Type: application/json\r\n",
        b"Content-Length: %d\r\n" % len(body),
        b"X-Request-Id: " + request_id + b"\r\n",
    ]
    lines.extend(name + b": " + value + b"\r\n" for name, value in headers)
    if close:
        lines.append(b"Connection: close\r\n")
    lines.append(b"\r\n")
    if not head_only:
        lines.append(body)
    return b"".join(lines)
