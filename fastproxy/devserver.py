"""A small, fast HTTP/1.1 origin server for the demo, the benchmarks and the tests.

``python -m fastproxy.devserver --listen 127.0.0.1:9000``. Paths:

* ``/echo`` and any path ending in ``/echo`` (any method): JSON describing what arrived —
  method, target, headers, body size and SHA-256 — so a test can see exactly what the proxy
  forwarded;
* ``/bytes/N``: N bytes with Content-Length; ``/chunked/N``: N bytes, chunked;
* ``/status/NNN``: that status; ``/delay/MS``: answers after MS milliseconds;
* ``/close``: answers with ``Connection: close`` and closes; ``/http10``: an HTTP/1.0 response
  delimited by closing the connection;
* ``/json``: a small JSON document with personal data (the masking demo);
* anything else: a small fixed JSON body (the benchmark path).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
from typing import cast

import httptools
import orjson
import uvloop

from fastproxy.net import parse_address

__all__ = ["DevServer", "main", "serve"]

_HELLO = b'{"ok":true,"service":"fastproxy-devserver","items":[1,2,3],"message":"hello"}'
_PATTERN = bytes(range(256)) * 256  # 64 KiB


def pattern(size: int) -> bytes:
    """The deterministic body of /bytes/N and /chunked/N."""
    whole, rest = divmod(size, len(_PATTERN))
    return _PATTERN * whole + _PATTERN[:rest]


class DevServer(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body_size = 0
        self.digest = hashlib.sha256()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError:
            self._send(400, b'{"error":"bad_request"}', close=True)

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body_size = 0
        self.digest = hashlib.sha256()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        self.digest.update(body)

    def on_message_complete(self) -> None:
        path = self.url.split(b"?", 1)[0]
        keep_alive = self.parser.should_keep_alive()
        parts = path.split(b"/")
        head = self.parser.get_method() == b"HEAD"
        if path.endswith(b"/echo"):
            body = orjson.dumps(
                {
                    "method": self.parser.get_method().decode(),
                    "target": self.url.decode("latin-1"),
                    "version": self.parser.get_http_version(),
                    "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in self.headers],
                    "body_bytes": self.body_size,
                    "body_sha256": self.digest.hexdigest(),
                }
            )
            self._send(200, body, close=not keep_alive, head=head)
        elif len(parts) == 3 and parts[1] == b"bytes" and parts[2].isdigit():
            self._send(
                200,
                pattern(int(parts[2])),
                close=not keep_alive,
                head=head,
                content_type=b"application/octet-stream",
            )
        elif len(parts) == 3 and parts[1] == b"chunked" and parts[2].isdigit():
            self._send_chunked(pattern(int(parts[2])), close=not keep_alive)
        elif len(parts) == 3 and parts[1] == b"status" and parts[2].isdigit():
            status = int(parts[2])
            self._send(
                status,
                b"" if status in (204, 304) else b'{"status":%d}' % status,
                close=not keep_alive,
            )
        elif len(parts) == 3 and parts[1] == b"delay" and parts[2].isdigit():
            loop = asyncio.get_running_loop()
            loop.call_later(int(parts[2]) / 1000, self._send, 200, b'{"delayed":true}', not keep_alive)
        elif path == b"/close":
            self._send(200, b'{"closing":true}', close=True)
        elif path == b"/http10":
            assert self.transport is not None
            self.transport.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close")
            self.transport.close()
        elif path == b"/json":
            document = {
                "id": 7,
                "owner": {"name": "Alice", "email": "alice@example.com"},
                "ssn": "078-05-1120",
                "items": [{"sku": "A1", "card": {"number": "4111111111111111"}}],
            }
            self._send(200, orjson.dumps(document), close=not keep_alive, head=head)
        else:
            self._send(200, _HELLO, close=not keep_alive, head=head)

    def _send(
        self,
        status: int,
        body: bytes,
        close: bool,
        head: bool = False,
        content_type: bytes = b"application/json",
    ) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        no_body = status in (204, 304)
        transport.write(
            b"HTTP/1.1 %d X\r\nContent-Type: %s\r\n%s%s\r\n%s"
            % (
                status,
                content_type,
                b"" if no_body else b"Content-Length: %d\r\n" % len(body),
                b"Connection: close\r\n" if close else b"",
                b"" if head or no_body else body,
            )
        )
        if close:
            transport.close()

    def _send_chunked(self, body: bytes, close: bool) -> None:
        assert self.transport is not None
        parts = [
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n"
        ]
        parts.append(b"Connection: close\r\n\r\n" if close else b"\r\n")
        for start in range(0, len(body), 16384):
            piece = body[start : start + 16384]
            parts.append(b"%x\r\n%s\r\n" % (len(piece), piece))
        parts.append(b"0\r\n\r\n")
        self.transport.write(b"".join(parts))
        if close:
            self.transport.close()


async def serve(host: str, port: int) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(DevServer, host, port, backlog=4096, reuse_address=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="fastproxy.devserver", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:9000", help="HOST:PORT (default 127.0.0.1:9000)")
    args = parser.parse_args()
    address = parse_address(args.listen)

    async def forever() -> None:
        server = await serve(address.host, address.port)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(forever())


if __name__ == "__main__":
    main()
