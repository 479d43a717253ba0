"""The Python cost of one proxied request, in-process, without sockets.

A ClientConnection and an UpstreamConnection are wired to fake transports; each iteration feeds a
wrk-like request and an nginx-like response through them, exactly as uvloop would. The result is
fastproxy's own per-request CPU, apart from the kernel and the event loop; `--floor` measures
bench.floor the same way, for comparison. ``python -m bench.micro_path [--floor]``.
"""

import argparse
import time
from collections.abc import Callable
from typing import Any

import uvloop

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 28 Nov 2026 04:12:45 GMT\r\n"
    b"Content-Type: application/json\r\nContent-Length: 66\r\nConnection: keep-alive\r\n\r\n" + b"x" * 66
)


class FakeTransport:
    def write(self, data: bytes) -> None:
        pass

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 40000)

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


def fastproxy_exchange() -> Callable[[], None]:
    from fastproxy.config import load_config
    from fastproxy.server.connection import ClientConnection
    from fastproxy.server.state import WorkerState
    from fastproxy.server.upstream import UpstreamConnection, UpstreamPool

    config = load_config(upstream_url="http://127.0.0.1:9")
    state = WorkerState(config, uvloop.new_event_loop())
    pool = UpstreamPool(config.upstreams["default"], state)
    state.pools["default"] = pool
    upstream = UpstreamConnection(pool)
    upstream.connection_made(FakeTransport())  # type: ignore[arg-type]
    pool.idle.append(upstream)
    client = ClientConnection(state, b"http")
    client.connection_made(FakeTransport())  # type: ignore[arg-type]

    def one() -> None:
        client.data_received(REQUEST)
        upstream.data_received(RESPONSE)

    return one


def floor_exchange() -> Callable[[], None]:
    from bench import floor

    pool: list[floor._Upstream] = []
    upstream = floor._Upstream(pool)
    upstream.connection_made(FakeTransport())  # type: ignore[arg-type]
    pool.append(upstream)
    client = floor._Client(pool, ("127.0.0.1", 9))
    client.connection_made(FakeTransport())  # type: ignore[arg-type]

    def one() -> None:
        client.data_received(REQUEST)
        upstream.data_received(RESPONSE)

    return one


def best_of(one: Callable[[], None], repeat: int = 7, number: int = 30000) -> float:
    for _ in range(1000):
        one()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            one()
        best = min(best, (time.perf_counter() - start) / number)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.micro_path", description=__doc__.splitlines()[0])
    parser.add_argument("--floor", action="store_true", help="also measure bench.floor")
    args = parser.parse_args()
    print(f"fastproxy: {best_of(fastproxy_exchange()):.2f} us per request (best of 7)")
    if args.floor:
        print(f"floor:     {best_of(floor_exchange()):.2f} us per request (best of 7)")


if __name__ == "__main__":
    main()
