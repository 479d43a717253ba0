"""What every connection of one worker shares: config, router, upstream pools, the clock sweep."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

from fastproxy.config.model import Config
from fastproxy.routing import Router

if TYPE_CHECKING:
    from fastproxy.server.connection import ClientConnection
    from fastproxy.server.upstream import UpstreamConnection, UpstreamPool

__all__ = ["INF", "WorkerState"]

log = logging.getLogger("fastproxy.worker")

INF = float("inf")


class WorkerState:
    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.loop = loop
        self.limits = config.limits
        self.router: Router = config.router
        self.trusted = config.trusted_proxies
        self.pools: dict[str, UpstreamPool] = {}
        self.connections: set[ClientConnection] = set()
        # Upstream connections with a request in flight: swept for the response timeout.
        self.busy: set[UpstreamConnection] = set()
        self.stopping = False
        # Request ids: a random per-process prefix and a counter, unique without a syscall each.
        self._id_prefix = os.urandom(6).hex().encode()
        self._id_counter = 0

    def new_request_id(self) -> bytes:
        self._id_counter += 1
        return b"%s-%x" % (self._id_prefix, self._id_counter)

    def sweep(self) -> None:
        """Fire the deadlines that have passed: one pass, instead of a timer per request."""
        now = self.loop.time()
        for conn in [c for c in self.connections if c.deadline <= now]:
            conn.on_deadline(now)
        for upstream in [u for u in self.busy if u.deadline <= now]:
            upstream.on_deadline()
        for pool in self.pools.values():
            pool.close_idle(now)
