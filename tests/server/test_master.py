"""The master's bookkeeping, driven without forking: boot failures, backoff, reload abort."""

from __future__ import annotations

import time

import pytest

from fastproxy.config import load_config
from fastproxy.server import master as master_module
from fastproxy.server.master import HALT_BOOT_FAILURE, Master, WorkerRecord
from fastproxy.server.worker import WORKER_BOOT_ERROR


@pytest.fixture
def master(monkeypatch: pytest.MonkeyPatch) -> Master:
    config = load_config(upstream_url="http://127.0.0.1:9", overrides={"server": {"workers": 2}})
    m = Master(config, lambda: config)
    signalled: list[tuple[int, int]] = []
    monkeypatch.setattr(m, "_signal", lambda pid, sig: signalled.append((pid, sig)))
    m.signalled = signalled  # type: ignore[attr-defined]
    return m


def record(pid: int, generation: int = 0, ready: bool = False) -> WorkerRecord:
    return WorkerRecord(pid, pid % 16, generation, time.monotonic(), ready=ready)


def test_two_boot_failures_in_a_row_halt_the_master(master: Master) -> None:
    master._worker_exited(record(101), WORKER_BOOT_ERROR)
    assert not master.stopping
    master._worker_exited(record(102), WORKER_BOOT_ERROR)
    assert master.stopping
    assert master.exit_status == HALT_BOOT_FAILURE


def test_a_worker_dying_before_ready_counts_as_a_boot_failure(master: Master) -> None:
    master._worker_exited(record(101), 1)
    master._worker_exited(record(102), -9)
    assert master.exit_status == HALT_BOOT_FAILURE


def test_a_booted_worker_in_between_resets_the_count(master: Master) -> None:
    master._worker_exited(record(101), WORKER_BOOT_ERROR)
    master.boot_failures = 0  # what _kill_stale does when a worker reports ready
    master._worker_exited(record(102), WORKER_BOOT_ERROR)
    assert not master.stopping


def test_crashes_of_booted_workers_back_off_exponentially(
    master: Master, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(master_module.time, "monotonic", lambda: now[0])
    delays = []
    for pid in range(5):
        master._worker_exited(WorkerRecord(pid, 0, 0, now[0], ready=True), -9)
        delays.append(round(master.next_spawn - now[0], 3))
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert not master.stopping
    # A worker that lived long enough resets the backoff.
    master._worker_exited(WorkerRecord(9, 0, 0, now[0] - 60, ready=True), -9)
    assert master.next_spawn == now[0]


def test_boot_failures_of_a_reload_abort_it_and_keep_the_old_generation(master: Master) -> None:
    old = record(201, generation=0, ready=True)
    master.workers[old.pid] = old
    new_config = master.config
    master.reload_pending = new_config
    master.generation = 1
    new = record(301, generation=1)
    master.workers[new.pid] = new
    master._worker_exited(record(302, generation=1), WORKER_BOOT_ERROR)
    assert master.reload_pending is None
    assert not master.stopping
    assert old.generation == master.generation  # re-adopted as current
    assert new.stopping
