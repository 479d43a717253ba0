"""The audit record of an answered request is made before its last bytes are written.

A worker killed between the two then leaves the record's seq to the writer's gap accounting, so
no response a client received is missing from the audit. Driven in-process: a ClientConnection
and an UpstreamConnection on fake transports, as uvloop would call them.
"""

from __future__ import annotations

from typing import Any

import pytest
import uvloop

from bench.micro_path import FakeTransport
from fastproxy.config import load_config
from fastproxy.server.connection import ClientConnection
from fastproxy.server.state import WorkerState
from fastproxy.server.upstream import UpstreamConnection, UpstreamPool

pytestmark = pytest.mark.timeout(30)

REQUEST = b"GET /thing HTTP/1.1\r\nHost: test\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


class Transport(FakeTransport):
    """bench.micro_path's fake transport, noting what is written and closed."""

    def __init__(self, events: list[tuple[str, Any]], name: str) -> None:
        self.events = events
        self.name = name

    def write(self, data: bytes) -> None:
        self.events.append((self.name, data))

    def close(self) -> None:
        self.events.append((self.name, "close"))

    def abort(self) -> None:
        self.events.append((self.name, "abort"))


class Audit:
    def __init__(self, events: list[tuple[str, Any]]) -> None:
        self.events = events

    def admits(self) -> bool:
        return True

    def submit(self, *args: Any) -> bool:
        # (request_id, client_ip, method, path, route, principal, auth, decision, reason, mode,
        #  status, upstream, latency_ms, bytes_in, bytes_out, ...)
        self.events.append(("audit", (args[10], args[8], args[14])))
        return True


def wired() -> tuple[ClientConnection, UpstreamConnection, list[tuple[str, Any]]]:
    events: list[tuple[str, Any]] = []
    config = load_config(upstream_url="http://127.0.0.1:9")
    state = WorkerState(config, uvloop.new_event_loop())
    state.audit = Audit(events)  # type: ignore[assignment]
    pool = UpstreamPool(config.upstreams["default"], state)
    state.pools["default"] = pool
    upstream = UpstreamConnection(pool)
    upstream.connection_made(Transport(events, "upstream"))  # type: ignore[arg-type]
    pool.idle.append(upstream)
    client = ClientConnection(state, b"http")
    client.connection_made(Transport(events, "client"))  # type: ignore[arg-type]
    return client, upstream, events


def test_a_proxied_response_is_audited_before_it_is_written() -> None:
    client, upstream, events = wired()
    client.data_received(REQUEST)
    upstream.data_received(RESPONSE)
    audits = [i for i, (who, _) in enumerate(events) if who == "audit"]
    writes = [i for i, (who, _) in enumerate(events) if who == "client"]
    assert len(audits) == 1 and writes, events
    assert audits[0] < writes[-1]
    status, reason, bytes_out = events[audits[0]][1]
    assert (status, reason) == (200, "ok")
    assert bytes_out == sum(len(data) for who, data in events if who == "client")


def test_a_response_in_pieces_is_audited_before_its_last_piece() -> None:
    client, upstream, events = wired()
    client.data_received(REQUEST)
    upstream.data_received(RESPONSE[:-3])
    assert not [e for e in events if e[0] == "audit"]  # not complete yet: nothing recorded
    upstream.data_received(RESPONSE[-3:])
    kinds = [who for who, _ in events if who in ("audit", "client")]
    assert kinds == ["client", "audit", "client"]
    _, _, bytes_out = next(data for who, data in events if who == "audit")
    assert bytes_out == sum(len(data) for who, data in events if who == "client")


def test_an_answer_of_the_proxy_is_audited_before_it_is_written() -> None:
    client, upstream, events = wired()
    client.data_received(REQUEST)
    upstream.connection_lost(None)  # before any answer, on a connection never reused: 502
    kinds = [who for who, _ in events if who in ("audit", "client")]
    assert kinds == ["audit", "client"]
    status, reason, bytes_out = next(data for who, data in events if who == "audit")
    assert (status, reason) == (502, "upstream_reset")
    assert bytes_out == sum(len(data) for who, data in events if who == "client")
