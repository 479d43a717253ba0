"""The verified-token cache of one issuer in one worker.

Theory of operation
-------------------
Verifying an RS256 signature costs tens of microseconds; a cached token costs a dictionary lookup.
Entries are keyed by the whole token (its bytes, not a hash of its signature: two tokens that
share a signature but differ anywhere else are different keys). A verified entry lives until the
token's ``exp`` or ``max_age`` after it was verified, whichever is first, and ``exp`` is checked
again on every hit, so a cached token is never accepted a moment longer than a fresh
verification would accept it. The owner clears the cache when its issuer's keys change (a key
removed from the JWKS must stop authenticating the tokens it signed).

Invalid tokens are remembered too, briefly and in a smaller table, so that a client replaying a
forged token does not cost a signature verification per request.

Both tables are bounded LRUs: a hit moves the entry to the young end, an insertion over the
bound evicts the oldest. ``now`` is wall-clock seconds (the clock ``exp`` is measured on).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

__all__ = ["TokenCache"]

T = TypeVar("T")


class TokenCache(Generic[T]):
    __slots__ = ("_bad", "_good", "bad_ttl", "hits", "max_age", "max_bad", "max_entries", "misses")

    def __init__(
        self,
        max_entries: int = 10_000,
        max_age: float = 300.0,
        max_bad: int = 1_000,
        bad_ttl: float = 10.0,
    ) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self.max_bad = max_bad
        self.bad_ttl = bad_ttl
        self._good: OrderedDict[bytes, tuple[float, T]] = OrderedDict()
        self._bad: OrderedDict[bytes, tuple[float, str]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._good)

    def get(self, token: bytes, now: float) -> T | None:
        """The value cached for a verified ``token`` still valid at ``now``, or None."""
        entry = self._good.get(token)
        if entry is None:
            self.misses += 1
            return None
        if now >= entry[0]:
            del self._good[token]
            self.misses += 1
            return None
        self._good.move_to_end(token)
        self.hits += 1
        return entry[1]

    def find(self, token: bytes, now: float) -> T | None:
        """:meth:`get` that counts a hit but not a miss: a look in the caches of several issuers
        before the token is parsed, of which all but one miss by design."""
        entry = self._good.get(token)
        if entry is None or now >= entry[0]:
            return None
        self._good.move_to_end(token)
        self.hits += 1
        return entry[1]

    def put(self, token: bytes, value: T, expires_at: float, now: float) -> None:
        """Remember a verified token until ``expires_at`` (its exp, leeway included) or max_age."""
        until = min(expires_at, now + self.max_age)
        if until <= now:
            return
        good = self._good
        good[token] = (until, value)
        good.move_to_end(token)
        if len(good) > self.max_entries:
            good.popitem(last=False)

    def get_invalid(self, token: bytes, now: float) -> str | None:
        """The rejection reason remembered for ``token``, or None."""
        entry = self._bad.get(token)
        if entry is None:
            return None
        if now >= entry[0]:
            del self._bad[token]
            return None
        return entry[1]

    def put_invalid(self, token: bytes, reason: str, now: float) -> None:
        bad = self._bad
        bad[token] = (now + self.bad_ttl, reason)
        bad.move_to_end(token)
        if len(bad) > self.max_bad:
            bad.popitem(last=False)

    def clear(self) -> None:
        self._good.clear()
        self._bad.clear()
