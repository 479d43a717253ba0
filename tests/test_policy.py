"""run_stages: order, first rejection, shadow mode, and stages that answer with an awaitable."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from fastproxy.http.request import parse_head
from fastproxy.policy import Decision, Rejection, RequestContext, Stage, caller_key, run_stages


class Sync:
    def __init__(self, name: str, calls: list[str], answer: Rejection | None = None) -> None:
        self.name = name
        self.calls = calls
        self.answer = answer

    def check(self, ctx: RequestContext) -> Decision:
        self.calls.append(self.name)
        ctx.upstream_headers.append((b"X-Stage", self.name.encode()))
        return self.answer


class Async:
    def __init__(self, name: str, calls: list[str], answer: Rejection | None = None) -> None:
        self.name = name
        self.calls = calls
        self.answer = answer

    def check(self, ctx: RequestContext) -> Decision:
        self.calls.append(self.name)
        return self._later(ctx)

    async def _later(self, ctx: RequestContext) -> Rejection | None:
        await asyncio.sleep(0)
        self.calls.append(self.name + ":done")
        ctx.principal = ctx.principal or self.name
        return self.answer


def context() -> RequestContext:
    head = parse_head("GET", b"/x", "1.1", [(b"Host", b"a")], True, 0)
    return RequestContext(head, "203.0.113.9", b"rid")


def resolve(decision: Decision) -> Rejection | None:
    if decision is None or isinstance(decision, Rejection):
        return decision
    assert isinstance(decision, Awaitable)

    async def wait() -> Rejection | None:
        return await decision

    return asyncio.run(wait())


DENY = Rejection(403, "forbidden:role")
LIMITED = Rejection(429, "rate_limited", ((b"Retry-After", b"1"),))


def test_no_stages_continue() -> None:
    assert run_stages((), context(), shadow=False) is None


def test_all_continue_runs_every_stage_in_order() -> None:
    calls: list[str] = []
    ctx = context()
    stages: tuple[Stage, ...] = (Sync("a", calls), Sync("b", calls), Sync("c", calls))
    assert run_stages(stages, ctx, shadow=False) is None
    assert calls == ["a", "b", "c"]
    assert ctx.upstream_headers == [(b"X-Stage", b"a"), (b"X-Stage", b"b"), (b"X-Stage", b"c")]
    assert ctx.would_deny is None


def test_first_rejection_wins_and_stops_the_chain() -> None:
    calls: list[str] = []
    ctx = context()
    stages: tuple[Stage, ...] = (
        Sync("a", calls),
        Sync("b", calls, DENY),
        Sync("c", calls, LIMITED),
    )
    assert run_stages(stages, ctx, shadow=False) is DENY
    assert calls == ["a", "b"]
    assert ctx.would_deny is None


def test_shadow_records_the_first_would_deny_and_continues() -> None:
    calls: list[str] = []
    ctx = context()
    stages: tuple[Stage, ...] = (
        Sync("a", calls, DENY),
        Sync("b", calls),
        Sync("c", calls, LIMITED),
    )
    assert run_stages(stages, ctx, shadow=True) is None
    assert calls == ["a", "b", "c"]
    assert ctx.would_deny == "forbidden:role"


def test_synchronous_chain_returns_no_awaitable() -> None:
    calls: list[str] = []
    decision = run_stages((Sync("a", calls), Sync("b", calls, DENY)), context(), shadow=False)
    assert isinstance(decision, Rejection)


def test_awaitable_continue_then_sync_stages() -> None:
    calls: list[str] = []
    ctx = context()
    stages: tuple[Stage, ...] = (Sync("a", calls), Async("b", calls), Sync("c", calls))
    decision = run_stages(stages, ctx, shadow=False)
    assert decision is not None
    assert not isinstance(decision, Rejection)
    # The stages after the awaiting one wait for it.
    assert calls == ["a", "b"]
    assert resolve(decision) is None
    assert calls == ["a", "b", "b:done", "c"]
    assert ctx.principal == "b"


def test_awaitable_rejection_stops_the_chain() -> None:
    calls: list[str] = []
    ctx = context()
    stages: tuple[Stage, ...] = (Async("a", calls, LIMITED), Sync("b", calls))
    assert resolve(run_stages(stages, ctx, shadow=False)) is LIMITED
    assert calls == ["a", "a:done"]


def test_rejection_after_an_awaitable() -> None:
    calls: list[str] = []
    stages: tuple[Stage, ...] = (
        Async("a", calls),
        Sync("b", calls, DENY),
        Sync("c", calls),
    )
    assert resolve(run_stages(stages, context(), shadow=False)) is DENY
    assert calls == ["a", "a:done", "b"]


def test_two_awaitables_in_a_row() -> None:
    calls: list[str] = []
    stages: tuple[Stage, ...] = (Async("a", calls), Async("b", calls), Async("c", calls, DENY))
    assert resolve(run_stages(stages, context(), shadow=False)) is DENY
    assert calls == ["a", "a:done", "b", "b:done", "c", "c:done"]


@pytest.mark.parametrize("first_async", [True, False])
def test_shadow_with_awaitables_keeps_the_first_reason(first_async: bool) -> None:
    calls: list[str] = []
    ctx = context()
    first: Stage = Async("a", calls, DENY) if first_async else Sync("a", calls, DENY)
    stages: tuple[Stage, ...] = (first, Async("b", calls, LIMITED), Sync("c", calls))
    assert resolve(run_stages(stages, ctx, shadow=True)) is None
    assert [c for c in calls if ":" not in c] == ["a", "b", "c"]
    assert ctx.would_deny == "forbidden:role"


def test_rejection_repr_and_headers() -> None:
    assert repr(LIMITED) == "Rejection(429, 'rate_limited')"
    assert LIMITED.headers == ((b"Retry-After", b"1"),)
    assert DENY.headers == ()


def test_request_context_starts_empty() -> None:
    ctx = context()
    assert ctx.client_ip == "203.0.113.9"
    assert ctx.request_id == b"rid"
    assert ctx.head.path == "/x"
    assert (ctx.principal, ctx.auth, ctx.would_deny, ctx.upstream_headers) == (None, None, None, [])


def test_caller_keys_of_different_pairs_differ() -> None:
    pairs = [
        ("jwt:a", "b|c"), ("jwt:a|b", "c"), ("jwt:a", ""), ("jwt:", "a"), ("api_key:x", "y"),
        ("api_key:", "x"), (None, None), (None, "a"), ("jwt:1", "2"), ("jwt:12", ""),
    ]  # fmt: skip
    keys = [caller_key(auth, principal) for auth, principal in pairs]
    assert len(set(keys)) == len(keys)
    assert caller_key("jwt:a", None) == caller_key("jwt:a", "")  # no principal: the empty name
    assert caller_key("jwt:corp", "alice") == b"8:jwt:corpalice"
