"""The policy-stage interface every capability implements.

Theory of operation
-------------------
A stage (authenticate, authorize, rate-limit, mask, audit, ...) has two halves, as in Envoy's
filters and Oathkeeper's handlers:

* a *compile* half, run once per configuration load in the master, which validates its settings
  and returns an immutable :class:`Stage` object (or raises ``ValueError`` naming the problem);
* a *per-request* half, :meth:`Stage.check`, run by a worker for every request that matched the
  route the stage is attached to. It returns ``None`` to continue, a :class:`Rejection` to answer
  the client without calling the upstream, or an awaitable of either when it must wait (a JWKS
  refetch, say). The synchronous answer is the fast path; returning an awaitable costs a task.

Stages run in the order the route lists them and the first rejection wins. The route's ``mode``
is applied here, not in each stage: in ``shadow`` mode a rejection is recorded as ``would_deny``
on the request context and the request goes on. "Not my credential" (``None``) is different from
"bad credential" (a rejection) — a stage that does not recognise a request lets the next one try.

Stages may add headers for the upstream (``ctx.upstream_headers``), for the client's response when
the request is forwarded (``ctx.response_headers``; a rejection carries its own), and facts for
the audit record (``ctx.principal``, ``ctx.auth``, ``ctx.roles``, ``ctx.scopes``). They never see
the socket.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Protocol

from fastproxy.net import unmapped

if TYPE_CHECKING:
    from fastproxy.http.head import RequestHead

__all__ = ["Decision", "Rejection", "RequestContext", "Stage", "caller_key", "run_stages"]


class Rejection:
    """Answer the client with ``status``; ``reason`` is the audit/log code, never shown to it."""

    __slots__ = ("headers", "reason", "status")

    def __init__(self, status: int, reason: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers

    def __repr__(self) -> str:
        return f"Rejection({self.status}, {self.reason!r})"


Decision = Rejection | None | Awaitable["Rejection | None"]


class RequestContext:
    """What the stages of one request share: the request, the peer, and what they learned.

    One is made per request on a route with stages. Compiled (setup.py), it is a native class
    and the defaults below are instance fields its constructor sets; interpreted, they are class
    attributes until a stage sets them (a third cheaper to make than with __slots__, measured).
    """

    principal: str | None = None
    auth: str | None = None  # how: "jwt:corp", "api_key:ci-bot"
    caller: bytes | None = None  # caller_key(auth, principal), set with them (made once per token)
    roles: tuple[str, ...] = ()
    scopes: frozenset[str] = frozenset()
    would_deny: str | None = None
    response_headers = b""  # header lines ("Name: value\r\n") for the client's response

    def __init__(self, head: RequestHead, client_ip: str, request_id: bytes) -> None:
        self.head = head
        # Every stage sees the client as IPv4 when it is one (only IPv6 forms start with ':').
        self.client_ip = unmapped(client_ip) if client_ip[:1] == ":" else client_ip
        self.request_id = request_id
        self.upstream_headers: list[tuple[bytes, bytes]] = []


def caller_key(auth: str | None, principal: str | None) -> bytes:
    """How a request authenticated and as whom, as one value that no other pair spells (the key
    of a per-principal rate limit). The method's length leads: an issuer name and an API key id
    may both contain any separator."""
    method = (auth or "").encode()
    return b"%d:%s%s" % (len(method), method, (principal or "").encode())


class Stage(Protocol):
    name: str

    def check(self, ctx: RequestContext) -> Decision: ...


def run_stages(stages: tuple[Stage, ...], ctx: RequestContext, shadow: bool) -> Decision:
    """Run the stages in order: ``None`` (go on), a Rejection, or an awaitable of either.

    Synchronous stages never create a task; the first stage that answers with an awaitable hands
    the rest of the chain to :func:`_finish`, which the caller awaits.
    """
    for index, stage in enumerate(stages):
        decision = stage.check(ctx)
        if decision is None:
            continue
        if isinstance(decision, Rejection):
            if not shadow:
                return decision
            if ctx.would_deny is None:
                ctx.would_deny = decision.reason
            continue
        return _finish(stages[index + 1 :], decision, ctx, shadow)
    return None


async def _finish(
    rest: tuple[Stage, ...], pending: Awaitable[Rejection | None], ctx: RequestContext, shadow: bool
) -> Rejection | None:
    decision = await pending
    if decision is not None:
        if not shadow:
            return decision
        if ctx.would_deny is None:
            ctx.would_deny = decision.reason
    following = run_stages(rest, ctx, shadow)
    if following is None or isinstance(following, Rejection):
        return following
    return await following
