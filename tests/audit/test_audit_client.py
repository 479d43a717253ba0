"""AuditClient on its own loop, with no writer serving: numbering, timers, bounds, bad values."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import orjson
import pytest
import uvloop
from audit_support import BOOT, submit

from fastproxy.audit import AuditClient, AuditShared, WriterEndpoint
from fastproxy.audit.protocol import decode_batch
from fastproxy.audit.shared import ASSIGNED, DROPPED, PID, QUEUED


@pytest.fixture
def shared() -> Iterator[AuditShared]:
    table = AuditShared.create(BOOT, slots=4)
    yield table
    table.close()


def run_client(shared: AuditShared, address: str | bytes, body: object, **kwargs: object) -> None:
    async def main() -> None:
        slot, _ = shared.claim()
        options: dict[str, object] = {"batch_max": 4, "flush_interval": 0.01, **kwargs}
        client = AuditClient(asyncio.get_running_loop(), address, shared, slot, **options)  # type: ignore[arg-type]
        client.start()
        try:
            await body(client, slot)  # type: ignore[operator]
        finally:
            client.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def test_records_are_numbered_batched_and_published_while_no_writer_answers(shared: AuditShared) -> None:
    endpoint = WriterEndpoint.create()  # listening, but nobody accepts

    async def body(client: AuditClient, slot: int) -> None:
        assert shared.get(slot, PID) == client.pid and shared.get(slot, ASSIGNED) == 1
        assert not client.available and not client.admits()
        for n in range(6):
            assert submit(client, n)
        assert shared.get(slot, ASSIGNED) == 7
        assert len(client.batcher.outbox) == 1  # 4 records: batch_max
        await asyncio.sleep(0.05)  # the flush timer closes the rest
        assert [m.records for m in client.batcher.outbox] == [4, 3]
        _, last, records = decode_batch(client.batcher.outbox[-1].payload)
        assert last == 7 and orjson.loads(records[-1])["request_id"] == "req-5"
        assert shared.get(slot, QUEUED) == 7
        assert client.stats() == {
            "records": 7, "dropped": 0, "gaps": 0, "queued": 7, "acked": 0, "seq": 7, "connects": 1,
        }  # fmt: skip
        assert not await client.drain(0.05)

    try:
        run_client(shared, endpoint.address, body)
    finally:
        endpoint.close()


def test_an_unreachable_writer_is_retried_and_the_bound_holds(shared: AuditShared) -> None:
    async def body(client: AuditClient, slot: int) -> None:
        kept = [submit(client, n) for n in range(10)]
        assert kept == [True] * 4 + [False] * 6
        assert shared.get(slot, DROPPED) == 6 and client.stats()["dropped"] == 6
        await asyncio.sleep(0.1)
        assert client.connects == 0  # nothing listens at that address

    run_client(shared, "\0fastproxy-audit-test-nobody-listens", body, queue_max=5)


def test_a_value_that_cannot_be_encoded_becomes_a_gap_not_a_hole(
    shared: AuditShared, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(client: AuditClient, slot: int) -> None:
        assert not submit(client, 1, latency_ms=float("nan"))  # a caller's bug: no JSON number
        assert submit(client, 2)
        client.flush()
        records = [orjson.loads(r) for m in client.batcher.outbox for r in decode_batch(m.payload)[2]]
        assert [(r["seq"], r.get("gap"), r.get("request_id")) for r in records] == [
            (1, None, None), (2, 1, None), (3, None, "req-2"),
        ]  # fmt: skip

    run_client(shared, "\0fastproxy-audit-test-nobody-listens", body)
    assert "could not be encoded" in caplog.text
