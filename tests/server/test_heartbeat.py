"""Heartbeats live in shared memory: what a forked child writes, the parent reads."""

from __future__ import annotations

import os
import time

from fastproxy.server.heartbeat import BOOTING, READY, HeartbeatTable


def test_a_child_beat_is_seen_by_the_parent() -> None:
    table = HeartbeatTable(4)
    pid = os.fork()
    if pid == 0:
        table.beat(2, os.getpid(), READY)
        os._exit(0)
    os.waitpid(pid, 0)
    seen_pid, state, beat = table.read(2)
    assert (seen_pid, state) == (pid, READY)
    assert 0 <= time.monotonic() - beat < 5
    assert table.ready_count() == 1


def test_reset_clears_a_slot() -> None:
    table = HeartbeatTable(2)
    table.beat(0, 123, BOOTING)
    table.reset(0)
    assert table.read(0) == (0, 0, 0.0)
    assert table.ready_count() == 0
