"""One measurement: load one target once with wrk and charge it the CPU and memory it used; or, at a
fixed request rate, with the open-loop generator."""

from dataclasses import dataclass
from typing import Any

from bench import procstat
from bench.openloop import OpenLoopResult, run_openloop
from bench.targets import Target
from bench.wrk import WrkResult, run_wrk


@dataclass(frozen=True, slots=True)
class Measurement:
    target: str
    round: int
    # The target's worker count in this measurement; None where it has no such setting (direct).
    workers: int | None
    wrk: WrkResult
    # CPU seconds of the target's whole process tree during the load; None for "direct".
    cpu_s: float | None
    # VmRSS in KiB of each worker, read right after the load.
    worker_rss_kib: dict[int, int]

    @property
    def cpu_us_per_request(self) -> float | None:
        if self.cpu_s is None or self.wrk.requests == 0:
            return None
        return self.cpu_s * 1e6 / self.wrk.requests

    @property
    def rss_mib_per_worker(self) -> float | None:
        if not self.worker_rss_kib:
            return None
        return sum(self.worker_rss_kib.values()) / len(self.worker_rss_kib) / 1024

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "round": self.round,
            "workers": self.workers,
            "requests_per_sec": self.wrk.requests_per_sec,
            "p50_ms": self.wrk.p50_ms,
            "p99_ms": self.wrk.p99_ms,
            "cpu_s": self.cpu_s,
            "cpu_us_per_request": self.cpu_us_per_request,
            "rss_mib_per_worker": self.rss_mib_per_worker,
            "worker_rss_kib": {str(pid): kib for pid, kib in self.worker_rss_kib.items()},
            "errors": self.wrk.errors,
            "wrk": self.wrk.to_json(),
        }


def measure(
    target: Target, *, round_no: int, duration_s: int, warmup_s: int, connections: int
) -> Measurement:
    target.check_alive()
    url = target.url + target.request_path
    if warmup_s > 0:
        # Fills connection pools, caches and the allocator; its figures are thrown away.
        run_wrk(url, duration_s=warmup_s, connections=connections, headers=target.request_headers())
    root = target.root_pid()
    before = procstat.tree_cpu_seconds(root) if root is not None else None
    result = run_wrk(url, duration_s=duration_s, connections=connections, headers=target.request_headers())
    after = procstat.tree_cpu_seconds(root) if root is not None else None
    # A target that died under load would otherwise be reported with the figures of its errors.
    target.check_alive()
    rss = {pid: kib for pid in target.worker_pids() if (kib := procstat.rss_kib(pid)) is not None}
    return Measurement(
        target=target.name,
        round=round_no,
        workers=target.workers,
        wrk=result,
        cpu_s=None if before is None or after is None else round(after - before, 6),
        worker_rss_kib=rss,
    )


@dataclass(frozen=True, slots=True)
class RateMeasurement:
    """One target loaded at a fixed request rate by bench.openloop."""

    target: str
    workers: int | None
    result: OpenLoopResult
    cpu_s: float | None  # the target's process tree during the load; None for "direct"

    @property
    def cpu_us_per_request(self) -> float | None:
        if self.cpu_s is None or self.result.completed == 0:
            return None
        return self.cpu_s * 1e6 / self.result.completed

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "workers": self.workers,
            **self.result.to_json(),
            "cpu_s": self.cpu_s,
            "cpu_us_per_request": self.cpu_us_per_request,
        }


def measure_at_rate(target: Target, *, rate: float, duration_s: int, connections: int) -> RateMeasurement:
    target.check_alive()
    root = target.root_pid()
    before = procstat.tree_cpu_seconds(root) if root is not None else None
    result = run_openloop(
        target.url + target.request_path,
        rate=rate,
        duration_s=duration_s,
        connections=connections,
        headers=target.request_headers(),
    )
    after = procstat.tree_cpu_seconds(root) if root is not None else None
    target.check_alive()
    return RateMeasurement(
        target=target.name,
        workers=target.workers,
        result=result,
        cpu_s=None if before is None or after is None else round(after - before, 6),
    )
