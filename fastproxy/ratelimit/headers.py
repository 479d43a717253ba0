"""The RateLimit-* and Retry-After header values of a decision (sans-I/O).

The numbers follow redis-cell and the IETF RateLimit header fields draft, read for GCRA:

* ``RateLimit-Limit``: requests a full bucket admits at once, ``burst + 1``;
* ``RateLimit-Remaining``: requests that would still be admitted right now;
* ``RateLimit-Reset``: seconds until the bucket is full again (Remaining back to Limit);
* ``Retry-After`` (limited answers only): seconds until the same request would be admitted.

Seconds are whole and rounded up: a client that waits what it was told is never refused for having
come a fraction of a second early. A limited answer always says at least 1.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastproxy.ratelimit.gcra import ALLOWED, LIMITED

__all__ = ["ceil_seconds", "rate_limit_headers"]

_NS = 1_000_000_000


def ceil_seconds(ns: int) -> int:
    """Nanoseconds as whole seconds, rounded up."""
    return -(-ns // _NS)


def rate_limit_headers(limit: int, decision: Sequence[int]) -> tuple[tuple[bytes, bytes], ...]:
    """The headers for ``decision`` (a :class:`~fastproxy.ratelimit.Decision` or the C tuple).

    ``limit`` is the limit's ``burst + 1`` (:attr:`~fastproxy.ratelimit.Limit.limit`). ALLOWED gives
    the three RateLimit-* fields; LIMITED adds Retry-After; NO_SLOT gives only Retry-After (what a
    fail_closed answer needs; a fail_open one sends nothing, the table knowing nothing of the key).
    """
    status, remaining, reset_after_ns, retry_after_ns = decision
    if status == ALLOWED:
        return (
            (b"RateLimit-Limit", b"%d" % limit),
            (b"RateLimit-Remaining", b"%d" % remaining),
            (b"RateLimit-Reset", b"%d" % ceil_seconds(reset_after_ns)),
        )
    retry_after = (b"Retry-After", b"%d" % max(1, ceil_seconds(retry_after_ns)))
    if status == LIMITED:
        return (
            (b"RateLimit-Limit", b"%d" % limit),
            (b"RateLimit-Remaining", b"%d" % remaining),
            (b"RateLimit-Reset", b"%d" % ceil_seconds(reset_after_ns)),
            retry_after,
        )
    return (retry_after,)
