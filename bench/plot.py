"""A run's req/s as a PNG chart, drawn from its results document with bench.png.

Several worker counts: one line per target, req/s against the worker count, a square at each
measured point (dashed for a target with no worker setting, whose one figure spans every count).
One worker count: a horizontal bar per target. Colours follow the order of the run's targets.

Usage: python -m bench.plot [RESULTS.json] [-o OUT.png]
(default bench/results/latest.json, drawn next to it as latest.png; bench.run draws it itself).
"""

import argparse
import datetime
import itertools
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import report
from bench.png import BLACK, Canvas, Color, text_height, text_width
from bench.targets import REPO_ROOT

# Tableau's ten, then darker ones; the sixteenth target and on reuse them.
PALETTE: list[Color] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (0, 0, 128),
    (128, 0, 0),
    (0, 100, 0),
    (0, 0, 0),
    (128, 0, 128),
    (184, 134, 11),
]
GRID: Color = (225, 225, 225)
AXIS: Color = (60, 60, 60)
MUTED: Color = (110, 110, 110)

FONT_SCALE = 2
WIDTH = 1000
LINE_WIDTH = 3
MARKER = 9  # side of a marker square, odd so that it has a centre pixel


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    color: Color
    points: list[tuple[int, float]]  # (worker count, req/s), by worker count
    fixed: bool  # no worker setting: one figure, the same at every count


@dataclass
class Chart:
    canvas: Canvas
    # Where each target's figures were drawn: marker centres (lines) or the middle of its bar.
    drawn: dict[str, list[tuple[int, int]]] = field(default_factory=dict)


class _Scale:
    """Maps values from [low, high] linearly onto pixels [start, end] (end may be below start)."""

    def __init__(self, low: float, high: float, start: int, end: int) -> None:
        self.low, self.high, self.start, self.end = low, high, start, end

    def __call__(self, value: float) -> int:
        return round(self.start + (value - self.low) / (self.high - self.low) * (self.end - self.start))


def series_of(doc: dict[str, Any]) -> list[Series]:
    fixed = set(doc["settings"].get("fixed_targets", []))
    return [
        Series(
            name,
            PALETTE[i % len(PALETTE)],
            [(n, v) for n, v in sorted(by_count.items()) if v is not None],
            name in fixed,
        )
        for i, (name, by_count) in enumerate(report.requests_per_sec_by_workers(doc).items())
    ]


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """0, then steps of 1, 2, 2.5 or 5 times a power of ten, about count of them, up to >= top."""
    if top <= 0:
        return [0.0, 1.0]
    rough = top / count
    power = 10.0 ** math.floor(math.log10(rough))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= rough * (1 - 1e-9))
    return [i * step for i in range(math.ceil(top / step - 1e-9) + 1)]


def tick_label(value: float) -> str:
    """25K for 25000, 2.5K for 2500, 800 for 800."""
    if value >= 1000:
        return f"{value / 1000:.1f}".removesuffix(".0") + "K"
    return f"{value:g}"


def _when(doc: dict[str, Any]) -> str:
    try:
        return datetime.datetime.fromisoformat(doc["date"]).strftime("%Y-%m-%d %H:%M %Z").strip()
    except (KeyError, ValueError):
        return str(doc.get("date", "undated"))


def _subtitle(doc: dict[str, Any]) -> str:
    machine, settings = doc.get("machine", {}), doc["settings"]
    parts = [f"{machine['nproc']} CPUS {machine['cpu_model']}" if machine else ""]
    if git := doc.get("versions", {}).get("git"):
        parts.append(f"GIT {git}")
    if "connections" in settings:
        parts.append(f"WRK -T1 -C{settings['connections']}, {settings.get('rounds', '?')} ROUND(S), MEDIANS")
    return ", ".join(p for p in parts if p)


def _headings(canvas: Canvas, title: str, subtitle: str) -> None:
    canvas.text(20, 16, title, BLACK, FONT_SCALE)
    canvas.text(20, 16 + text_height(FONT_SCALE) + 8, subtitle, MUTED, 1)


def _marker(canvas: Canvas, x: int, y: int, color: Color) -> None:
    half = MARKER // 2
    canvas.fill_rect(x - half, y - half, x + half, y + half, color)


def line_chart(series: Sequence[Series], title: str, subtitle: str = "") -> Chart:
    """req/s (y) against worker count (x), one line per target, the legend on the right."""
    height = 600
    legend_width = 40 + max(text_width(s.name, FONT_SCALE) for s in series)
    legend_left = WIDTH - legend_width - 20
    left, right, top, bottom = 100, legend_left - 40, 80, height - 80
    canvas = Canvas(WIDTH, height)
    chart = Chart(canvas)
    _headings(canvas, title, subtitle)

    counts = sorted({n for s in series for n, _ in s.points})
    low, high = counts[0], counts[-1]
    pad = (high - low) * 0.08 if high > low else 0.5
    x = _Scale(low - pad, high + pad, left, right)
    ticks = nice_ticks(max((v for s in series for _, v in s.points), default=1.0) * 1.05)
    y = _Scale(0.0, ticks[-1], bottom, top)

    glyph_h = text_height(FONT_SCALE)
    for value in ticks:
        canvas.line(left, y(value), right, y(value), GRID)
        label = tick_label(value)
        canvas.text(
            left - 12 - text_width(label, FONT_SCALE), y(value) - glyph_h // 2, label, AXIS, FONT_SCALE
        )
    for n in counts:
        canvas.line(x(n), bottom, x(n), bottom + 6, AXIS)
        label = str(n)
        canvas.text(x(n) - text_width(label, FONT_SCALE) // 2, bottom + 12, label, AXIS, FONT_SCALE)
    canvas.line(left, top, left, bottom, AXIS, width=2)
    canvas.line(left, bottom, right, bottom, AXIS, width=2)
    axis_title = "WORKERS"
    canvas.text(
        (left + right - text_width(axis_title, FONT_SCALE)) // 2, bottom + 40, axis_title, AXIS, FONT_SCALE
    )
    canvas.text(left - 60, top - glyph_h - 14, "REQ/S", AXIS, FONT_SCALE)

    for s in series:
        # A target measured once is the same figure at every count: a dashed level across.
        points = [(n, v) for n in counts for _, v in s.points[:1]] if s.fixed else s.points
        pixels = [(x(n), y(v)) for n, v in points]
        for (x0, y0), (x1, y1) in itertools.pairwise(pixels):
            canvas.line(x0, y0, x1, y1, s.color, width=LINE_WIDTH, dash=8 if s.fixed else 0)
        for px, py in pixels:
            _marker(canvas, px, py, s.color)
        chart.drawn[s.name] = pixels

    row = top
    for s in series:
        middle = row + glyph_h // 2
        canvas.line(
            legend_left, middle, legend_left + 24, middle, s.color, width=LINE_WIDTH, dash=5 if s.fixed else 0
        )
        _marker(canvas, legend_left + 12, middle, s.color)
        canvas.text(legend_left + 34, row, s.name, BLACK, FONT_SCALE)
        row += glyph_h + 12
    if any(s.fixed for s in series):
        canvas.text(legend_left, row + 4, "DASHED: NO WORKER SETTING", MUTED, 1)
    return chart


def bar_chart(series: Sequence[Series], title: str, subtitle: str = "") -> Chart:
    """One horizontal bar of req/s per target, its name on the left, its figure at its end."""
    row_height, bar_height, top = 34, 22, 80
    height = top + row_height * len(series) + 80
    left = 20 + max(text_width(s.name, FONT_SCALE) for s in series) + 14
    right = WIDTH - 130
    canvas = Canvas(WIDTH, height)
    chart = Chart(canvas)
    _headings(canvas, title, subtitle)

    ticks = nice_ticks(max((v for s in series for _, v in s.points), default=1.0))
    x = _Scale(0.0, ticks[-1], left, right)
    bottom = top + row_height * len(series)
    glyph_h = text_height(FONT_SCALE)
    for value in ticks:
        canvas.line(x(value), top, x(value), bottom, GRID)
        canvas.line(x(value), bottom, x(value), bottom + 6, AXIS)
        label = tick_label(value)
        canvas.text(x(value) - text_width(label, FONT_SCALE) // 2, bottom + 12, label, AXIS, FONT_SCALE)
    canvas.text((left + right - text_width("REQ/S", FONT_SCALE)) // 2, bottom + 40, "REQ/S", AXIS, FONT_SCALE)

    for i, s in enumerate(series):
        bar_top = top + i * row_height + (row_height - bar_height) // 2
        middle = bar_top + bar_height // 2
        canvas.text(
            left - 14 - text_width(s.name, FONT_SCALE), middle - glyph_h // 2, s.name, BLACK, FONT_SCALE
        )
        chart.drawn[s.name] = []
        for _, value in s.points[:1]:
            end = x(value)
            canvas.fill_rect(left, bar_top, end, bar_top + bar_height - 1, s.color)
            canvas.text(end + 8, middle - glyph_h // 2, f"{value:,.0f}", AXIS, FONT_SCALE)
            chart.drawn[s.name].append(((left + end) // 2, middle))
    canvas.line(left, top, left, bottom, AXIS, width=2)
    canvas.line(left, bottom, right, bottom, AXIS, width=2)
    return chart


def chart_of(doc: dict[str, Any]) -> Chart:
    """The line chart of a sweep, or the bar chart of a run at one worker count."""
    series = [s for s in series_of(doc) if s.points]
    if not series:
        raise ValueError("no req/s figure in the results to plot")
    counts = sorted(report.summaries(doc))
    subtitle = _subtitle(doc)
    if len(counts) > 1:
        return line_chart(series, f"FASTPROXY BENCHMARK: REQ/S BY WORKERS - {_when(doc)}", subtitle)
    workers = f"{counts[0]} WORKER" + ("S" if counts[0] != 1 else "")
    return bar_chart(series, f"FASTPROXY BENCHMARK: REQ/S, {workers} - {_when(doc)}", subtitle)


def write_plot(doc: dict[str, Any], path: Path) -> Path:
    tmp = path.with_name(path.name + ".tmp")  # *.tmp is git-ignored in bench/results
    tmp.write_bytes(chart_of(doc).canvas.to_png())
    os.replace(tmp, path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plot", description=__doc__.split("\n")[0])
    parser.add_argument(
        "results",
        type=Path,
        nargs="?",
        default=REPO_ROOT / "bench" / "results" / "latest.json",
        help="results JSON",
    )
    parser.add_argument("-o", "--out", type=Path, help="PNG to write (default: next to the JSON)")
    args = parser.parse_args(argv)
    try:
        doc = json.loads(args.results.read_text(encoding="utf-8"))
        path = write_plot(doc, args.out or args.results.with_suffix(".png"))
    except (OSError, ValueError, KeyError) as exc:
        print(f"bench.plot: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
