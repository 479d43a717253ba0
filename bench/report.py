"""Medians of the rounds, ratios against nginx (and policy targets against fastproxy passthrough),
and the JSON and Markdown that record them.

A run may sweep worker counts: its "summary" then maps each count ("1", "2", ...) to the figures of
every target at that count, and ratios only ever divide figures of the same count. A target with no
worker setting (direct, floor) is measured once per round and appears under every count.
"""

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
    "fastproxy-full-masked": "fastproxy-json",
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


def summarize_by_workers(
    measurements: Sequence[Measurement], targets: Sequence[str], counts: Sequence[int]
) -> dict[str, dict[str, Any]]:
    """summarize() once per worker count, keyed by the count as a string (a JSON object key)."""
    return {str(n): summarize([m for m in measurements if m.workers in (n, None)], targets) for n in counts}


def summaries(doc: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """A results document's summaries by worker count; one from before the sweep was for 1 worker."""
    if "workers" not in doc["settings"]:
        return {1: doc["summary"]}
    return {int(n): summary for n, summary in doc["summary"].items()}


def requests_per_sec_by_workers(doc: dict[str, Any]) -> dict[str, dict[int, float | None]]:
    """Target -> worker count -> median req/s, in the order of the run's targets."""
    table: dict[str, dict[int, float | None]] = {}
    for n, summary in summaries(doc).items():
        for name, figures in summary.items():
            table.setdefault(name, {})[n] = figures["requests_per_sec"]
    return table


def _workers_heading(n: int) -> str:
    return f"{n} worker" if n == 1 else f"{n} workers"


def _figures_table(summary: dict[str, Any]) -> list[str]:
    lines = [
        "| target | " + " | ".join(header for header, _, _ in _COLUMNS) + " |",
        "|---|" + "---:|" * len(_COLUMNS),
    ]
    for name, figures in summary.items():
        cells = [_cell(figures[key], fmt) for _, key, fmt in _COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _scaling_table(doc: dict[str, Any]) -> list[str]:
    """Compact: one row per target, one req/s column per worker count, and last over first."""
    counts = sorted(summaries(doc))
    fixed = set(doc["settings"].get("fixed_targets", []))
    first, last = counts[0], counts[-1]
    lines = [
        "| target | " + " | ".join(_workers_heading(n) for n in counts) + f" | {last} vs {first} |",
        "|---|" + "---:|" * (len(counts) + 1),
    ]
    for name, by_count in requests_per_sec_by_workers(doc).items():
        cells = [_cell(by_count.get(n), "{:,.0f}") for n in counts]
        scaling = None if name in fixed else _ratio(by_count.get(last), by_count.get(first))
        label = f"{name} (no worker setting)" if name in fixed else name
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {_cell(scaling, '{:.2f}x')} |")
    return lines


# (column header, key in a latency_at_rate entry or its latency_ms, format)
_RATE_COLUMNS: list[tuple[str, str, str]] = [
    ("sent", "sent", "{:,d}"),
    ("answered", "completed", "{:,d}"),
    ("errors", "errors", "{:,d}"),
    ("incomplete", "incomplete", "{:,d}"),
    ("p50 ms", "50", "{:.3f}"),
    ("p90 ms", "90", "{:.3f}"),
    ("p99 ms", "99", "{:.3f}"),
    ("p99.9 ms", "99.9", "{:.3f}"),
    ("max ms", "max", "{:.3f}"),
    ("CPU µs/req", "cpu_us_per_request", "{:.1f}"),
    ("generator CPU", "generator_cpu_share", "{:.0%}"),
]
# Above this share of a CPU the generator is late by itself and its figures are its own queueing.
GENERATOR_BUSY = 0.8


def rate_warnings(at_rate: Sequence[dict[str, Any]]) -> list[str]:
    """What makes a latency-at-rate figure doubtful: a generator or a target that fell behind."""
    notes = []
    for m in at_rate:
        label = m["target"] if m["workers"] is None else f"{m['target']} with {m['workers']} worker(s)"
        if m["generator_cpu_share"] > GENERATOR_BUSY:
            notes.append(
                f"open loop, {label}: the generator used {m['generator_cpu_share']:.0%} of a CPU; "
                "its latencies include its own queueing"
            )
        if m["incomplete"] or m["errors"]:
            notes.append(
                f"open loop, {label}: {m['incomplete']} request(s) unanswered at the end and "
                f"{m['errors']} error(s) at {m['rate']:,.0f} req/s: it did not keep up"
            )
    return notes


def _rate_section(doc: dict[str, Any]) -> list[str]:
    at_rate: list[dict[str, Any]] = doc.get("latency_at_rate") or []
    if not at_rate:
        return []
    rate = doc["settings"]["rate"]
    first = at_rate[0]
    lines = [
        "",
        f"## latency at {rate:,.0f} req/s (open loop)",
        "",
        "| target | workers | " + " | ".join(header for header, _, _ in _RATE_COLUMNS) + " |",
        "|---|---:|" + "---:|" * len(_RATE_COLUMNS),
    ]
    for m in at_rate:
        cells = [_cell({**m, **m["latency_ms"]}[key], fmt) for _, key, fmt in _RATE_COLUMNS]
        lines.append(f"| {m['target']} | {_cell(m['workers'], '{:d}')} | " + " | ".join(cells) + " |")
    baseline = first["latency_ms"]
    lines += [
        "",
        f"Open loop (bench.openloop): request i is due at t0 + i/{rate:g} s whatever the server does and "
        f"goes out on the first idle one of {first['connections']} keep-alive connections; its latency "
        "runs from when it was due, so waiting for a connection counts (no coordinated omission). "
        f"Each target ran once for {first['duration_s']:g} s after the saturation rounds; incomplete: "
        "due but unanswered at the end, counted in the percentiles at their wait so far (a lower bound). "
        f"The generator is Python (uvloop + httptools, one process, woken by {first['ticker']}): "
        f"the {first['target']} row, nginx's static answer with no proxy, is its baseline — about "
        f"p50 {_cell(baseline['50'], '{:.3f}')} ms, p99 {_cell(baseline['99'], '{:.3f}')} ms of every "
        "row is the generator and loopback; a proxy's own latency is its row less that one.",
    ]
    return lines


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def render_markdown(doc: dict[str, Any]) -> str:
    machine, settings, versions = doc["machine"], doc["settings"], doc["versions"]
    by_workers = summaries(doc)
    lines = [
        f"# fastproxy benchmark — {doc['date']}",
        "",
        f"- machine: {machine['hostname']}, {machine['nproc']} CPUs, {machine['cpu_model']}, "
        f"load average {machine['loadavg_before'][0]} before, {machine['loadavg_after'][0]} after",
        "- versions: " + ", ".join(f"{name} {version}" for name, version in versions.items() if version),
        f"- upstream: {settings['upstream']} (one worker); load: wrk -t1 -c{settings['connections']} "
        f"-d{settings['duration_s']}s --latency, {settings['warmup_s']} s warm-up per target "
        f"per round, {settings['rounds']} interleaved round(s)",
    ]
    if len(by_workers) > 1 or settings.get("workers", [1]) != [1]:
        fixed = settings.get("fixed_targets", [])
        lines.append(
            "- workers: " + ", ".join(str(n) for n in by_workers) + " (nginx worker_processes, HAProxy "
            "nbthread: threads of one process, fastproxy --workers), all in the same interleaved rounds"
            + (f"; {', '.join(fixed)}: no worker setting, measured once per round" if fixed else "")
        )
    for n, summary in by_workers.items():
        lines += ["", f"## {_workers_heading(n)}", "", *_figures_table(summary)]
    if len(by_workers) > 1:
        lines += ["", "## req/s by workers", "", *_scaling_table(doc)]
    lines += [
        "",
        "Figures are medians over the rounds; ratios divide medians of this same run and the same "
        "worker count. CPU is the proxy's whole process tree (master and all children) per request; "
        "RSS is per worker process (HAProxy: its one process), after the load. errors: non-2xx/3xx "
        "answers plus socket errors, over all rounds. "
        "Passthrough: " + ", ".join(f"{a}'s is {b}" for a, b in PASSTHROUGH.items()) + ".",
        *_rate_section(doc),
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
