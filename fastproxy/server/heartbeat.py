"""Worker heartbeats in shared memory: how the master knows a worker is up, and not hung.

The master maps an anonymous shared region before forking; each worker owns one slot and writes
its pid, state, flags (what it has: the keys of its JWT issuers, a welcome from the audit writer)
and the monotonic time
(system-wide, so comparable across processes) about once a second. Only the owner writes a slot
and the master only reads, so no lock is needed; a torn read could at worst delay a verdict by
one beat.
"""

from __future__ import annotations

import mmap
import struct
import time

__all__ = ["AUDIT_CONNECTED", "BOOTING", "KEYS_LOADED", "READY", "STOPPING", "HeartbeatTable"]

BOOTING = 1
READY = 2
STOPPING = 3

# Flags: the worker holds keys for every JWT issuer it uses (or uses none).
KEYS_LOADED = 1
# The worker's audit client has a writer's welcome (or the worker audits nothing): until then a
# fail_closed route answers 503.
AUDIT_CONNECTED = 2

_SLOT = struct.Struct("=qqdq")  # pid, state, last beat (time.monotonic()), flags


class HeartbeatTable:
    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._map = mmap.mmap(-1, _SLOT.size * slots)  # anonymous and shared across fork

    def reset(self, slot: int) -> None:
        _SLOT.pack_into(self._map, slot * _SLOT.size, 0, 0, 0.0, 0)

    def beat(self, slot: int, pid: int, state: int, flags: int = 0) -> None:
        _SLOT.pack_into(self._map, slot * _SLOT.size, pid, state, time.monotonic(), flags)

    def read(self, slot: int) -> tuple[int, int, float]:
        pid, state, beat, _ = _SLOT.unpack_from(self._map, slot * _SLOT.size)
        return pid, state, beat

    def flags(self, slot: int) -> int:
        flags: int = _SLOT.unpack_from(self._map, slot * _SLOT.size)[3]
        return flags

    def ready_count(self) -> int:
        return sum(1 for slot in range(self.slots) if self.read(slot)[1] == READY)

    def ready_with(self, flag: int) -> int:
        """Ready workers that also report ``flag``."""
        return sum(1 for slot in range(self.slots) if self.read(slot)[1] == READY and self.flags(slot) & flag)
