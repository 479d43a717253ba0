"""render(): the exact text for a small case, the text format's grammar, and label escaping."""

from __future__ import annotations

import math
import re

from fastproxy.metrics import (
    BUCKETS,
    CONTENT_TYPE,
    MASTER_SLOT,
    MetricsLayout,
    SharedMetrics,
    WorkerMetrics,
    escape_label_value,
    render,
)

EXPECTED = """\
# HELP fastproxy_requests_total Requests answered, by route ("" for no route), status and decision.
# TYPE fastproxy_requests_total counter
fastproxy_requests_total{route="",status="404",decision="deny"} 1
fastproxy_requests_total{route="orders",status="200",decision="allow"} 2
fastproxy_requests_total{route="orders",status="429",decision="deny"} 1
fastproxy_requests_total{route="orders",status="5xx",decision="allow"} 1
# HELP fastproxy_request_duration_seconds Seconds from a request's head to the end of its response, by route.
# TYPE fastproxy_request_duration_seconds histogram
fastproxy_request_duration_seconds_bucket{route="",le="0.0001"} 1
fastproxy_request_duration_seconds_bucket{route="",le="0.00025"} 1
fastproxy_request_duration_seconds_bucket{route="",le="0.0005"} 1
fastproxy_request_duration_seconds_bucket{route="",le="0.001"} 1
fastproxy_request_duration_seconds_bucket{route="",le="0.0025"} 1
fastproxy_request_duration_seconds_bucket{route="",le="0.005"} 1
fastproxy_request_duration_seconds_bucket{route="",le="0.01"} 1
fastproxy_request_duration_seconds_bucket{route="",le="0.025"} 1
fastproxy_request_duration_seconds_bucket{route="",le="0.05"} 1
fastproxy_request_duration_seconds_bucket{route="",le="0.1"} 1
fastproxy_request_duration_seconds_bucket{route="",le="0.25"} 1
fastproxy_request_duration_seconds_bucket{route="",le="0.5"} 1
fastproxy_request_duration_seconds_bucket{route="",le="1.0"} 1
fastproxy_request_duration_seconds_bucket{route="",le="2.5"} 1
fastproxy_request_duration_seconds_bucket{route="",le="5.0"} 1
fastproxy_request_duration_seconds_bucket{route="",le="10.0"} 1
fastproxy_request_duration_seconds_bucket{route="",le="30.0"} 1
fastproxy_request_duration_seconds_bucket{route="",le="+Inf"} 1
fastproxy_request_duration_seconds_sum{route=""} 5e-05
fastproxy_request_duration_seconds_count{route=""} 1
fastproxy_request_duration_seconds_bucket{route="orders",le="0.0001"} 1
fastproxy_request_duration_seconds_bucket{route="orders",le="0.00025"} 2
fastproxy_request_duration_seconds_bucket{route="orders",le="0.0005"} 2
fastproxy_request_duration_seconds_bucket{route="orders",le="0.001"} 2
fastproxy_request_duration_seconds_bucket{route="orders",le="0.0025"} 2
fastproxy_request_duration_seconds_bucket{route="orders",le="0.005"} 2
fastproxy_request_duration_seconds_bucket{route="orders",le="0.01"} 2
fastproxy_request_duration_seconds_bucket{route="orders",le="0.025"} 2
fastproxy_request_duration_seconds_bucket{route="orders",le="0.05"} 2
fastproxy_request_duration_seconds_bucket{route="orders",le="0.1"} 2
fastproxy_request_duration_seconds_bucket{route="orders",le="0.25"} 2
fastproxy_request_duration_seconds_bucket{route="orders",le="0.5"} 2
fastproxy_request_duration_seconds_bucket{route="orders",le="1.0"} 3
fastproxy_request_duration_seconds_bucket{route="orders",le="2.5"} 3
fastproxy_request_duration_seconds_bucket{route="orders",le="5.0"} 3
fastproxy_request_duration_seconds_bucket{route="orders",le="10.0"} 3
fastproxy_request_duration_seconds_bucket{route="orders",le="30.0"} 3
fastproxy_request_duration_seconds_bucket{route="orders",le="+Inf"} 4
fastproxy_request_duration_seconds_sum{route="orders"} 61.000200001
fastproxy_request_duration_seconds_count{route="orders"} 4
# HELP fastproxy_ratelimit_limited_total Requests refused by a rate limit, by route.
# TYPE fastproxy_ratelimit_limited_total counter
fastproxy_ratelimit_limited_total{route="orders"} 1
# HELP fastproxy_jwt_cache_hits_total JWTs found in the verified-token cache.
# TYPE fastproxy_jwt_cache_hits_total counter
fastproxy_jwt_cache_hits_total 3
# HELP fastproxy_jwt_cache_misses_total JWTs verified because the cache lacked them.
# TYPE fastproxy_jwt_cache_misses_total counter
fastproxy_jwt_cache_misses_total 1
# HELP fastproxy_upstream_connections_open Connections open to the upstream (in use or idle), all workers.
# TYPE fastproxy_upstream_connections_open gauge
fastproxy_upstream_connections_open{upstream="api"} 1
# HELP fastproxy_upstream_connect_errors_total Connections to the upstream that failed or timed out.
# TYPE fastproxy_upstream_connect_errors_total counter
fastproxy_upstream_connect_errors_total{upstream="api"} 2
# HELP fastproxy_audit_records_total Audit records written.
# TYPE fastproxy_audit_records_total counter
fastproxy_audit_records_total 5
# HELP fastproxy_audit_gaps_total Audit records dropped (each drop leaves a gap record in the file).
# TYPE fastproxy_audit_gaps_total counter
fastproxy_audit_gaps_total 0
# HELP fastproxy_audit_queue_depth Audit records waiting to be written.
# TYPE fastproxy_audit_queue_depth gauge
fastproxy_audit_queue_depth 4
# HELP fastproxy_worker_restarts_total Workers respawned after dying (not those a reload replaced).
# TYPE fastproxy_worker_restarts_total counter
fastproxy_worker_restarts_total 1
"""


def _small() -> SharedMetrics:
    shared = SharedMetrics.create(MetricsLayout(["orders"], ["api"], 2))
    worker = WorkerMetrics(shared, 0)
    orders = worker.route_row("orders")
    worker.request(orders, 200, True, 0.0001)  # on a bound: le is "less than or equal"
    worker.request(orders, 200, True, 0.0001 + 1e-9)
    worker.request(orders, 429, False, 1.0)
    worker.request(orders, 599, True, 60.0)  # beyond the last bound: +Inf only
    worker.request(worker.route_row(None), 404, False, 0.00005)
    worker.ratelimit_limited(orders)
    for _ in range(3):
        worker.jwt_cache_hit()
    worker.jwt_cache_miss()
    api = worker.upstream_row("api")
    worker.upstream_opened(api)
    worker.upstream_opened(api)
    worker.upstream_closed(api)
    worker.upstream_connect_error(api)
    worker.upstream_connect_error(api)
    worker.audit_records(5)
    worker.set_audit_queue_depth(4)
    WorkerMetrics(shared, MASTER_SLOT).worker_restarted()
    return shared


def test_exact_text_for_a_small_case() -> None:
    assert render(_small()).decode() == EXPECTED
    assert CONTENT_TYPE == b"text/plain; version=0.0.4; charset=utf-8"


# A strict reading of the text format 0.0.4 (what Prometheus's own parser accepts).
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL_VALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'
_LABELS = rf"\{{(?:[a-zA-Z_][a-zA-Z0-9_]*={_LABEL_VALUE}(?:,[a-zA-Z_][a-zA-Z0-9_]*={_LABEL_VALUE})*)?\}}"
_SAMPLE = re.compile(rf"({_NAME})({_LABELS})? (\S+)")
_LABEL = re.compile(rf"([a-zA-Z_][a-zA-Z0-9_]*)=({_LABEL_VALUE})")
_COMMENT = re.compile(rf"# (HELP|TYPE) ({_NAME}) (.*)")


def _unescape(quoted: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], quoted[1:-1])


def parse(text: str) -> dict[str, tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]]:
    """{family: (type, {(sample name, labels): value})}; asserts the grammar and the family rules."""
    assert text.endswith("\n")
    families: dict[str, tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]] = {}
    helped: set[str] = set()
    current = None
    for line in text[:-1].split("\n"):
        comment = _COMMENT.fullmatch(line)
        if comment:
            kind, name, rest = comment.groups()
            if kind == "HELP":
                assert name not in helped and name not in families, f"second HELP for {name}"
                helped.add(name)
            else:
                assert rest in ("counter", "gauge", "histogram", "summary", "untyped"), line
                assert name not in families, f"second TYPE for {name}"
                families[name] = (rest, {})
                current = name
            continue
        sample = _SAMPLE.fullmatch(line)
        assert sample, f"not a sample line: {line!r}"
        name, labels, value = sample.groups()
        assert current is not None
        kind = families[current][0]
        allowed = {current} if kind != "histogram" else {current + s for s in ("_bucket", "_sum", "_count")}
        assert name in allowed, f"{name} outside its family {current}"
        pairs = tuple((k, _unescape(v)) for k, v in _LABEL.findall(labels or ""))
        assert len({k for k, _ in pairs}) == len(pairs), f"a label twice: {line}"
        number = float(value.replace("Inf", "inf"))
        assert not math.isnan(number)
        series = families[current][1]
        assert (name, pairs) not in series, f"duplicate series: {line}"
        series[(name, pairs)] = number
    return families


def _check_histograms(
    families: dict[str, tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]],
) -> None:
    for family, (kind, series) in families.items():
        if kind != "histogram":
            continue
        groups: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
        for (name, labels), value in series.items():
            if name.endswith("_bucket"):
                le = dict(labels)["le"]
                rest = tuple(p for p in labels if p[0] != "le")
                groups.setdefault(rest, []).append((float(le.replace("Inf", "inf")), value))
        for rest, buckets in groups.items():
            bounds = [b for b, _ in buckets]
            assert bounds == sorted(bounds) and bounds[-1] == math.inf
            assert bounds[:-1] == list(BUCKETS)
            counts = [c for _, c in buckets]
            assert counts == sorted(counts), "buckets are cumulative"
            assert series[(family + "_count", rest)] == counts[-1]
            assert (family + "_sum", rest) in series


def test_the_text_parses() -> None:
    families = parse(render(_small()).decode())
    assert set(families) == {
        "fastproxy_requests_total",
        "fastproxy_request_duration_seconds",
        "fastproxy_ratelimit_limited_total",
        "fastproxy_jwt_cache_hits_total",
        "fastproxy_jwt_cache_misses_total",
        "fastproxy_upstream_connections_open",
        "fastproxy_upstream_connect_errors_total",
        "fastproxy_audit_records_total",
        "fastproxy_audit_gaps_total",
        "fastproxy_audit_queue_depth",
        "fastproxy_worker_restarts_total",
    }
    assert families["fastproxy_upstream_connections_open"][0] == "gauge"
    assert families["fastproxy_audit_queue_depth"][0] == "gauge"
    _check_histograms(families)


def test_an_empty_region_renders_every_family() -> None:
    shared = SharedMetrics.create(MetricsLayout([], [], 1))
    families = parse(render(shared).decode())
    assert len(families) == 11
    assert families["fastproxy_requests_total"][1] == {}
    assert families["fastproxy_request_duration_seconds"][1] == {}  # route="" only once it counts


def test_label_escaping() -> None:
    assert escape_label_value('a"b') == 'a\\"b'
    assert escape_label_value("a\\b") == "a\\\\b"
    assert escape_label_value("a\nb") == "a\\nb"
    assert escape_label_value('\\"\n') == '\\\\\\"\\n'
    assert escape_label_value("é ✓ {},=") == "é ✓ {},="
    names = ['say "hi"', "back\\slash", "two\nlines", "\\n literally", "ünï {x=1}, y", '\\"']
    shared = SharedMetrics.create(MetricsLayout(names, [*names, "plain"], 1))
    worker = WorkerMetrics(shared, 0)
    for name in names:
        worker.request(worker.route_row(name), 200, True, 0.001)
        worker.upstream_connect_error(worker.upstream_row(name))
    text = render(shared).decode()
    families = parse(text)
    _check_histograms(families)
    requests = families["fastproxy_requests_total"][1]
    assert {dict(labels)["route"] for _, labels in requests} == set(names)
    errors = families["fastproxy_upstream_connect_errors_total"][1]
    assert {dict(labels)["upstream"]: v for (_, labels), v in errors.items()} == {
        **dict.fromkeys(names, 1),
        "plain": 0,
    }


def test_floats_are_written_as_prometheus_reads_them() -> None:
    shared = SharedMetrics.create(MetricsLayout(["r"], [], 1))
    worker = WorkerMetrics(shared, 0)
    worker.request(1, 200, True, math.inf)
    text = render(shared).decode()
    assert 'fastproxy_request_duration_seconds_sum{route="r"} +Inf\n' in text
    parse(text)
