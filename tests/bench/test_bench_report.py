"""bench.report's latency-at-rate section: its table, the generator's baseline and its warnings."""

from typing import Any

import pytest

from bench import report

pytestmark = pytest.mark.timeout(10)


def _at_rate(target: str, workers: int | None, p50: float, **extra: Any) -> dict[str, Any]:
    entry = {
        "target": target,
        "workers": workers,
        "rate": 5000.0,
        "duration_s": 10.0,
        "connections": 64,
        "scheduled": 50_000,
        "sent": 50_000,
        "completed": 50_000,
        "errors": 0,
        "incomplete": 0,
        "latency_ms": {"50": p50, "90": p50 * 2, "99": p50 * 5, "99.9": p50 * 9, "max": p50 * 20},
        "send_lag_ms": {"50": 0.05, "90": 0.1, "99": 0.5, "99.9": 1.0, "max": 2.0},
        "achieved_rate": 5000.0,
        "generator_cpu_s": 2.5,
        "generator_cpu_share": 0.25,
        "ticker": "a periodic timerfd",
        "cpu_s": None if workers is None else 2.0,
        "cpu_us_per_request": None if workers is None else 40.0,
    }
    return {**entry, **extra}


def _doc(at_rate: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {
        "date": "2026-11-28T08:00:00+00:00",
        "machine": {
            "hostname": "t",
            "nproc": 2,
            "cpu_model": "c",
            "loadavg_before": [0],
            "loadavg_after": [0],
        },
        "versions": {},
        "settings": {
            "targets": ["nginx"],
            "workers": [1],
            "fixed_targets": [],
            "upstream": "upstream-nginx",
            "duration_s": 10,
            "rounds": 1,
            "connections": 64,
            "warmup_s": 0,
            "rate": 5000.0 if at_rate else None,
        },
        "summary": {"1": {}},
        "latency_at_rate": at_rate,
        "notes": [],
    }


def test_rate_table_lists_each_target_with_its_tail_and_the_baseline_note() -> None:
    text = report.render_markdown(_doc([_at_rate("direct", None, 0.1), _at_rate("nginx", 2, 0.3)]))
    assert "## latency at 5,000 req/s (open loop)" in text
    assert (
        "| direct | - | 50,000 | 50,000 | 0 | 0 | 0.100 | 0.200 | 0.500 | 0.900 | 2.000 | - | 25% |" in text
    )
    assert (
        "| nginx | 2 | 50,000 | 50,000 | 0 | 0 | 0.300 | 0.600 | 1.500 | 2.700 | 6.000 | 40.0 | 25% |" in text
    )
    assert "p50 0.100 ms, p99 0.500 ms of every row is the generator" in text
    assert "woken by a periodic timerfd" in text


def test_no_rate_no_section() -> None:
    assert "open loop" not in report.render_markdown(_doc(None))


def test_warnings_name_a_busy_generator_and_a_target_that_fell_behind() -> None:
    fine = _at_rate("nginx", 1, 0.3)
    busy = _at_rate("fastproxy", 1, 0.3, generator_cpu_share=0.93)
    behind = _at_rate("fastproxy-full", 2, 9.0, incomplete=120, errors=3)
    notes = report.rate_warnings([fine, busy, behind])
    assert len(notes) == 2
    assert "fastproxy with 1 worker(s): the generator used 93% of a CPU" in notes[0]
    assert "fastproxy-full with 2 worker(s): 120 request(s) unanswered at the end and 3 error(s)" in notes[1]
