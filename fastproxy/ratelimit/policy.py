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

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from fastproxy.config.schema import RateLimit
from fastproxy.http.request import HOP_BY_HOP
from fastproxy.ratelimit.gcra import Limit

__all__ = ["IDENTITY_KEYS", "RateLimitSpec", "compile_rate_limits"]

# Keys that count an authenticated caller: only on routes with identity.
IDENTITY_KEYS = frozenset({"principal", "api_key"})

# Headers a header key cannot name: the parser takes them out of the request (hop-by-hop,
# credentials, the ones the proxy sets), so every request would look alike.
_UNUSABLE = HOP_BY_HOP | {b"authorization", b"content-length", b"expect", b"x-request-id"}


@dataclass(frozen=True, slots=True)
class RateLimitSpec:
    name: str
    key: str  # principal | api_key | ip | route | header
    header: bytes | None  # the lower-cased header name of a header key
    limit: Limit
    fail_open: bool  # when the table has no slot for a key: admit (True) or refuse

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
        if header is not None and (
            header in _UNUSABLE
            or header == api_key_header
            or header.startswith((b"x-forwarded-", b"x-auth-"))
        ):
            add_error(
                f"{where}.key", f"{header_name} is not passed on by the proxy; use principal, api_key or ip"
            )
            continue
        try:
            compiled = Limit.from_rate(limit.rate, limit.per, limit.burst)
        except ValueError as exc:
            add_error(where, str(exc))
            continue
        specs[name] = RateLimitSpec(name, key, header, compiled, limit.on_full == "fail_open")
    return MappingProxyType(specs)
