"""The shared table: slot life cycle, totals, and the writer's sequencing of batches."""

from __future__ import annotations

import os

import orjson
import pytest
from audit_support import BOOT, Clock, request

from fastproxy.audit.protocol import ProtocolError, decode_batch, decode_hello, encode_batch, encode_hello
from fastproxy.audit.record import RecordEncoder
from fastproxy.audit.shared import ASSIGNED, DEAD, DROPPED, FREE, LIVE, QUEUED, STATE, AuditShared
from fastproxy.audit.writer import Sequencer


def test_slots_go_free_live_dead_free_and_numbers_are_never_reused() -> None:
    shared = AuditShared.create(BOOT, slots=2)
    try:
        assert shared.boot == BOOT and shared.writer_pid == 0
        assert shared.claim() == (0, 1)
        assert shared.claim() == (1, 2)
        with pytest.raises(RuntimeError, match="no free audit slot"):
            shared.claim()
        shared.set(0, DROPPED, 5)
        shared.set(0, QUEUED, 7)
        shared.worker_exited(0)
        assert shared.get(0, STATE) == DEAD and shared.dead_slots() == [0]
        with pytest.raises(RuntimeError):
            shared.claim()  # DEAD waits for the writer
        stats = shared.stats()
        assert (stats.dropped, stats.queued, stats.writer_up) == (5, 7, False)
        shared.free(0)
        assert shared.get(0, STATE) == FREE
        assert shared.claim() == (0, 3)
        assert shared.get(0, ASSIGNED) == 0 and shared.get(0, STATE) == LIVE
        assert shared.stats().dropped == 5  # kept across the slot's reuse
        shared.writer_serving(1234)
        shared.count_written(10, 2)
        stats = shared.stats()
        assert (stats.written, stats.lost, stats.commits, stats.writer_up) == (10, 2, 1, True)
        shared.writer_exited()
        assert shared.writer_pid == 0
    finally:
        shared.close()


def test_the_table_is_shared_with_a_forked_child() -> None:
    shared = AuditShared.create(BOOT, slots=4)
    try:
        slot, _ = shared.claim()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            shared.set(slot, ASSIGNED, 99)
            os._exit(0)
        os.waitpid(pid, 0)
        assert shared.get(slot, ASSIGNED) == 99
    finally:
        shared.close()


def test_boot_ids_are_checked() -> None:
    with pytest.raises(ValueError):
        AuditShared.create("x" * 33)
    assert len(AuditShared.create().boot) == 16


def test_protocol_messages_round_trip_and_bad_ones_are_refused() -> None:
    assert decode_hello(encode_hello(3, 7, 1234, BOOT)) == (3, 7, 1234, BOOT)
    assert decode_batch(encode_batch(5, 6, [b'{"a":1}', b'{"b":2}'])) == (5, 6, [b'{"a":1}', b'{"b":2}'])
    for bad in (
        encode_batch(5, 5, [b'{"a":1}', b'{"b":2}']),  # two records for one seq
        encode_batch(0, 1, [b'{"a":1}']),
        encode_batch(1, 1, [b"{}"]),
        encode_batch(1, 2, [b'{"a":1}', b"[1]"]),
        b"B",
    ):
        with pytest.raises(ProtocolError):
            decode_batch(bad)
    with pytest.raises(ProtocolError):
        decode_hello(b"H\x00")


def records(encoder: RecordEncoder, first: int, last: int) -> bytes:
    """A batch's payload: the records of seqs first … last, separated by newlines."""
    return b"\n".join(request(encoder, seq) for seq in range(first, last + 1))


def seqs(payloads: list[bytes]) -> list[int]:
    return [orjson.loads(r)["seq"] for p in payloads for r in p.split(b"\n")]


def test_sequencer_writes_new_records_once() -> None:
    encoder = RecordEncoder(BOOT, 1, Clock())
    stream = (BOOT, 1)
    sequencer = Sequencer()
    batch = records(encoder, 1, 3)
    out, lost = sequencer.admit(stream, 1, 3, batch, "ts")
    assert out == [batch] and lost == 0 and sequencer.known(stream) == 3  # as it came
    # Sent again after a writer restart: already there.
    assert sequencer.admit(stream, 1, 3, records(encoder, 1, 3), "ts") == ([], 0)
    # Partly there: only the new part, found by each record's seq.
    out, lost = sequencer.admit(stream, 2, 5, records(encoder, 2, 5), "ts")
    assert seqs(out) == [4, 5] and lost == 0


def test_sequencer_accounts_for_a_hole_with_a_missing_gap_record() -> None:
    encoder = RecordEncoder(BOOT, 2, Clock())
    stream = (BOOT, 2)
    sequencer = Sequencer({stream: 4})
    out, lost = sequencer.admit(stream, 8, 9, records(encoder, 8, 9), "2026-11-28T03:00:00.000000Z")
    assert lost == 3
    gap = orjson.loads(out[0])
    assert (gap["seq"], gap["gap"], gap["reason"], gap["worker"]) == (5, 3, "missing", 2)
    assert seqs(out[1:]) == [8, 9]
