"""One worker's audit stream without I/O: numbering, the bounded queue, batches, acknowledgements.

Theory of operation
-------------------
Every record gets the next ``seq`` of its (boot, worker) stream when it is *claimed*, kept or not,
so the numbers themselves have no holes. A record the queue has no room for is dropped at once
(not even encoded); consecutive drops form a *run* that becomes one gap record ``{"seq": S,
"gap": N}`` covering exactly their numbers, queued ahead of the next record that fits. The gap
record needs a place of its own, so a claim succeeds only with room for both.

Records held are in one of three places, in seq order: ``pending`` (the batch being filled),
``outbox`` (batches closed, not yet sent), ``inflight`` (sent, not yet acknowledged). They leave
only when the writer acknowledges a seq at or above their last. When the connection is lost,
``inflight`` goes back to the head of ``outbox``; the next writer's welcome says how far its file
already goes, and the batches wholly below that are forgotten, the rest sent again (the writer
skips any record it already has, by seq). So a record is written once, or accounted by a gap.

``queued`` counts every record held (a gap record as one); ``queue_max`` and ``queue_bytes_max``
bound it, which bounds the worker's memory whatever the writer does.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

from fastproxy.audit import protocol
from fastproxy.audit.protocol import encode_batch
from fastproxy.audit.record import RecordEncoder

__all__ = ["Batcher", "Message"]

QUEUE_BYTES_MAX: Final = 16 * 1024 * 1024
# Read for every record: a Final is a C static in compiled code, an imported name a dict lookup.
_MSG_TARGET: Final = protocol.MSG_TARGET


@dataclass(slots=True)
class Message:
    """A closed batch, ready to send (again)."""

    first: int
    last: int
    records: int
    nbytes: int
    payload: bytes


class Batcher:
    def __init__(
        self,
        encoder: RecordEncoder,
        batch_max: int,
        queue_max: int,
        queue_bytes_max: int = QUEUE_BYTES_MAX,
    ) -> None:
        if batch_max < 1 or queue_max < 2:
            raise ValueError("batch_max must be at least 1 and queue_max at least 2")
        self.encoder = encoder
        self.batch_max = batch_max
        self.queue_max = queue_max
        self.queue_bytes_max = queue_bytes_max
        self.seq = 0  # the last seq claimed, kept or dropped
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.pending_first = 0
        self.pending_last = 0
        self.outbox: deque[Message] = deque()
        self.inflight: deque[Message] = deque()
        self.queued = 0  # records held, from pending to inflight
        self.queued_bytes = 0
        self.dropped_run = 0  # drops since the last gap record: seqs self.seq - run + 1 … self.seq
        self.acked = 0  # the highest seq the writer acknowledged
        # Counters for metrics.
        self.records = 0  # records kept (request and marker records)
        self.dropped = 0  # records dropped because the queue was full
        self.gaps = 0  # gap records made

    def has_room(self) -> bool:
        need = 2 if self.dropped_run else 1
        return self.queued + need <= self.queue_max and self.queued_bytes < self.queue_bytes_max

    def claim(self) -> int:
        """Number the next record: its seq, or 0 when there is no room (it is dropped and counted)."""
        if not self.dropped_run and self.queued < self.queue_max and self.queued_bytes < self.queue_bytes_max:
            self.seq += 1  # the common case, in one call: this runs once per request
            return self.seq
        if not self.has_room():
            self.seq += 1
            self.dropped_run += 1
            self.dropped += 1
            return 0
        self.close_gap()
        self.seq += 1
        return self.seq

    def drop_claimed(self) -> None:
        """The record just claimed could not be encoded after all: it joins the run of drops."""
        self.dropped_run += 1
        self.dropped += 1

    def add(self, record: bytes, seq: int) -> bool:
        """Queue the record numbered ``seq`` by the last claim; True when the batch is full."""
        pending = self.pending
        if not pending:
            self.pending_first = seq
        pending.append(record)
        self.pending_last = seq
        size = len(record)
        self.pending_bytes += size + 1
        self.queued += 1
        self.queued_bytes += size
        self.records += 1
        return len(pending) >= self.batch_max or self.pending_bytes >= _MSG_TARGET

    def close_gap(self) -> None:
        """Queue the gap record for the current run of drops, if any (even over the bound: one record)."""
        run = self.dropped_run
        if run:
            first = self.seq - run + 1
            self._append(self.encoder.gap(first, run, "queue_full"), first, self.seq)
            self.gaps += 1
            self.dropped_run = 0

    def _append(self, record: bytes, first: int, last: int) -> None:
        if not self.pending:
            self.pending_first = first
        self.pending.append(record)
        self.pending_last = last
        size = len(record)
        self.pending_bytes += size + 1
        self.queued += 1
        self.queued_bytes += size

    def pack(self) -> None:
        """Close the pending batch into a message at the end of the outbox."""
        if not self.pending:
            return
        records = self.pending
        payload = encode_batch(self.pending_first, self.pending_last, records)
        nbytes = self.pending_bytes - len(records)
        self.outbox.append(Message(self.pending_first, self.pending_last, len(records), nbytes, payload))
        self.pending = []
        self.pending_bytes = 0

    def sent(self) -> None:
        """The message at the head of the outbox went out."""
        self.inflight.append(self.outbox.popleft())

    def ack(self, seq: int) -> None:
        """Everything up to ``seq`` is in the file: forget the batches it covers."""
        if seq > self.acked:
            self.acked = seq
        for box in (self.inflight, self.outbox):
            while box and box[0].last <= seq:
                message = box.popleft()
                self.queued -= message.records
                self.queued_bytes -= message.nbytes

    def disconnected(self) -> None:
        """The writer is gone: what it did not acknowledge is sent again after the next welcome."""
        self.outbox.extendleft(reversed(self.inflight))
        self.inflight.clear()

    def welcome(self, written: int) -> None:
        """A writer says its file holds this stream up to ``written``."""
        self.disconnected()
        self.ack(written)

    @property
    def idle(self) -> bool:
        """Nothing held and no drop left to account for."""
        return self.queued == 0 and self.dropped_run == 0
