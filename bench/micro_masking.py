"""What masking a response and recording a request's metrics cost, in-process.

Masking. A 1 KB and a 100 KB JSON body, shaped like API answers (an order with its owner and
cards; a page of 200 such orders), masked by ``[masks.pii]``-like paths. Per case: the response
path's whole masking work -- ``plan()`` on the head, then ``apply()`` on the body (decode, replace,
encode) -- and its parts: decode alone, encode alone, a body where no path matches (decode only:
the bytes pass as they are), and the exemption check. Each call is timed alone with a pair of
``time.perf_counter_ns()`` reads, less the median cost of an empty pair: the fastest call (on a
shared machine, the least disturbed figure), the median and the p99, in microseconds, and the
median as a share of a ~20 us proxied request (fastproxy's own CPU per request, bench.micro_path).
The cyclic garbage collector is set as a worker sets it (objects made at start frozen, a threshold
of 20000): a decoded document's containers count towards it.

Metrics. ``WorkerMetrics.request()`` (one request's counter and histogram observation), the other
increments, timed in batches of 1000 calls (the per-call timer would cost more than the call), and
``render()`` over 4 used slots and 10 routes, then over 64 used slots.

``python -m bench.micro_masking [--calls N]``
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from collections.abc import Callable
from typing import Any

import msgspec
import orjson

from fastproxy.masking import CompiledMask
from fastproxy.metrics import MetricsLayout, SharedMetrics, WorkerMetrics, render

PROXIED_REQUEST_US = 20.0


def _order(i: int) -> dict[str, Any]:
    return {
        "id": 100_000 + i,
        "status": "shipped",
        "created": "2026-11-28T03:00:00.123456Z",
        "ssn": "123-45-6789",
        "owner": {"id": 7 + i, "name": "Ann Example", "email": f"ann{i}@example.com", "phone": "+1 555 0100"},
        "items": [
            {"sku": "A-1", "qty": 2, "price": 12.5, "card": {"number": "4111111111111111", "exp": "12/29"}},
            {"sku": "B-22", "qty": 1, "price": 99.0, "card": {"number": "5500005555555559", "exp": "01/28"}},
        ],
        "shipping": {"street": "1 Main St", "city": "Springfield", "zip": "12345", "country": "US"},
        "notes": "leave at the door; ring twice",
        "tags": ["priority", "gift"],
    }


def bodies() -> list[tuple[str, bytes, CompiledMask, CompiledMask]]:
    """(name, body, mask that matches, mask that matches nothing)."""
    one = _order(1)
    one["history"] = [
        {"at": f"2026-11-{d:02}T10:00:00Z", "event": "updated", "by": "system"} for d in range(1, 8)
    ]
    small = orjson.dumps(one)
    page = orjson.dumps({"data": [_order(i) for i in range(200)], "next": "cursor-abc", "total": 200})
    fields = ["ssn", "owner.email", "items[*].card.number"]
    return [
        (
            f"{len(small) / 1000:.1f} KB order",
            small,
            CompiledMask("pii", fields),
            CompiledMask("none", ["absent", "owner.absent"]),
        ),
        (
            f"{len(page) / 1000:.0f} KB page of 200",
            page,
            CompiledMask("pii", [f"data[*].{f}" for f in fields]),
            CompiledMask("none", ["data[*].absent"]),
        ),
    ]


def _percentiles(samples: list[int]) -> tuple[float, float]:
    samples.sort()
    return float(samples[len(samples) // 2]), float(samples[int(len(samples) * 0.99)])


def timer_cost(calls: int) -> int:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(calls):
        start = clock()
        samples.append(clock() - start)
    return int(_percentiles(samples)[0])


def per_call(fn: Callable[[], object], calls: int, overhead: int) -> tuple[float, float, float]:
    """(min, median, p99) microseconds of single calls, each timed alone, less the timer's cost."""
    clock = time.perf_counter_ns
    for _ in range(min(calls, 200)):
        fn()
    samples = []
    for _ in range(calls):
        start = clock()
        fn()
        samples.append(clock() - start - overhead)
    median, p99 = _percentiles(samples)
    return samples[0] / 1000, median / 1000, p99 / 1000


def per_batch(fn: Callable[[], object], batches: int) -> float:
    """Median nanoseconds per call over batches of 1000 calls, each batch timed as a whole."""
    clock = time.perf_counter_ns
    means = []
    for _ in range(batches):
        start = clock()
        for _ in range(1000):
            fn()
        means.append((clock() - start) // 1000)
    return _percentiles(means)[0]


def masking(calls: int, overhead: int) -> None:
    decode = msgspec.json.Decoder().decode
    print(f"masking cost per response, us (perf_counter_ns pair: {overhead} ns, subtracted per call)")
    print(f"  {'body':22} {'case':34} {'min':>8} {'p50':>8} {'p99':>8} {'p50 of 20 us':>13}")
    for name, body, mask, nothing in bodies():
        masked, count = mask.apply(body)[1:]
        document = decode(body)
        cases: list[tuple[str, Callable[[], object]]] = [
            (
                f"plan + apply ({count} values masked)",
                lambda mask=mask, body=body: (mask.plan(b"application/json", len(body)), mask.apply(body)),
            ),
            ("  decode alone (msgspec)", lambda body=body: decode(body)),
            ("  encode alone (orjson)", lambda document=document: orjson.dumps(document)),
            ("plan + apply, nothing matches", lambda nothing=nothing, body=body: nothing.apply(body)),
            ("exempt caller: applies_to only", lambda mask=mask: mask.applies_to(("reader", "auditor"))),
        ]
        n = calls if len(body) < 10_000 else max(200, calls // 50)
        for case, fn in cases:
            low, p50, p99 = per_call(fn, n, overhead)
            print(f"  {name:22} {case:34} {low:8.2f} {p50:8.2f} {p99:8.2f} {p50 / PROXIED_REQUEST_US:13.1%}")
        print(f"  {'':22} (body {len(body)} bytes -> {len(masked)} bytes masked)")


def metrics(batches: int) -> None:
    routes = [f"route-{i}" for i in range(10)]
    layout = MetricsLayout(routes, ["api", "auth"], 64)
    shared = SharedMetrics.create(layout)
    worker = WorkerMetrics(shared, 0)
    row = worker.route_row("route-3")
    api = worker.upstream_row("api")
    request = worker.request
    cases: list[tuple[str, Callable[[], object]]] = [
        ("request(): counter + histogram", lambda: request(row, 200, True, 0.00021)),
        ("request(), a status outside the table", lambda: request(row, 418, False, 0.004)),
        ("ratelimit_limited()", lambda: worker.ratelimit_limited(row)),
        ("jwt_cache_hit()", worker.jwt_cache_hit),
        (
            "upstream_opened() + upstream_closed()",
            lambda: (worker.upstream_opened(api), worker.upstream_closed(api)),
        ),
    ]
    print("metrics recording, ns per call (batches of 1000, loop included)")
    for case, fn in cases:
        print(f"  {case:40} {per_batch(fn, batches):8.0f}")
    for slot in range(1, 4):
        WorkerMetrics(shared, slot).request(row, 200, True, 0.001)
    print("render(), ms per call")
    print(f"  {'4 used slots, 10 routes':40} {per_call(lambda: render(shared), 200, 0)[1] / 1000:8.2f}")
    for slot in range(4, 64):
        WorkerMetrics(shared, slot).request(row, 200, True, 0.001)
    print(f"  {'64 used slots, 10 routes':40} {per_call(lambda: render(shared), 100, 0)[1] / 1000:8.2f}")
    print(
        f"  ({len(render(shared))} bytes of text; region {layout.total_bytes} bytes, "
        f"{layout.slot_bytes} per slot)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.micro_masking", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="timed calls per case (1 KB body)")
    args = parser.parse_args()
    # As fastproxy.server.worker does after boot.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20000, 20, 20)
    overhead = timer_cost(args.calls)
    masking(args.calls, overhead)
    metrics(max(20, args.calls // 500))
    print(f"CPUs: {os.cpu_count()}")


if __name__ == "__main__":
    main()
