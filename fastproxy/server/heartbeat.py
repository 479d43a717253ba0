"""Worker heartbeats in shared memory: how the master knows a worker is up, and not hung.

The master maps an anonymous shared region before forking; each worker owns one slot and writes
its pid, state and the monotonic time (system-wide, so comparable across processes) about once a
second. Only the owner writes a slot and the master only reads, so no lock is needed; a torn read
could at worst delay a verdict by one beat.
"""

from __future__ import annotations

import mmap
import struct
import time

__all__ = ["BOOTING", "READY", "STOPPING", "HeartbeatTable"]

BOOTING = 1
READY = 2
STOPPING = 3

_SLOT = struct.Struct("=qqd")  # pid, state, last beat (time.monotonic())


class HeartbeatTable:
    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._map = mmap.mmap(-1, _SLOT.size * slots)  # anonymous and shared across fork

    def reset(self, slot: int) -> None:
        _SLOT.pack_into(self._map, slot * _SLOT.size, 0, 0, 0.0)

    def beat(self, slot: int, pid: int, state: int) -> None:
        _SLOT.pack_into(self._map, slot * _SLOT.size, pid, state, time.monotonic())

    def read(self, slot: int) -> tuple[int, int, float]:
        pid, state, beat = _SLOT.unpack_from(self._map, slot * _SLOT.size)
        return pid, state, beat

    def ready_count(self) -> int:
        return sum(1 for slot in range(self.slots) if self.read(slot)[1] == READY)
