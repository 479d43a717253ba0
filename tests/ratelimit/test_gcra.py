"""GCRA arithmetic with an injected clock, on the reference and on the shared table alike."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fastproxy.ratelimit import (
    ALLOWED,
    LIMITED,
    NO_SLOT,
    Decision,
    Limit,
    ReferenceTable,
    new_table,
    rate_limit_headers,
    table_key,
)
from fastproxy.ratelimit.gcra import decide as gcra

S = 1_000_000_000
MS = 1_000_000
T0 = 5_000 * S  # an arbitrary origin for the injected clock

Decide = Callable[..., Decision]


@pytest.fixture(params=["reference", "native"])
def decide(request: pytest.FixtureRequest) -> Decide:
    if request.param == "reference":
        return ReferenceTable().decide_at
    table = new_table(256)

    def native(now: int, key: bytes, interval: int, burst: int, cost: int = 1) -> Decision:
        return Decision._make(table.decide_at(now, key, interval, burst, cost))

    return native


def test_a_full_bucket_admits_burst_plus_one_at_once(decide: Decide) -> None:
    t = 100 * MS  # 10 per second, burst 4
    for k in range(5):
        assert decide(T0, b"k", t, 4) == (ALLOWED, 4 - k, (k + 1) * t, 0)
    assert decide(T0, b"k", t, 4) == (LIMITED, 0, 5 * t, t)


def test_a_steady_client_at_the_rate_is_never_limited(decide: Decide) -> None:
    t = 10 * MS
    for k in range(1000):
        assert decide(T0 + k * t, b"k", t, 3) == (ALLOWED, 3, t, 0)


def test_a_client_twice_too_fast_gets_the_rate_after_its_burst(decide: Decide) -> None:
    t, burst = 100, 2
    admitted = 0
    for k in range(1001):  # one request every t / 2 for 500 t
        admitted += decide(T0 + k * t // 2, b"k", t, burst).status == ALLOWED
    assert admitted == 500 + burst + 1  # span / t + burst + 1: every token time gave, no more


def test_a_long_idle_refills_the_burst_and_never_more(decide: Decide) -> None:
    t, burst = 100 * MS, 4
    while decide(T0, b"k", t, burst).status == ALLOWED:
        pass
    later = T0 + 3600 * S
    results = [decide(later, b"k", t, burst).status for _ in range(burst + 3)]
    assert results == [ALLOWED] * (burst + 1) + [LIMITED] * 2


def test_equal_timestamps_admit_exactly_the_burst(decide: Decide) -> None:
    t, burst = S, 7
    results = [decide(T0, b"k", t, burst) for _ in range(100)]
    assert [r.status for r in results].count(ALLOWED) == burst + 1
    assert {r for r in results if r.status == LIMITED} == {Decision(LIMITED, 0, (burst + 1) * t, t)}


def test_a_clock_read_late_by_another_process_admits_nothing_more(decide: Decide) -> None:
    t, burst = 50 * MS, 1
    assert decide(T0, b"k", t, burst).status == ALLOWED
    assert decide(T0, b"k", t, burst).status == ALLOWED
    # a decision whose clock reading is older than one already counted
    assert decide(T0 - 30 * MS, b"k", t, burst) == (LIMITED, 0, 2 * t + 30 * MS, t + 30 * MS)


def test_retry_after_and_reset_round_up_to_whole_seconds(decide: Decide) -> None:
    one = decide(T0, b"a", S, 0)  # exactly one second to wait
    assert one == (ALLOWED, 0, S, 0)
    limited = decide(T0, b"a", S, 0)
    assert limited == (LIMITED, 0, S, S)
    assert dict(rate_limit_headers(1, limited))[b"Retry-After"] == b"1"
    hair = decide(T0 + S - 1, b"a", S, 0)  # 1 ns to wait still says 1 second
    assert hair == (LIMITED, 0, 1, 1)
    assert dict(rate_limit_headers(1, hair))[b"Retry-After"] == b"1"
    assert decide(T0, b"b", S + 1, 0).status == ALLOWED
    over = decide(T0, b"b", S + 1, 0)  # one second and 1 ns says 2
    assert over.retry_after_ns == S + 1
    assert dict(rate_limit_headers(1, over)) == {
        b"RateLimit-Limit": b"1",
        b"RateLimit-Remaining": b"0",
        b"RateLimit-Reset": b"2",
        b"Retry-After": b"2",
    }


def test_cost_takes_several_tokens_and_a_cost_over_capacity_never_conforms(decide: Decide) -> None:
    t = 10 * MS
    assert decide(T0, b"k", t, 4, 3) == (ALLOWED, 2, 3 * t, 0)
    assert decide(T0, b"k", t, 4, 3) == (LIMITED, 2, 3 * t, 1 * t)  # two left, three asked
    assert decide(T0 + 3600 * S, b"big", t, 4, 6) == (LIMITED, 5, 0, t)


def test_keys_have_separate_buckets(decide: Decide) -> None:
    assert decide(T0, b"a", S, 0).status == ALLOWED
    assert decide(T0, b"a", S, 0).status == LIMITED
    assert decide(T0, b"b", S, 0).status == ALLOWED


def test_str_and_utf8_bytes_are_the_same_key(decide: Decide) -> None:
    assert decide(T0, "clé", S, 0).status == ALLOWED
    assert decide(T0, "clé".encode(), S, 0).status == LIMITED


def test_gcra_returns_the_tat_to_store() -> None:
    assert gcra(0, T0, 10, 1) == (Decision(ALLOWED, 1, 10, 0), T0 + 10)
    assert gcra(T0 + 20, T0, 10, 1) == (Decision(LIMITED, 0, 20, 10), T0 + 20)
    with pytest.raises(ValueError):
        gcra(0, T0, 0, 1)
    with pytest.raises(ValueError):
        gcra(0, T0, 1 << 61, 2)


def test_headers_of_each_outcome() -> None:
    assert rate_limit_headers(21, (ALLOWED, 20, 10 * MS, 0)) == (
        (b"RateLimit-Limit", b"21"),
        (b"RateLimit-Remaining", b"20"),
        (b"RateLimit-Reset", b"1"),
    )
    assert rate_limit_headers(21, Decision(LIMITED, 0, 2 * S + 1, S + 1))[-1] == (b"Retry-After", b"2")
    assert rate_limit_headers(21, (NO_SLOT, 0, 0, 10 * MS)) == ((b"Retry-After", b"1"),)


def test_limit_from_the_configuration() -> None:
    assert Limit.from_rate(100, 1.0, 20) == Limit(10 * MS, 20)
    assert Limit.from_rate(100, 1.0, 20).limit == 21
    assert Limit.from_rate(3).interval_ns == 333_333_334  # rounded up: never more generous
    assert Limit.from_rate(1, 0.1).interval_ns == 100 * MS  # the decimal written, not the float
    assert Limit.from_rate(0.5, 60).interval_ns == 120 * S
    assert Limit.from_rate(1e12).interval_ns == 1
    for bad in ((0, 1.0, 0), (1, 0, 0), (1, 1.0, -1), (1, 1e9, 10**9)):
        with pytest.raises(ValueError):
            Limit.from_rate(*bad)


def test_table_key_keeps_limits_apart() -> None:
    assert table_key("per-user", "alice") == b"8:per-user:alice"
    assert table_key("a:b", "c") != table_key("a", "b:c")
    assert table_key("ip", b"\xff") == b"2:ip:\xff"
