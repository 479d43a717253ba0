"""bench.plot draws a readable chart from a results document: lines for a sweep, bars otherwise."""

import json
from pathlib import Path
from typing import Any

import pytest
from bench_support import decode_png

from bench import plot
from bench.png import WHITE

pytestmark = pytest.mark.timeout(20)


def _figures(rps: float) -> dict[str, Any]:
    return {"requests_per_sec": rps, "errors": 0}


SWEEP: dict[str, Any] = {
    "date": "2026-11-28T08:00:00+00:00",
    "machine": {"nproc": 2, "cpu_model": "AMD EPYC"},
    "versions": {"git": "abc1234"},
    "settings": {
        "targets": ["direct", "nginx", "fastproxy"],
        "workers": [1, 2, 4],
        "fixed_targets": ["direct"],
        "connections": 64,
        "rounds": 3,
    },
    "summary": {
        "1": {"direct": _figures(100_000), "nginx": _figures(40_000), "fastproxy": _figures(30_000)},
        "2": {"direct": _figures(100_000), "nginx": _figures(70_000), "fastproxy": _figures(52_000)},
        "4": {"direct": _figures(100_000), "nginx": _figures(75_000), "fastproxy": _figures(None)},
    },
}


def test_ticks_are_round_and_reach_the_top() -> None:
    assert plot.nice_ticks(132_000) == [0, 50_000, 100_000, 150_000]
    assert plot.nice_ticks(48_000) == [0, 10_000, 20_000, 30_000, 40_000, 50_000]
    assert plot.nice_ticks(12) == [0, 2.5, 5, 7.5, 10, 12.5]
    assert plot.nice_ticks(0) == [0, 1]
    assert [plot.tick_label(v) for v in (0, 800, 2500, 25_000, 100_000)] == [
        "0",
        "800",
        "2.5K",
        "25K",
        "100K",
    ]


def test_series_follow_the_targets_and_skip_missing_figures() -> None:
    series = plot.series_of(SWEEP)
    assert [s.name for s in series] == ["direct", "nginx", "fastproxy"]
    assert series[2].points == [(1, 30_000), (2, 52_000)]
    assert [s.fixed for s in series] == [True, False, False]
    assert len({s.color for s in series}) == 3


def test_sweep_draws_a_line_per_target_through_its_markers(tmp_path: Path) -> None:
    chart = plot.chart_of(SWEEP)
    path = plot.write_plot(SWEEP, tmp_path / "latest.png")
    image = decode_png(path.read_bytes())
    assert (image.width, image.height) == (chart.canvas.width, chart.canvas.height)
    colors = image.colors()
    for s in plot.series_of(SWEEP):
        assert s.color in colors
        drawn = chart.drawn[s.name]
        assert len(drawn) == (3 if s.fixed else len(s.points))
        for x, y in drawn:
            assert image.pixel(x, y) == s.color, (s.name, x, y)
    # Higher req/s is higher up; the line between two markers goes through their midpoint.
    (x1, y1), (x2, y2), _ = chart.drawn["nginx"]
    assert y2 < y1
    nginx = plot.series_of(SWEEP)[1].color
    assert image.pixel((x1 + x2) // 2, (y1 + y2) // 2) == nginx or any(
        image.pixel((x1 + x2) // 2, (y1 + y2) // 2 + d) == nginx for d in (-1, 1)
    )
    # The fixed target is one level across every count.
    assert len({y for _, y in chart.drawn["direct"]}) == 1


def test_one_worker_count_draws_bars(tmp_path: Path) -> None:
    doc = {
        **SWEEP,
        "settings": {**SWEEP["settings"], "workers": [1]},
        "summary": {"1": SWEEP["summary"]["1"]},
    }
    chart = plot.chart_of(doc)
    image = decode_png(chart.canvas.to_png())
    series = plot.series_of(doc)
    for s in series:
        ((x, y),) = chart.drawn[s.name]
        assert image.pixel(x, y) == s.color

    # Bar length follows req/s: direct's bar reaches further right than fastproxy's.
    def bar_end(name: str) -> int:
        ((x, y),) = chart.drawn[name]
        color = image.pixel(x, y)
        while image.pixel(x + 1, y) == color:
            x += 1
        return x

    assert bar_end("direct") > bar_end("nginx") > bar_end("fastproxy")
    assert image.pixel(bar_end("fastproxy") + 2, chart.drawn["fastproxy"][0][1]) == WHITE


def test_cli_plots_a_results_file_from_before_the_sweep(tmp_path: Path) -> None:
    old = {
        "date": "2026-11-28T07:42:29+00:00",
        "settings": {"targets": ["nginx", "fastproxy"]},
        "summary": {"nginx": _figures(43_675), "fastproxy": _figures(33_856)},
    }
    results = tmp_path / "latest.json"
    results.write_text(json.dumps(old))
    assert plot.main([str(results)]) == 0
    image = decode_png((tmp_path / "latest.png").read_bytes())
    assert {s.color for s in plot.series_of(old)} <= image.colors()
    assert plot.main([str(tmp_path / "missing.json")]) == 1
