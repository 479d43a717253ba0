"""The worker's side of the audit: :class:`AuditClient`, on the worker's event loop, never blocking it.

Made in the worker after fork (the constructor has no side effects), started once its loop runs::

    client = AuditClient(loop, endpoint.address, shared, slot,
                         batch_max=settings.batch_max, flush_interval=settings.flush_interval)
    client.start()
    ...
    if route.audit == "fail_closed" and not client.admits():
        answer 503 (Retry-After) without calling the upstream   # and audit that answer too
    ...
    kept = client.submit(request_id, client_ip, method, path, route, principal, auth, decision,
                         reason, mode, status, upstream, latency_ms, bytes_in, bytes_out, masked,
                         would_deny=None)
    ...
    await client.drain(timeout)       # on graceful stop, after the last response
    client.close()

``submit`` numbers and encodes the record (about 0.4 µs, in C) and appends it to the batch; it
returns False when the bounded queue is full: the record is dropped and accounted by a gap record
(best_effort routes go on; a fail_closed route that sees ``admits()`` False answers 503 first).
A batch goes to the writer at ``batch_max`` records or ``flush_interval`` seconds after its first
record, whichever comes first, over a non-blocking SOCK_SEQPACKET connection watched with
``loop.add_reader``/``add_writer``.

``available`` is True while a writer has welcomed this client. When the connection breaks (the
writer died or was restarted) the client reconnects with backoff (50 ms doubling to 1 s); records
keep queueing meanwhile, up to the bound, and whatever was not acknowledged is sent again to the
next writer, which skips what its file already has.

The worker's death (see :mod:`fastproxy.audit` for the whole guarantee): records already sent sit
in the writer's socket and are written; records still in this process (the open batch, at most
``flush_interval`` old, and batches not yet acknowledged) die with it, and the writer writes one
gap record for exactly their seqs, from the ``assigned`` counter this client keeps in shared memory
on every submit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Final

from fastproxy.audit import shared as shared_table
from fastproxy.audit.batcher import QUEUE_BYTES_MAX, Batcher
from fastproxy.audit.protocol import ACK, FLUSH, WELCOME, ProtocolError, decode_seq, encode_hello
from fastproxy.audit.record import RecordEncoder
from fastproxy.audit.shared import DROPPED, PID, QUEUED, WORKER, AuditShared

__all__ = ["AuditClient"]

log: Final = logging.getLogger("fastproxy.audit")

_RECONNECT_MIN: Final = 0.05
_RECONNECT_MAX: Final = 1.0
_SNDBUF: Final = 1024 * 1024
# Written for every record: a Final is a C static in compiled code, an imported name a dict lookup.
_ASSIGNED: Final = shared_table.ASSIGNED

try:
    from fastproxy.audit._encode import request_record as _native_request_record
except ImportError:  # pragma: no cover - only without a compiler
    _native_request_record = None  # type: ignore[assignment]

# The C encoder, called from submit rather than through RecordEncoder.request: that module is not
# compiled, and its frame was 0.85 us of an audited request with cold caches. Bound once: a
# Final is a C static in compiled code, an imported name a dict lookup at every call.
_request_record: Final = _native_request_record


class AuditClient:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        address: str | bytes,
        shared: AuditShared,
        slot: int,
        *,
        batch_max: int,
        flush_interval: float,
        queue_max: int | None = None,
        queue_bytes_max: int = QUEUE_BYTES_MAX,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.loop = loop
        self.address = address
        self.shared = shared
        self.slot = slot
        self.worker = shared.get(slot, WORKER)
        self.flush_interval = flush_interval
        self.encoder = RecordEncoder(shared.boot, self.worker, clock)
        self._boot = self.encoder.boot
        self._clock = clock
        self.batcher = Batcher(
            self.encoder, batch_max, queue_max or max(16 * batch_max, 1024), queue_bytes_max
        )
        self.pid = 0
        self._base = shared.base(slot)
        self._words = shared.words
        self._sock: socket.socket | None = None
        self._welcomed = False
        self._writing = False
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._reconnect: asyncio.TimerHandle | None = None
        self._backoff = _RECONNECT_MIN
        self._idle_waiters: list[asyncio.Future[None]] = []
        self.connects = 0

    # -- life ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Open the stream (its first record says which process this is) and connect."""
        self.pid = os.getpid()
        self._words[self._base + PID] = self.pid
        seq = self.batcher.claim()
        self.batcher.add(self.encoder.worker_start(seq, self.pid), seq)
        self._words[self._base + _ASSIGNED] = seq
        self._arm_timer()
        self._connect()

    async def drain(self, timeout: float) -> bool:
        """Send everything now and wait until the writer acknowledged it all; False on timeout."""
        self.batcher.close_gap()
        self.flush()
        if self.batcher.idle:
            return True
        waiter = self.loop.create_future()
        self._idle_waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        """Stop for good. What is not acknowledged by now is the writer's to account as lost."""
        self._closed = True
        for handle in (self._timer, self._reconnect):
            if handle is not None:
                handle.cancel()
        self._disconnect(reconnect=False)
        self._publish_queue()

    # -- the request path ---------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """A writer has welcomed this client and the connection holds."""
        return self._welcomed

    def admits(self) -> bool:
        """Whether a fail_closed route may proceed: a writer is there and the queue has room."""
        return self._welcomed and self.batcher.has_room()

    def submit(
        self,
        request_id: str | bytes,
        client_ip: str,
        method: str,
        path: str,
        route: str | None,
        principal: str | None,
        auth: str | None,
        decision: str,
        reason: str,
        mode: str,
        status: int,
        upstream: str | None,
        latency_ms: float,
        bytes_in: int,
        bytes_out: int,
        masked: int,
        would_deny: str | None = None,
        mask_skipped: str | None = None,
    ) -> bool:
        """Audit one answered request; False if it was dropped (queue full; a gap record says so).

        Never pass a credential: only the values given here are written. Compiled (setup.py),
        an argument of another type than its annotation raises TypeError at the call, before a
        seq is claimed; a value of the right type that cannot be encoded becomes a gap.
        """
        batcher = self.batcher
        seq = batcher.claim()
        self._words[self._base + _ASSIGNED] = batcher.seq
        if not seq:
            self._words[self._base + DROPPED] = batcher.dropped
            return False
        try:
            # RecordEncoder.request, inlined (see _request_record).
            now = self._clock()
            record = None
            if _request_record is not None:
                record = _request_record(
                    now, self._boot, self.worker, seq, request_id, client_ip, method, path, route,
                    principal, auth, decision, reason, mode, would_deny, status, upstream, latency_ms,
                    bytes_in, bytes_out, masked, mask_skipped,
                )  # fmt: skip
            if record is None:
                record = self.encoder.request_reference(
                    now, seq, request_id, client_ip, method, path, route, principal, auth, decision,
                    reason, mode, would_deny, status, upstream, latency_ms, bytes_in, bytes_out, masked,
                    mask_skipped,
                )  # fmt: skip
        except Exception:
            # A caller's bug must not leave a hole in the numbering: the seq joins the next gap.
            log.exception("audit record %d could not be encoded; it is accounted as lost", seq)
            batcher.drop_claimed()
            self._words[self._base + DROPPED] = batcher.dropped
            return False
        if batcher.add(record, seq):
            self.flush()
        elif self._timer is None:
            self._arm_timer()
        return True

    def flush(self) -> None:
        """Close the open batch and send what the connection takes now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.batcher.pack()
        self._publish_queue()
        self._send()

    def stats(self) -> dict[str, int]:
        batcher = self.batcher
        return {
            "records": batcher.records,
            "dropped": batcher.dropped,
            "gaps": batcher.gaps,
            "queued": batcher.queued,
            "acked": batcher.acked,
            "seq": batcher.seq,
            "connects": self.connects,
        }

    # -- batching -------------------------------------------------------------------------------

    def _arm_timer(self) -> None:
        if self._timer is None and not self._closed:
            self._timer = self.loop.call_later(self.flush_interval, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()

    def _publish_queue(self) -> None:
        self._words[self._base + QUEUED] = self.batcher.queued

    # -- the connection ---------------------------------------------------------------------

    def _connect(self) -> None:
        self._reconnect = None
        if self._closed:
            return
        sock = socket.socket(
            socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        )
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SNDBUF)
            sock.connect(self.address)
            sock.send(encode_hello(self.slot, self.worker, self.pid, self.encoder.boot))
        except OSError as exc:
            sock.close()
            log.debug("audit: cannot reach the writer (%s); retrying", exc.strerror)
            self._schedule_reconnect()
            return
        self._sock = sock
        self.connects += 1
        self.loop.add_reader(sock.fileno(), self._on_readable)

    def _schedule_reconnect(self) -> None:
        if self._closed or self._reconnect is not None:
            return
        self._reconnect = self.loop.call_later(self._backoff, self._connect)
        self._backoff = min(_RECONNECT_MAX, self._backoff * 2)

    def _disconnect(self, reconnect: bool = True) -> None:
        sock = self._sock
        if sock is not None:
            self._sock = None
            self.loop.remove_reader(sock.fileno())
            if self._writing:
                self.loop.remove_writer(sock.fileno())
                self._writing = False
            sock.close()
            if self._welcomed and not self._closed:
                log.warning("audit: lost the writer; %d records held until the next one", self.batcher.queued)
            self._welcomed = False
            self.batcher.disconnected()
        if reconnect:
            self._schedule_reconnect()

    def _on_readable(self) -> None:
        sock = self._sock
        while sock is not None:
            try:
                message = sock.recv(64)
            except BlockingIOError:
                return
            except OSError:
                self._disconnect()
                return
            if not message:
                self._disconnect()
                return
            try:
                self._on_message(message)
            except ProtocolError as exc:
                log.error("audit: bad message from the writer (%s); reconnecting", exc)
                self._disconnect()
                return
            sock = self._sock

    def _on_message(self, message: bytes) -> None:
        kind = message[:1]
        if kind == ACK:
            self.batcher.ack(decode_seq(message))
            self._publish_queue()
            self._wake_idle()
        elif kind == WELCOME:
            self.batcher.welcome(decode_seq(message))
            self._welcomed = True
            self._backoff = _RECONNECT_MIN
            self._publish_queue()
            self._wake_idle()
            self._send()
        elif kind == FLUSH:
            self.batcher.close_gap()
            self.flush()
        else:
            raise ProtocolError(f"unknown message {kind!r}")

    def _send(self) -> None:
        sock = self._sock
        if sock is None or not self._welcomed:
            return
        batcher = self.batcher
        while batcher.outbox:
            try:
                sock.send(batcher.outbox[0].payload, socket.MSG_NOSIGNAL)
            except BlockingIOError:
                if not self._writing:
                    self._writing = True
                    self.loop.add_writer(sock.fileno(), self._on_writable)
                return
            except OSError:
                self._disconnect()
                return
            batcher.sent()
        if self._writing:
            self._writing = False
            self.loop.remove_writer(sock.fileno())

    def _on_writable(self) -> None:
        self._send()

    def _wake_idle(self) -> None:
        if self.batcher.idle and self._idle_waiters:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                with contextlib.suppress(asyncio.InvalidStateError):
                    waiter.set_result(None)
