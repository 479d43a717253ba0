"""The admin listener: /healthz, /readyz, /metrics, served by every worker on a shared socket."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

import httptools
import orjson

__all__ = ["AdminConnection"]

_PHRASES = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    503: b"Service Unavailable",
}


class AdminConnection(asyncio.Protocol):
    """A deliberately small HTTP/1.1 server: GET only, one response per request, keep-alive."""

    def __init__(
        self,
        readiness: Callable[[], tuple[bool, dict[str, object]]],
        metrics: Callable[[], bytes],
    ) -> None:
        self._readiness = readiness
        self._metrics = metrics
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._respond(400, b"application/json", b'{"error":"bad_request"}', close=True)

    def on_message_begin(self) -> None:
        self._url = b""

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > 4096:
            raise ValueError("admin URL too long")

    def on_message_complete(self) -> None:
        method = self._parser.get_method()
        path = self._url.split(b"?", 1)[0]
        close = not self._parser.should_keep_alive()
        if method not in (b"GET", b"HEAD"):
            self._respond(405, b"application/json", b'{"error":"method_not_allowed"}', close)
        elif path == b"/healthz":
            self._respond(200, b"application/json", b'{"status":"ok"}', close)
        elif path == b"/readyz":
            ready, detail = self._readiness()
            self._respond(
                200 if ready else 503,
                b"application/json",
                orjson.dumps({"ready": ready, **detail}),
                close,
            )
        elif path == b"/metrics":
            self._respond(200, b"text/plain; version=0.0.4", self._metrics(), close)
        else:
            self._respond(404, b"application/json", b'{"error":"not_found"}', close)

    def _respond(self, status: int, content_type: bytes, body: bytes, close: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n" % (
            status,
            _PHRASES[status],
            content_type,
            len(body),
            b"Connection: close\r\n" if close else b"",
        )
        transport.write(head + body)
        if close:
            transport.close()
