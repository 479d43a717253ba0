"""The worker's deadline sweep: one failing connection does not stop it."""

from __future__ import annotations

import asyncio

import pytest

from bench.micro_path import FakeTransport
from fastproxy.config import load_config
from fastproxy.server.connection import ClientConnection
from fastproxy.server.state import INF, WorkerState


class Transport(FakeTransport):
    """A transport that notes its close, and fails it when told to."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.closed = False

    def close(self) -> None:
        self.closed = True
        if self.fail:
            raise RuntimeError("boom")


def idle_connection(state: WorkerState, deadline: float, fail: bool = False) -> Transport:
    """A real client connection waiting for its first request, due at ``deadline``."""
    transport = Transport(fail)
    conn = ClientConnection(state, b"http")
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.deadline = deadline  # an idle connection's deadline closes it quietly
    return transport


def test_sweep_survives_a_failing_deadline(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    try:
        state = WorkerState(load_config(upstream_url="http://127.0.0.1:9"), loop)
        # Both due ones fail: whichever the sweep meets first, it must go on to the other.
        first = idle_connection(state, 0.0, fail=True)
        second = idle_connection(state, 0.0, fail=True)
        not_due = idle_connection(state, INF)
        state.sweep()
        assert first.closed and second.closed and not not_due.closed
        assert caplog.text.count("error handling a timeout") == 2
    finally:
        loop.close()
