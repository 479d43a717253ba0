"""The audit record of an answered request is made before its last bytes are written.

A worker killed between the two then leaves the record's seq to the writer's gap accounting, so
no response a client received is missing from the audit. Driven in-process: a ClientConnection
and an UpstreamConnection on fake transports, as uvloop would call them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import uvloop

from bench.micro_path import FakeTransport
from fastproxy.audit import AuditClient, AuditShared
from fastproxy.config import load_config
from fastproxy.server.connection import ClientConnection
from fastproxy.server.state import WorkerState
from fastproxy.server.upstream import UpstreamConnection, UpstreamPool

pytestmark = pytest.mark.timeout(30)

REQUEST = b"GET /thing HTTP/1.1\r\nHost: test\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


class Transport(FakeTransport):
    """bench.micro_path's fake transport, noting what is written and closed.

    Before each event it notes the audit records queued since the last one: a record queued
    before a write shows before it.
    """

    def __init__(self, events: Events, name: str) -> None:
        self.events = events
        self.name = name

    def write(self, data: bytes) -> None:
        self.events.note_audits()
        self.events.append((self.name, data))

    def close(self) -> None:
        self.events.note_audits()
        self.events.append((self.name, "close"))

    def abort(self) -> None:
        self.events.note_audits()
        self.events.append((self.name, "abort"))


class Events(list[tuple[str, Any]]):
    """What happened, in order: writes, closes and ("audit", (status, reason, bytes_out))."""

    def __init__(self) -> None:
        super().__init__()
        self.audit: AuditClient | None = None
        self.seen = 0

    def note_audits(self) -> None:
        assert self.audit is not None
        pending = self.audit.batcher.pending  # a real client, never connected: records stay here
        for record in pending[self.seen :]:
            fields = orjson.loads(record)
            self.append(("audit", (fields["status"], fields["reason"], fields["bytes_out"])))
        self.seen = len(pending)


@pytest.fixture
def shared() -> Iterator[AuditShared]:
    table = AuditShared.create(slots=2)
    try:
        yield table
    finally:
        table.close()


def wired(shared: AuditShared) -> tuple[ClientConnection, UpstreamConnection, Events]:
    events = Events()
    config = load_config(upstream_url="http://127.0.0.1:9")
    loop = uvloop.new_event_loop()
    state = WorkerState(config, loop)
    slot, _ = shared.claim()
    # Not started: its records wait in its batcher, where Events reads them.
    state.audit = events.audit = AuditClient(
        loop, "\0fastproxy-test-nobody", shared, slot, batch_max=100, flush_interval=60
    )
    pool = UpstreamPool(config.upstreams["default"], state)
    state.pools["default"] = pool
    upstream = UpstreamConnection(pool)
    upstream.connection_made(Transport(events, "upstream"))  # type: ignore[arg-type]
    pool.idle.append(upstream)
    client = ClientConnection(state, b"http")
    client.connection_made(Transport(events, "client"))  # type: ignore[arg-type]
    return client, upstream, events


def test_a_proxied_response_is_audited_before_it_is_written(shared: AuditShared) -> None:
    client, upstream, events = wired(shared)
    client.data_received(REQUEST)
    upstream.data_received(RESPONSE)
    events.note_audits()  # and one made after the last write, if any
    audits = [i for i, (who, _) in enumerate(events) if who == "audit"]
    writes = [i for i, (who, _) in enumerate(events) if who == "client"]
    assert len(audits) == 1 and writes, events
    assert audits[0] < writes[-1]
    status, reason, bytes_out = events[audits[0]][1]
    assert (status, reason) == (200, "ok")
    assert bytes_out == sum(len(data) for who, data in events if who == "client")


def test_a_response_in_pieces_is_audited_before_its_last_piece(shared: AuditShared) -> None:
    client, upstream, events = wired(shared)
    client.data_received(REQUEST)
    upstream.data_received(RESPONSE[:-3])
    assert not [e for e in events if e[0] == "audit"]  # not complete yet: nothing recorded
    upstream.data_received(RESPONSE[-3:])
    events.note_audits()  # and one made after the last write, if any
    kinds = [who for who, _ in events if who in ("audit", "client")]
    assert kinds == ["client", "audit", "client"]
    _, _, bytes_out = next(data for who, data in events if who == "audit")
    assert bytes_out == sum(len(data) for who, data in events if who == "client")


def test_an_answer_of_the_proxy_is_audited_before_it_is_written(shared: AuditShared) -> None:
    client, upstream, events = wired(shared)
    client.data_received(REQUEST)
    upstream.connection_lost(None)  # before any answer, on a connection never reused: 502
    events.note_audits()  # and one made after the last write, if any
    kinds = [who for who, _ in events if who in ("audit", "client")]
    assert kinds == ["audit", "client"]
    status, reason, bytes_out = next(data for who, data in events if who == "audit")
    assert (status, reason) == (502, "upstream_reset")
    assert bytes_out == sum(len(data) for who, data in events if who == "client")
