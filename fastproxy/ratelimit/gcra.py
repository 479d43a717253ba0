"""GCRA, the arithmetic: the pure-Python reference of every decision the shared table makes.

Sans-I/O: the clock is an argument. :class:`fastproxy.ratelimit.Table` (C, shared memory, lock-free)
must return exactly what :func:`decide` returns for the same TAT, clock and limit; the tests run both
on the same random sequences. :class:`ReferenceTable` is the same decisions for one process with a
dict for memory: the oracle for those tests, never a fallback for the shared table.

A limit is ``rate`` requests per ``per`` seconds sustained, plus ``burst`` more at once. GCRA keeps
one number per key, its theoretical arrival time (TAT, nanoseconds). With the emission interval
``T = per / rate`` and the capacity ``C = (burst + 1) * T``, a request of ``cost`` at ``now`` gives
``tat' = max(tat, now) + cost * T`` and conforms iff ``tat' - now <= C``; only a conforming request
stores ``tat'``. So a client idle long enough has ``burst + 1`` requests at once, then one per
``T``; over any span ``t`` it is admitted at most ``rate * t / per + burst + 1`` times.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

__all__ = [
    "ALLOWED",
    "LIMITED",
    "MAX_NS",
    "NO_SLOT",
    "Decision",
    "Limit",
    "ReferenceTable",
    "decide",
]

# A decision's status; the C extension exports the same values (a test holds them equal). Compare
# with ==: NO_SLOT is truthy too.
LIMITED = 0
ALLOWED = 1
NO_SLOT = 2  # the shared table had no slot for the key: the limit's on_full decides

# Every time, interval and product of them stays below this, so no sum can wrap in C.
MAX_NS = 1 << 62


class Decision(NamedTuple):
    """What a decision returns (the C extension returns the same fields as a plain tuple).

    ``remaining``: requests of cost 1 that would conform right after this one. ``reset_after_ns``:
    until the bucket is full again (the key back to ``limit`` remaining). ``retry_after_ns``: until
    this request would conform (0 when allowed). For NO_SLOT: 0, 0 and one cost's interval.
    """

    status: int
    remaining: int
    reset_after_ns: int
    retry_after_ns: int


def _check(interval_ns: int, burst: int, cost: int) -> None:
    if interval_ns < 1 or burst < 0 or cost < 1:
        raise ValueError("interval_ns >= 1, burst >= 0 and cost >= 1 are required")
    if (burst + 1) * interval_ns > MAX_NS or cost * interval_ns > MAX_NS:
        raise ValueError("(burst + 1) * interval_ns and cost * interval_ns must be at most 2**62")


def decide(tat: int, now: int, interval_ns: int, burst: int, cost: int = 1) -> tuple[Decision, int]:
    """One decision: ``(decision, the TAT to store)``; a limited request leaves ``tat`` as it was."""
    _check(interval_ns, burst, cost)
    cap = (burst + 1) * interval_ns
    inc = cost * interval_ns
    start = max(tat, now)
    used = start - now
    if used + inc > cap:
        remaining = 0 if used >= cap else (cap - used) // interval_ns
        return Decision(LIMITED, remaining, used, start + inc - cap - now), tat
    new = start + inc
    return Decision(ALLOWED, (cap - (new - now)) // interval_ns, new - now, 0), new


class ReferenceTable:
    """The shared table's decisions for one process, with unbounded memory: the tests' oracle."""

    def __init__(self) -> None:
        self._tat: dict[bytes, int] = {}

    def decide_at(
        self, now_ns: int, key: bytes | str, interval_ns: int, burst: int, cost: int = 1
    ) -> Decision:
        if isinstance(key, str):
            key = key.encode()
        decision, self._tat[key] = decide(self._tat.get(key, 0), now_ns, interval_ns, burst, cost)
        return decision


@dataclass(frozen=True, slots=True)
class Limit:
    """A ``[rate_limits.*]`` entry compiled once at load: what every decision and header needs.

    ``interval_ns`` is ``per / rate`` rounded up (never a hair more generous than configured),
    computed from the decimal the configuration wrote, so ``rate = 3`` gives 333333334 ns.
    """

    interval_ns: int
    burst: int

    @classmethod
    def from_rate(cls, rate: float, per: float = 1.0, burst: int = 0) -> Limit:
        if not rate > 0 or not per > 0 or burst < 0:
            raise ValueError("rate > 0, per > 0 and burst >= 0 are required")
        exact = Fraction(str(per)) * 1_000_000_000 / Fraction(str(rate))
        interval_ns = max(1, -(-exact.numerator // exact.denominator))
        _check(interval_ns, burst, 1)
        return cls(interval_ns, burst)

    @property
    def limit(self) -> int:
        """Requests a full bucket admits at once (``burst + 1``): the ``RateLimit-Limit`` value."""
        return self.burst + 1
