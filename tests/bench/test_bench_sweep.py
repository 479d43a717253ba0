"""The worker-count sweep of bench.run: which targets it makes, and how the report splits figures."""

import shutil
from pathlib import Path

import pytest

from bench import report
from bench.measure import Measurement
from bench.run import make_targets, parse_args
from bench.targets import DevserverUpstream, DirectTarget
from bench.wrk import WrkResult

pytestmark = pytest.mark.timeout(10)


def _measurement(target: str, workers: int | None, rps: float, round_no: int = 1) -> Measurement:
    wrk = WrkResult(
        requests=int(rps * 2),
        duration_s=2.0,
        requests_per_sec=rps,
        latency_ms={"50": 1.0, "99": 2.0},
    )
    cpu = None if workers is None else 2.0 * workers
    rss = {} if workers is None else {1000 + i: 10240 for i in range(workers)}
    return Measurement(target, round_no, workers, wrk, cpu, rss)


def _doc(measurements: list[Measurement], counts: list[int]) -> dict[str, object]:
    targets = ["direct", "nginx", "fastproxy"]
    return {
        "date": "2026-11-28T08:00:00+00:00",
        "machine": {
            "hostname": "test",
            "nproc": 2,
            "cpu_model": "cpu",
            "loadavg_before": [0.1, 0, 0],
            "loadavg_after": [0.2, 0, 0],
        },
        "versions": {"python": "3.11"},
        "settings": {
            "targets": targets,
            "workers": counts,
            "fixed_targets": ["direct"],
            "upstream": "upstream-nginx",
            "duration_s": 2,
            "rounds": 1,
            "connections": 64,
            "warmup_s": 0,
        },
        "summary": report.summarize_by_workers(measurements, targets, counts),
        "notes": [],
    }


def test_workers_option_parses_sorts_and_deduplicates() -> None:
    assert parse_args([]).workers == [1]
    assert parse_args(["--workers", "4,1,2,1"]).workers == [1, 2, 4]
    for bad in ("0", "x", ","):
        with pytest.raises(SystemExit):
            parse_args(["--workers", bad])


def test_one_target_per_worker_count_except_without_a_worker_setting() -> None:
    upstream = DevserverUpstream()
    made = make_targets(["direct", "nginx", "fastproxy", "haproxy-jwt", "floor"], [1, 2], upstream)
    assert [(t.name, t.workers) for t in made] == [
        ("direct", None),
        ("nginx", 1),
        ("nginx", 2),
        ("fastproxy", 1),
        ("fastproxy", 2),
        ("haproxy-jwt", 1),
        ("haproxy-jwt", 2),
        ("floor", None),
    ]
    assert len({id(t) for t in made}) == len(made)


class _Listening(DirectTarget):
    """An upstream that is never started: its url is all the targets' commands read."""

    @property
    def url(self) -> str:
        return "http://127.0.0.1:9/"


def test_worker_count_reaches_the_server_configuration(tmp_path: Path) -> None:
    upstream = _Listening(DevserverUpstream())
    nginx, fastproxy, haproxy = (
        make_targets([name], [3], upstream)[0] for name in ("nginx", "fastproxy", "haproxy-jwt")
    )
    argv = fastproxy.command(tmp_path, 2)
    assert argv[argv.index("--workers") + 1] == "3"
    assert fastproxy.expected_workers() == 3
    if shutil.which("nginx"):
        nginx.command(tmp_path, 2)
        assert "worker_processes 3;" in (tmp_path / "nginx.conf").read_text()
    assert nginx.expected_workers() == 3
    if shutil.which("haproxy"):
        haproxy.command(tmp_path, 2)
        assert "nbthread 3\n" in (tmp_path / "haproxy.cfg").read_text()
    assert haproxy.expected_workers() == 1  # threads of one process


def test_each_worker_count_is_summarized_apart_and_direct_is_in_each() -> None:
    measurements = [
        _measurement("direct", None, 100_000.0),
        _measurement("nginx", 1, 40_000.0),
        _measurement("nginx", 2, 70_000.0),
        _measurement("fastproxy", 1, 30_000.0),
        _measurement("fastproxy", 2, 45_000.0),
    ]
    summary = report.summarize_by_workers(measurements, ["direct", "nginx", "fastproxy"], [1, 2])
    assert list(summary) == ["1", "2"]
    assert summary["1"]["direct"]["requests_per_sec"] == summary["2"]["direct"]["requests_per_sec"] == 100_000
    assert summary["1"]["fastproxy"]["requests_per_sec_vs_reference"] == pytest.approx(0.75)
    # Ratios stay within one worker count.
    assert summary["2"]["fastproxy"]["requests_per_sec_vs_reference"] == pytest.approx(45 / 70)
    assert summary["2"]["nginx"]["rss_mib_per_worker"] == pytest.approx(10.0)


def test_markdown_has_a_table_per_worker_count_and_a_scaling_table() -> None:
    measurements = [
        _measurement("direct", None, 100_000.0),
        _measurement("nginx", 1, 40_000.0),
        _measurement("nginx", 2, 70_000.0),
        _measurement("fastproxy", 1, 30_000.0),
        _measurement("fastproxy", 2, 45_000.0),
    ]
    doc = _doc(measurements, [1, 2])
    text = report.render_markdown(doc)
    assert "## 1 worker\n" in text and "## 2 workers\n" in text and "## req/s by workers\n" in text
    assert "| nginx | 40,000 | 70,000 | 1.75x |" in text
    assert "| fastproxy | 30,000 | 45,000 | 1.50x |" in text
    assert "| direct (no worker setting) | 100,000 | 100,000 | - |" in text
    assert report.requests_per_sec_by_workers(doc)["fastproxy"] == {1: 30_000.0, 2: 45_000.0}


def test_a_single_worker_count_has_no_scaling_table() -> None:
    doc = _doc([_measurement("direct", None, 1e5), _measurement("nginx", 1, 4e4)], [1])
    text = report.render_markdown(doc)
    assert "## 1 worker\n" in text and "req/s by workers" not in text


def test_a_document_from_before_the_sweep_reads_as_one_worker() -> None:
    old = {"settings": {"targets": ["nginx"]}, "summary": {"nginx": {"requests_per_sec": 5.0}}}
    assert report.summaries(old) == {1: {"nginx": {"requests_per_sec": 5.0}}}
    assert report.requests_per_sec_by_workers(old) == {"nginx": {1: 5.0}}


def test_rate_option_is_off_by_default_and_positive() -> None:
    assert parse_args([]).rate is None
    assert parse_args(["--rate", "2500"]).rate == 2500.0
    for bad in ("0", "-5", "inf", "nan", "fast"):
        with pytest.raises(SystemExit):
            parse_args(["--rate", bad])
