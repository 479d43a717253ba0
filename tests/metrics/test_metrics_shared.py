"""SharedMetrics across real processes: per-slot writes summed, restarts, reloads, the name table."""

from __future__ import annotations

import os
import signal
import struct
import time
from collections import Counter
from collections.abc import Callable

import pytest

from fastproxy.metrics import (
    AUDIT_SLOT,
    MASTER_SLOT,
    MetricsLayout,
    MetricsTableFull,
    SharedMetrics,
    WorkerMetrics,
    render,
)
from fastproxy.metrics import layout as L


def _samples(shared: SharedMetrics) -> dict[str, float]:
    """``{'name{labels}': value}`` from the rendered text (the grammar is checked elsewhere)."""
    out = {}
    for line in render(shared).decode().splitlines():
        if not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            assert series not in out
            out[series] = float(value)
    return out


def _fork(work: Callable[[], bytes]) -> tuple[int, int]:
    """Runs ``work`` in a child; (pid, read end of a pipe carrying what it returned)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(read_end)
            data = work()
            os.write(write_end, struct.pack("<I", len(data)) + data)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    return pid, read_end


def _join(pid: int, read_end: int) -> bytes:
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child failed"
    (length,) = struct.unpack_from("<I", data)
    return data[4 : 4 + length]


STATUSES = (200, 404, 503, 418)


def _plan(worker: int, requests: int) -> list[tuple[str | None, int, bool, float]]:
    """Worker ``worker``'s requests: (route, status, allowed, seconds), deterministic."""
    routes = ("orders", "users", None)
    return [
        (routes[k % 3], STATUSES[(k + worker) % 4], (k + worker) % 4 != 1, 0.0001 * (k % 7))
        for k in range(requests)
    ]


def test_four_processes_are_summed() -> None:
    layout = MetricsLayout(["orders", "users"], ["api"], 8)
    shared = SharedMetrics.create(layout)
    start_at = time.monotonic() + 0.2

    def work(worker: int) -> Callable[[], bytes]:
        def run() -> bytes:
            metrics = WorkerMetrics(shared, worker * 2)  # any slots, not only the first ones
            rows = {name: metrics.route_row(name) for name in ("orders", "users", None)}
            api = metrics.upstream_row("api")
            time.sleep(max(0.0, start_at - time.monotonic()))  # all four write at once
            for route, status, allowed, seconds in _plan(worker, 5000 + worker):
                metrics.request(rows[route], status, allowed, seconds)
            for _ in range(worker + 1):
                metrics.jwt_cache_hit()
                metrics.upstream_opened(api)
                metrics.ratelimit_limited(rows["users"])
            metrics.jwt_cache_miss()
            metrics.upstream_connect_error(api)
            return b""

        return run

    children = [_fork(work(i)) for i in range(4)]
    for pid, read_end in children:
        _join(pid, read_end)

    expected: Counter[str] = Counter()
    durations: Counter[str] = Counter()
    sums: dict[str, float] = {}
    for worker in range(4):
        for route, status, allowed, seconds in _plan(worker, 5000 + worker):
            label = route or ""
            code = "4xx" if status == 418 else str(status)
            decision = "allow" if allowed else "deny"
            expected[
                f'fastproxy_requests_total{{route="{label}",status="{code}",decision="{decision}"}}'
            ] += 1
            durations[label] += 1
            sums[label] = sums.get(label, 0.0) + seconds
    samples = _samples(shared)
    requests = {k: v for k, v in samples.items() if k.startswith("fastproxy_requests_total")}
    assert requests == expected
    assert sum(requests.values()) == 4 * 5000 + 6
    for label, count in durations.items():
        assert samples[f'fastproxy_request_duration_seconds_count{{route="{label}"}}'] == count
        assert samples[f'fastproxy_request_duration_seconds_bucket{{route="{label}",le="+Inf"}}'] == count
        assert samples[f'fastproxy_request_duration_seconds_sum{{route="{label}"}}'] == pytest.approx(
            sums[label]
        )
    assert samples["fastproxy_jwt_cache_hits_total"] == 1 + 2 + 3 + 4
    assert samples["fastproxy_jwt_cache_misses_total"] == 4
    assert samples['fastproxy_upstream_connections_open{upstream="api"}'] == 10
    assert samples['fastproxy_upstream_connect_errors_total{upstream="api"}'] == 4
    assert samples['fastproxy_ratelimit_limited_total{route="users"}'] == 10
    assert samples['fastproxy_ratelimit_limited_total{route="orders"}'] == 0
    assert shared.used_regions() == [0, 2, 4, 6]


def test_a_restarted_worker_does_not_reset_the_totals() -> None:
    layout = MetricsLayout(["r"], ["api"], 4)
    shared = SharedMetrics.create(layout)
    master = WorkerMetrics(shared, MASTER_SLOT)

    def crash() -> bytes:
        metrics = WorkerMetrics(shared, 0)
        for _ in range(100):
            metrics.request(1, 200, True, 0.001)
        for _ in range(3):
            metrics.upstream_opened(0)
        metrics.set_audit_queue_depth(5)
        os.kill(os.getpid(), signal.SIGKILL)
        return b""  # pragma: no cover - never reached

    pid, read_end = _fork(crash)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == -signal.SIGKILL
    samples = _samples(shared)
    assert samples['fastproxy_requests_total{route="r",status="200",decision="allow"}'] == 100
    assert samples['fastproxy_upstream_connections_open{upstream="api"}'] == 3  # until reaped

    # What the master does when it reaps the worker and respawns it.
    shared.clear_gauges(0)
    master.worker_restarted()
    samples = _samples(shared)
    assert samples['fastproxy_requests_total{route="r",status="200",decision="allow"}'] == 100
    assert samples['fastproxy_upstream_connections_open{upstream="api"}'] == 0
    assert samples["fastproxy_audit_queue_depth"] == 0
    assert samples["fastproxy_worker_restarts_total"] == 1

    def respawned(slot: int, count: int) -> Callable[[], bytes]:
        def run() -> bytes:
            metrics = WorkerMetrics(shared, slot)
            for _ in range(count):
                metrics.request(1, 200, True, 0.001)
            metrics.upstream_opened(0)
            return b""

        return run

    _join(*_fork(respawned(0, 50)))  # takes over the same slot
    _join(*_fork(respawned(3, 25)))  # or another one
    samples = _samples(shared)
    assert samples['fastproxy_requests_total{route="r",status="200",decision="allow"}'] == 175
    assert samples['fastproxy_request_duration_seconds_count{route="r"}'] == 175
    assert samples['fastproxy_upstream_connections_open{upstream="api"}'] == 2

    # A new owner zeroes the gauges it inherits even if nobody cleared them; counters carry on.
    _join(*_fork(respawned(0, 0)))
    samples = _samples(shared)
    assert samples['fastproxy_upstream_connections_open{upstream="api"}'] == 2  # slot 0: 1 -> 0 -> 1
    assert samples['fastproxy_requests_total{route="r",status="200",decision="allow"}'] == 175


def test_the_audit_writer_and_the_master_have_slots_of_their_own() -> None:
    shared = SharedMetrics.create(MetricsLayout([], [], 2))

    def writer() -> bytes:
        metrics = WorkerMetrics(shared, AUDIT_SLOT)
        metrics.audit_records(40)
        metrics.audit_gaps(2)
        metrics.set_audit_queue_depth(7)
        return b""

    _join(*_fork(writer))
    worker = WorkerMetrics(shared, 1)
    worker.audit_records()
    worker.set_audit_queue_depth(3)
    WorkerMetrics(shared, MASTER_SLOT).worker_restarted()
    samples = _samples(shared)
    assert samples["fastproxy_audit_records_total"] == 41
    assert samples["fastproxy_audit_gaps_total"] == 2
    assert samples["fastproxy_audit_queue_depth"] == 10
    assert samples["fastproxy_worker_restarts_total"] == 1
    assert shared.used_regions() == [1, 2, 3]


def test_a_reload_keeps_rows_and_every_generation_sees_every_name() -> None:
    shared = SharedMetrics.create(MetricsLayout(["a", "b"], ["u"], 4))
    go_r, go_w = os.pipe()

    def old_generation() -> bytes:
        metrics = WorkerMetrics(shared, 0)  # the layout of its fork: a=1, b=2
        for _ in range(10):
            metrics.request(metrics.route_row("a"), 200, True, 0.001)
        for _ in range(5):
            metrics.request(metrics.route_row("b"), 200, True, 0.001)
        os.read(go_r, 1)  # the reload happens meanwhile
        for _ in range(7):
            metrics.request(metrics.route_row("b"), 200, True, 0.001)
        return render(shared)

    old = _fork(old_generation)
    time.sleep(0.05)
    new_layout = shared.relayout(["b", "c"], ["v", "u"])
    assert dict(new_layout.routes) == {"b": 2, "c": 3}
    assert dict(new_layout.upstreams) == {"v": 1, "u": 0}
    assert shared.layout is new_layout

    def new_generation() -> bytes:
        metrics = WorkerMetrics(shared, 1)
        for _ in range(3):
            metrics.request(metrics.route_row("b"), 200, True, 0.001)
        for _ in range(4):
            metrics.request(metrics.route_row("c"), 404, False, 0.001)
        metrics.upstream_opened(metrics.upstream_row("v"))
        return b""

    _join(*_fork(new_generation))
    os.write(go_w, b"x")
    os.close(go_w)
    os.close(go_r)
    seen_by_old = _join(*old).decode()
    # The old worker renders the names the reload brought, and everybody's counts.
    for line in (
        'fastproxy_requests_total{route="a",status="200",decision="allow"} 10',
        'fastproxy_requests_total{route="b",status="200",decision="allow"} 15',
        'fastproxy_requests_total{route="c",status="404",decision="deny"} 4',
        'fastproxy_upstream_connections_open{upstream="v"} 1',
        'fastproxy_ratelimit_limited_total{route="c"} 0',
    ):
        assert line + "\n" in seen_by_old
    samples = _samples(shared)
    assert samples['fastproxy_requests_total{route="b",status="200",decision="allow"}'] == 15

    # The old generation is gone: its routes' rows are freed, their series disappear.
    shared.release([new_layout])
    samples = _samples(shared)
    assert not any('route="a"' in series for series in samples)
    assert samples['fastproxy_requests_total{route="b",status="200",decision="allow"}'] == 15
    # A freed row serves a new name from zero.
    third = shared.relayout(["b", "d"], ["u"])
    assert third.routes["d"] == 1  # a's old row
    samples = _samples(shared)
    assert samples['fastproxy_request_duration_seconds_count{route="d"}'] == 0
    assert not any('route="d",status' in series for series in samples)
    assert samples['fastproxy_upstream_connections_open{upstream="v"}'] == 1  # still held: not released


def test_a_reload_beyond_the_tables_is_refused() -> None:
    shared = SharedMetrics.create(MetricsLayout(["a", "b"], ["u"], 2, route_rows=3, upstream_rows=1))
    layout = shared.layout
    with pytest.raises(MetricsTableFull, match="the route table has 2 rows"):
        shared.relayout(["a", "c"], ["u"])
    with pytest.raises(MetricsTableFull, match="the upstream table has 1 rows"):
        shared.relayout(["a"], ["w"])
    assert shared.layout is layout
    assert shared.read_names() == ({"a": 1, "b": 2}, {"u": 0})
    with pytest.raises(ValueError, match="appears twice"):
        shared.relayout(["a", "a"], [])
    shared.release([shared.relayout(["a"], ["u"])])
    assert dict(shared.relayout(["a", "c"], ["u"]).routes) == {"a": 1, "c": 2}


def test_gauges_are_cleared_only_in_their_slot() -> None:
    shared = SharedMetrics.create(MetricsLayout(["r"], ["u"], 2))
    first, second = WorkerMetrics(shared, 0), WorkerMetrics(shared, 1)
    first.upstream_opened(0)
    first.upstream_opened(0)
    second.upstream_opened(0)
    first.upstream_closed(0)
    first.request(1, 200, True, 0.5)
    assert _samples(shared)['fastproxy_upstream_connections_open{upstream="u"}'] == 2
    shared.clear_gauges(1)
    assert _samples(shared)['fastproxy_upstream_connections_open{upstream="u"}'] == 1
    shared.clear_gauges(0)
    samples = _samples(shared)
    assert samples['fastproxy_upstream_connections_open{upstream="u"}'] == 0
    assert samples['fastproxy_request_duration_seconds_sum{route="r"}'] == 0.5


def test_the_name_table_is_never_read_half_written() -> None:
    shared = SharedMetrics.create(MetricsLayout(["a"], ["u"], 1))
    tables = (
        ({"a": 1}, {"u": 0}),
        ({f"route-{i}-" + "x" * 200: i for i in range(1, 30)}, {f"up-{i}": i for i in range(10)}),
    )

    def writer() -> bytes:
        deadline = time.monotonic() + 0.5
        writes = 0
        while time.monotonic() < deadline:
            shared._publish(*tables[writes % 2])
            writes += 1
        return str(writes).encode()

    child = _fork(writer)
    reads = Counter[int]()
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        reads[tables.index(shared.read_names())] += 1
    assert int(_join(*child)) > 100
    assert sum(reads.values()) > 100


def test_a_table_that_stays_inconsistent_is_an_error() -> None:
    shared = SharedMetrics.create(MetricsLayout(["a"], [], 1))
    shared._set(L.H_NAMES_CRC, 12345)
    with pytest.raises(RuntimeError, match="no consistent read"):
        shared.read_names()
