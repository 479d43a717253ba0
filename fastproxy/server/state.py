"""What every connection of one worker shares: config, router, upstream pools, the clock sweep."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Final

from fastproxy.config.model import Config
from fastproxy.routing import Router

if TYPE_CHECKING:
    from fastproxy.audit import AuditClient
    from fastproxy.metrics import WorkerMetrics
    from fastproxy.server.connection import ClientConnection
    from fastproxy.server.upstream import UpstreamConnection, UpstreamPool

__all__ = ["INF", "WorkerState"]

log: Final = logging.getLogger("fastproxy.worker")

INF: Final = float("inf")


class WorkerState:
    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.loop = loop
        self.limits = config.limits
        # The timeouts a request reads, out of the settings Struct once (not compiled: each read
        # through it is a lookup on its type).
        self.header_timeout: float = config.limits.header_timeout
        self.body_timeout: float = config.limits.body_timeout
        self.keepalive_timeout: float = config.limits.keepalive_timeout
        self.router: Router = config.router
        self.trusted = config.trusted_proxies
        identity = config.identity
        # The API key header the parser takes out of the headers, as it does Authorization.
        self.credential_header = identity.api_key_header if identity.api_keys is not None else None
        self.metrics: WorkerMetrics | None = None
        self.audit: AuditClient | None = None
        self.route_rows: dict[str, int] = {}  # metrics rows, looked up once
        self.unmatched_row = 0

        self.pools: dict[str, UpstreamPool] = {}
        self.connections: set[ClientConnection] = set()
        # The loop's clock as of the last sweep. Deadlines on the hot path use it instead of
        # reading the clock per request; they are checked by the sweep at the same resolution.
        self.now = loop.time()
        self.stopping = False
        # Request ids: a random per-process prefix and a counter, unique without a syscall each
        # (the counter in decimal: str(int) is a C primitive compiled, a %-format is not).
        self._id_prefix = os.urandom(6).hex().encode() + b"-"
        self._id_counter = 0

    def set_metrics(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics
        layout = metrics.layout
        self.unmatched_row = layout.route_index(None)
        # A name the layout lacks (a worker of the old generation respawned mid-reload) counts
        # as unmatched rather than failing the worker.
        self.route_rows = {
            route.name: layout.routes.get(route.name, self.unmatched_row) for route in self.router.routes
        }

    def new_request_id(self) -> bytes:
        self._id_counter += 1
        return self._id_prefix + str(self._id_counter).encode()

    def sweep(self) -> None:
        """Fire the deadlines that have passed: one pass, instead of a timer per request.

        A client connection's deadline covers the client (idle, slow head or body, not reading);
        the upstream connection of its active exchange has its own (the response timeout).
        """
        now = self.now = self.loop.time()
        expired: list[ClientConnection | UpstreamConnection] = []
        for conn in self.connections:
            if conn.deadline <= now:
                expired.append(conn)
            active = conn.active
            if active is not None and active.upstream is not None and active.upstream.deadline <= now:
                expired.append(active.upstream)
        for item in expired:
            try:
                item.on_deadline()
            except Exception:
                # One connection's failure must not stop the sweep (nor the heartbeat after it).
                log.exception("error handling a timeout")
        for pool in self.pools.values():
            pool.close_idle(now)
