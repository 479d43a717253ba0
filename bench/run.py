"""Benchmark fastproxy side by side with nginx and with a direct connection, in one run.

Usage: python -m bench.run [--duration S] [--rounds N] [--connections C] [--warmup S]
                           [--targets direct,nginx,fastproxy] [--workers 1,2] [--rate R] [--out DIR]

All targets share one upstream and are loaded in turn, round after round, so that the noise of a
shared machine falls on all of them alike; the report gives the median of the rounds. With several
worker counts, each target runs once per count (all started side by side) in the same rounds; a
target without a worker setting (direct, floor) is loaded once per round. With --rate, each target
is then loaded once more at R requests/s by an open-loop generator (bench.openloop), for the
latency that a closed-loop wrk hides; the bare upstream ("direct") goes first, as the baseline of
what the Python generator adds by itself.
"""

import argparse
import datetime
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from bench import plot, report
from bench.haproxy import HaproxyJwtTarget, haproxy_version
from bench.measure import Measurement, RateMeasurement, measure, measure_at_rate
from bench.nginx import NginxProxy, NginxUpstream, nginx_path, nginx_version
from bench.openloop import OpenLoopError
from bench.process import ServerError
from bench.targets import (
    REPO_ROOT,
    DevserverUpstream,
    DirectTarget,
    FastproxyTarget,
    FloorTarget,
    Target,
    fastproxy_audit,
    fastproxy_bearer,
    fastproxy_full,
    fastproxy_full_masked,
    fastproxy_json,
    fastproxy_jwt,
    fastproxy_limited,
    fastproxy_masked,
)
from bench.wrk import WrkError, wrk_path, wrk_version

# Each factory gets the shared upstream; a new scenario is one more entry here.
TARGETS: dict[str, Callable[[Target], Target]] = {
    "direct": DirectTarget,
    "nginx": NginxProxy,
    "fastproxy": FastproxyTarget,
    "fastproxy-bearer": fastproxy_bearer,
    "fastproxy-jwt": fastproxy_jwt,
    "fastproxy-limited": fastproxy_limited,
    "fastproxy-full": fastproxy_full,
    "fastproxy-full-masked": fastproxy_full_masked,
    "fastproxy-audit": fastproxy_audit,
    "haproxy-jwt": HaproxyJwtTarget,
    "fastproxy-json": fastproxy_json,
    "fastproxy-masked": fastproxy_masked,
    "floor": FloorTarget,
}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def _positive_rate(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of requests/s: {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def _worker_counts(text: str) -> list[int]:
    try:
        counts = sorted({_positive(n.strip()) for n in text.split(",") if n.strip()})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected counts like 1,2,4: {text}") from exc
    if not counts:
        raise argparse.ArgumentTypeError(f"no worker count in {text!r}")
    return counts


def _target_list(text: str) -> list[str]:
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in TARGETS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown target(s) {unknown}; choose from {','.join(TARGETS)}")
    return names


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])
    # wrk reads -d in whole seconds, hence integers.
    parser.add_argument("--duration", type=_positive, default=10, help="seconds per measurement")
    parser.add_argument("--rounds", type=_positive, default=3, help="interleaved rounds")
    parser.add_argument("--connections", type=_positive, default=64, help="wrk connections")
    parser.add_argument(
        "--warmup", type=_non_negative, default=2, help="uncounted seconds per target per round"
    )
    parser.add_argument(
        "--targets",
        type=_target_list,
        default=["direct", "nginx", "fastproxy", "fastproxy-full", "haproxy-jwt"],
        help=f"comma-separated, from {','.join(TARGETS)}",
    )
    parser.add_argument(
        "--workers",
        type=_worker_counts,
        default=[1],
        help="comma-separated worker counts to sweep (nginx worker_processes, HAProxy nbthread, "
        "fastproxy --workers)",
    )
    parser.add_argument(
        "--rate",
        type=_positive_rate,
        default=None,
        help="after the rounds, latency of each target at this fixed rate (requests/s, open loop, "
        "--duration seconds, --connections connections); default: off",
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results", help="results directory")
    return parser.parse_args(argv)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def _git_revision() -> str | None:
    """The commit benchmarked, marked -dirty when the working tree differs from it."""
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain")
    except (OSError, subprocess.SubprocessError):
        return None  # no git, or no commit yet
    return head + ("-dirty" if dirty else "")


def _rotated(items: Sequence[Target], by: int) -> list[Target]:
    # Rotating the order each round keeps any target from always running first (cold machine)
    # or right after the same neighbour.
    shift = by % len(items)
    return [*items[shift:], *items[:shift]]


def _label(name: str, workers: int | None) -> str:
    return name if workers is None else f"{name} x{workers}"


def make_targets(names: Sequence[str], counts: Sequence[int], upstream: Target) -> list[Target]:
    """One target per name and worker count; one only where the target has no worker setting."""
    made: list[Target] = []
    for name in names:
        first = TARGETS[name](upstream)
        if first.workers is None:
            made.append(first)
            continue
        for i, n in enumerate(counts):
            target = first if i == 0 else TARGETS[name](upstream)
            target.workers = n
            made.append(target)
    return made


def _progress(m: Measurement) -> None:
    cpu = f", {m.cpu_us_per_request:.1f} CPU µs/req" if m.cpu_us_per_request is not None else ""
    errors = f", {m.wrk.errors} ERRORS" if m.wrk.errors else ""
    print(
        f"  round {m.round} {_label(m.target, m.workers)}: {m.wrk.requests_per_sec:,.0f} req/s, "
        f"p50 {m.wrk.p50_ms:.3f} ms, p99 {m.wrk.p99_ms:.3f} ms{cpu}{errors}",
        file=sys.stderr,
        flush=True,
    )


def _progress_at_rate(m: RateMeasurement) -> None:
    r = m.result
    p50, p99, top = (r.latency_ms[k] for k in ("50", "99", "max"))
    trouble = f", {r.errors} ERRORS" if r.errors else ""
    trouble += f", {r.incomplete} INCOMPLETE" if r.incomplete else ""
    print(
        f"  at {r.rate:,.0f} req/s {_label(m.target, m.workers)}: {r.completed:,} answered, "
        f"p50 {p50 or 0:.3f} ms, p99 {p99 or 0:.3f} ms, max {top or 0:.3f} ms, "
        f"generator CPU {r.generator_cpu_share:.0%}{trouble}",
        file=sys.stderr,
        flush=True,
    )


def _at_rate(args: argparse.Namespace, upstream: Target, targets: list[Target]) -> list[RateMeasurement]:
    """Each target once at args.rate, the bare upstream first (the generator's baseline)."""
    direct = [t for t in targets if t.name == "direct"] or [DirectTarget(upstream)]
    ordered = [*direct, *(t for t in targets if t.name != "direct")]
    print(
        f"bench: open loop at {args.rate:,.0f} req/s, {args.duration} s each: "
        + ", ".join(_label(t.name, t.workers) for t in ordered),
        file=sys.stderr,
    )
    found: list[RateMeasurement] = []
    for target in ordered:
        m = measure_at_rate(target, rate=args.rate, duration_s=args.duration, connections=args.connections)
        _progress_at_rate(m)
        found.append(m)
    return found


def _run_rounds(
    args: argparse.Namespace, workdir: Path, upstream: Target, targets: list[Target]
) -> tuple[list[Measurement], list[RateMeasurement]]:
    measurements: list[Measurement] = []
    at_rate: list[RateMeasurement] = []
    started: list[Target] = []
    try:
        started.append(upstream)
        upstream.start(workdir)
        for target in targets:
            started.append(target)
            # Each worker count of a target gets its own directory (config, logs).
            target.start(workdir if target.workers is None else workdir / f"workers-{target.workers}")
        per_round = len(targets) * (args.duration + args.warmup)
        labels = [_label(t.name, t.workers) for t in targets]
        print(
            f"bench: {args.rounds} round(s) of {', '.join(labels)}, about {per_round} s each",
            file=sys.stderr,
        )
        for round_no in range(1, args.rounds + 1):
            for target in _rotated(targets, round_no - 1):
                m = measure(
                    target,
                    round_no=round_no,
                    duration_s=args.duration,
                    warmup_s=args.warmup,
                    connections=args.connections,
                )
                _progress(m)
                measurements.append(m)
        if args.rate is not None:
            at_rate = _at_rate(args, upstream, targets)
    finally:
        for server in reversed(started):
            server.stop()
    return measurements, at_rate


def _warnings(
    targets: list[Target], measurements: list[Measurement], summaries: dict[str, dict[str, Any]]
) -> list[str]:
    """What makes a figure of this run doubtful, for the reader of the table."""
    notes = list(
        dict.fromkeys(
            f"{name} had {figures['errors']} failed requests with {count} worker(s); its figures are suspect"
            for count, summary in summaries.items()
            for name, figures in summary.items()
            if figures["errors"]
        )
    )
    for target in targets:
        expected = target.expected_workers()
        found = sorted(
            {
                len(m.worker_rss_kib)
                for m in measurements
                if m.target == target.name and m.workers == target.workers
            }
        )
        if expected is not None and found != [expected]:
            notes.append(
                f"{_label(target.name, target.workers)}: found {found} worker process(es) "
                f"after the load, expected {expected}"
            )
    return notes


def benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    notes: list[str] = []
    names: list[str] = args.targets
    has_nginx = nginx_path() is not None
    if not has_nginx:
        notes.append("nginx is not installed: no nginx target, no ratios, devserver upstream")
        names = [n for n in names if n != "nginx"]
    if not names:
        raise ServerError("no target left to run")
    upstream: Target = NginxUpstream() if has_nginx else DevserverUpstream()
    targets = make_targets(names, args.workers, upstream)
    fixed = [t.name for t in targets if t.workers is None]
    # Another job loading this shared machine shows up here; it explains an odd round.
    load_before = os.getloadavg()
    measurements, at_rate = _run_rounds(args, workdir, upstream, targets)
    load_after = os.getloadavg()
    summaries = report.summarize_by_workers(measurements, names, args.workers)
    notes += _warnings(targets, measurements, summaries)
    notes += report.rate_warnings([m.to_json() for m in at_rate])
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "hostname": socket.gethostname(),
            "nproc": len(os.sched_getaffinity(0)),
            "cpu_model": _cpu_model(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in load_after],
        },
        "versions": {
            "python": platform.python_version(),
            "nginx": nginx_version(),
            "haproxy": haproxy_version(),
            "wrk": wrk_version(),
            "git": _git_revision(),
        },
        "settings": {
            "targets": names,
            "workers": args.workers,
            "fixed_targets": fixed,
            "upstream": upstream.name,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "connections": args.connections,
            "warmup_s": args.warmup,
            "wrk_threads": 1,
            "rate": args.rate,
        },
        # Worker count ("1", "2", ...) -> target -> figures (see bench.report).
        "summary": summaries,
        "rounds": [m.to_json() for m in measurements],
        # Open-loop latency at settings.rate (None without --rate), the baseline ("direct") first.
        "latency_at_rate": [m.to_json() for m in at_rate] if args.rate is not None else None,
        "notes": notes,
    }


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into an exception, like Ctrl-C, so that the finally blocks stop the servers.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        wrk_path()
    except WrkError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="fastproxy-bench-"))
    keep_logs = False
    try:
        doc = benchmark(args, workdir)
        if any(m.get("errors") for m in [*doc["rounds"], *(doc["latency_at_rate"] or [])]):
            keep_logs = True
            print(f"bench: some requests failed; server logs kept in {workdir}", file=sys.stderr)
    except (ServerError, WrkError, OpenLoopError, OSError) as exc:
        keep_logs = True
        print(f"bench: error: {exc}\nbench: server logs kept in {workdir}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped", file=sys.stderr)
        return 130
    finally:
        if not keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
    markdown = report.render_markdown(doc)
    json_path, md_path = report.write_results(args.out, doc, markdown)
    png_path = plot.write_plot(doc, json_path.with_suffix(".png"))
    print(markdown)
    print(f"bench: wrote {json_path}, {md_path} and {png_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
