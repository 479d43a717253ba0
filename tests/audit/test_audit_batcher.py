"""A worker's stream without I/O: numbering, batches, the bounded queue, gaps, acks and resends."""

from __future__ import annotations

import orjson
import pytest
from audit_support import BOOT, Clock, request

from fastproxy.audit.batcher import Batcher
from fastproxy.audit.protocol import MSG_TARGET, decode_batch
from fastproxy.audit.record import RecordEncoder


def make(batch_max: int = 4, queue_max: int = 8) -> Batcher:
    return Batcher(RecordEncoder(BOOT, 1, Clock()), batch_max, queue_max)


def put(batcher: Batcher) -> int:
    seq = batcher.claim()
    if seq and batcher.add(request(batcher.encoder, seq, seq), seq):
        batcher.pack()
    return seq


def test_a_batch_closes_at_batch_max() -> None:
    batcher = make(batch_max=3, queue_max=100)
    for expected in (1, 2):
        seq = batcher.claim()
        assert seq == expected
        assert not batcher.add(request(batcher.encoder, seq), seq)
    seq = batcher.claim()
    assert batcher.add(request(batcher.encoder, seq), seq)
    batcher.pack()
    (message,) = batcher.outbox
    first, last, records = decode_batch(message.payload)
    assert (first, last, message.records) == (1, 3, 3)
    assert [orjson.loads(r)["seq"] for r in records] == [1, 2, 3]
    assert batcher.queued == 3 and not batcher.pending


def test_a_batch_also_closes_at_the_message_size_target() -> None:
    batcher = make(batch_max=100_000, queue_max=100_000)
    big = "/" + "x" * 8000
    while True:
        seq = batcher.claim()
        record = request(batcher.encoder, seq, path=big)
        if batcher.add(record, seq):
            break
    assert batcher.pending_bytes >= MSG_TARGET > batcher.pending_bytes - len(record) - 1


def test_queue_full_drops_and_the_next_kept_record_follows_a_gap_record() -> None:
    batcher = make(batch_max=2, queue_max=4)
    assert [put(batcher) for _ in range(4)] == [1, 2, 3, 4]
    batcher.sent()
    batcher.sent()
    assert [put(batcher) for _ in range(3)] == [0, 0, 0]  # seqs 5, 6, 7 dropped
    assert batcher.dropped == 3 and batcher.seq == 7
    batcher.ack(2)  # room for 2: the gap record and one record
    assert batcher.has_room()
    assert put(batcher) == 8
    first, last, records = decode_batch(batcher.outbox[-1].payload)
    gap, record = (orjson.loads(r) for r in records)
    assert gap == {**gap, "seq": 5, "gap": 3, "reason": "queue_full"} and "request_id" not in gap
    assert record["seq"] == 8
    assert (first, last) == (5, 8)
    assert batcher.gaps == 1 and batcher.queued == 4


def test_one_free_place_is_not_room_while_a_gap_record_is_owed() -> None:
    batcher = make(batch_max=1, queue_max=3)
    assert [put(batcher) for _ in range(4)] == [1, 2, 3, 0]
    for _ in range(3):
        batcher.sent()
    batcher.ack(1)  # one place: not enough for gap + record
    assert put(batcher) == 0
    batcher.ack(2)
    assert put(batcher) == 6
    _, _, records = decode_batch(batcher.outbox[-1].payload)
    assert [orjson.loads(r).get("gap") for r in records] == [2, None]


def test_close_gap_queues_the_owed_gap_record_even_when_full() -> None:
    batcher = make(batch_max=10, queue_max=2)
    assert [put(batcher) for _ in range(3)] == [1, 2, 0]
    batcher.close_gap()
    assert batcher.queued == 3 and not batcher.idle
    assert orjson.loads(batcher.pending[-1])["gap"] == 1


def test_acks_release_whole_batches_in_order() -> None:
    batcher = make(batch_max=2, queue_max=100)
    for _ in range(6):
        put(batcher)
    assert len(batcher.outbox) == 3
    for _ in range(3):
        batcher.sent()
    batcher.ack(3)  # covers the first batch only
    assert [m.first for m in batcher.inflight] == [3, 5] and batcher.queued == 4
    batcher.ack(6)
    assert batcher.idle and batcher.acked == 6


def test_disconnect_resends_what_was_not_acknowledged_and_welcome_skips_what_is_written() -> None:
    batcher = make(batch_max=2, queue_max=100)
    for _ in range(6):
        put(batcher)
    batcher.sent()
    batcher.sent()  # 1-2, 3-4 in flight; 5-6 not sent
    batcher.disconnected()
    assert [m.first for m in batcher.outbox] == [1, 3, 5] and not batcher.inflight
    batcher.welcome(4)  # the new writer's file already has up to 4
    assert [m.first for m in batcher.outbox] == [5] and batcher.queued == 2
    batcher.sent()
    batcher.welcome(3)  # mid-batch: that batch is sent again whole, the writer skips by seq
    assert [m.first for m in batcher.outbox] == [5]


def test_drop_claimed_folds_an_unencodable_record_into_the_next_gap() -> None:
    batcher = make(batch_max=10, queue_max=10)
    assert put(batcher) == 1
    assert batcher.claim() == 2
    batcher.drop_claimed()
    assert put(batcher) == 3
    assert [orjson.loads(r).get("gap") for r in batcher.pending] == [None, 1, None]
    assert orjson.loads(batcher.pending[1])["seq"] == 2


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError):
        make(batch_max=0)
    with pytest.raises(ValueError):
        make(queue_max=1)
