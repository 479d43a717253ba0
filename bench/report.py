"""Medians of the rounds, ratios against nginx (and policy targets against fastproxy passthrough),
and the JSON and Markdown that record them."""

import json
import os
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.measure import Measurement

REFERENCE = "nginx"
# What a policy target costs is measured against its passthrough: the same requests through a
# public route (fastproxy-jwt's requests carry a 700-byte token, which fastproxy-bearer carries too).
PASSTHROUGH = {
    "fastproxy-jwt": "fastproxy-bearer",
    "fastproxy-limited": "fastproxy",
    "fastproxy-masked": "fastproxy-json",
    "fastproxy-full": "fastproxy",
    "fastproxy-audit": "fastproxy",
}

# (column header, summary key, format); a figure that does not apply (None) prints as "-".
_COLUMNS: list[tuple[str, str, str]] = [
    ("req/s", "requests_per_sec", "{:,.0f}"),
    ("p50 ms", "p50_ms", "{:.3f}"),
    ("p99 ms", "p99_ms", "{:.3f}"),
    ("CPU µs/req", "cpu_us_per_request", "{:.1f}"),
    ("RSS/worker MiB", "rss_mib_per_worker", "{:.1f}"),
    (f"req/s vs {REFERENCE}", "requests_per_sec_vs_reference", "{:.2f}x"),
    (f"p99 vs {REFERENCE}", "p99_vs_reference", "{:.2f}x"),
    ("req/s vs passthrough", "requests_per_sec_vs_passthrough", "{:.2f}x"),
    ("CPU µs/req over passthrough", "cpu_us_over_passthrough", "{:+.1f}"),
    ("errors", "errors", "{:d}"),
]


def _median(rounds: Sequence[Measurement], figure: Callable[[Measurement], float | None]) -> float | None:
    values = [v for m in rounds if (v := figure(m)) is not None]
    return statistics.median(values) if values else None


def _ratio(value: Any, reference: Any) -> float | None:
    if not isinstance(value, float) or not isinstance(reference, float) or reference == 0:
        return None
    return value / reference


def summarize(measurements: Sequence[Measurement], targets: Sequence[str]) -> dict[str, Any]:
    """Per target, the median over rounds of each figure; ratios use medians of this run only."""
    summary: dict[str, Any] = {}
    for name in targets:
        rounds = [m for m in measurements if m.target == name]
        summary[name] = {
            "rounds": len(rounds),
            "requests_per_sec": _median(rounds, lambda m: m.wrk.requests_per_sec),
            "p50_ms": _median(rounds, lambda m: m.wrk.p50_ms),
            "p99_ms": _median(rounds, lambda m: m.wrk.p99_ms),
            "cpu_us_per_request": _median(rounds, lambda m: m.cpu_us_per_request),
            "rss_mib_per_worker": _median(rounds, lambda m: m.rss_mib_per_worker),
            "errors": sum(m.wrk.errors for m in rounds),
        }
    reference = summary.get(REFERENCE, {})
    for figures in summary.values():
        figures["requests_per_sec_vs_reference"] = _ratio(
            figures["requests_per_sec"], reference.get("requests_per_sec")
        )
        figures["p99_vs_reference"] = _ratio(figures["p99_ms"], reference.get("p99_ms"))
    for name, figures in summary.items():
        passthrough = summary.get(PASSTHROUGH.get(name, ""), {})
        figures["requests_per_sec_vs_passthrough"] = _ratio(
            figures["requests_per_sec"], passthrough.get("requests_per_sec")
        )
        cpu, base = figures["cpu_us_per_request"], passthrough.get("cpu_us_per_request")
        figures["cpu_us_over_passthrough"] = cpu - base if cpu is not None and base is not None else None
    return summary


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def render_markdown(doc: dict[str, Any]) -> str:
    machine, settings, versions = doc["machine"], doc["settings"], doc["versions"]
    lines = [
        f"# fastproxy benchmark — {doc['date']}",
        "",
        f"- machine: {machine['hostname']}, {machine['nproc']} CPUs, {machine['cpu_model']}, "
        f"load average {machine['loadavg_before'][0]} before, {machine['loadavg_after'][0]} after",
        "- versions: " + ", ".join(f"{name} {version}" for name, version in versions.items() if version),
        f"- upstream: {settings['upstream']}; load: wrk -t1 -c{settings['connections']} "
        f"-d{settings['duration_s']}s --latency, {settings['warmup_s']} s warm-up per target "
        f"per round, {settings['rounds']} interleaved round(s)",
        "",
        "| target | " + " | ".join(header for header, _, _ in _COLUMNS) + " |",
        "|---|" + "---:|" * len(_COLUMNS),
    ]
    for name, figures in doc["summary"].items():
        cells = [_cell(figures[key], fmt) for _, key, fmt in _COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Figures are medians over the rounds; ratios divide medians of this same run. CPU is the "
        "proxy's whole process tree (master and all children) per request; RSS is per worker, "
        "after the load. errors: non-2xx/3xx answers plus socket errors, over all rounds. "
        "Passthrough: " + ", ".join(f"{a}'s is {b}" for a, b in PASSTHROUGH.items()) + ".",
    ]
    if doc.get("notes"):
        lines += ["", *(f"- note: {note}" for note in doc["notes"])]
    return "\n".join(lines) + "\n"


def _write_atomically(path: Path, text: str) -> None:
    # A reader (or a crash) never sees half a file; *.tmp is git-ignored in bench/results.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_results(out_dir: Path, doc: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "latest.json", out_dir / "latest.md"
    _write_atomically(json_path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    _write_atomically(md_path, markdown)
    return json_path, md_path
