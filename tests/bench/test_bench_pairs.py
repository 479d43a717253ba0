"""bench.pairs: the pairs it parses, the figures it draws from back-to-back measurements, its report."""

import argparse

import pytest

from bench import pairs
from bench.measure import Measurement
from bench.pairs import DEFAULT_PAIRS, Pair, markdown, parse_args, parse_pairs, runnable, summarize
from bench.wrk import WrkResult

pytestmark = pytest.mark.timeout(10)


def _m(target: str, rps: float, cpu_us: float | None = 20.0, errors: int = 0) -> Measurement:
    latency = {"50": 1.0, "99": 2.0}
    wrk = WrkResult(int(rps * 4), 4.0, rps, latency, non_2xx_3xx=errors)
    cpu_s = None if cpu_us is None else cpu_us * wrk.requests / 1e6
    return Measurement(target, 1, 1, wrk, cpu_s, {})


def test_default_pairs_carry_the_issues_bars() -> None:
    bars = {(p.target, p.baseline): p.bar for p in DEFAULT_PAIRS}
    assert bars[("fastproxy", "nginx")] == 0.90
    assert bars[("fastproxy-audit", "fastproxy")] == 0.90
    assert bars[("fastproxy-masked", "fastproxy-json")] == 0.85
    assert bars[("fastproxy-full", "nginx")] == 0.75
    assert bars[("fastproxy-full", "haproxy-jwt")] == 1.00
    assert parse_args([]).pairs == DEFAULT_PAIRS


def test_parse_pairs() -> None:
    got = parse_pairs("fastproxy:nginx, fastproxy-jwt:fastproxy-bearer:0.8,fastproxy-json:fastproxy")
    assert got == (
        Pair("fastproxy", "nginx", 0.90, "#2"),  # a default pair keeps its bar
        Pair("fastproxy-jwt", "fastproxy-bearer", 0.8, ""),
        Pair("fastproxy-json", "fastproxy", None, ""),
    )


@pytest.mark.parametrize(
    "text", ["fastproxy", "fastproxy:", "fastproxy:nope", "a:b:c:d", "fastproxy:nginx:x"]
)
def test_parse_pairs_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_pairs(text)


def test_summarize_takes_the_median_of_the_pair_ratios() -> None:
    pair = Pair("fastproxy-masked", "fastproxy-json", 0.85, "#6")
    measured = [
        (_m("fastproxy-masked", 80.0, 30.0), _m("fastproxy-json", 100.0, 25.0)),  # 0.80
        (_m("fastproxy-masked", 90.0, 29.0), _m("fastproxy-json", 100.0, 25.0)),  # 0.90
        (_m("fastproxy-masked", 45.0, 28.0), _m("fastproxy-json", 50.0, 25.0)),  # 0.90: a slow moment
        (_m("fastproxy-masked", 60.0, None), _m("fastproxy-json", 100.0, 25.0)),  # 0.60, no CPU figure
    ]
    got = summarize(pair, measured)
    assert got["pairs"] == 4
    assert got["ratio_median"] == pytest.approx(0.85)
    assert (got["ratio_min"], got["ratio_max"]) == (pytest.approx(0.60), pytest.approx(0.90))
    assert got["met"] is True  # 0.85 >= 0.85
    assert got["target_rps_median"] == pytest.approx(70.0)
    assert got["baseline_rps_median"] == pytest.approx(100.0)
    assert got["cpu_us_over_baseline_median"] == pytest.approx(4.0)  # of 5, 4, 3
    assert got["errors"] == 0


def test_summarize_without_a_bar_or_figures() -> None:
    got = summarize(Pair("fastproxy-limited", "fastproxy", None), [])
    assert got["ratio_median"] is None and got["met"] is None and got["pairs"] == 0
    got = summarize(Pair("a", "b", 0.9), [(_m("a", 10.0), _m("b", 0.0))])  # a dead baseline: no ratio
    assert got["pairs"] == 0 and got["met"] is None and got["target_rps_median"] is None


def test_summarize_counts_errors_of_both_sides() -> None:
    got = summarize(Pair("a", "b", 0.9), [(_m("a", 10.0, errors=2), _m("b", 10.0, errors=3))])
    assert got["errors"] == 5
    assert got["met"] is None  # quick error answers inflate req/s: no verdict


def test_markdown_has_a_row_per_pair_and_the_notes() -> None:
    doc = {
        "date": "2026-11-28T11:00:00+00:00",
        "machine": {"nproc": 2, "cpu_model": "cpu"},
        "git": "abc",
        "settings": {"alternations": 2, "duration_s": 4, "warmup_s": 1, "connections": 64},
        "pairs": [
            summarize(Pair("fastproxy", "nginx", 0.9, "#2"), [(_m("fastproxy", 70.0), _m("nginx", 100.0))]),
            summarize(Pair("fastproxy-limited", "fastproxy", None, "#4"), []),
        ],
        "notes": ["haproxy-jwt: left out"],
    }
    text = markdown(doc)
    rows = [line for line in text.splitlines() if line.startswith("| fastproxy")]
    assert len(rows) == 2
    assert "| 0.700x |" in rows[0] and "| no |" in rows[0]
    assert "| - |" in rows[1]
    assert "- haproxy-jwt: left out" in text


def test_runnable_leaves_out_pairs_whose_programs_are_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(pairs._NEEDS, "haproxy-jwt", lambda: None)
    monkeypatch.setitem(pairs._NEEDS, "nginx", lambda: "/usr/sbin/nginx")
    kept, notes = runnable(DEFAULT_PAIRS)
    assert [(p.target, p.baseline) for p in kept if "haproxy-jwt" in (p.target, p.baseline)] == []
    assert len(kept) == len(DEFAULT_PAIRS) - 1
    assert notes == ["fastproxy-full / haproxy-jwt: left out, haproxy-jwt not installed"]
