"""bench.openloop: the schedule and percentile arithmetic with plain values, then a short real run
against the devserver in its own process."""

import json
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
import uvloop

from bench.openloop import (
    REPO_ROOT,
    OpenLoopResult,
    Schedule,
    generate,
    latency_figures,
    percentile,
    run_openloop,
)
from bench.targets import DevserverUpstream, Target

pytestmark = pytest.mark.timeout(30)


def test_requests_are_due_at_fixed_times_whatever_the_server_does() -> None:
    schedule = Schedule(start=100.0, rate=4.0, total=10)
    assert [schedule.due_at(i) for i in range(4)] == [100.0, 100.25, 100.5, 100.75]
    assert schedule.end == 102.25
    assert schedule.due_by(99.999) == 0
    assert schedule.due_by(100.0) == 1  # request 0 is due from its due time on
    assert schedule.due_by(100.2499) == 1
    assert schedule.due_by(100.25) == 2
    assert schedule.due_by(101.0) == 5
    assert schedule.due_by(1e9) == 10  # never more than the run holds


def test_every_request_is_due_at_its_own_due_time_despite_rounding() -> None:
    for rate in (3.0, 7.0, 10.0, 333.0, 12_345.0):
        schedule = Schedule(start=12_345.678, rate=rate, total=5000)
        assert all(schedule.due_by(schedule.due_at(i)) == i + 1 for i in range(5000)), rate


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 1001)]  # 1 .. 1000
    assert percentile(values, 50) == 500
    assert percentile(values, 90) == 900
    assert percentile(values, 99) == 990
    assert percentile(values, 99.9) == 999  # not 1000: 99.9 % of 1000 is exactly 999
    assert percentile(values, 100) == 1000
    assert percentile([7.0], 99.9) == 7.0
    assert percentile([1.0, 2.0], 0) == 1.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_latency_figures_are_milliseconds_of_the_tail() -> None:
    # 997 fast answers and three that waited: only the top percentiles see them.
    seconds = [0.001] * 997 + [0.050, 0.100, 0.200]
    figures = latency_figures(seconds)
    assert figures == {"50": 1.0, "90": 1.0, "99": 1.0, "99.9": 100.0, "max": 200.0}
    assert latency_figures([]) == {"50": None, "90": None, "99": None, "99.9": None, "max": None}


def test_result_round_trips_through_json() -> None:
    result = OpenLoopResult(
        rate=100.0, duration_s=2.0, connections=4, scheduled=200, sent=200, completed=199, errors=1,
        incomplete=1, latency_ms={"50": 0.2}, send_lag_ms={"50": 0.1}, achieved_rate=99.5,
        generator_cpu_s=0.5, ticker="a periodic timerfd",
    )  # fmt: skip
    obj = json.loads(json.dumps(result.to_json()))
    assert obj["generator_cpu_share"] == 0.25
    assert OpenLoopResult.from_json(obj) == result


@pytest.fixture(scope="module")
def devserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    server = DevserverUpstream()
    server.start(tmp_path_factory.mktemp("devserver"))
    try:
        yield server
    finally:
        server.stop()


def test_generator_keeps_its_schedule_against_a_small_server(devserver: Target) -> None:
    result = run_openloop(devserver.url, rate=400, duration_s=1.0, connections=4, drain_s=3.0)
    assert result.scheduled == result.sent == result.completed == 400
    assert result.errors == result.incomplete == 0
    assert result.achieved_rate == pytest.approx(400, rel=0.1)
    latency = result.latency_ms
    assert all(isinstance(latency[k], float) for k in ("50", "90", "99", "99.9", "max"))
    assert 0 < latency["50"] <= latency["90"] <= latency["99"] <= latency["99.9"] <= latency["max"]  # type: ignore[operator]
    # Latency runs from the due time, so it is never below the wait before sending.
    assert latency["max"] >= result.send_lag_ms["max"]  # type: ignore[operator]
    assert result.generator_cpu_s > 0


def test_bad_statuses_count_as_errors_and_headers_are_sent(devserver: Target) -> None:
    result = run_openloop(
        devserver.url + "status/503", rate=100, duration_s=0.5, connections=2, headers=["X-Bench: 1"]
    )
    assert result.completed == result.errors == 50


def test_a_server_that_never_answers_leaves_requests_incomplete_not_missing() -> None:
    # A listener that accepts (the kernel's backlog) but never reads: nothing is ever answered.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        result = run_openloop(
            f"http://127.0.0.1:{port}/", rate=50, duration_s=0.4, connections=2, drain_s=0.3
        )
    assert result.scheduled == 20 and result.completed == 0 and result.sent == 2
    assert result.incomplete == 20
    # The first request waited for the whole run and the drain: it is in the tail, not left out.
    assert result.latency_ms["max"] == pytest.approx(700, abs=150)


def test_command_line_reports_json_and_fails_cleanly_without_a_server() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = subprocess.run(
        [sys.executable, "-W", "error", "-m", "bench.openloop", f"http://127.0.0.1:{port}/", "--rate", "10",
         "--duration", "0.1"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert done.returncode == 1 and "bench.openloop" in done.stderr and not done.stdout


def test_generator_runs_in_process_and_cleans_up(devserver: Target) -> None:
    # In this process, so that -W error catches an unclosed transport or socket.
    result = uvloop.run(generate(devserver.url + "echo", rate=200, duration_s=0.25, connections=3))
    assert result.completed == 50 and result.errors == 0
    assert result.ticker in ("a periodic timerfd", "the event loop's millisecond timer")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(OSError):
        uvloop.run(generate(f"http://127.0.0.1:{port}/", rate=10, duration_s=0.1, connections=2))
