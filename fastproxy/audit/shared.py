"""Shared memory between the master, the workers and the audit writer: one slot per worker.

Theory of operation
-------------------
The master makes the table before it forks anything, so every process shares the same pages, and
a restarted writer finds them as the dead one left them. A slot is a row of 64-bit words; each
word has one writing process, so no lock is needed:

========== ================================ =============================================
word       written by                       meaning
========== ================================ =============================================
state      master (FREE→LIVE, LIVE→DEAD),   FREE, LIVE (worker running), DEAD (reaped,
           writer (DEAD→FREE)               not yet accounted by the writer)
worker     master, at claim                 the worker's number in the audit (unique per
                                            boot: a respawn gets a new one)
assigned   worker, on every submit          the last seq it numbered (kept or dropped)
written    writer, after each commit        the last seq of that worker in the file
dropped    worker                           records it dropped (queue full), in total
queued     worker                           records it holds, not yet acknowledged
pid        worker                           its process id (for log lines)
========== ================================ =============================================

``assigned`` is what makes the death of a worker accountable: whatever the worker numbered but
the writer never got (``written`` < seq ≤ ``assigned``) died with it, and the writer writes one
gap record for that range once the master has marked the slot DEAD and the worker's connection,
if any, has been read to its end. Only then does the slot become FREE for the next worker.
"""

from __future__ import annotations

import mmap
import secrets
from dataclasses import dataclass

__all__ = ["AuditShared", "AuditStats", "new_boot_id"]

FREE, LIVE, DEAD = 0, 1, 2

_MAGIC = 0x3154494455415046  # b"FPAUDIT1", little-endian
_HEADER_WORDS = 16
_BOOT_WORD, _BOOT_BYTES = 8, 32
_SLOT_WORDS = 8
# Header words.
_H_MAGIC, _H_SLOTS, _H_NEXT_WORKER, _H_WRITER_PID = 0, 1, 2, 3
_H_WRITTEN, _H_LOST, _H_DROPPED_RETIRED, _H_COMMITS = 4, 5, 6, 7
# Slot words (offsets in a slot).
STATE, WORKER, ASSIGNED, WRITTEN, DROPPED, QUEUED, PID = 0, 1, 2, 3, 4, 5, 6


def new_boot_id() -> str:
    """A fresh id for one run of the master (16 hex digits): the ``boot`` of every record."""
    return secrets.token_hex(8)


@dataclass(frozen=True)
class AuditStats:
    """Totals for /metrics, readable from any process of the tree."""

    written: int  # records the writer wrote (this boot, every writer incarnation)
    lost: int  # records the writer accounted as lost (a worker died holding them, or missing)
    dropped: int  # records workers dropped because their queue was full (in their own gap records)
    queued: int  # records workers hold, not yet acknowledged
    commits: int  # batches the writer committed
    writer_up: bool


class AuditShared:
    """The shared table; :meth:`create` it in the master before forking the writer or any worker."""

    def __init__(self, memory: mmap.mmap) -> None:
        self._memory = memory
        self.words = memoryview(memory).cast("Q")
        if self.words[_H_MAGIC] != _MAGIC:
            raise ValueError("not an audit table")
        self.slots = self.words[_H_SLOTS]

    @classmethod
    def create(cls, boot: str | None = None, slots: int = 1024) -> AuditShared:
        boot = boot if boot is not None else new_boot_id()
        raw = boot.encode("ascii")
        if not 0 < len(raw) <= _BOOT_BYTES:
            raise ValueError(f"a boot id is 1 to {_BOOT_BYTES} ASCII characters")
        if slots < 1:
            raise ValueError("slots must be at least 1")
        memory = mmap.mmap(-1, 8 * (_HEADER_WORDS + slots * _SLOT_WORDS))  # anonymous, MAP_SHARED
        memory[8 * _BOOT_WORD : 8 * _BOOT_WORD + len(raw)] = raw
        words = memoryview(memory).cast("Q")
        words[_H_SLOTS] = slots
        words[_H_NEXT_WORKER] = 1
        words[_H_MAGIC] = _MAGIC
        words.release()
        return cls(memory)

    def close(self) -> None:
        self.words.release()
        self._memory.close()

    @property
    def boot(self) -> str:
        raw = self._memory[8 * _BOOT_WORD : 8 * _BOOT_WORD + _BOOT_BYTES]
        return raw.rstrip(b"\0").decode("ascii")

    def base(self, slot: int) -> int:
        """Index in :attr:`words` of ``slot``'s first word."""
        if not 0 <= slot < self.slots:
            raise IndexError(f"audit slot {slot} out of range")
        return _HEADER_WORDS + slot * _SLOT_WORDS

    def get(self, slot: int, word: int) -> int:
        return int(self.words[self.base(slot) + word])

    def set(self, slot: int, word: int, value: int) -> None:
        self.words[self.base(slot) + word] = value

    # -- the master ---------------------------------------------------------------------------

    def claim(self) -> tuple[int, int]:
        """Reserve a slot for a worker about to be forked: returns (slot, worker number).

        RuntimeError when every slot is LIVE or DEAD (DEAD slots wait for the writer's accounting).
        """
        words = self.words
        for slot in range(self.slots):
            base = self.base(slot)
            if words[base + STATE] == FREE:
                worker = int(words[_H_NEXT_WORKER])
                words[_H_NEXT_WORKER] = worker + 1
                for word in range(1, _SLOT_WORDS):
                    words[base + word] = 0
                words[base + WORKER] = worker
                words[base + STATE] = LIVE  # last: the slot is whole before anyone looks at it
                return slot, worker
        raise RuntimeError("no free audit slot (the writer has not accounted for exited workers yet)")

    def worker_exited(self, slot: int) -> None:
        """The master reaped the worker of ``slot``: the writer may now account for what it lost."""
        base = self.base(slot)
        if self.words[base + STATE] == LIVE:
            self.words[base + STATE] = DEAD

    def writer_exited(self) -> None:
        """The master reaped the writer (whatever its status): audit is unavailable until the next."""
        self.words[_H_WRITER_PID] = 0

    @property
    def writer_pid(self) -> int:
        """The pid of the writer that is serving, or 0 (none, or one still recovering)."""
        return int(self.words[_H_WRITER_PID])

    # -- the writer ---------------------------------------------------------------------------

    def writer_serving(self, pid: int) -> None:
        self.words[_H_WRITER_PID] = pid

    def dead_slots(self) -> list[int]:
        states = self.words[_HEADER_WORDS + STATE :: _SLOT_WORDS]
        return [slot for slot, state in enumerate(states.tolist()) if state == DEAD]

    def free(self, slot: int) -> None:
        """The writer accounted for a dead worker: keep its drop count in the totals, free the slot."""
        base = self.base(slot)
        self.words[_H_DROPPED_RETIRED] += self.words[base + DROPPED]
        self.words[base + STATE] = FREE

    def count_written(self, records: int, lost: int) -> None:
        self.words[_H_WRITTEN] += records
        self.words[_H_LOST] += lost
        self.words[_H_COMMITS] += 1

    # -- everyone -----------------------------------------------------------------------------

    def stats(self) -> AuditStats:
        words = self.words
        dropped = int(words[_H_DROPPED_RETIRED])
        queued = 0
        for slot in range(self.slots):
            base = self.base(slot)
            if words[base + STATE] != FREE:
                dropped += words[base + DROPPED]
                queued += words[base + QUEUED]
        return AuditStats(
            written=int(words[_H_WRITTEN]),
            lost=int(words[_H_LOST]),
            dropped=dropped,
            queued=queued,
            commits=int(words[_H_COMMITS]),
            writer_up=words[_H_WRITER_PID] != 0,
        )
