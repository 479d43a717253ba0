"""Where every metric lives in shared memory: the fixed label sets and the cell arithmetic.

Label values are bounded by construction: ``route`` and ``upstream`` are names from the
configuration, mapped to *rows* of a table whose size is fixed when the region is made;
``decision`` is allow or deny; ``status`` is one of :data:`STATUS_LABELS`. Nothing that a client
chooses (a path, a subject, an address) can become a label value.

Status codes
------------
The codes operators alert on have a series of their own: every code the proxy answers itself (400,
401, 403, 404, 408, 413, 414, 429, 431, 502, 503, 504) and the common upstream ones. Any other code
is counted under its class, ``1xx`` to ``5xx`` (PromQL's ``status=~"5.."`` still matches ``5xx``),
and anything outside 100-599 under ``other``. That bounds the table at 37 statuses, so a misbehaving
upstream inventing codes cannot grow it, while no request goes uncounted.

Rows
----
Route row 0 is reserved for requests that matched no route (label ``route=""``, which Prometheus
reads as no route label at all); configured routes take rows from 1, upstreams from 0. A layout made
at start assigns rows in configuration order and keeps spare rows for reloads (see
:mod:`fastproxy.metrics.shared`, "Reload").

Cells of one slot (int64 unless said)::

    0..7                          scalars: JWT cache hits, misses, audit records, gaps,
                                  queue depth (gauge), worker restarts, 2 spare
    8 + 2*u, 8 + 2*u + 1          upstream row u: connections open (gauge), connect errors
    R + r*ROUTE_STRIDE + 2*s + d  route row r, status index s, d = 0 allow / 1 deny
    R + r*ROUTE_STRIDE + 74       route row r: rate-limited requests
    R + r*ROUTE_STRIDE + 75 + b   route row r: duration histogram bucket b (not cumulative)
    then, as float64:             route row r: duration sum, seconds

with ``R = 8 + 2 * upstream_rows``. A histogram's count is the sum of its buckets, so it is never
stored apart and never disagrees with them.
"""

from __future__ import annotations

import mmap
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Final

__all__ = [
    "BUCKETS",
    "STATUS_LABELS",
    "MetricsLayout",
    "status_cell",
]

# Upper bounds (seconds) of the duration histogram's buckets; +Inf is implicit. From a cached
# proxied request (about 20 us of proxy CPU, 50-100 us on the wire) to the 30 s upstream timeout.
BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
BUCKET_CELLS: Final = len(BUCKETS) + 1  # the last one is +Inf

_EXACT_CODES: Final = (
    200, 201, 202, 204, 206,
    301, 302, 303, 304, 307, 308,
    400, 401, 403, 404, 405, 408, 409, 410, 412, 413, 414, 415, 422, 429, 431,
    500, 501, 502, 503, 504,
)  # fmt: skip
STATUS_LABELS: Final = (
    *(str(code) for code in _EXACT_CODES),
    "1xx",
    "2xx",
    "3xx",
    "4xx",
    "5xx",
    "other",
)
_OTHER: Final = len(STATUS_LABELS) - 1
# status code -> its first cell in a route row (2 * status index): a dict, so any int is a key.
STATUS_CELL: Final = {
    **{code: 2 * (len(_EXACT_CODES) + code // 100 - 1) for code in range(100, 600)},
    **{code: 2 * index for index, code in enumerate(_EXACT_CODES)},
}
OTHER_CELL: Final = 2 * _OTHER

SCALARS: Final = 8
JWT_HITS: Final = 0
JWT_MISSES: Final = 1
AUDIT_RECORDS: Final = 2
AUDIT_GAPS: Final = 3
AUDIT_QUEUE: Final = 4  # gauge
WORKER_RESTARTS: Final = 5
UPSTREAM_STRIDE: Final = 2  # open (gauge), connect errors
REQUEST_CELLS: Final = 2 * len(STATUS_LABELS)
LIMITED_AT: Final = REQUEST_CELLS
BUCKETS_AT: Final = REQUEST_CELLS + 1
ROUTE_STRIDE: Final = BUCKETS_AT + BUCKET_CELLS

UNMATCHED: Final = 0  # the route row of requests no route matched

# Region header, in int64 cells; then one "used" flag per region; then the name table.
MAGIC: Final = 0x31435254454D5046  # "FPMETRC1", little-endian
VERSION: Final = 1
H_MAGIC, H_VERSION, H_REGIONS, H_SLOT_BYTES, H_INTS, H_FLOATS = range(6)
H_NAMES_SEQ, H_NAMES_LEN, H_NAMES_CRC, H_NAMES_CAP = range(6, 10)
HEADER_CELLS: Final = 16


def status_cell(status: int) -> int:
    """The first cell of ``status`` in a route row (allow; deny is the next)."""
    return STATUS_CELL.get(status, OTHER_CELL)


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


class MetricsLayout:
    """Rows for names, capacities, and the offsets of everything; immutable once made.

    ``MetricsLayout(routes, upstreams, slots)`` is the layout made at start from the configuration:
    route and upstream names in order, ``slots`` worker slots (pass the size of the master's
    heartbeat table: a worker's metrics slot is its heartbeat slot). ``route_rows`` and
    ``upstream_rows`` fix the table sizes for the life of the region; by default twice what the
    configuration names plus room to spare, so that a reload can bring new names while the old
    generation still counts under the old ones. Later layouts come from
    :meth:`fastproxy.metrics.SharedMetrics.relayout` and keep these sizes.
    """

    __slots__ = (
        "floats_per_slot",
        "ints_per_slot",
        "names_capacity",
        "names_offset",
        "regions",
        "route_base",
        "route_rows",
        "routes",
        "slot_bytes",
        "slots",
        "slots_offset",
        "total_bytes",
        "upstream_rows",
        "upstreams",
    )

    routes: Mapping[str, int]  # route name -> row (row 0: no route matched)
    upstreams: Mapping[str, int]  # upstream name -> row

    def __init__(
        self,
        routes: Sequence[str],
        upstreams: Sequence[str],
        slots: int = 1024,
        *,
        route_rows: int | None = None,
        upstream_rows: int | None = None,
        names_capacity: int | None = None,
    ) -> None:
        if slots < 1:
            raise ValueError("metrics: at least one worker slot")
        route_rows = 1 + max(32, 2 * len(routes)) if route_rows is None else route_rows
        upstream_rows = max(16, 2 * len(upstreams)) if upstream_rows is None else upstream_rows
        route_map = {name: row for row, name in enumerate(routes, 1)}
        upstream_map = {name: row for row, name in enumerate(upstreams)}
        _check_names("route", routes, route_map)
        _check_names("upstream", upstreams, upstream_map)
        if len(routes) >= route_rows or len(upstreams) > upstream_rows:
            raise ValueError(
                f"metrics: {len(routes)} routes and {len(upstreams)} upstreams do not fit "
                f"{route_rows - 1} route rows and {upstream_rows} upstream rows"
            )
        if names_capacity is None:
            named = sum(len(name.encode()) + 16 for name in (*routes, *upstreams))
            names_capacity = max(65536, 4 * named)
        self.slots = slots
        self.regions = slots + 2  # the master's and the audit writer's come after the workers'
        self.route_rows = route_rows
        self.upstream_rows = upstream_rows
        self.names_capacity = names_capacity
        self.route_base = SCALARS + UPSTREAM_STRIDE * upstream_rows
        self.ints_per_slot = self.route_base + ROUTE_STRIDE * route_rows
        self.floats_per_slot = route_rows
        # Each slot starts on its own page: no two writers share a cache line, and a slot costs
        # memory only once its worker touches it.
        self.slot_bytes = _round_up(8 * (self.ints_per_slot + self.floats_per_slot), mmap.PAGESIZE)
        self.names_offset = 8 * (HEADER_CELLS + self.regions)
        self.slots_offset = _round_up(self.names_offset + names_capacity, mmap.PAGESIZE)
        self.total_bytes = self.slots_offset + self.regions * self.slot_bytes
        self.routes = MappingProxyType(route_map)
        self.upstreams = MappingProxyType(upstream_map)

    def with_rows(self, routes: Mapping[str, int], upstreams: Mapping[str, int]) -> MetricsLayout:
        """This layout's sizes with other rows (what relayout computes)."""
        layout = MetricsLayout(
            (),
            (),
            self.slots,
            route_rows=self.route_rows,
            upstream_rows=self.upstream_rows,
            names_capacity=self.names_capacity,
        )
        layout.routes = MappingProxyType(dict(routes))
        layout.upstreams = MappingProxyType(dict(upstreams))
        return layout

    def route_index(self, name: str | None) -> int:
        """The row of route ``name``; :data:`UNMATCHED` for None (no route matched)."""
        return UNMATCHED if name is None else self.routes[name]

    def upstream_index(self, name: str) -> int:
        return self.upstreams[name]

    def region(self, slot: int) -> int:
        """The region of a worker slot, or of MASTER_SLOT (-1) / AUDIT_SLOT (-2)."""
        if 0 <= slot < self.slots:
            return slot
        if slot == -1:
            return self.slots
        if slot == -2:
            return self.slots + 1
        raise ValueError(f"metrics: slot {slot} is not a worker slot (0..{self.slots - 1}) nor -1/-2")

    def region_offset(self, region: int) -> int:
        return self.slots_offset + region * self.slot_bytes

    def gauge_cells(self) -> tuple[int, ...]:
        """The int cells holding gauges: what a process takes with it when it dies."""
        return (AUDIT_QUEUE, *(SCALARS + UPSTREAM_STRIDE * u for u in range(self.upstream_rows)))

    def __repr__(self) -> str:
        return (
            f"MetricsLayout(routes={dict(self.routes)!r}, upstreams={dict(self.upstreams)!r}, "
            f"slots={self.slots}, route_rows={self.route_rows}, upstream_rows={self.upstream_rows})"
        )


def _check_names(kind: str, names: Sequence[str], rows: Mapping[str, int]) -> None:
    if len(rows) != len(names):
        raise ValueError(f"metrics: a {kind} name appears twice")
    if kind == "route" and "" in rows:
        # route="" is the series of requests that matched no route.
        raise ValueError('metrics: a route named "" would be counted with unmatched requests')
