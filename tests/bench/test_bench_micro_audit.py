"""bench.micro_audit: the audited exchange really goes through a writer, and both cases are timed."""

import math
from pathlib import Path

import pytest

from bench.micro_audit import measure

pytestmark = pytest.mark.timeout(60)


def test_measure_times_both_cases_and_the_records_reach_the_writer(tmp_path: Path) -> None:
    found = measure(str(tmp_path), number=300, cold_number=20)
    assert set(found) == {"plain", "audit"}
    for hot, cold in found.values():
        assert hot > 0 and math.isfinite(cold)
    lines = (tmp_path / "audit.jsonl").read_bytes().splitlines()
    requests = [line for line in lines if b'"request_id"' in line]
    # best_of's warm-up and 5 rounds, cold_of's warm-up and 7 rounds, all drained before the end.
    assert len(requests) == 1000 + 5 * 300 + 200 + 7 * 20
