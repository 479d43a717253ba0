"""One client connection: HTTP/1.1 keep-alive and pipelining, streaming both ways.

Theory of operation
-------------------
The connection reads requests with :class:`~fastproxy.http.parser.RequestParser` and answers
them strictly in order. Each request is an :class:`Exchange`. Only the first exchange of the queue
(``active``) is forwarded; a pipelined request that arrives behind it waits with reading paused,
so what it can buffer is bounded by one read. Bodies are streamed: chunks go to the upstream as
they arrive, or wait in a bounded buffer while the upstream connection is being opened (reading
pauses over the high-water mark).

Back-pressure runs both ways. When the client's transport buffer passes its high-water mark the
upstream connection stops reading; when the upstream's does, the client connection stops reading.
Pausing is tracked per reason (pipelining, buffering, upstream) so one reason ending never
resumes a read another still needs paused.

Timeouts are deadlines on the connection, checked by the worker's sweep (:meth:`on_deadline`):
waiting for the first byte or for an idle keep-alive request (close silently), reading a head
(408), reading a body (408), or a client that stopped reading its response (close).

Errors: a protocol error answers its status and closes the connection — after the response of an
earlier request still in flight, never in the middle of it. An upstream failure before the
response head is a 502/504; after it, the client connection is closed so the truncation shows.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from time import monotonic as _time_monotonic
from typing import Final, cast

from fastproxy.http.errors import ProtocolError, error_response
from fastproxy.http.forward import LAST_CHUNK, chunk, client_address, upstream_request_head
from fastproxy.http.head import RequestHead
from fastproxy.http.parser import RequestParser
from fastproxy.masking import CompiledMask
from fastproxy.net import in_networks
from fastproxy.policy import Rejection, RequestContext, run_stages
from fastproxy.routing import Route
from fastproxy.server.state import INF, WorkerState
from fastproxy.server.upstream import UpstreamConnection, UpstreamError, UpstreamPool

__all__ = ["ClientConnection", "Exchange"]

log: Final = logging.getLogger("fastproxy.worker")

# An imported function, bound once: compiled code looks a plain imported name up in the module's
# dict at every call, and a Final is a C static.
monotonic: Final = _time_monotonic

_WRITE_HIGH_WATER: Final = 256 * 1024
_BUFFER_HIGH_WATER: Final = 256 * 1024

# Reasons to pause reading from the client.
_PAUSE_PIPELINE: Final = 1
_PAUSE_BUFFER: Final = 2
_PAUSE_UPSTREAM: Final = 4
_PAUSE_DONE: Final = 8  # nothing more will be read (upgrade, protocol error)

# What the connection's deadline means when it passes.
_IDLE: Final = 0  # no request under way: close quietly
_HEAD: Final = 1  # a request head is arriving: 408
_BODY: Final = 2  # a request body is arriving: 408
_SEND: Final = 3  # the client does not read its response: close

# Seconds an idle keep-alive connection is left open at a graceful stop (see close_if_idle).
DRAIN: Final = 1.0

_RETRY_SOON: Final = ((b"Retry-After", b"1"),)

_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


class Exchange:
    """One request and its response.

    Slots, every one set in ``__init__``: a worker meets each request with cold caches, and an
    object whose fields lie in one block costs fewer misses than an instance dict with class
    defaults behind it (measured with ``bench.micro_path --cold``: 0.3-0.5 us per request).
    """

    __slots__ = (
        "allowed",
        "buffered",
        "bytes_in",
        "bytes_out",
        "conn",
        "ctx",
        "discard",
        "head",
        "keep_alive",
        "mask",
        "mask_skipped",
        "masked",
        "pending_body",
        "reason",
        "recorded",
        "request_done",
        "request_id",
        "response_done",
        "response_extra",
        "response_started",
        "retried",
        "route",
        "started",
        "status",
        "upstream",
        "upstream_head",
    )

    def __init__(self, conn: ClientConnection, head: RequestHead, started: float) -> None:
        self.conn = conn
        self.head = head
        self.keep_alive = head.keep_alive
        # When the head was read (time.monotonic: the loop's clock counts whole milliseconds).
        self.started = started
        self.request_id = b""
        self.route: Route | None = None
        self.upstream: UpstreamConnection | None = None
        self.upstream_head = b""
        # Body chunks read before an upstream connection was attached, or None once attached.
        self.pending_body: list[bytes] | None = []
        self.buffered = 0
        self.request_done = False
        self.response_started = False
        self.response_done = False
        self.response_extra = b""  # header lines the stages add to the upstream's response
        self.mask: CompiledMask | None = None  # the route's, unless the caller is exempt
        self.masked = 0  # values replaced, for the audit record
        self.mask_skipped = ""  # why a masked route's response went out unmasked
        self.discard = False  # the rest of the request body is read and dropped
        self.retried = False
        self.status = 0
        self.allowed = True  # False once the proxy answers itself (every such answer is a deny)
        self.reason = "ok"  # the reason code of the decision, for the audit record
        self.ctx: RequestContext | None = None  # what the stages learned (principal, ...)
        self.bytes_in = 0  # request body bytes read
        self.bytes_out = 0  # response bytes written to the client
        self.recorded = False  # counted and audited (once, however it ended)

    def retryable(self) -> bool:
        return not self.retried and not self.head.has_body and self.head.method in _IDEMPOTENT


class ClientConnection(asyncio.Protocol):
    # -- connection state ---------------------------------------------------------------------

    def __init__(self, state: WorkerState, proto: bytes) -> None:
        self.state = state
        self.proto = proto
        self.transport: asyncio.Transport | None = None
        # transport.write, bound in connection_made: a call through the transport, which is not
        # compiled, looks the name up on its type every time.
        self._write: Callable[[bytes], None] | None = None
        self.parser = RequestParser(self, state.limits, state.credential_header)
        self.peer = ""
        self.peer_bytes = b""
        self.peer_trusted = False
        self.deadline = INF
        self.deadline_kind = _IDLE
        self.paused = 0
        self.write_paused = False
        self.requests = 0  # requests read on this connection
        self.closing = False  # close once the answers under way are written
        self.lost = False  # the transport is gone: nothing more can be written
        self.deferred_error: ProtocolError | None = None
        # -- per-request state
        self.active: Exchange | None = None  # being answered
        self.reading: Exchange | None = None  # being read (the same, or a pipelined one)
        self.queue: deque[Exchange] = deque()  # pipelined, waiting for ``active``
        # Upstream writes gathered during one data_received, sent at once.
        self._feeding = False
        self._out: list[bytes] = []
        self._out_to: UpstreamConnection | None = None

    # -- protocol interface -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self._write = transport.write
        state = self.state
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else "unix"
        self.peer_bytes = self.peer.encode()
        self.peer_trusted = in_networks(self.peer, state.trusted)
        transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)
        state.connections.add(self)
        if len(state.connections) > state.config.server.max_connections:
            transport.write(
                error_response(503, state.new_request_id(), close=True, headers=((b"Retry-After", b"1"),))
            )
            self._close()
            return
        if state.stopping:
            self.closing = True  # accepted as the listener closed: one answer, then close
        self._set_deadline(_IDLE, state.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        self.closing = self.lost = True
        active = self.active
        if active is not None and active.response_started and not active.recorded:
            # The client left in the middle of its response: what was sent is on record.
            active.reason = "client_gone"
            self._record(active)
        for exchange in (self.active, self.reading, *self.queue):
            if exchange is not None and exchange.upstream is not None:
                exchange.upstream.abort()
                exchange.upstream = None
        self.active = self.reading = None
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        if self.paused & _PAUSE_DONE:
            return
        self._feeding = True
        try:
            self.parser.feed(data)
        except ProtocolError as exc:
            self._protocol_error(exc)
        except Exception:
            log.exception("error handling a request")
            self._protocol_error(ProtocolError(500, "internal_error"))
        finally:
            self._feeding = False
            if self._out:
                self._flush_upstream()
        if self.parser.in_head and self.deadline_kind != _HEAD:
            # Part of a head arrived: the rest has header_timeout from now.
            self._set_deadline(_HEAD, self.state.header_timeout)
        if self.parser.upgraded and not self.paused & _PAUSE_DONE:
            # llhttp stops at an Upgrade/CONNECT request: answer it as plain HTTP, then close.
            self.closing = True
            last = self.queue[-1] if self.queue else self.active
            if last is not None and not last.response_started:
                last.keep_alive = False
            self._pause(_PAUSE_DONE)

    def eof_received(self) -> bool | None:
        # A client that half-closes after its whole request still gets the response, and then
        # the connection ends; one that leaves in the middle of a request (its head or its
        # body) ends the exchange now.
        if self.active is not None and self.reading is None and not self.parser.in_head:
            self.closing = True
            if not self.active.response_started:
                self.active.keep_alive = False
            return True
        return False

    def pause_writing(self) -> None:
        self.write_paused = True
        exchange = self.active
        if exchange is not None and exchange.upstream is not None:
            exchange.upstream.pause_reading()
        self._set_deadline(_SEND, self.state.body_timeout)

    def resume_writing(self) -> None:
        self.write_paused = False
        exchange = self.active
        if exchange is not None and exchange.upstream is not None:
            exchange.upstream.resume_reading()
        if self.deadline_kind == _SEND:
            self.deadline = INF

    # -- parser callbacks (RequestHandler) ----------------------------------------------------

    def on_request(self, head: RequestHead) -> None:
        self.requests += 1
        exchange = Exchange(self, head, monotonic())
        if self.closing:
            exchange.keep_alive = False
        self.reading = exchange
        if head.has_body:
            self._set_deadline(_BODY, self.state.body_timeout)
        else:
            self.deadline_kind = _IDLE
            self.deadline = INF
        if self.active is None:
            self.active = exchange
            self._begin(exchange)
        else:
            self.queue.append(exchange)
            self._pause(_PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        exchange = self.reading
        assert exchange is not None
        self.deadline = self.state.now + self.state.body_timeout
        exchange.bytes_in += len(body)
        if exchange.discard:
            return
        if exchange.upstream is not None:
            self._send_upstream(exchange.upstream, chunk(body) if exchange.head.chunked else body)
            return
        pending = exchange.pending_body
        assert pending is not None
        pending.append(body)
        exchange.buffered += len(body)
        if exchange.buffered > _BUFFER_HIGH_WATER:
            self._pause(_PAUSE_BUFFER)

    def on_request_end(self) -> None:
        exchange = self.reading
        assert exchange is not None
        self.reading = None
        self.deadline = INF
        exchange.request_done = True
        if exchange.upstream is not None and not exchange.discard and exchange.head.chunked:
            self._send_upstream(exchange.upstream, LAST_CHUNK)
        if exchange.response_done:
            self._finish(exchange)

    # -- the exchange -------------------------------------------------------------------------

    def _begin(self, exchange: Exchange) -> None:
        state = self.state
        head = exchange.head
        exchange.request_id = head.request_id or state.new_request_id()
        route = state.router.match(head.method, head.path)
        if route is None:
            self._reject(exchange, 404, "no_route")
            return
        exchange.route = route
        ctx = None
        if route.stages:
            client_ip = self.peer if not self.peer_trusted else self._client_ip(head)
            ctx = RequestContext(head, client_ip, exchange.request_id)
            exchange.ctx = ctx
            decision = run_stages(route.stages, ctx, route.shadow)
            if decision is not None:
                if isinstance(decision, Rejection):
                    self._reject(exchange, decision.status, decision.reason, decision.headers)
                else:
                    state.loop.create_task(self._decide_later(exchange, route, ctx, decision))
                return
        self._admit(exchange, route, ctx)

    def _admit(self, exchange: Exchange, route: Route, ctx: RequestContext | None) -> None:
        """The stages (if any) let the request through: take what they added, then forward."""
        head = exchange.head
        extra: list[tuple[bytes, bytes]] = []
        if ctx is not None:
            if ctx.would_deny is not None:
                self._log_shadow(exchange, ctx)
            exchange.response_extra = ctx.response_headers
            extra = ctx.upstream_headers
        # A public route has no roles to be exempt by.
        if route.mask is not None and (ctx is None or route.mask.applies_to(ctx.roles)):
            exchange.mask = route.mask
        if route.forward_credentials and (head.authorization is not None or head.api_key is not None):
            extra = [*extra, *self._credentials(head)]
        self._forward(exchange, route, extra)

    async def _decide_later(
        self, exchange: Exchange, route: Route, ctx: RequestContext, pending: Awaitable[Rejection | None]
    ) -> None:
        try:
            decision = await pending
        except Exception:
            log.exception("policy stage failed")
            decision = Rejection(500, "internal_error")
        if exchange is not self.active or self.lost:
            return
        if decision is not None:
            self._reject(exchange, decision.status, decision.reason, decision.headers)
            return
        self._admit(exchange, route, ctx)

    def _log_shadow(self, exchange: Exchange, ctx: RequestContext) -> None:
        # A shadow-mode route served what enforcement would have refused (the audit stage will
        # record it too); the reason code only, never a credential.
        log.debug(
            "request %s: shadow: would deny (%s), forwarded", exchange.request_id.decode(), ctx.would_deny
        )

    def _audit(self, exchange: Exchange) -> None:
        """The exchange's one audit record (a full queue is the client's gap record, not ours)."""
        audit = self.state.audit
        assert audit is not None
        head, route, ctx = exchange.head, exchange.route, exchange.ctx
        audit.submit(
            exchange.request_id,
            ctx.client_ip if ctx is not None else self._client_ip(head),
            head.method,
            head.path,
            route.name if route is not None else None,
            ctx.principal if ctx is not None else None,
            ctx.auth if ctx is not None else None,
            "allow" if exchange.allowed else "deny",
            exchange.reason,
            route.mode if route is not None else "enforce",
            exchange.status,
            # The upstream called, whether it answered or failed (502, 504); None when the
            # proxy answered before calling one.
            route.upstream_name if route is not None and exchange.upstream_head else None,
            (monotonic() - exchange.started) * 1000.0,
            exchange.bytes_in,
            exchange.bytes_out,
            exchange.masked,
            ctx.would_deny if ctx is not None else None,
            exchange.mask_skipped or None,
        )

    def _credentials(self, head: RequestHead) -> list[tuple[bytes, bytes]]:
        credentials = []
        if head.authorization is not None:
            credentials.append((b"Authorization", head.authorization))
        if head.api_key is not None and self.state.credential_header is not None:
            credentials.append((self.state.credential_header, head.api_key))
        return credentials

    def _client_ip(self, head: RequestHead) -> str:
        if not self.peer_trusted:
            return self.peer
        return client_address(self.peer, head.forwarded_for, self.state.trusted)

    def _forward(self, exchange: Exchange, route: Route, extra: list[tuple[bytes, bytes]]) -> None:
        audit = self.state.audit
        if audit is not None and route.audit_fail_closed and not audit.admits():
            # No record of this request could be kept: it does not happen.
            self._reject(exchange, 503, "audit_unavailable", _RETRY_SOON)
            return
        exchange.upstream_head = upstream_request_head(
            exchange.head,
            self.peer_bytes,
            self.peer_trusted,
            self.proto,
            exchange.request_id,
            extra,
            exchange.mask is not None,  # a whole, identity-coded document, to be masked
        )
        if exchange.head.expect_continue and not exchange.request_done:
            self.write_response(_CONTINUE)
        pool = self.state.pools[route.upstream_name]
        upstream = pool.acquire()
        if upstream is not None:
            self._attach(exchange, upstream)
        else:
            self.state.loop.create_task(self._connect(exchange, pool))

    async def _connect(self, exchange: Exchange, pool: UpstreamPool) -> None:
        try:
            upstream = await pool.connect()
        except UpstreamError as exc:
            if exchange is self.active and not self.lost:
                self.upstream_failed(exchange, exc.status, exc.reason)
            return
        if exchange is not self.active or self.lost:
            pool.release(upstream)
            return
        self._attach(exchange, upstream)

    def _attach(self, exchange: Exchange, upstream: UpstreamConnection) -> None:
        exchange.upstream = upstream
        upstream.bind(exchange)
        pending = exchange.pending_body
        exchange.pending_body = None
        if pending:
            if exchange.head.chunked:
                pending = [chunk(b) for b in pending]
            data = b"".join([exchange.upstream_head, *pending])
        else:
            data = exchange.upstream_head
        if exchange.request_done and exchange.head.chunked:
            data += LAST_CHUNK
        if exchange.request_done or not exchange.head.has_body:
            upstream.write(data)  # nothing else of this request will follow
        else:
            self._send_upstream(upstream, data)
        if self.paused & _PAUSE_BUFFER:
            self._resume(_PAUSE_BUFFER)
        if self.write_paused:
            upstream.pause_reading()

    def retry(self, exchange: Exchange) -> None:
        """The reused connection was closed under the request before any answer: once more."""
        exchange.retried = True
        exchange.upstream = None
        exchange.pending_body = []
        assert exchange.route is not None
        pool = self.state.pools[exchange.route.upstream_name]
        self.state.loop.create_task(self._connect(exchange, pool))

    # -- answers, called by the upstream side too --------------------------------------------

    def write_response(self, data: bytes) -> None:
        # uvloop raises on a write to a closed handle; an answer for a gone client is dropped.
        write = self._write
        if not self.lost and write is not None:
            write(data)
            if self.active is not None:
                self.active.bytes_out += len(data)

    def write_last(self, exchange: Exchange, data: bytes) -> None:
        """The last bytes of ``exchange``'s response, audited before they are written.

        A worker killed between the two then leaves the record to the writer's gap accounting
        (its seq was assigned), never an answered request without a trace. Only once the whole
        request was read: until then the record is not complete (bytes_in), and it is made as
        the exchange finishes.
        """
        if exchange.request_done and not exchange.recorded and not self.lost and exchange is self.active:
            exchange.bytes_out += len(data)
            try:
                self._record(exchange)
            finally:  # the answer goes out whatever happened to its record
                write = self._write
                if write is not None:
                    write(data)
            return
        self.write_response(data)

    def response_end(self, exchange: Exchange) -> None:
        exchange.upstream = None
        exchange.response_done = True
        if self.paused & _PAUSE_UPSTREAM:
            self._resume(_PAUSE_UPSTREAM)
        if exchange.request_done:
            self._finish(exchange)
        else:
            # The upstream answered before the whole body arrived: read the rest and drop it.
            exchange.discard = True

    def upstream_failed(self, exchange: Exchange, status: int, reason: str) -> None:
        exchange.upstream = None
        if exchange.response_started:
            self.abort(exchange, reason)
        else:
            self._reject(exchange, status, reason)

    def abort(self, exchange: Exchange, reason: str) -> None:
        """The response cannot be completed: close, so the client sees it was cut short."""
        log.warning("request %s: response cut short: %s", exchange.request_id.decode(), reason)
        exchange.upstream = None
        if exchange.response_started:
            exchange.reason = reason  # the status already went out; the record says why it ends
            self._record(exchange)
        self._close(abort=True)

    def pause_for_upstream(self) -> None:
        self._pause(_PAUSE_UPSTREAM)

    def resume_for_upstream(self) -> None:
        self._resume(_PAUSE_UPSTREAM)

    def _reject(
        self,
        exchange: Exchange,
        status: int,
        reason: str,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        # A body still to come is read and dropped, unless the client is waiting for 100-continue
        # (it may never send it) or the answer ends the connection anyway.
        close = self.closing or (exchange.head.expect_continue and not exchange.request_done)
        if close:
            exchange.keep_alive = False
        log.debug("request %s: %d %s", exchange.request_id.decode(), status, reason)
        exchange.status = status
        exchange.allowed = False
        exchange.reason = reason
        exchange.response_started = True
        self.write_last(
            exchange,
            error_response(
                status,
                exchange.request_id,
                close=not exchange.keep_alive,
                headers=headers,
                head_only=exchange.head.method == "HEAD",
            ),
        )
        if reason == "rate_limited" and exchange.route is not None and self.state.metrics is not None:
            self.state.metrics.ratelimit_limited(self.state.route_rows[exchange.route.name])
        self.response_end(exchange)
        if close and exchange is self.active:
            self._close()

    def _record(self, exchange: Exchange) -> None:
        """Count and audit an exchange once, as it ends (answered, or cut short)."""
        if exchange.recorded:
            return
        exchange.recorded = True
        state = self.state
        metrics = state.metrics
        if metrics is not None:
            route = exchange.route
            metrics.request(
                state.route_rows[route.name] if route is not None else state.unmatched_row,
                exchange.status,
                exchange.allowed,
                monotonic() - exchange.started,
            )
        if state.audit is not None:
            self._audit(exchange)

    def _finish(self, exchange: Exchange) -> None:
        self._record(exchange)
        self.active = None
        if exchange.keep_alive and self.queue and not self.lost:
            # Pipelined requests read before the connection began to close are still answered.
            nxt = self.queue.popleft()
            self.active = nxt
            if not self.queue:
                if self.closing and self.deferred_error is None:
                    nxt.keep_alive = False
                self._resume(_PAUSE_PIPELINE)
            self._begin(nxt)
            return
        if not exchange.keep_alive or self.closing or self.state.stopping:
            if self.deferred_error is not None and exchange.keep_alive:
                self._answer_error(self.deferred_error)
            self._close()
            return
        self._set_deadline(_IDLE, self.state.keepalive_timeout)

    # -- errors and timeouts ------------------------------------------------------------------

    def _protocol_error(self, exc: ProtocolError) -> None:
        log.debug("protocol error from %s: %d %s (%s)", self.peer, exc.status, exc.reason, exc.detail)
        self._pause(_PAUSE_DONE)
        self.closing = True
        reading = self.reading
        if reading is not None and reading.upstream is not None:
            # The request being streamed upstream is cut: that connection is unusable.
            reading.upstream.abort()
            reading.upstream = None
        active = self.active
        if active is not None and active is not reading and not active.response_done:
            # An earlier request is still being answered; the error goes after its response.
            self.deferred_error = exc
            return
        if reading is not None and reading.response_started:
            self._close(abort=True)
            return
        self._answer_error(exc)
        self._close()

    def _answer_error(self, exc: ProtocolError) -> None:
        reading = self.reading
        request_id = (
            reading.request_id if reading and reading.request_id else None
        ) or self.state.new_request_id()
        response = error_response(exc.status, request_id, close=True)
        self.write_response(response)
        if reading is not None:
            # Its head was read (the error is in its body, or it is too slow): counted and
            # audited as any other answer, with its route, principal and upstream called.
            reading.request_id = request_id
            reading.status = exc.status
            reading.allowed = False
            reading.reason = exc.reason
            reading.bytes_out = len(response)
            self._record(reading)
            return
        # The head itself broke the protocol: nothing of it is believed.
        state = self.state
        if state.metrics is not None:
            state.metrics.request(state.unmatched_row, exc.status, False, 0.0)
        if state.audit is not None:
            state.audit.submit(
                request_id, self.peer, "", "", None, None, None, "deny", exc.reason, "enforce", exc.status,
                None, 0.0, 0, len(response), 0,
            )  # fmt: skip

    def on_deadline(self) -> None:
        kind = self.deadline_kind
        self.deadline = INF
        if kind in (_IDLE, _SEND):
            self._close(abort=kind == _SEND)
        else:
            self._protocol_error(ProtocolError(408, "timeout", "request head or body too slow"))

    # -- flow control and plumbing ------------------------------------------------------------

    def _set_deadline(self, kind: int, seconds: float) -> None:
        self.deadline_kind = kind
        self.deadline = self.state.now + seconds

    def _pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= reason

    def _resume(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if not self.paused and self.transport is not None and not self.closing:
            self.transport.resume_reading()

    def _send_upstream(self, upstream: UpstreamConnection, data: bytes) -> None:
        if not self._feeding:
            upstream.write(data)
            return
        if self._out_to is not upstream and self._out:
            self._flush_upstream()
        self._out_to = upstream
        self._out.append(data)

    def _flush_upstream(self) -> None:
        upstream = self._out_to
        out = self._out
        if upstream is not None and not upstream.closed:
            upstream.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()
        self._out_to = None

    def _close(self, abort: bool = False) -> None:
        self.closing = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if abort:
                transport.abort()
            else:
                transport.close()

    def close_if_idle(self, drain: float = DRAIN) -> None:
        """Graceful stop: answer what is under way, then close; an idle connection gets ``drain``.

        Closing an idle keep-alive connection at once races with the request its client may be
        sending at that moment, which would then fail with a reset. Instead its next request (if
        it comes within ``drain`` seconds) is answered with ``Connection: close``, and the sweep
        closes it when ``drain`` runs out. A connection that has not sent its first request yet is
        not idle: it was accepted just before the listener closed, and its request is answered
        (header_timeout still applies).
        """
        self.closing = True
        if self.active is not None:
            self.active.keep_alive = False
        elif self.reading is None and not self.parser.in_head and self.requests:
            self._set_deadline(_IDLE, min(drain, max(0.0, self.deadline - self.state.now)))
