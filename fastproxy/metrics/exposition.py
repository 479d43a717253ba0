"""``/metrics``: the shared counters summed over every process, in Prometheus text format 0.0.4.

Which series appear: every scalar family always; the per-upstream families and the rate-limit
counter for every name in the name table (zeros included, so ``rate()`` has a starting point);
the duration histogram for every route in the table, and for unmatched requests (``route=""``)
once there are some; ``fastproxy_requests_total`` only for the (route, status, decision) triples
that have counted something -- 74 mostly impossible triples per route would be noise.

Series are sorted by label value, so the text is stable from scrape to scrape.
"""

from __future__ import annotations

import math
from typing import Final

from fastproxy.metrics import layout as L
from fastproxy.metrics.layout import BUCKETS, STATUS_LABELS
from fastproxy.metrics.shared import SharedMetrics

__all__ = ["CONTENT_TYPE", "escape_label_value", "render"]

CONTENT_TYPE: Final = b"text/plain; version=0.0.4; charset=utf-8"

_DECISIONS: Final = ("allow", "deny")
_LE: Final = (*(repr(bound) for bound in BUCKETS), "+Inf")


def escape_label_value(value: str) -> str:
    """A label value as the text format writes it between double quotes."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _family(out: list[str], name: str, kind: str, help_text: str) -> None:
    out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")


def render(shared: SharedMetrics) -> bytes:
    """The exposition of everything in ``shared``; callable from any process that inherited it."""
    routes, upstreams = shared.read_names()
    ints, floats = shared.totals()
    layout = shared.layout
    route_base = layout.route_base
    stride = L.ROUTE_STRIDE
    # (escaped label, row), sorted by name; row 0 (no route matched) is route="".
    named_routes = sorted((escape_label_value(name), row) for name, row in routes.items())
    all_routes = sorted([("", L.UNMATCHED), *named_routes])
    named_upstreams = sorted((escape_label_value(name), row) for name, row in upstreams.items())
    out: list[str] = []

    _family(
        out,
        "fastproxy_requests_total",
        "counter",
        'Requests answered, by route ("" for no route), status and decision.',
    )
    for label, row in all_routes:
        base = route_base + stride * row
        for index, status in enumerate(STATUS_LABELS):
            for deny, decision in enumerate(_DECISIONS):
                count = ints[base + 2 * index + deny]
                if count:
                    out.append(
                        f'fastproxy_requests_total{{route="{label}",status="{status}",'
                        f'decision="{decision}"}} {count}\n'
                    )

    _family(
        out,
        "fastproxy_request_duration_seconds",
        "histogram",
        "Seconds from a request's head to the end of its response, by route.",
    )
    for label, row in all_routes:
        base = route_base + stride * row + L.BUCKETS_AT
        buckets = ints[base : base + L.BUCKET_CELLS]
        total = sum(buckets)
        if row == L.UNMATCHED and not total:
            continue
        cumulative = 0
        for le, count in zip(_LE, buckets, strict=True):
            cumulative += count
            out.append(
                f'fastproxy_request_duration_seconds_bucket{{route="{label}",le="{le}"}} {cumulative}\n'
            )
        out.append(f'fastproxy_request_duration_seconds_sum{{route="{label}"}} {_number(floats[row])}\n')
        out.append(f'fastproxy_request_duration_seconds_count{{route="{label}"}} {total}\n')

    _family(
        out, "fastproxy_ratelimit_limited_total", "counter", "Requests refused by a rate limit, by route."
    )
    for label, row in named_routes:
        count = ints[route_base + stride * row + L.LIMITED_AT]
        out.append(f'fastproxy_ratelimit_limited_total{{route="{label}"}} {count}\n')

    for name, cell, help_text in (
        ("fastproxy_jwt_cache_hits_total", L.JWT_HITS, "JWTs found in the verified-token cache."),
        ("fastproxy_jwt_cache_misses_total", L.JWT_MISSES, "JWTs verified because the cache lacked them."),
    ):
        _family(out, name, "counter", help_text)
        out.append(f"{name} {ints[cell]}\n")

    _family(
        out,
        "fastproxy_upstream_connections_open",
        "gauge",
        "Connections open to the upstream (in use or idle), all workers.",
    )
    for label, row in named_upstreams:
        count = ints[L.SCALARS + L.UPSTREAM_STRIDE * row]
        out.append(f'fastproxy_upstream_connections_open{{upstream="{label}"}} {count}\n')
    _family(
        out,
        "fastproxy_upstream_connect_errors_total",
        "counter",
        "Connections to the upstream that failed or timed out.",
    )
    for label, row in named_upstreams:
        count = ints[L.SCALARS + L.UPSTREAM_STRIDE * row + 1]
        out.append(f'fastproxy_upstream_connect_errors_total{{upstream="{label}"}} {count}\n')

    for name, kind, cell, help_text in (
        ("fastproxy_audit_records_total", "counter", L.AUDIT_RECORDS, "Audit records written."),
        (
            "fastproxy_audit_gaps_total",
            "counter",
            L.AUDIT_GAPS,
            "Audit records dropped (each drop leaves a gap record in the file).",
        ),
        ("fastproxy_audit_queue_depth", "gauge", L.AUDIT_QUEUE, "Audit records waiting to be written."),
        (
            "fastproxy_worker_restarts_total",
            "counter",
            L.WORKER_RESTARTS,
            "Workers respawned after dying (not those a reload replaced).",
        ),
    ):
        _family(out, name, kind, help_text)
        out.append(f"{name} {ints[cell]}\n")
    return "".join(out).encode()
