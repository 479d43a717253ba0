"""The verified-token cache of one issuer in one worker.

Theory of operation
-------------------
Verifying an RS256 signature costs tens of microseconds; a cached token costs a dictionary lookup.
A hit needs the whole token to be equal (two tokens that share a signature but differ anywhere
else are different tokens), but an entry is *found* by the token's last 32 bytes, the tail of its
signature: hashing those instead of a ~700-byte RS256 token saves about 0.1 µs per request. Two
tokens with the same tail take turns in one entry (each turn a miss: a verification, never a
wrong answer); only a verified token is put in the verified table, so a forged one that copies a
real token's signature cannot push that token out of it. A verified entry lives until the
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
from typing import Final, Generic, TypeVar

__all__ = ["TokenCache"]

T = TypeVar("T")

_KEY_BYTES: Final = 32  # how much of a token's end finds its entry (see the module doc)


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
        # key (the token's tail) -> (token, until, value)
        self._good: OrderedDict[bytes, tuple[bytes, float, T]] = OrderedDict()
        self._bad: OrderedDict[bytes, tuple[bytes, float, str]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._good)

    def get(self, token: bytes, now: float) -> T | None:
        """The value cached for a verified ``token`` still valid at ``now``, or None."""
        key = token[-_KEY_BYTES:]
        entry = self._good.get(key)
        if entry is None or entry[0] != token:
            self.misses += 1
            return None
        if now >= entry[1]:
            del self._good[key]
            self.misses += 1
            return None
        self._good.move_to_end(key)
        self.hits += 1
        return entry[2]

    def find(self, token: bytes, now: float) -> T | None:
        """:meth:`get` that counts a hit but not a miss: a look in the caches of several issuers
        before the token is parsed, of which all but one miss by design."""
        key = token[-_KEY_BYTES:]
        entry = self._good.get(key)
        if entry is None or entry[0] != token or now >= entry[1]:
            return None
        self._good.move_to_end(key)
        self.hits += 1
        return entry[2]

    def put(self, token: bytes, value: T, expires_at: float, now: float) -> None:
        """Remember a verified token until ``expires_at`` (its exp, leeway included) or max_age."""
        until = min(expires_at, now + self.max_age)
        if until <= now:
            return
        key = token[-_KEY_BYTES:]
        good = self._good
        good[key] = (token, until, value)
        good.move_to_end(key)
        if len(good) > self.max_entries:
            good.popitem(last=False)

    def get_invalid(self, token: bytes, now: float) -> str | None:
        """The rejection reason remembered for ``token``, or None."""
        key = token[-_KEY_BYTES:]
        entry = self._bad.get(key)
        if entry is None or entry[0] != token:
            return None
        if now >= entry[1]:
            del self._bad[key]
            return None
        return entry[2]

    def put_invalid(self, token: bytes, reason: str, now: float) -> None:
        key = token[-_KEY_BYTES:]
        bad = self._bad
        bad[key] = (token, now + self.bad_ttl, reason)
        bad.move_to_end(key)
        if len(bad) > self.max_bad:
            bad.popitem(last=False)

    def clear(self) -> None:
        self._good.clear()
        self._bad.clear()
