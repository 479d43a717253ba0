"""The worker's deadline sweep: one failing connection does not stop it."""

from __future__ import annotations

import asyncio

import pytest

from fastproxy.config import load_config
from fastproxy.server.state import INF, WorkerState


class FakeConnection:
    def __init__(self, deadline: float, fail: bool = False) -> None:
        self.deadline = deadline
        self.active = None
        self.fail = fail
        self.fired = False

    def on_deadline(self) -> None:
        self.fired = True
        self.deadline = INF
        if self.fail:
            raise RuntimeError("boom")


def test_sweep_survives_a_failing_deadline(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    try:
        state = WorkerState(load_config(upstream_url="http://127.0.0.1:9"), loop)
        failing = FakeConnection(0.0, fail=True)
        later = FakeConnection(0.0)
        not_due = FakeConnection(INF)
        state.connections.update([failing, later, not_due])  # type: ignore[list-item]
        state.sweep()
        assert failing.fired and later.fired and not not_due.fired
        assert "error handling a timeout" in caplog.text
    finally:
        loop.close()
