"""The C table decides exactly as the pure-Python reference, on random sequences of timestamps."""

from __future__ import annotations

import random

import pytest

from fastproxy.ratelimit import NO_SLOT, ReferenceTable, new_table

MS = 1_000_000
S = 1_000 * MS


def _step(rng: random.Random) -> int:
    """The next clock step: ties, nanoseconds, the rate's scale, long idles, and readings up to 0.1 ms
    older than the last (another process's clock read that reached the table late)."""
    kind = rng.randrange(8)
    if kind <= 1:
        return 0
    if kind == 2:
        return rng.randint(1, 1000)
    if kind == 3:
        return rng.randint(1, 10 * MS)
    if kind == 4:
        return rng.randint(1, S)
    if kind == 5:
        return rng.randint(S, 100 * S)
    return -rng.randint(1, 100_000)


def _run(seed: int, slots: int, nkeys: int, ops: int) -> tuple[int, int]:
    rng = random.Random(seed)
    table, oracle = new_table(slots), ReferenceTable()
    keys = [b"key-%d-%d" % (seed, k) for k in range(nkeys)]
    limits = {
        key: (rng.choice([1, 7, 1000, MS, 10 * MS, S, 3 * S]), rng.choice([0, 0, 1, 2, 5, 50]))
        for key in keys
    }
    now = rng.randint(S, 10**6 * S)
    compared = skipped = 0
    for _ in range(ops):
        now = max(1, now + _step(rng))
        key = rng.choice(keys)
        interval, burst = limits[key]
        cost = rng.choice([1, 1, 1, 1, 2, 3, burst + 2])
        got = table.decide_at(now, key, interval, burst, cost)
        if got[0] == NO_SLOT:  # the table could not hold the key: the oracle must not count it either
            skipped += 1
            continue
        assert got == oracle.decide_at(now, key, interval, burst, cost), (seed, now, key, cost)
        compared += 1
    return compared, skipped


@pytest.mark.parametrize("seed", range(12))
def test_a_roomy_table_matches_the_reference_decision_for_decision(seed: int) -> None:
    compared, skipped = _run(seed, slots=4096, nkeys=1 + seed, ops=3000)
    assert (compared, skipped) == (3000, 0)


@pytest.mark.parametrize("seed", range(4))
def test_a_crowded_table_matches_it_wherever_it_has_a_slot(seed: int) -> None:
    compared, skipped = _run(1000 + seed, slots=8, nkeys=24, ops=3000)
    assert compared > 1000 and skipped > 0
