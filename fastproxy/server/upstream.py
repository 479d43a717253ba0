"""Pooled keep-alive connections to the upstreams.

Theory of operation
-------------------
Each worker keeps, per named upstream, a LIFO stack of idle HTTP/1.1 connections. A request takes
the most recently used one (its TCP state is the warmest and the least likely to have been closed
by the upstream's idle timer) or, when none is idle, opens a new one; when the response is complete
the connection goes back on the stack unless the stack already holds ``pool_size`` (then it is
closed, like nginx's ``keepalive N``). Size the pool at least at the expected concurrency per
worker: every connection closed for lack of room is a TCP handshake on a later request.

An upstream may close an idle connection at any time. The close is seen as ``connection_lost``
(or an EOF) and removes the connection from the stack, so it is never handed out again. The
remaining race — the upstream closes just as a request is written — shows as a connection lost
before any response byte. Such a request is retried once on a new connection when that is safe:
its method is idempotent and it has no body (nothing of it can have been consumed). Anything else
is answered 502, never silently replayed.

Responses are parsed with httptools' HttpResponseParser and re-framed for the client (see
:mod:`fastproxy.http.response`). Writes to the client are gathered for the duration of one
``data_received`` and written at once, so a small response costs one send.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

import httptools

from fastproxy.config.model import Upstream
from fastproxy.http import response
from fastproxy.http.forward import LAST_CHUNK, chunk
from fastproxy.http.response import Framing
from fastproxy.masking import MASK, REFUSE, TOO_LARGE, CompiledMask
from fastproxy.server.state import INF, WorkerState

if TYPE_CHECKING:
    from fastproxy.server.connection import Exchange

__all__ = ["UpstreamConnection", "UpstreamError", "UpstreamPool"]

log: Final = logging.getLogger("fastproxy.upstream")

_WRITE_HIGH_WATER: Final = 256 * 1024
_MAX_HEAD: Final = 65536  # bytes of response head accepted from an upstream
# Imported functions, bound once: compiled code looks a plain imported name up in the module's
# dict at every call, and a Final is a C static.
response_head: Final = response.response_head
media_fields: Final = response.media_fields
_CLOSE_END: Final = b"Connection: close\r\n\r\n"  # how response_head ends a head that ends its connection


class _Refused(Exception):
    """Raised from a parser callback: the response cannot be masked and its mask says refuse."""


class _Masking:
    """A response being buffered to be masked: the client head waits for the new length.

    The head response_head made ends with its framing line (the proxy's own; none for a
    close-delimited body), then ``Connection: close`` when the connection ends, then the blank
    line; the stages' lines (``extra``) go before the blank line. Held with the bounds of its
    framing line, the head takes its new ``Content-Length`` (and a ``Connection: close`` the
    exchange came to need meanwhile) without being searched or rebuilt until it goes out.
    """

    __slots__ = ("client_head", "close", "extra", "framing_end", "framing_start", "mask", "pieces", "size")

    def __init__(
        self, mask: CompiledMask, client_head: bytes, framing: int, close: bool, extra: bytes
    ) -> None:
        self.mask = mask
        self.client_head = client_head
        self.close = close
        self.extra = extra
        end = len(client_head) - (len(_CLOSE_END) if close else 2)
        self.framing_end = end
        # The framing line is the head's last before ``end``: it starts after the LF before it.
        self.framing_start = end if framing == Framing.CLOSE else client_head.rfind(b"\n", 0, end - 1) + 1
        self.pieces: list[bytes] = []
        self.size = 0

    def head(self, keep_alive: bool) -> bytes:
        """The head as it goes out with the body unmasked, in its own framing.

        A graceful stop or the client's half-close can end keep-alive after the head was made
        (``keep_alive`` is the exchange's now); a held head can still say ``Connection: close``
        (so in :meth:`response`).
        """
        head = self.client_head
        start = self.framing_start
        close = b"Connection: close\r\n" if self.close or not keep_alive else b""
        return b"".join((head[:start], head[start : self.framing_end], close, self.extra, b"\r\n"))

    def response(self, keep_alive: bool, body: bytes) -> bytes:
        """Head and ``body`` as they go out, the head with ``len(body)`` as its Content-Length."""
        close = b"Connection: close\r\n" if self.close or not keep_alive else b""
        return b"".join(
            (
                self.client_head[: self.framing_start],
                b"Content-Length: %d\r\n" % len(body),
                close,
                self.extra,
                b"\r\n",
                body,
            )
        )


class UpstreamError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class UpstreamPool:
    __slots__ = ("idle", "metrics_row", "open", "pool_size", "state", "upstream")

    def __init__(self, upstream: Upstream, state: WorkerState) -> None:
        self.upstream = upstream
        self.pool_size = upstream.pool_size  # read per request: Upstream is not compiled
        self.state = state
        self.idle: list[UpstreamConnection] = []
        self.open = 0  # connections open, idle or busy (the upstream_connections_open gauge)
        metrics = state.metrics
        self.metrics_row = metrics.layout.upstreams.get(upstream.name, -1) if metrics is not None else -1

    def acquire(self) -> UpstreamConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    async def connect(self) -> UpstreamConnection:
        upstream = self.upstream
        loop = self.state.loop
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: UpstreamConnection(self), upstream.address.host, upstream.address.port
                ),
                upstream.connect_timeout,
            )
        except TimeoutError:
            # Unreachable, as a refused connect is: 502 (504 is for a response that is late).
            self._count_connect_error()
            raise UpstreamError(502, "upstream_connect_timeout") from None
        except OSError as exc:
            log.warning("upstream %s: connect to %s failed: %s", upstream.name, upstream.address, exc)
            self._count_connect_error()
            raise UpstreamError(502, "upstream_connect_error") from None
        return conn

    def _count_connect_error(self) -> None:
        metrics = self.state.metrics
        if metrics is not None and self.metrics_row >= 0:
            metrics.upstream_connect_error(self.metrics_row)

    def release(self, conn: UpstreamConnection) -> None:
        if len(self.idle) < self.pool_size and not self.state.stopping:
            conn.idle_since = self.state.now
            self.idle.append(conn)
        else:
            conn.close()

    def close_idle(self, now: float) -> None:
        """Close connections idle for longer than ``idle_timeout`` (the oldest are at the bottom)."""
        limit = now - self.upstream.idle_timeout
        idle = self.idle
        while idle and (idle[0].idle_since <= limit or self.state.stopping):
            idle.pop(0).close()

    def forget(self, conn: UpstreamConnection) -> None:
        self.open -= 1
        if conn in self.idle:
            self.idle.remove(conn)


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.state = pool.state
        self.transport: asyncio.Transport | None = None
        # Methods of objects that are not compiled, bound once: a call through the object looks
        # the name up on its type every time (transport.write is bound in connection_made).
        self._write: Callable[[bytes], None] | None = None
        self._new_parser()
        self.exchange: Exchange | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self.deadline = INF
        self.reading_paused = False
        self.timeout = pool.upstream.timeout
        # -- per-response state; framing, until_close and keep_alive are set for each response
        self.head_buf = b""  # the response head so far (see on_headers_complete)
        self.out: list[bytes] = []  # client writes gathered during one data_received
        self.framing = Framing.NONE
        self.received = False
        self.interim = False
        self.started = False
        self.complete = False
        self.until_close = False
        self.junk = False
        self.masking: _Masking | None = None
        self.refused = ""  # why an unmaskable response is refused (see _Refused)
        # llhttp forgets keep-alive once on_message_complete returns: remember it there.
        self.keep_alive = False

    # -- used by the client side ----------------------------------------------------------------

    def bind(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.deadline = self.state.now + self.timeout

    def _new_parser(self) -> None:
        parser = httptools.HttpResponseParser(self)
        self.parser = parser
        self._feed = parser.feed_data
        self._status = parser.get_status_code
        self._should_keep_alive = parser.should_keep_alive

    def write(self, data: bytes) -> None:
        write = self._write
        if not self.closed and write is not None:
            write(data)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True

    def abort(self) -> None:
        """Drop the connection mid-exchange (the client went away or failed); never reused."""
        self.exchange = None
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.closed = True

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def on_deadline(self) -> None:
        exchange = self.exchange
        self.deadline = INF
        if exchange is None:
            return
        log.warning(
            "upstream %s: no response within %ss",
            self.pool.upstream.name,
            self.pool.upstream.timeout,
        )
        self.abort()
        exchange.conn.upstream_failed(exchange, 504, "upstream_timeout")

    # -- protocol interface -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self._write = transport.write
        transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)
        pool = self.pool
        pool.open += 1
        metrics = pool.state.metrics
        if metrics is not None and pool.metrics_row >= 0:
            metrics.upstream_opened(pool.metrics_row)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        pool = self.pool
        pool.forget(self)
        metrics = pool.state.metrics
        if metrics is not None and pool.metrics_row >= 0:
            metrics.upstream_closed(pool.metrics_row)
        exchange = self.exchange
        if exchange is None:
            return
        self.exchange = None
        if self.started:
            if self.until_close:
                # The body was delimited by the close: it is complete now.
                if self.masking is not None:
                    if not self._finish_masking(exchange):
                        self._refuse(exchange)
                        return
                elif self.framing == Framing.CHUNKED:
                    self.out.append(LAST_CHUNK)
                self._flush(exchange)
                exchange.conn.response_end(exchange)
            elif self.masking is not None:
                # The head is held with the body being masked: the client has seen nothing yet.
                self.masking = None
                exchange.conn.upstream_failed(exchange, 502, "upstream_reset")
            else:
                exchange.conn.abort(exchange, "upstream_reset")
        elif not self.received and self.reused and exchange.retryable():
            exchange.conn.retry(exchange)
        else:
            exchange.conn.upstream_failed(exchange, 502, "upstream_reset")

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost follows

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.conn.pause_for_upstream()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.conn.resume_for_upstream()

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # Bytes nobody asked for: the connection's framing is lost.
            self.close()
            return
        self.deadline = self.state.now + self.timeout
        if not self.started:
            self.received = True
            # The head is rewritten from its bytes, not from per-header callbacks (the hot path).
            self.head_buf = self.head_buf + data if self.head_buf else data
            if len(self.head_buf) > _MAX_HEAD and self.head_buf.find(b"\r\n\r\n", 0, _MAX_HEAD) == -1:
                log.warning("upstream %s: response head too large", self.pool.upstream.name)
                self.abort()
                exchange.conn.upstream_failed(exchange, 502, "upstream_bad_response")
                return
        try:
            self._feed(data)
        except httptools.HttpParserCallbackError:
            if not self.refused:
                raise
            self._refuse(exchange)
            return
        except httptools.HttpParserError as exc:
            log.warning("upstream %s: malformed response: %s", self.pool.upstream.name, exc)
            self.abort()
            if self.masking is not None:
                # The head is held with the body being masked: the client has seen nothing yet.
                self.masking = None
                exchange.conn.upstream_failed(exchange, 502, "upstream_bad_response")
            elif self.started:
                self._flush(exchange)
                exchange.conn.abort(exchange, "upstream_bad_response")
            else:
                exchange.conn.upstream_failed(exchange, 502, "upstream_bad_response")
            return
        out = self.out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            if self.complete:
                exchange.conn.write_last(exchange, data)  # audited first
            else:
                exchange.conn.write_response(data)
        if self.complete:
            self._done(exchange)

    # -- parser callbacks ---------------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        buf = self.head_buf
        if buf[:1] == b"\r" or buf[:1] == b"\n":
            buf = buf.lstrip(b"\r\n")  # llhttp skips blank lines before a status line
        status = self._status()
        if status < 200:
            # An interim response (100 Continue, 103 Early Hints): the proxy answered Expect
            # itself, so it is dropped and the final response follows on the same connection
            # (perhaps in these same bytes).
            self.head_buf = buf[buf.index(b"\r\n\r\n") + 4 :]
            self.interim = True
            return
        exchange = self.exchange
        assert exchange is not None
        head = exchange.head
        # buf may go on past the head (the start of the body): response_head stops at the head's
        # blank line.
        client_head, framing, length, chunked, exchange.keep_alive = response_head(
            buf,
            exchange.request_id,
            status,
            head.method == "HEAD",
            head.version == "1.1",
            exchange.keep_alive,
        )
        self.head_buf = b""
        self.framing = framing
        self.until_close = framing != Framing.NONE and length == -1 and not chunked
        self.started = True
        exchange.status = status
        if exchange.mask is not None and framing != Framing.NONE:
            content_type, content_encoding = media_fields(buf[: buf.index(b"\r\n\r\n") + 4])
            verdict = exchange.mask.plan(
                content_type, length if length >= 0 and not chunked else None, content_encoding
            )
            if verdict.action == MASK:
                # The head goes out with the masked body, once its length is known.
                self.masking = _Masking(
                    exchange.mask, client_head, framing, not exchange.keep_alive, exchange.response_extra
                )
                return
            if verdict.action == REFUSE:
                self.refused = verdict.reason or ""
                raise _Refused
            exchange.mask_skipped = verdict.reason or ""
        if exchange.response_extra:
            # The stages' own fields (RateLimit-*), before the blank line that ends the head.
            client_head = client_head[:-2] + exchange.response_extra + b"\r\n"
        self.out.append(client_head)
        exchange.response_started = True
        if framing == Framing.NONE:
            self.keep_alive = self._should_keep_alive()
            # llhttp cannot be told a response answers HEAD and would wait for the declared
            # length; the response is complete here and the parser is replaced in _done.
            self.complete = True

    def on_body(self, body: bytes) -> None:
        if self.complete:
            self.junk = True
            return
        masking = self.masking
        if masking is not None:
            masking.pieces.append(body)
            masking.size += len(body)
            if masking.size > masking.mask.max_bytes:
                verdict = masking.mask.unmaskable(TOO_LARGE)
                if verdict.action == REFUSE:
                    self.refused = TOO_LARGE
                    raise _Refused
                self._stop_masking(TOO_LARGE)
            return
        if self.framing == Framing.CHUNKED:
            self.out.append(b"%x\r\n%s\r\n" % (len(body), body))
        else:
            self.out.append(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if self.complete:
            return
        if self.masking is not None:
            exchange = self.exchange
            assert exchange is not None
            if not self._finish_masking(exchange):
                raise _Refused
        elif self.framing == Framing.CHUNKED:
            self.out.append(LAST_CHUNK)
        self.keep_alive = self._should_keep_alive()
        self.complete = True

    # -- internals ----------------------------------------------------------------------------------

    def _stop_masking(self, reason: str) -> None:
        """Too large to mask, and its mask says pass: send what was held, then stream the rest."""
        masking = self.masking
        exchange = self.exchange
        assert masking is not None and exchange is not None
        self.masking = None
        exchange.mask_skipped = reason
        exchange.response_started = True
        out = self.out
        out.append(masking.head(exchange.keep_alive))
        chunked = self.framing == Framing.CHUNKED
        for piece in masking.pieces:
            out.append(chunk(piece) if chunked else piece)

    def _finish_masking(self, exchange: Exchange) -> bool:
        """Mask the whole body and queue head and body; False when the mask refuses it."""
        masking = self.masking
        assert masking is not None
        self.masking = None
        verdict, body, count = masking.mask.apply(b"".join(masking.pieces))
        if verdict.action == REFUSE:
            self.refused = verdict.reason or ""
            return False
        if verdict.action == MASK:
            exchange.masked = count
        else:
            exchange.mask_skipped = verdict.reason or ""
        self.out.append(masking.response(exchange.keep_alive, body))
        exchange.response_started = True
        return True

    def _refuse(self, exchange: Exchange) -> None:
        """The response could not be masked and its mask refuses it: 502, connection dropped."""
        log.warning(
            "request %s: response refused: cannot mask it (%s)", exchange.request_id.decode(), self.refused
        )
        reason = "unmaskable:" + self.refused
        self.masking = None
        self.refused = ""
        self.out.clear()
        self.abort()
        exchange.conn.upstream_failed(exchange, 502, reason)

    def _flush(self, exchange: Exchange) -> None:
        out = self.out
        exchange.conn.write_response(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    def _done(self, exchange: Exchange) -> None:
        self.exchange = None
        self.deadline = INF
        reusable = (
            exchange.request_done
            and not self.junk
            and not self.until_close
            and not self.closed
            and self.keep_alive
        )
        if self.framing == Framing.NONE and exchange.head.method == "HEAD":
            self._new_parser()
        self.started = self.complete = self.received = self.junk = False
        self.masking = None
        if reusable:
            self.reused = True
            if self.reading_paused:  # rarely: only when the client was slow to read
                self.resume_reading()
            self.pool.release(self)
        else:
            self.close()
        exchange.conn.response_end(exchange)
