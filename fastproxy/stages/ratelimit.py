"""The rate-limit stage: one decision in the shared table per request, after authorization.

It runs last, so a request refused for who it is (401, 403) or where it comes from never spends
anyone's budget. The decision is :meth:`Table.decide` (lock-free, shared by every worker, see
:mod:`fastproxy.ratelimit`). An admitted request's response carries ``RateLimit-Limit``,
``RateLimit-Remaining`` and ``RateLimit-Reset``; a refused one is a 429 with the same fields and
``Retry-After``. In shadow mode a refusal is recorded (``would_deny = rate_limited``) and the
request goes on, with the headers an enforcing route would have sent.

A key the table cannot place (every slot of its probe window held by live keys) follows the
limit's ``on_full``: ``fail_open`` admits without headers, ``fail_closed`` answers 503 with
``Retry-After``. Both are counted by the table, and the first of each limit is logged (once per
limit in each worker, whichever of the limit's routes met it).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from fastproxy.policy import Decision, Rejection, RequestContext, caller_key
from fastproxy.ratelimit import LIMITED, rate_limit_headers, table_key
from fastproxy.ratelimit.policy import RateLimitSpec

if TYPE_CHECKING:
    # The extension's type: imported only for typing, so a proxy without rate limits starts
    # without it (the master refuses to start one with them: ratelimit.require_native).
    from fastproxy.ratelimit._gcra import Table

__all__ = ["RateLimitStage"]

log: Final = logging.getLogger("fastproxy.ratelimit")


class RateLimitStage:
    name = "rate_limit"

    __slots__ = (
        "_by_ip",
        "_key",
        "_prefix",
        "_shown_limit",
        "burst",
        "interval_ns",
        "route",
        "spec",
        "table",
    )

    def __init__(self, spec: RateLimitSpec, table: Table, route: str) -> None:
        self.spec = spec
        self.table = table
        self.route = route
        self.interval_ns = spec.limit.interval_ns
        self.burst = spec.limit.burst
        self._prefix = table_key(spec.name, b"")  # the key is this plus the value
        self._by_ip = spec.key == "ip"
        self._key = spec.key  # read per request: RateLimitSpec is not compiled
        self._shown_limit = spec.shown_limit

    def check(self, ctx: RequestContext) -> Decision:
        # The common key without a call; an IPv4-mapped client is already IPv4 (RequestContext).
        value = ctx.client_ip if self._by_ip else self._value(ctx)
        # Admitted: the RateLimit-* lines, made in C with the decision; otherwise decide()'s tuple.
        result = self.table.admit(self._prefix, value, self.interval_ns, self.burst, self._shown_limit)
        if type(result) is bytes:
            ctx.response_headers += result
            return None
        decision = result
        if decision[0] == LIMITED:
            headers = rate_limit_headers(self.spec.limit.limit, decision)
            # In shadow mode the request goes on, with the RateLimit-* fields an enforcing route
            # would have sent (Retry-After belongs to the 429 only).
            ctx.response_headers += b"".join(b"%s: %s\r\n" % pair for pair in headers[:3])
            return Rejection(429, "rate_limited", headers)
        if not self.spec.full_log.logged:
            self.spec.full_log.logged = True
            log.warning(
                "rate limit %s: the table has no free slot for a key (--ratelimit-slots); %s",
                self.spec.name,
                "admitting (on_full = fail_open)"
                if self.spec.fail_open
                else "refusing (on_full = fail_closed)",
            )
        if self.spec.fail_open:
            return None
        return Rejection(503, "rate_limit_full", rate_limit_headers(self.spec.limit.limit, decision))

    def _value(self, ctx: RequestContext) -> bytes:
        key = self._key
        if key == "principal":
            return _caller(ctx)
        if key == "ip":
            return ctx.client_ip.encode()
        if key == "api_key":
            auth = ctx.auth or ""
            if auth.startswith("api_key:"):
                return auth.encode()
            return _caller(ctx)
        if key == "route":
            return self.route.encode()
        header = self.spec.header
        for name, value in ctx.head.headers:
            if name.lower() == header:
                return value
        return b""


def _caller(ctx: RequestContext) -> bytes:
    # Authentication left the key on the context, made once per token; else: anonymous.
    caller = ctx.caller
    return caller if caller is not None else caller_key(ctx.auth, ctx.principal)
