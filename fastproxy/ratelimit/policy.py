"""The compile half of rate limits: ``[rate_limits.*]`` checked once per load into specs.

A limit names what it counts by (``key``):

* ``principal`` — the authenticated subject, with how it authenticated (``jwt:corp`` and
  ``api_key:ci`` callers that share a name do not share a bucket);
* ``api_key`` — the API key that authenticated the request; a request authenticated otherwise is
  counted by its method and principal, so it is still limited per caller;
* ``ip`` — the client address, resolved through ``trusted_proxies``;
* ``route`` — the route: one bucket for everyone on it;
* ``header:<name>`` — the value of a request header (a request without it shares one bucket
  with every other request without it).

``principal`` and ``api_key`` need a route with identity; that is checked where routes are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from fastproxy.config.schema import RateLimit
from fastproxy.http.request import HOP_BY_HOP
from fastproxy.ratelimit.gcra import Limit

__all__ = ["IDENTITY_KEYS", "RateLimitSpec", "compile_rate_limits"]

# Keys that count an authenticated caller: only on routes with identity.
IDENTITY_KEYS = frozenset({"principal", "api_key"})

# Headers a header key cannot name: the parser takes them out of the request (hop-by-hop,
# credentials, the ones the proxy sets), so every request would look alike.
_CREDENTIALS = frozenset({b"authorization", b"proxy-authorization"})
_UNUSABLE = HOP_BY_HOP | _CREDENTIALS | {b"content-length", b"expect", b"x-request-id"}

# Every interval and full bucket stays below 2**62 ns (the table's bound on times).
_LONGEST = "2**62 ns, about 146 years"


class FullTableLog:
    """Whether this process has logged that the table had no slot for one of the limit's keys.

    Mutable on purpose, in an otherwise immutable spec: every route that names the limit shares
    it, so the warning comes once per limit (in each worker: they are separate processes).
    """

    __slots__ = ("logged",)

    def __init__(self) -> None:
        self.logged = False


@dataclass(frozen=True, slots=True)
class RateLimitSpec:
    name: str
    key: str  # principal | api_key | ip | route | header
    header: bytes | None  # the lower-cased header name of a header key
    limit: Limit
    fail_open: bool  # when the table has no slot for a key: admit (True) or refuse
    full_log: FullTableLog = field(default_factory=FullTableLog, compare=False, repr=False)

    @property
    def shown_limit(self) -> bytes:
        """``RateLimit-Limit``'s value."""
        return b"%d" % self.limit.limit


def compile_rate_limits(
    settings: Mapping[str, RateLimit], api_key_header: bytes | None, add_error: Callable[[str, str], None]
) -> Mapping[str, RateLimitSpec]:
    specs = {}
    for name, limit in settings.items():
        where = f"rate_limits.{name}"
        key, _, header_name = limit.key.partition(":")
        header = header_name.lower().encode() if header_name else None
        if header is not None and header in _CREDENTIALS | {api_key_header}:
            add_error(
                f"{where}.key",
                f"{header_name} is a credential, which the proxy takes out of the request; "
                "count by api_key or principal",
            )
            continue
        if header is not None and (header in _UNUSABLE or header.startswith((b"x-forwarded-", b"x-auth-"))):
            add_error(
                f"{where}.key", f"{header_name} is not passed on by the proxy; use principal, api_key or ip"
            )
            continue
        # The schema checks rate > 0, per > 0 and burst >= 0, which TOML's inf passes.
        infinite = [what for what in ("rate", "per") if not math.isfinite(getattr(limit, what))]
        for what in infinite:
            add_error(f"{where}.{what}", "must be a finite number")
        if infinite:
            continue
        try:
            compiled = Limit.from_rate(limit.rate, limit.per, limit.burst)
        except ValueError as exc:
            in_range = limit.rate > 0 and limit.per > 0 and limit.burst >= 0
            add_error(
                where,
                "per / rate (the interval) and (burst + 1) * per / rate (a full bucket) must be at "
                f"most {_LONGEST}"
                if in_range
                else str(exc),
            )
            continue
        specs[name] = RateLimitSpec(name, key, header, compiled, limit.on_full == "fail_open")
    return MappingProxyType(specs)
