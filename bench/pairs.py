"""Paired ratios: each performance target of the issues, measured as back-to-back A/B pairs.

Usage: python -m bench.pairs [--pairs fastproxy:nginx,...] [--alternations N] [--duration S]
                             [--warmup S] [--connections C] [--out DIR]

bench.run loads every target once per round, so two targets of one ratio are minutes apart and
each sees a different moment of a shared machine: on this project's VM single rounds of the same
ratio ranged from 0.71x to 0.99x in one run. Here each ratio is measured as a pair, the two
targets loaded one right after the other (which goes first alternates), many times over; the
report gives the median of the pair ratios with their spread, next to the issue's bar for it.
Every target is started once, with 1 worker, and shared by the pairs that name it.

Writes ``pairs.json`` and ``pairs.md`` to --out (default bench/results).
"""

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.haproxy import haproxy_path
from bench.measure import Measurement, measure
from bench.nginx import NginxUpstream, nginx_path
from bench.run import TARGETS, _cpu_model, _git_revision
from bench.targets import REPO_ROOT, DevserverUpstream, Target
from bench.wrk import wrk_path


@dataclass(frozen=True, slots=True)
class Pair:
    target: str
    baseline: str
    bar: float | None  # the issue's target for target/baseline req/s, when it sets one
    issue: str = ""


# The ratios the issues set, each with its bar (see the issues named).
DEFAULT_PAIRS = (
    Pair("fastproxy", "nginx", 0.90, "#2"),
    Pair("fastproxy-limited", "fastproxy", None, "#4"),
    Pair("fastproxy-audit", "fastproxy", 0.90, "#5"),
    Pair("fastproxy-masked", "fastproxy-json", 0.85, "#6"),
    Pair("fastproxy-full", "nginx", 0.75, "#7"),
    Pair("fastproxy-full", "haproxy-jwt", 1.00, "#7"),
)


def parse_pairs(text: str) -> tuple[Pair, ...]:
    """``a:b[:bar],...`` with names of bench.run's targets; a pair of the defaults keeps its bar."""
    known = {(p.target, p.baseline): p for p in DEFAULT_PAIRS}
    pairs = []
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) not in (2, 3) or not all(parts):
            raise argparse.ArgumentTypeError(f"{item!r}: expected TARGET:BASELINE or TARGET:BASELINE:BAR")
        for name in parts[:2]:
            if name not in TARGETS:
                raise argparse.ArgumentTypeError(f"{name!r}: not a target (choose from {', '.join(TARGETS)})")
        default = known.get((parts[0], parts[1]))
        if len(parts) == 3:
            try:
                bar: float | None = float(parts[2])
            except ValueError:
                raise argparse.ArgumentTypeError(f"{item!r}: the bar must be a number") from None
        else:
            bar = default.bar if default is not None else None
        pairs.append(Pair(parts[0], parts[1], bar, default.issue if default is not None else ""))
    return tuple(pairs)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.pairs", description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=parse_pairs, default=DEFAULT_PAIRS, help="TARGET:BASELINE[:BAR],...")
    parser.add_argument("--alternations", type=_positive, default=8, help="measurements of each pair")
    parser.add_argument("--duration", type=_positive, default=4, help="seconds of load per measurement")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted seconds before each measurement")
    parser.add_argument("--connections", type=_positive, default=64, help="wrk connections")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results", help="report directory")
    return parser.parse_args(argv)


def summarize(pair: Pair, measured: list[tuple[Measurement, Measurement]]) -> dict[str, Any]:
    """One pair's figures from its (target, baseline) measurements, taken back to back.

    A pair whose baseline answered nothing gives no ratio and counts nowhere; ``met`` is None
    when any answer failed (quick error answers would inflate req/s).
    """
    errors = sum(t.wrk.errors + b.wrk.errors for t, b in measured)
    measured = [(t, b) for t, b in measured if b.wrk.requests_per_sec > 0]
    ratios = [t.wrk.requests_per_sec / b.wrk.requests_per_sec for t, b in measured]
    cpu = [
        (t.cpu_us_per_request, b.cpu_us_per_request)
        for t, b in measured
        if t.cpu_us_per_request is not None and b.cpu_us_per_request is not None
    ]
    median = statistics.median(ratios) if ratios else None
    return {
        "target": pair.target,
        "baseline": pair.baseline,
        "issue": pair.issue,
        "bar": pair.bar,
        "pairs": len(ratios),
        "ratio_median": median,
        "ratio_min": min(ratios) if ratios else None,
        "ratio_max": max(ratios) if ratios else None,
        "ratios": ratios,
        "target_rps_median": statistics.median(t.wrk.requests_per_sec for t, _ in measured)
        if measured
        else None,
        "baseline_rps_median": statistics.median(b.wrk.requests_per_sec for _, b in measured)
        if measured
        else None,
        "cpu_us_over_baseline_median": statistics.median(t - b for t, b in cpu) if cpu else None,
        "met": None if pair.bar is None or median is None or errors else median >= pair.bar,
        "errors": errors,
    }


def markdown(doc: dict[str, Any]) -> str:
    s = doc["settings"]
    lines = [
        f"# fastproxy paired ratios — {doc['date']}",
        "",
        f"- machine: {doc['machine']['nproc']} CPUs, {doc['machine']['cpu_model']}; git {doc['git']}",
        f"- each pair {s['alternations']} times back to back (order alternating), wrk -t1 "
        f"-c{s['connections']} -d{s['duration_s']}s after {s['warmup_s']} s of warm-up; 1 worker each",
        "",
        "| target | baseline | issue | bar | median ratio | min | max | target req/s | baseline req/s "
        "| CPU µs/req over baseline | met | errors |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]

    def num(value: float | None, fmt: str, unit: str = "") -> str:
        return "-" if value is None else format(value, fmt) + unit

    for r in doc["pairs"]:
        met = "suspect" if r["errors"] else "-" if r["met"] is None else ("yes" if r["met"] else "no")
        lines.append(
            f"| {r['target']} | {r['baseline']} | {r['issue'] or '-'} | {num(r['bar'], '.2f')} "
            f"| {num(r['ratio_median'], '.3f', 'x')} | {num(r['ratio_min'], '.2f', 'x')} "
            f"| {num(r['ratio_max'], '.2f', 'x')} "
            f"| {num(r['target_rps_median'], ',.0f')} | {num(r['baseline_rps_median'], ',.0f')} "
            f"| {num(r['cpu_us_over_baseline_median'], '+.1f')} | {met} | {r['errors']} |"
        )
    lines += [f"\n- {note}" for note in doc.get("notes", [])]
    return "\n".join(lines) + "\n"


# Targets that need a program the tests do not: a pair naming one is left out without it.
_NEEDS = {"nginx": nginx_path, "haproxy-jwt": haproxy_path}


def runnable(pairs: Sequence[Pair]) -> tuple[list[Pair], list[str]]:
    """The pairs whose targets can run here, and a note for each one left out."""
    kept, notes = [], []
    for pair in pairs:
        missing = [name for name in (pair.target, pair.baseline) if name in _NEEDS and _NEEDS[name]() is None]
        if missing:
            notes.append(f"{pair.target} / {pair.baseline}: left out, {', '.join(missing)} not installed")
        else:
            kept.append(pair)
    return kept, notes


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    pairs, notes = runnable(args.pairs)
    upstream: Target = NginxUpstream() if nginx_path() is not None else DevserverUpstream()
    names = list(dict.fromkeys(name for p in pairs for name in (p.target, p.baseline)))
    targets = {name: TARGETS[name](upstream) for name in names}
    measured: dict[Pair, list[tuple[Measurement, Measurement]]] = {p: [] for p in pairs}
    started: list[Target] = []
    try:
        for server in (upstream, *targets.values()):
            started.append(server)
            server.start(workdir)
        for n in range(1, args.alternations + 1):
            for pair in measured:
                order = (pair.target, pair.baseline) if n % 2 else (pair.baseline, pair.target)
                got = {
                    name: measure(
                        targets[name],
                        round_no=n,
                        duration_s=args.duration,
                        warmup_s=args.warmup,
                        connections=args.connections,
                    )
                    for name in order
                }
                t, b = got[pair.target], got[pair.baseline]
                measured[pair].append((t, b))
                t_rps, b_rps = t.wrk.requests_per_sec, b.wrk.requests_per_sec
                print(
                    f"  {n} {pair.target} / {pair.baseline}: {t_rps:,.0f} / {b_rps:,.0f} req/s"
                    f" = {t_rps / b_rps if b_rps else 0:.2f}x",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        for server in reversed(started):
            server.stop()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"nproc": len(os.sched_getaffinity(0)), "cpu_model": _cpu_model()},
        "git": _git_revision(),
        "settings": {
            "alternations": args.alternations,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "upstream": upstream.name,
        },
        "pairs": [summarize(pair, got) for pair, got in measured.items()],
        "notes": notes,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if wrk_path() is None:
        print("bench.pairs: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="fastproxy-pairs-") as workdir:
        doc = run(args, Path(workdir))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pairs.json").write_text(json.dumps(doc, indent=2) + "\n")
    text = markdown(doc)
    (args.out / "pairs.md").write_text(text)
    print(text)
    return 1 if any(r["errors"] for r in doc["pairs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
