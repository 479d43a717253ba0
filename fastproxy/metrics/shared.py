"""Counters, gauges and histograms in shared memory, written without locks, summed when read.

Theory of operation
-------------------
The master maps one anonymous shared region before it forks anything
(:meth:`SharedMetrics.create`). The region holds a header, a table of names, and one *slot region*
per writer: one per worker slot, then one for the master (``MASTER_SLOT``: worker restarts) and one
for the audit writer (``AUDIT_SLOT``). Each slot region is written by exactly one process at a time
-- the worker that holds that slot -- with plain 8-byte aligned stores (:mod:`._cells`), which
x86-64 and AArch64 perform as single, untearable stores. No lock and no atomic read-modify-write
is needed because no two processes ever add to the same cell; a reader (``/metrics``, in whichever
worker the admin connection landed) sums every slot region that was ever used, and may see a
count one request behind, never a torn one.

Restarts. A slot's counters outlive its process: a respawned worker takes a free slot -- often the
one its predecessor left -- and keeps adding to what is there, and a slot nobody takes again keeps
being summed. So a worker's death never lowers a total. Gauges are the exception: a dead process's
open connections and queued records are gone, so the master zeroes the slot's gauges when it reaps
the process (:meth:`SharedMetrics.clear_gauges`) and a new owner zeroes them again on taking the
slot (:class:`WorkerMetrics`), before it writes anything. Both happen while the slot has no writer.

Reload. A reload may bring routes and upstreams the region has never seen while the old
generation still counts under the old ones. Names therefore map to *rows* of tables sized when the
region is made, and the mapping lives in the region too (the name table), so a reader in any
generation renders every name. :meth:`SharedMetrics.relayout` (master, before forking the new
generation) keeps the row of every name the table already holds -- a route that survives a reload
keeps counting where it was, so its counters never go backwards -- and gives each new name a free
row, zeroing that row in every slot before publishing the name (a reader never sees stale counts
under a new name). :meth:`SharedMetrics.release` (master, once no process of an older generation is
alive) frees the rows of names no running layout uses; their series disappear from ``/metrics``.
A reload that needs more rows than are free raises :class:`MetricsTableFull`: the master refuses it
as invalid, and a restart makes larger tables.

The name table is written only by the master, under a sequence counter and a CRC-32: the master
makes the counter odd, writes, and makes it even; a reader retries until it reads the same even
counter before and after and the CRC matches, so it never parses a half-written table whatever
order another CPU sees the stores in.
"""

from __future__ import annotations

import mmap
import operator
import struct
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import orjson

from fastproxy.metrics import layout as L
from fastproxy.metrics._cells import Cells
from fastproxy.metrics.layout import BUCKETS, MetricsLayout

__all__ = ["AUDIT_SLOT", "MASTER_SLOT", "MetricsTableFull", "SharedMetrics", "WorkerMetrics"]

MASTER_SLOT: Final = -1
AUDIT_SLOT: Final = -2

_Q: Final = struct.Struct("=q")
# Module globals for the hot path (a global is cheaper than a module attribute).
_STATUS_CELL: Final = L.STATUS_CELL
_OTHER_CELL: Final = L.OTHER_CELL
_ROUTE_STRIDE: Final = L.ROUTE_STRIDE
_BUCKETS_AT: Final = L.BUCKETS_AT
_NAME_READ_TRIES: Final = 1000


class MetricsTableFull(ValueError):
    """A reload names more routes or upstreams than the tables made at start have rows for."""


class SharedMetrics:
    """The shared region and the master's operations on it; inherited by every forked child."""

    def __init__(self, layout: MetricsLayout, buffer: mmap.mmap) -> None:
        """Use :meth:`create`; this wraps an existing region."""
        self.layout = layout  # the last layout the master made: the default of WorkerMetrics
        self.buffer = buffer
        self._sum_ints = struct.Struct(f"={layout.ints_per_slot}q")
        self._sum_floats = struct.Struct(f"={layout.floats_per_slot}d")

    @classmethod
    def create(cls, layout: MetricsLayout) -> SharedMetrics:
        """A zeroed region for ``layout``: in the master, before forking."""
        # MAP_NORESERVE: slots never used cost neither memory nor commit charge.
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_NORESERVE", 0)
        buffer = mmap.mmap(-1, layout.total_bytes, flags=flags)
        shared = cls(layout, buffer)
        for cell, value in (
            (L.H_MAGIC, L.MAGIC),
            (L.H_VERSION, L.VERSION),
            (L.H_REGIONS, layout.regions),
            (L.H_SLOT_BYTES, layout.slot_bytes),
            (L.H_INTS, layout.ints_per_slot),
            (L.H_FLOATS, layout.floats_per_slot),
            (L.H_NAMES_CAP, layout.names_capacity),
        ):
            shared._set(cell, value)
        shared._publish(layout.routes, layout.upstreams)
        return shared

    def close(self) -> None:
        self.buffer.close()

    # -- the master's side -------------------------------------------------------------------------

    def relayout(self, routes: Sequence[str], upstreams: Sequence[str]) -> MetricsLayout:
        """The layout for a new configuration (master, on reload, before forking it).

        Names the table already holds keep their rows; new ones take free rows, zeroed first.
        Raises :class:`MetricsTableFull` (nothing changed) when there are not enough free rows.
        The result becomes :attr:`layout`; if the reload is abandoned, set :attr:`layout` back.
        """
        held_routes, held_upstreams = self.read_names()
        route_rows = self._assign(
            "route", routes, held_routes, range(1, self.layout.route_rows), self.layout.route_rows - 1
        )
        upstream_rows = self._assign(
            "upstream", upstreams, held_upstreams, range(self.layout.upstream_rows), self.layout.upstream_rows
        )
        new = self.layout.with_rows(route_rows, upstream_rows)
        fresh_routes = [row for name, row in route_rows.items() if held_routes.get(name) != row]
        fresh_upstreams = [row for name, row in upstream_rows.items() if held_upstreams.get(name) != row]
        self._zero_rows(fresh_routes, fresh_upstreams)
        self._publish({**held_routes, **route_rows}, {**held_upstreams, **upstream_rows})
        self.layout = new
        return new

    def release(self, keep: Iterable[MetricsLayout]) -> None:
        """Frees the rows of names none of ``keep`` uses (master).

        Call it only when no process that uses another layout is alive -- after the last worker
        of an older generation has been reaped, or after an abandoned reload's workers are gone --
        with the layouts still in use (usually just the running one).
        """
        keep = list(keep)
        held_routes, held_upstreams = self.read_names()
        routes = {n: r for n, r in held_routes.items() if any(k.routes.get(n) == r for k in keep)}
        upstreams = {n: r for n, r in held_upstreams.items() if any(k.upstreams.get(n) == r for k in keep)}
        self._publish(routes, upstreams)

    def clear_gauges(self, slot: int) -> None:
        """Zeroes the gauges of ``slot`` (master, after reaping the process that held it)."""
        base = self.layout.region_offset(self.layout.region(slot))
        for cell in self.layout.gauge_cells():
            _Q.pack_into(self.buffer, base + 8 * cell, 0)

    # -- reading -------------------------------------------------------------------------------------

    def read_names(self) -> tuple[dict[str, int], dict[str, int]]:
        """The name table: (route name -> row, upstream name -> row), read consistently."""
        offset = self.layout.names_offset
        capacity = self.layout.names_capacity
        for _ in range(_NAME_READ_TRIES):
            before = self._get(L.H_NAMES_SEQ)
            if not before & 1:
                length = self._get(L.H_NAMES_LEN)
                crc = self._get(L.H_NAMES_CRC)
                data = self.buffer[offset : offset + min(max(length, 0), capacity)]
                if self._get(L.H_NAMES_SEQ) == before and len(data) == length and zlib.crc32(data) == crc:
                    table = orjson.loads(data)
                    return (
                        {name: row for row, name in table["routes"]},
                        {name: row for row, name in table["upstreams"]},
                    )
            time.sleep(0.0001)  # the master is writing it: a few microseconds
        raise RuntimeError("metrics: no consistent read of the name table")

    def used_regions(self) -> list[int]:
        return [
            region
            for region in range(self.layout.regions)
            if self._get(L.HEADER_CELLS + region)  # flags are read, never written, here
        ]

    def totals(self) -> tuple[list[int], list[float]]:
        """Every int cell and every float cell summed over the slot regions ever used."""
        layout = self.layout
        ints = [0] * layout.ints_per_slot
        floats = [0.0] * layout.floats_per_slot
        floats_at = 8 * layout.ints_per_slot
        for region in self.used_regions():
            base = layout.region_offset(region)
            ints = list(map(operator.add, ints, self._sum_ints.unpack_from(self.buffer, base)))
            floats = list(
                map(operator.add, floats, self._sum_floats.unpack_from(self.buffer, base + floats_at))
            )
        return ints, floats

    # -- internals ----------------------------------------------------------------------------------

    def _get(self, cell: int) -> int:
        value: int = _Q.unpack_from(self.buffer, 8 * cell)[0]
        return value

    def _set(self, cell: int, value: int) -> None:
        _Q.pack_into(self.buffer, 8 * cell, value)

    def _assign(
        self, kind: str, names: Sequence[str], held: Mapping[str, int], rows: range, capacity: int
    ) -> dict[str, int]:
        if len(set(names)) != len(names):
            raise ValueError(f"metrics: a {kind} name appears twice")
        if kind == "route" and "" in names:
            raise ValueError('metrics: a route named "" would be counted with unmatched requests')
        taken = set(held.values())
        free = (row for row in rows if row not in taken)
        assigned: dict[str, int] = {}
        for name in names:
            row = held.get(name)
            if row is None:
                row = next(free, None)
                if row is None:
                    raise MetricsTableFull(
                        f"metrics: the {kind} table has {capacity} rows and the running and new "
                        f"configurations together name more {kind}s; restart fastproxy to resize it"
                    )
            assigned[name] = row
        return assigned

    def _zero_rows(self, routes: Iterable[int], upstreams: Iterable[int]) -> None:
        layout = self.layout
        routes = list(routes)
        upstreams = list(upstreams)
        route_cells = bytes(8 * L.ROUTE_STRIDE)
        for region in self.used_regions():
            base = layout.region_offset(region)
            for row in routes:
                start = base + 8 * (layout.route_base + L.ROUTE_STRIDE * row)
                self.buffer[start : start + len(route_cells)] = route_cells
                struct.pack_into("=d", self.buffer, base + 8 * (layout.ints_per_slot + row), 0.0)
            for row in upstreams:
                start = base + 8 * (L.SCALARS + L.UPSTREAM_STRIDE * row)
                self.buffer[start : start + 8 * L.UPSTREAM_STRIDE] = bytes(8 * L.UPSTREAM_STRIDE)

    def _publish(self, routes: Mapping[str, int], upstreams: Mapping[str, int]) -> None:
        data = orjson.dumps(
            {
                "routes": sorted((row, name) for name, row in routes.items()),
                "upstreams": sorted((row, name) for name, row in upstreams.items()),
            }
        )
        offset = self.layout.names_offset
        if len(data) > self.layout.names_capacity:
            raise MetricsTableFull(
                f"metrics: the names of the routes and upstreams take {len(data)} bytes, more than "
                f"the {self.layout.names_capacity} the name table has; restart fastproxy to resize it"
            )
        seq = self._get(L.H_NAMES_SEQ)
        self._set(L.H_NAMES_SEQ, seq + 1)  # odd: being written
        self.buffer[offset : offset + len(data)] = data
        self._set(L.H_NAMES_LEN, len(data))
        self._set(L.H_NAMES_CRC, zlib.crc32(data))
        self._set(L.H_NAMES_SEQ, seq + 2)


class WorkerMetrics:
    """One process's recorder: cheap methods for the hot path, writing only its own slot.

    Make it after fork, in the process that owns ``slot`` (a worker's heartbeat slot, or
    MASTER_SLOT / AUDIT_SLOT); ``layout`` defaults to the one the master made last before forking
    (:attr:`SharedMetrics.layout`). Taking the slot zeroes its gauges; counters carry on.

    Row arguments are rows from the layout: ``route_row(name)`` (None for "no route matched") and
    ``upstream_row(name)``; look them up once per route or upstream, not per request.
    """

    __slots__ = ("_cells", "_count", "_limited", "_route_base", "_upstream_base", "layout", "slot")

    def __init__(self, shared: SharedMetrics, slot: int, layout: MetricsLayout | None = None) -> None:
        layout = shared.layout if layout is None else layout
        self.layout = layout
        self.slot = slot
        region = layout.region(slot)
        base = layout.region_offset(region)
        # The slot's ints, then its floats (one per route row: the duration sums).
        self._cells = Cells(shared.buffer, base, layout.ints_per_slot, layout.floats_per_slot, BUCKETS)
        for cell in layout.gauge_cells():
            self._cells.set(cell, 0)
        self._count = self._cells.request  # bound once: the lookup on the type is not free
        _Q.pack_into(shared.buffer, 8 * (L.HEADER_CELLS + region), 1)  # used: readers sum it
        self._route_base = layout.route_base
        self._limited = layout.route_base + L.LIMITED_AT
        self._upstream_base = L.SCALARS

    def route_row(self, name: str | None) -> int:
        return self.layout.route_index(name)

    def upstream_row(self, name: str) -> int:
        return self.layout.upstream_index(name)

    # -- the hot path: one request ---------------------------------------------------------------

    def request(self, route: int, status: int, allowed: bool, seconds: float) -> None:
        """One answered request: its route row, HTTP status, decision and duration in seconds."""
        base = self._route_base + _ROUTE_STRIDE * route
        cell = base + _STATUS_CELL.get(status, _OTHER_CELL) + (not allowed)
        self._count(cell, base + _BUCKETS_AT, route, seconds)

    def ratelimit_limited(self, route: int) -> None:
        self._cells.add(self._limited + L.ROUTE_STRIDE * route, 1)

    def jwt_cache_hit(self, count: int = 1) -> None:
        self._cells.add(L.JWT_HITS, count)

    def jwt_cache_miss(self, count: int = 1) -> None:
        self._cells.add(L.JWT_MISSES, count)

    def upstream_opened(self, upstream: int) -> None:
        self._cells.add(self._upstream_base + L.UPSTREAM_STRIDE * upstream, 1)

    def upstream_closed(self, upstream: int) -> None:
        self._cells.add(self._upstream_base + L.UPSTREAM_STRIDE * upstream, -1)

    def upstream_connect_error(self, upstream: int) -> None:
        self._cells.add(self._upstream_base + L.UPSTREAM_STRIDE * upstream + 1, 1)

    def audit_records(self, count: int = 1) -> None:
        self._cells.add(L.AUDIT_RECORDS, count)

    def audit_gaps(self, count: int = 1) -> None:
        self._cells.add(L.AUDIT_GAPS, count)

    def set_audit_queue_depth(self, depth: int) -> None:
        self._cells.set(L.AUDIT_QUEUE, depth)

    def worker_restarted(self) -> None:
        self._cells.add(L.WORKER_RESTARTS, 1)
