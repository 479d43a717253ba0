"""Cells: a slot's int64 and float cells written in place, checked against struct and bisect."""

from __future__ import annotations

import math
import mmap
import struct
from bisect import bisect_left

import pytest

from fastproxy.metrics._cells import Cells
from fastproxy.metrics.layout import BUCKETS

_INTS = 40
_FLOATS = 3


def _region(offset: int = 16) -> tuple[mmap.mmap, Cells]:
    buffer = mmap.mmap(-1, 4096)
    return buffer, Cells(buffer, offset, _INTS, _FLOATS, BUCKETS)


def _int(buffer: mmap.mmap, offset: int, cell: int) -> int:
    value: int = struct.unpack_from("=q", buffer, offset + 8 * cell)[0]
    return value


def _float(buffer: mmap.mmap, offset: int, index: int) -> float:
    value: float = struct.unpack_from("=d", buffer, offset + 8 * (_INTS + index))[0]
    return value


@pytest.mark.parametrize(
    "seconds",
    [
        0.0,
        -1.0,
        1e-9,
        *BUCKETS,
        *(b * (1 + 1e-12) for b in BUCKETS),
        29.999,
        30.0001,
        1e9,
        math.inf,
        math.nan,
    ],
)
def test_bucket_is_bisect_left(seconds: float) -> None:
    _, cells = _region()
    assert cells.bucket(seconds) == bisect_left(BUCKETS, seconds)


def test_add_set_get_write_the_buffer_in_place() -> None:
    buffer, cells = _region(offset=24)
    cells.add(0)
    cells.add(0, 41)
    cells.add(_INTS - 1, -5)
    cells.set(7, 2**62)
    assert _int(buffer, 24, 0) == 42
    assert _int(buffer, 24, _INTS - 1) == -5
    assert _int(buffer, 24, 7) == 2**62
    assert [cells.get(i) for i in (0, 7, _INTS - 1)] == [42, 2**62, -5]
    # Nothing outside the cells was touched.
    assert buffer[:24] == bytes(24)
    assert buffer[24 + 8 * (_INTS + _FLOATS) :] == bytes(4096 - 24 - 8 * (_INTS + _FLOATS))


def test_request_counts_the_cell_the_bucket_and_the_duration() -> None:
    buffer, cells = _region(offset=0)
    histogram = 10
    for seconds in (0.00005, 0.00005, 0.003, 100.0):
        cells.request(2, histogram, 1, seconds)
    assert _int(buffer, 0, 2) == 4
    counts = [_int(buffer, 0, histogram + i) for i in range(len(BUCKETS) + 1)]
    assert counts[0] == 2
    assert counts[bisect_left(BUCKETS, 0.003)] == 1
    assert counts[len(BUCKETS)] == 1  # +Inf
    assert sum(counts) == 4
    assert _float(buffer, 0, 1) == pytest.approx(100.0031)
    assert cells.get_float(1) == _float(buffer, 0, 1)
    assert _float(buffer, 0, 0) == 0.0


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.add(_INTS),
        lambda c: c.add(-1),
        lambda c: c.set(_INTS, 0),
        lambda c: c.get(_INTS),
        lambda c: c.get_float(_FLOATS),
        lambda c: c.request(_INTS, 0, 0, 0.1),
        lambda c: c.request(0, 0, _FLOATS, 0.1),
        # A histogram whose +Inf cell would be past the end.
        lambda c: c.request(0, _INTS - len(BUCKETS), 0, 1e9),
    ],
)
def test_an_index_out_of_range_is_refused_and_writes_nothing(call: object) -> None:
    buffer, cells = _region(offset=0)
    with pytest.raises(IndexError):
        call(cells)  # type: ignore[operator]
    assert buffer[:] == bytes(4096)


def test_wrong_types_and_arity_are_type_errors() -> None:
    _, cells = _region()
    with pytest.raises(TypeError):
        cells.add("1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        cells.add(1, 2, 3)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        cells.request(0, 0, 0, "fast")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("offset", "ints", "floats", "buckets", "error"),
    [
        (4, 1, 0, BUCKETS, ValueError),  # not 8-aligned
        (-8, 1, 0, BUCKETS, ValueError),
        (0, 512, 1, BUCKETS, ValueError),  # past the end of 4096 bytes
        (0, 2**61, 0, BUCKETS, ValueError),  # 8 * 2**61 overflows: refused all the same
        (8, (2**63 - 1) // 8, 1, BUCKETS, ValueError),
        (8192, 0, 0, BUCKETS, ValueError),  # an offset past the end
        (0, 1, 0, (1.0, 0.5), ValueError),  # not ascending
        (0, 1, 0, (1.0, 1.0), ValueError),
        (0, 1, 0, tuple(float(i) for i in range(65)), ValueError),  # too many
        (0, 1, 0, ("a",), TypeError),
    ],
)
def test_a_bad_region_is_refused(
    offset: int, ints: int, floats: int, buckets: tuple[object, ...], error: type[Exception]
) -> None:
    with pytest.raises(error):
        Cells(mmap.mmap(-1, 4096), offset, ints, floats, buckets)  # type: ignore[arg-type]


def test_a_read_only_buffer_is_refused() -> None:
    with pytest.raises(BufferError):
        Cells(bytes(4096), 0, 1, 0, BUCKETS)


def test_the_mapping_stays_open_while_cells_use_it() -> None:
    buffer, cells = _region()
    with pytest.raises(BufferError):
        buffer.close()
    del cells
    buffer.close()
