"""MetricsLayout: rows for names, the status table, and where slot regions lie."""

from __future__ import annotations

import mmap

import pytest

from fastproxy.metrics import AUDIT_SLOT, MASTER_SLOT, STATUS_LABELS, UNMATCHED, MetricsLayout, status_cell
from fastproxy.metrics import layout as L


def test_status_codes_map_to_a_fixed_table() -> None:
    assert len(STATUS_LABELS) == 37
    assert len(set(STATUS_LABELS)) == 37
    for code in (200, 204, 304, 400, 401, 403, 404, 408, 413, 414, 429, 431, 500, 502, 503, 504):
        assert STATUS_LABELS[status_cell(code) // 2] == str(code)
    for code, label in ((100, "1xx"), (103, "1xx"), (299, "2xx"), (305, "3xx"), (418, "4xx"), (499, "4xx")):
        assert STATUS_LABELS[status_cell(code) // 2] == label
    assert STATUS_LABELS[status_cell(599) // 2] == "5xx"
    for code in (0, 99, 600, 999, 1000, -1, -200, 10**9):
        assert STATUS_LABELS[status_cell(code) // 2] == "other"
    # Every cell is even (allow), and its deny twin stays inside the request cells.
    cells = {status_cell(code) for code in range(-5, 1100)}
    assert all(cell % 2 == 0 and cell + 1 < L.REQUEST_CELLS for cell in cells)
    assert len(cells) == 37


def test_rows() -> None:
    layout = MetricsLayout(["r1", "r2", "r3"], ["api", "auth"], 4)
    assert dict(layout.routes) == {"r1": 1, "r2": 2, "r3": 3}
    assert dict(layout.upstreams) == {"api": 0, "auth": 1}
    assert layout.route_index(None) == UNMATCHED == 0
    assert layout.route_index("r2") == 2
    assert layout.upstream_index("auth") == 1
    with pytest.raises(KeyError):
        layout.route_index("nope")
    # Room for a reload that renames everything, with spare rows.
    assert layout.route_rows == 1 + 32
    assert layout.upstream_rows == 16
    big = MetricsLayout([f"r{i}" for i in range(100)], [f"u{i}" for i in range(20)], 4)
    assert (big.route_rows, big.upstream_rows) == (201, 40)


def test_the_same_config_gives_the_same_layout() -> None:
    a = MetricsLayout(["x", "y"], ["u"], 8)
    b = MetricsLayout(["x", "y"], ["u"], 8)
    assert repr(a) == repr(b)
    assert (a.total_bytes, a.slot_bytes, a.route_base) == (b.total_bytes, b.slot_bytes, b.route_base)


@pytest.mark.parametrize(
    ("routes", "upstreams", "message"),
    [
        (["a", "a"], [], "route name appears twice"),
        ([], ["u", "u"], "upstream name appears twice"),
        ([""], [], 'a route named ""'),
    ],
)
def test_bad_names(routes: list[str], upstreams: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MetricsLayout(routes, upstreams, 4)


def test_tables_too_small() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        MetricsLayout(["a", "b"], [], 4, route_rows=2)
    with pytest.raises(ValueError, match="do not fit"):
        MetricsLayout([], ["a", "b"], 4, upstream_rows=1)
    with pytest.raises(ValueError, match="at least one worker slot"):
        MetricsLayout([], [], 0)


def test_regions() -> None:
    layout = MetricsLayout(["a"], ["u"], 4)
    assert [layout.region(s) for s in (0, 3, MASTER_SLOT, AUDIT_SLOT)] == [0, 3, 4, 5]
    assert layout.regions == 6
    for bad in (4, -3, 1024):
        with pytest.raises(ValueError, match="not a worker slot"):
            layout.region(bad)
    # Page-aligned, disjoint, inside the mapping, after the header and the name table.
    assert layout.slots_offset % mmap.PAGESIZE == 0
    assert layout.slot_bytes % mmap.PAGESIZE == 0
    assert layout.slot_bytes >= 8 * (layout.ints_per_slot + layout.floats_per_slot)
    assert layout.names_offset >= 8 * (L.HEADER_CELLS + layout.regions)
    assert layout.slots_offset >= layout.names_offset + layout.names_capacity
    assert layout.region_offset(layout.regions - 1) + layout.slot_bytes == layout.total_bytes


def test_cell_arithmetic() -> None:
    layout = MetricsLayout(["a"], ["u"], 1, route_rows=3, upstream_rows=2)
    assert layout.route_base == L.SCALARS + 2 * 2
    assert layout.ints_per_slot == layout.route_base + 3 * L.ROUTE_STRIDE
    assert L.ROUTE_STRIDE == 2 * 37 + 1 + 18
    assert layout.floats_per_slot == 3
    assert layout.gauge_cells() == (L.AUDIT_QUEUE, L.SCALARS, L.SCALARS + 2)


def test_memory_per_slot_is_modest() -> None:
    # 10 routes: a slot is a few pages; 1024 worker slots reserve address space, not memory.
    layout = MetricsLayout([f"r{i}" for i in range(10)], ["u"], 1024)
    assert layout.slot_bytes <= 32 * 1024
    assert layout.total_bytes <= 40 * 2**20
