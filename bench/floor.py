"""The floor: the least a uvloop + httptools forwarder can do, to show what is Python's share.

It parses requests and responses with httptools, keeps a pool of upstream connections and copies
the upstream's response bytes through unchanged — no limits, no header rules, no routing, no
timeouts, GET only. It is a yardstick for the benchmark, never a product:
``python -m bench.floor --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT``.
"""

import argparse
import asyncio
from typing import cast

import httptools
import uvloop


class _Upstream(asyncio.Protocol):
    def __init__(self, pool: list["_Upstream"]) -> None:
        self.pool = pool
        self.client: _Client | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.transport = cast(asyncio.Transport, None)
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:
            return
        self.parser.feed_data(data)
        client.transport.write(data)
        if self.done:
            self.done = False
            self.client = None
            self.pool.append(self)

    def on_message_complete(self) -> None:
        self.done = True


class _Client(asyncio.Protocol):
    def __init__(self, pool: list[_Upstream], address: tuple[str, int]) -> None:
        self.pool = pool
        self.address = address
        self.parser = httptools.HttpRequestParser(self)
        self.transport = cast(asyncio.Transport, None)
        self.url = b""
        self.headers: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append(name + b": " + value + b"\r\n")

    def on_message_complete(self) -> None:
        request = b"GET " + self.url + b" HTTP/1.1\r\n" + b"".join(self.headers) + b"\r\n"
        self.headers = []
        if self.pool:
            upstream = self.pool.pop()
            upstream.client = self
            upstream.transport.write(request)
        else:
            asyncio.get_running_loop().create_task(self._connect(request))

    async def _connect(self, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        _, upstream = await loop.create_connection(lambda: _Upstream(self.pool), *self.address)
        upstream.client = self
        upstream.transport.write(request)


async def _serve(listen: tuple[str, int], upstream: tuple[str, int]) -> None:
    pool: list[_Upstream] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(pool, upstream), *listen, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.floor")
    parser.add_argument("--listen", required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    up_host, up_port = args.upstream.rsplit(":", 1)
    uvloop.run(_serve((host, int(port)), (up_host, int(up_port))))


if __name__ == "__main__":
    main()
