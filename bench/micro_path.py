"""The Python cost of one proxied request, in-process, without sockets.

A ClientConnection and an UpstreamConnection are wired to fake transports; each iteration feeds a
wrk-like request and an nginx-like response through them, exactly as uvloop would. The result is
fastproxy's own per-request CPU, apart from the kernel and the event loop; `--floor` measures
bench.floor the same way, for comparison; `--cold` measures each also with the caches evicted
before every exchange (see cold_of), the figure end-to-end costs follow.
``python -m bench.micro_path [--floor] [--cold]``.
"""

import argparse
import gc
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


def wired_exchange(state: Any, upstream: str, request: bytes = REQUEST) -> Callable[[], None]:
    """One exchange through ``state``'s worker: a client connection and a pooled connection to
    ``upstream`` on fake transports, fed ``request`` and RESPONSE as uvloop would feed them, and
    counted in shared metrics as a worker counts it."""
    from fastproxy.metrics import MetricsLayout, SharedMetrics, WorkerMetrics
    from fastproxy.server.connection import ClientConnection
    from fastproxy.server.upstream import UpstreamConnection, UpstreamPool

    routes = [route.name for route in state.router.routes]
    layout = MetricsLayout(routes, list(state.config.upstreams), slots=1)
    state.set_metrics(WorkerMetrics(SharedMetrics.create(layout), 0))

    pool = UpstreamPool(state.config.upstreams[upstream], state)
    state.pools[upstream] = pool
    upstream_conn = UpstreamConnection(pool)
    upstream_conn.connection_made(FakeTransport())  # type: ignore[arg-type]
    pool.idle.append(upstream_conn)
    client = ClientConnection(state, b"http")
    client.connection_made(FakeTransport())  # type: ignore[arg-type]

    def one() -> None:
        client.data_received(request)
        upstream_conn.data_received(RESPONSE)

    return one


def fastproxy_exchange(loop: Any = None, audit: Any = None) -> Callable[[], None]:
    """The exchange of `fastproxy run --upstream` (a public catch-all route), audited by
    ``audit`` when given (an AuditClient on ``loop``)."""
    from fastproxy.config import load_config
    from fastproxy.server.state import WorkerState

    state = WorkerState(load_config(upstream_url="http://127.0.0.1:9"), loop or uvloop.new_event_loop())
    state.audit = audit
    return wired_exchange(state, "default")


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


# Bytes written to evict the caches between cold exchanges: twice a core's L2 on this VM (1 MiB),
# as the kernel's loopback work between two requests of a loaded worker evicts L1 and L2.
_EVICT_BYTES = 2 << 20


def cold_of(one: Callable[[], None], repeat: int = 9, number: int = 3000) -> float:
    """Microseconds per exchange with L1 and L2 evicted before each one, less the eviction.

    Under load a worker meets each request with cold caches (the kernel's network work runs in
    between), and its CPU per request follows this figure rather than best_of's: each piece of
    code and each object a request touches costs a miss, so touching fewer matters as much as
    running fewer instructions. The best loop of evictions alone is taken from the best loop of
    evictions and exchanges.
    """
    junk = bytearray(_EVICT_BYTES)
    line = b"\x01" * (len(junk) // 64)

    def evict() -> None:
        junk[::64] = line  # one write per cache line

    for _ in range(200):
        one()
    with_exchange = alone = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            evict()
            one()
        middle = time.perf_counter()
        for _ in range(number):
            evict()
        with_exchange = min(with_exchange, middle - start)
        alone = min(alone, time.perf_counter() - middle)
    return (with_exchange - alone) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.micro_path", description=__doc__.splitlines()[0])
    parser.add_argument("--floor", action="store_true", help="also measure bench.floor")
    parser.add_argument(
        "--cold", action="store_true", help="also with the caches evicted before each exchange"
    )
    args = parser.parse_args()
    cases = [("fastproxy", fastproxy_exchange())]
    if args.floor:
        cases.append(("floor", floor_exchange()))
    # As a worker runs once booted: what exists now frozen, the young generation collected rarely.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20000, 20, 20)
    for name, one in cases:
        line = f"{name + ':':11s}{best_of(one):.2f} us per request (best of 7)"
        if args.cold:
            line += f", {cold_of(one):.2f} us cold"
        print(line)


if __name__ == "__main__":
    main()
