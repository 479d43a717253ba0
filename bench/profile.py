"""Where a target's worker spends its time under load: py-spy samples while wrk loads it.

Usage: python -m bench.profile TARGET [--duration S] [--connections C] [--top N] [--native]

Starts the shared upstream and one target of bench.run (1 worker), warms it up, then samples the
worker with py-spy for the whole load and prints the frames with the most samples of their own
("self") and the most samples under them ("total"). Profile before optimizing: the figures of
bench.run say how much, this says where.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from bench import procstat
from bench.nginx import NginxUpstream, nginx_path
from bench.run import TARGETS
from bench.targets import DevserverUpstream, Target
from bench.wrk import run_wrk


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n")[0])
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--duration", type=int, default=8, help="seconds of sampled load")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--top", type=int, default=30, help="frames to print per table")
    parser.add_argument("--native", action="store_true", help="include C frames (slower sampling)")
    parser.add_argument("--writer", action="store_true", help="sample the audit writer instead of the worker")
    return parser.parse_args(argv)


def summarize(collapsed: str, top: int) -> str:
    """The self and total tables of py-spy's collapsed stacks ("frame;frame;... count" lines)."""
    own: Counter[str] = Counter()
    under: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            under[frame] += count
    if not samples:
        return "no samples"
    lines = [f"{samples} samples"]
    for title, counter in (("self", own), ("total", under)):
        lines.append(f"\n-- {title} --")
        for frame, count in counter.most_common(top):
            lines.append(f"{100.0 * count / samples:6.2f}%  {frame}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("bench.profile: py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 2
    upstream: Target = NginxUpstream() if nginx_path() is not None else DevserverUpstream()
    target = TARGETS[args.target](upstream)
    workdir = Path(tempfile.mkdtemp(prefix="fastproxy-profile-"))
    started: list[Target] = []
    try:
        for server in (upstream, target):
            started.append(server)
            server.start(workdir)
        url = target.url + target.request_path
        headers = target.request_headers()
        run_wrk(url, duration_s=2, connections=args.connections, headers=headers)
        workers = target.worker_pids()
        if args.writer:
            root = target.root_pid()
            children = procstat.children(root) if root is not None else []
            workers = [pid for pid in children if pid not in workers]
        if len(workers) != 1:
            what = "audit writer" if args.writer else "worker"
            print(f"bench.profile: expected one {what}, found {workers}", file=sys.stderr)
            return 1
        out = workdir / "profile.txt"
        command = [py_spy, "record", "--pid", str(workers[0]), "--format", "raw", "--output", str(out)]
        command += ["--duration", str(args.duration), "--rate", "1000", "--nonblocking"]
        if args.native:
            command.append("--native")
        spy = threading.Thread(
            target=subprocess.run,
            args=(command,),
            kwargs={"capture_output": True, "timeout": args.duration + 60, "check": False},
        )
        spy.start()
        result = run_wrk(url, duration_s=args.duration, connections=args.connections, headers=headers)
        spy.join()
        print(f"{args.target}: {result.requests_per_sec:,.0f} req/s under the profiler")
        print(summarize(out.read_text() if out.exists() else "", args.top))
    finally:
        for server in reversed(started):
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
