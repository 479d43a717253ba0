"""The rate-limit stage against a real (small) shared table: what each key kind counts by, the headers of
an admitted request and of a 429, shadow mode, a full table, and where PolicyRuntime attaches the stage.

Header values are checked on the table's own arithmetic at a clock the test sets (:class:`AtClock` hands
the stage a table whose ``decide`` is ``decide_at``), so they are exact however loaded the machine is;
the other tests use the real clock with limits slow enough (one per hour) that it never matters.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, cast

import pytest

from fastproxy.config import load_config
from fastproxy.http.request import parse_head
from fastproxy.net import parse_networks
from fastproxy.policy import Decision, Rejection, RequestContext, caller_key, run_stages
from fastproxy.ratelimit import ALLOWED, Limit, Table, new_table, rate_limit_headers
from fastproxy.ratelimit.policy import RateLimitSpec
from fastproxy.stages.authorize import IpRules
from fastproxy.stages.build import PolicyRuntime
from fastproxy.stages.ratelimit import RateLimitStage

SLOW = Limit.from_rate(1, per=3600)  # one per hour, no burst: a second request is always limited


def spec(
    key: str = "ip",
    limit: Limit = SLOW,
    *,
    name: str = "lim",
    fail_open: bool = True,
) -> RateLimitSpec:
    kind, _, header = key.partition(":")
    return RateLimitSpec(name, kind, header.lower().encode() or None, limit, fail_open)


S = 1_000_000_000


class AtClock:
    """The real table, deciding at ``now`` (nanoseconds) instead of the monotonic clock."""

    def __init__(self, table: Table, now: int = 1_000 * S) -> None:
        self.table = table
        self.now = now

    def decide(self, key: bytes, interval_ns: int, burst: int) -> tuple[int, int, int, int]:
        return self.table.decide_at(self.now, key, interval_ns, burst)

    def admit(
        self, prefix: bytes, value: bytes | str, interval_ns: int, burst: int, shown_limit: bytes
    ) -> bytes | tuple[int, int, int, int]:
        """Table.admit at ``now``, its header lines made by the reference (rate_limit_headers)."""
        key = prefix + (value.encode() if isinstance(value, str) else value)
        decision = self.decide(key, interval_ns, burst)
        if decision[0] != ALLOWED:
            return decision
        return b"".join(b"%s: %s\r\n" % pair for pair in rate_limit_headers(int(shown_limit), decision))


def clocked(key: str = "ip", limit: Limit = SLOW, **kwargs: Any) -> tuple[RateLimitStage, AtClock]:
    clock = AtClock(new_table(64))
    return RateLimitStage(spec(key, limit, **kwargs), cast(Table, clock), "r"), clock


def stage(
    key: str = "ip",
    limit: Limit = SLOW,
    *,
    table: Table | None = None,
    route: str = "r",
    name: str = "lim",
    fail_open: bool = True,
) -> RateLimitStage:
    return RateLimitStage(spec(key, limit, name=name, fail_open=fail_open), table or new_table(1024), route)


def context(
    client_ip: str = "203.0.113.9",
    *headers: tuple[bytes, bytes],
    principal: str | None = None,
    auth: str | None = None,
) -> RequestContext:
    head = parse_head("GET", b"/x", "1.1", [(b"Host", b"a"), *headers], True, 0)
    ctx = RequestContext(head, client_ip, b"rid")
    ctx.principal = principal
    ctx.auth = auth
    return ctx


def admitted(found: RateLimitStage, ctx: RequestContext) -> bool:
    """Whether the stage admits ``ctx`` (a 429 is False; anything else fails the test)."""
    decision = found.check(ctx)
    if decision is None:
        return True
    assert isinstance(decision, Rejection), decision
    assert (decision.status, decision.reason) == (429, "rate_limited"), decision
    return False


def headers_of(decision: Decision) -> dict[bytes, bytes]:
    assert isinstance(decision, Rejection), decision
    return dict(decision.headers)


# -- what each key counts by ----------------------------------------------------------------------


def test_ip_key_one_bucket_per_address() -> None:
    found = stage("ip")
    assert admitted(found, context("203.0.113.9"))
    assert not admitted(found, context("203.0.113.9"))
    assert admitted(found, context("203.0.113.10"))
    assert admitted(found, context("2001:db8::1"))
    # Who the caller is does not matter to an ip key.
    assert not admitted(found, context("203.0.113.9", principal="bob", auth="jwt:corp"))
    assert not admitted(found, context("2001:db8::1", principal="carol", auth="api_key:ci"))


def test_ip_key_an_ipv4_client_through_a_dual_stack_listener_is_its_ipv4_address() -> None:
    found = stage("ip")
    assert admitted(found, context("::ffff:198.51.100.7"))
    assert not admitted(found, context("198.51.100.7"))
    assert admitted(found, context("198.51.100.8"))
    assert not admitted(found, context("::ffff:198.51.100.8"))
    # Other IPv6 addresses keep their own buckets.
    assert admitted(found, context("::198.51.100.7"))
    assert admitted(found, context("::ffff:0:198.51.100.7"))


def test_principal_key_one_bucket_per_method_and_subject() -> None:
    found = stage("principal")
    alice_jwt = {"principal": "alice", "auth": "jwt:corp"}
    assert admitted(found, context("203.0.113.1", **alice_jwt))
    # The same principal from another address: the same bucket.
    assert not admitted(found, context("203.0.113.2", **alice_jwt))
    # Another subject of the same issuer, the same name from another issuer, and an API key
    # whose id is the same name: each its own bucket.
    assert admitted(found, context("203.0.113.1", principal="bob", auth="jwt:corp"))
    assert admitted(found, context("203.0.113.1", principal="alice", auth="jwt:other"))
    assert admitted(found, context("203.0.113.1", principal="alice", auth="api_key:alice"))
    assert not admitted(found, context("203.0.113.3", principal="alice", auth="api_key:alice"))


def test_principal_key_names_that_could_run_together_do_not_share_a_bucket() -> None:
    found = stage("principal")
    assert admitted(found, context(principal="b|c", auth="jwt:a"))
    assert admitted(found, context(principal="c", auth="jwt:a|b"))
    assert admitted(found, context(principal="", auth="jwt:a"))
    assert admitted(found, context(principal="a", auth="jwt:"))


def test_the_key_authentication_leaves_is_the_one_the_stage_makes() -> None:
    found = stage("principal")
    ctx = context("203.0.113.1", principal="alice", auth="jwt:corp")
    ctx.caller = caller_key("jwt:corp", "alice")  # as Authenticate leaves it
    assert admitted(found, ctx)
    assert not admitted(found, context("203.0.113.2", principal="alice", auth="jwt:corp"))
    # And it is used as it is: authentication is what names the caller.
    other = context("203.0.113.3", principal="bob", auth="jwt:corp")
    other.caller = caller_key("jwt:corp", "alice")
    assert not admitted(found, other)


def test_api_key_key_one_bucket_per_key_and_per_jwt_caller() -> None:
    found = stage("api_key")
    assert admitted(found, context("203.0.113.1", principal="ci", auth="api_key:ci"))
    assert not admitted(found, context("203.0.113.2", principal="ci", auth="api_key:ci"))
    assert admitted(found, context("203.0.113.1", principal="ops", auth="api_key:ops"))
    # A caller that authenticated with a JWT is counted by its method and subject, apart from
    # any API key, even one whose id is its subject.
    assert admitted(found, context("203.0.113.1", principal="ci", auth="jwt:corp"))
    assert not admitted(found, context("203.0.113.9", principal="ci", auth="jwt:corp"))
    assert admitted(found, context("203.0.113.1", principal="alice", auth="jwt:corp"))
    assert admitted(found, context("203.0.113.1", principal="alice", auth="jwt:other"))
    assert admitted(found, context(principal="b|c", auth="jwt:a"))
    assert admitted(found, context(principal="c", auth="jwt:a|b"))
    assert admitted(found, context(principal="api_key:x", auth="jwt:a"))
    assert admitted(found, context(principal="x", auth="api_key:"))


def test_route_key_one_bucket_per_route_for_everyone() -> None:
    table = new_table(1024)
    route_a = stage("route", table=table, route="a")
    route_b = stage("route", table=table, route="b")
    assert admitted(route_a, context("203.0.113.1", principal="alice", auth="jwt:corp"))
    assert not admitted(route_a, context("198.51.100.2", principal="bob", auth="api_key:ci"))
    assert not admitted(route_a, context("2001:db8::1"))
    assert admitted(route_b, context("203.0.113.1", principal="alice", auth="jwt:corp"))
    assert not admitted(route_b, context("203.0.113.1"))


def test_header_key_one_bucket_per_value_and_one_for_requests_without_it() -> None:
    found = stage("header:X-Tenant")
    assert admitted(found, context("203.0.113.1", (b"X-Tenant", b"acme")))
    # The header's name in any case; the address does not matter.
    assert not admitted(found, context("203.0.113.2", (b"x-tenant", b"acme")))
    assert admitted(found, context("203.0.113.1", (b"X-Tenant", b"globex")))
    assert admitted(found, context("203.0.113.1", (b"X-Tenant", b"ACME")))  # values are exact
    # Without the header: one bucket shared by every such request.
    assert admitted(found, context("203.0.113.1"))
    assert not admitted(found, context("203.0.113.2", (b"X-Other", b"acme")))
    assert not admitted(found, context("203.0.113.3", principal="alice", auth="jwt:corp"))


def test_limits_sharing_a_table_and_a_value_do_not_share_a_bucket() -> None:
    table = new_table(1024)
    per_ip = stage("ip", table=table, name="per-ip")
    other = stage("ip", table=table, name="other")
    assert admitted(per_ip, context("203.0.113.1"))
    assert not admitted(per_ip, context("203.0.113.1"))
    assert admitted(other, context("203.0.113.1"))
    # Two routes that name one limit share its buckets (but for a route key).
    same_limit = RateLimitStage(per_ip.spec, table, "another-route")
    assert not admitted(same_limit, context("203.0.113.1"))


# -- answers and headers --------------------------------------------------------------------------


def test_admitted_requests_carry_the_ratelimit_fields_exactly() -> None:
    found, _ = clocked("ip", Limit.from_rate(1, per=10, burst=2))  # limit 3, one back every 10 s
    expected = [
        b"RateLimit-Limit: 3\r\nRateLimit-Remaining: 2\r\nRateLimit-Reset: 10\r\n",
        b"RateLimit-Limit: 3\r\nRateLimit-Remaining: 1\r\nRateLimit-Reset: 20\r\n",
        b"RateLimit-Limit: 3\r\nRateLimit-Remaining: 0\r\nRateLimit-Reset: 30\r\n",
    ]
    for lines in expected:
        ctx = context()
        ctx.response_headers = b"X-Before: 1\r\n"  # what earlier stages added stays first
        assert found.check(ctx) is None
        assert ctx.response_headers == b"X-Before: 1\r\n" + lines


def test_a_limited_request_is_a_429_with_the_four_headers() -> None:
    found, clock = clocked("ip", Limit.from_rate(1, per=10, burst=2))
    for _ in range(3):
        assert found.check(context()) is None
    decision = found.check(context())
    assert isinstance(decision, Rejection)
    assert (decision.status, decision.reason) == (429, "rate_limited")
    assert decision.headers == (
        (b"RateLimit-Limit", b"3"),
        (b"RateLimit-Remaining", b"0"),
        (b"RateLimit-Reset", b"30"),
        (b"Retry-After", b"10"),
    )
    # A refused request spends nothing: the next one is told the same.
    assert headers_of(found.check(context())) == dict(decision.headers)
    # Seconds are rounded up: 0.5 s later the answer is still 10 s (9.5) and 30 s (29.5) ...
    clock.now += S // 2
    assert headers_of(found.check(context()))[b"Retry-After"] == b"10"
    assert headers_of(found.check(context()))[b"RateLimit-Reset"] == b"30"
    # ... and once Retry-After has passed, the request is admitted.
    clock.now += 9 * S + S // 2 - 1
    assert headers_of(found.check(context()))[b"Retry-After"] == b"1"
    clock.now += 1
    ctx = context()
    assert found.check(ctx) is None
    assert ctx.response_headers.endswith(b"RateLimit-Remaining: 0\r\nRateLimit-Reset: 30\r\n")


def test_a_long_idle_fills_the_bucket_and_no_more() -> None:
    found, clock = clocked("ip", Limit.from_rate(1, per=10, burst=2))
    for _ in range(3):
        assert found.check(context()) is None
    clock.now += 3600 * S
    ctx = context()
    assert found.check(ctx) is None
    assert ctx.response_headers == b"RateLimit-Limit: 3\r\nRateLimit-Remaining: 2\r\nRateLimit-Reset: 10\r\n"
    assert found.check(context()) is None
    assert found.check(context()) is None
    assert isinstance(found.check(context()), Rejection)


def test_retry_after_is_at_least_one_second() -> None:
    found, _ = clocked("ip", Limit.from_rate(100, per=1))  # one per 10 ms
    assert found.check(context()) is None
    headers = headers_of(found.check(context()))
    assert headers[b"Retry-After"] == b"1"
    assert headers[b"RateLimit-Reset"] == b"1"
    assert headers[b"RateLimit-Limit"] == b"1"
    assert headers[b"RateLimit-Remaining"] == b"0"


def test_enforce_mode_answers_the_429_from_run_stages() -> None:
    found = stage("ip")
    assert run_stages((found,), context(), shadow=False) is None
    decision = run_stages((found,), context(), shadow=False)
    assert isinstance(decision, Rejection) and decision.status == 429


def test_shadow_mode_records_the_would_be_429_and_sends_the_fields_without_retry_after() -> None:
    found, _ = clocked("ip", Limit.from_rate(1, per=10, burst=1))
    first, second, third = context(), context(), context()
    assert run_stages((found,), first, shadow=True) is None
    assert run_stages((found,), second, shadow=True) is None
    assert first.would_deny is None and second.would_deny is None
    assert run_stages((found,), third, shadow=True) is None
    assert third.would_deny == "rate_limited"
    assert (
        third.response_headers == b"RateLimit-Limit: 2\r\nRateLimit-Remaining: 0\r\nRateLimit-Reset: 20\r\n"
    )
    # Shadow mode spends no budget on what it would have refused.
    again = context()
    assert run_stages((found,), again, shadow=True) is None
    assert again.response_headers == third.response_headers


def test_shadow_mode_keeps_the_first_denial_and_still_decides_the_limit() -> None:
    deny_all = IpRules((), parse_networks(["0.0.0.0/0", "::/0"]))
    found = stage("ip")
    assert run_stages((found,), context(), shadow=True) is None
    ctx = context()
    assert run_stages((deny_all, found), ctx, shadow=True) is None
    assert ctx.would_deny == "ip_denied"
    assert b"RateLimit-Remaining: 0" in ctx.response_headers


# -- a full table ----------------------------------------------------------------------------------


def full_table(slots: int = 4) -> tuple[Table, list[str]]:
    """A table whose every slot holds a live key (one per hour): any other key finds no slot."""
    table = new_table(slots)
    filler = stage("ip", table=table, name="filler")
    ips = [f"192.0.2.{i}" for i in range(1, slots + 1)]
    for ip in ips:
        assert filler.check(context(ip)) is None
    return table, ips


def full_lines(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "fastproxy.ratelimit" and record.getMessage().startswith(f"rate limit {name}:")
    ]


def test_a_full_table_with_fail_open_admits_without_headers_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    table, filled = full_table()
    found = stage("ip", table=table, name="open", fail_open=True)
    caplog.set_level(logging.WARNING, "fastproxy.ratelimit")
    for i in range(5):
        ctx = context(f"198.51.100.{i}")
        assert run_stages((found,), ctx, shadow=False) is None
        assert ctx.response_headers == b""
        assert ctx.would_deny is None
    assert table.stats()["no_slot"] == 5
    assert full_lines(caplog, "open") == [
        "rate limit open: the table has no free slot for a key (--ratelimit-slots); "
        "admitting (on_full = fail_open)"
    ]
    assert all(record.levelno == logging.WARNING for record in caplog.records)
    # Keys that have a slot are still limited as before.
    filler = stage("ip", table=table, name="filler")
    assert not admitted(filler, context(filled[0]))


def test_a_full_table_with_fail_closed_answers_503_with_retry_after_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    table, _ = full_table()
    limit = Limit.from_rate(2, per=3)  # one per 1.5 s: the 503 says come back in 2 s
    found = stage("ip", limit, table=table, name="closed", fail_open=False)
    caplog.set_level(logging.WARNING, "fastproxy.ratelimit")
    for i in range(3):
        ctx = context(f"198.51.100.{i}")
        decision = run_stages((found,), ctx, shadow=False)
        assert isinstance(decision, Rejection)
        assert (decision.status, decision.reason) == (503, "rate_limit_full")
        assert decision.headers == ((b"Retry-After", b"2"),)
        assert ctx.response_headers == b""
    assert full_lines(caplog, "closed") == [
        "rate limit closed: the table has no free slot for a key (--ratelimit-slots); "
        "refusing (on_full = fail_closed)"
    ]
    # In shadow mode the same request is recorded and goes on.
    ctx = context("198.51.100.77")
    assert run_stages((found,), ctx, shadow=True) is None
    assert ctx.would_deny == "rate_limit_full"
    assert len(full_lines(caplog, "closed")) == 1


def test_a_full_table_is_logged_once_per_limit_whatever_route_meets_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    table, _ = full_table()
    shared = spec("ip", name="shared")
    other = spec("ip", name="other")
    stages = [RateLimitStage(s, table, route) for s in (shared, other) for route in ("a", "b")]
    caplog.set_level(logging.WARNING, "fastproxy.ratelimit")
    for i, found in enumerate(stages * 2):
        assert found.check(context(f"198.51.100.{i}")) is None
    assert len(full_lines(caplog, "shared")) == 1
    assert len(full_lines(caplog, "other")) == 1


def test_a_slot_a_limited_key_keeps_is_not_lost_to_a_full_table() -> None:
    table = new_table(2)
    found = stage("ip", Limit.from_rate(1, per=3600, burst=1), table=table)
    assert admitted(found, context("192.0.2.1"))
    assert admitted(found, context("192.0.2.2"))
    assert found.check(context("192.0.2.3")) is None  # no slot: admitted (fail_open)
    assert admitted(found, context("192.0.2.1"))
    assert not admitted(found, context("192.0.2.1"))


# -- attached by PolicyRuntime ---------------------------------------------------------------------

CI_KEY = b"ci-key-0123456789abcdef"
OPS_KEY = b"ops-key-0123456789abcdef"


def runtime_config(tmp_path: Path) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(
        f"""
[upstreams.api]
url = "http://127.0.0.1:9"

[identity.api_keys]
header = "X-Api-Key"
keys = [
  {{ id = "ci", sha256 = "{hashlib.sha256(CI_KEY).hexdigest()}", roles = ["reader"] }},
  {{ id = "ops", sha256 = "{hashlib.sha256(OPS_KEY).hexdigest()}", roles = ["reader"] }},
]

[rate_limits.per-caller]
key = "principal"
rate = 1
per = 3600
burst = 1

[rate_limits.per-ip]
key = "ip"
rate = 1
per = 3600

[[routes]]
name = "keys"
path = "/keys/*"
upstream = "api"
identity = ["api_key"]
roles_any = ["reader"]
allow_ips = ["0.0.0.0/0"]
rate_limit = "per-caller"

[[routes]]
name = "shadow"
path = "/shadow/*"
upstream = "api"
public = true
rate_limit = "per-ip"
mode = "shadow"

[[routes]]
name = "open"
path = "/*"
upstream = "api"
public = true
"""
    )
    return path


def test_policy_runtime_attaches_the_limit_last(tmp_path: Path) -> None:
    config = load_config(str(runtime_config(tmp_path)))
    table = new_table(64)
    keys, shadow, public = PolicyRuntime(config, table).router.routes
    assert [s.name for s in keys.stages] == ["ip_rules", "authenticate", "roles_any", "rate_limit"]
    limit = keys.stages[-1]
    assert isinstance(limit, RateLimitStage)
    assert (limit.spec.name, limit.spec.key, limit.route, limit.table) == (
        "per-caller",
        "principal",
        "keys",
        table,
    )
    assert [s.name for s in shadow.stages] == ["rate_limit"] and shadow.shadow
    assert public.stages == ()
    with pytest.raises(RuntimeError, match="no rate-limit table"):
        PolicyRuntime(config)


def test_api_key_callers_through_authenticate_have_their_own_buckets(tmp_path: Path) -> None:
    config = load_config(str(runtime_config(tmp_path)))
    route = PolicyRuntime(config, new_table(64)).router.routes[0]

    def call(key: bytes | None, client_ip: str = "203.0.113.9") -> Decision:
        headers = [(b"Host", b"a")] + ([(b"X-Api-Key", key)] if key is not None else [])
        head = parse_head("GET", b"/keys/1", "1.1", headers, True, 0, b"x-api-key")
        return run_stages(route.stages, RequestContext(head, client_ip, b"rid"), route.shadow)

    assert call(CI_KEY) is None
    assert call(CI_KEY, "198.51.100.1") is None
    assert headers_of(call(CI_KEY))[b"RateLimit-Remaining"] == b"0"
    assert call(OPS_KEY) is None
    # Refused before the limit: a wrong key or none spends no one's budget.
    for key in (b"wrong-key-0123456789", None, b"wrong-key-0123456789"):
        refused = call(key)
        assert isinstance(refused, Rejection) and refused.status == 401
    assert call(OPS_KEY) is None
    assert headers_of(call(OPS_KEY))[b"RateLimit-Remaining"] == b"0"
