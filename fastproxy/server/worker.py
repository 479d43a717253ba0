"""A worker process: one uvloop event loop serving the sockets the master bound.

The constructor only stores what it is given; everything with a side effect (the event loop,
upstream pools, servers, signal handlers) is made in :meth:`Worker.run`, in the child, after fork.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys
from typing import TYPE_CHECKING

import uvloop

from fastproxy.config.model import Config
from fastproxy.metrics import WorkerMetrics, render
from fastproxy.server.admin import AdminConnection
from fastproxy.server.connection import ClientConnection
from fastproxy.server.heartbeat import AUDIT_CONNECTED, BOOTING, KEYS_LOADED, READY, STOPPING, HeartbeatTable
from fastproxy.server.sockets import BACKLOG
from fastproxy.server.state import WorkerState
from fastproxy.server.tls import server_context
from fastproxy.server.upstream import UpstreamPool
from fastproxy.stages.build import PolicyRuntime

if TYPE_CHECKING:
    from fastproxy.audit import AuditStats
    from fastproxy.metrics import SharedMetrics
    from fastproxy.ratelimit._gcra import Table
    from fastproxy.server.auditor import WorkerAudit

__all__ = ["WORKER_BOOT_ERROR", "Worker"]

log = logging.getLogger("fastproxy.worker")

# Exit status of a worker that could not start; the master stops instead of respawning forever.
WORKER_BOOT_ERROR = 3

_TICK = 0.25  # seconds between deadline sweeps and heartbeats


class Worker:
    def __init__(
        self,
        config: Config,
        listeners: list[socket.socket],
        admin: socket.socket | None,
        heartbeats: HeartbeatTable,
        slot: int,
        master_pid: int,
        ratelimit_table: Table | None = None,
        metrics: SharedMetrics | None = None,
        audit: WorkerAudit | None = None,
    ) -> None:
        self.config = config
        self.listeners = listeners
        self.admin = admin
        self.heartbeats = heartbeats
        self.slot = slot
        self.master_pid = master_pid
        self.ratelimit_table = ratelimit_table  # shared memory, made by the master before fork
        self.metrics = metrics  # likewise
        self.audit = audit  # likewise: the audit table and the writer's address
        self._audit_seen = (0, 0)  # audit records and gaps already added to the metrics
        self._draining = False
        self._jwt_seen = (0, 0)  # JWT cache hits and misses already added to the metrics
        self.pid = 0
        self.state: WorkerState | None = None
        self.policy: PolicyRuntime | None = None
        self.servers: list[asyncio.Server] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop_deadline: float | None = None

    def run(self) -> int:
        """The worker's whole life; returns its exit status."""
        self.pid = os.getpid()
        self.heartbeats.beat(self.slot, self.pid, BOOTING)
        try:
            loop = self._boot()
        except Exception:
            log.exception("worker %d failed to boot", self.pid)
            return WORKER_BOOT_ERROR
        try:
            loop.run_forever()
        finally:
            loop.close()
        return 0

    def _boot(self) -> asyncio.AbstractEventLoop:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the master turns Ctrl-C into TERM
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        state = WorkerState(self.config, loop)
        self.state = state
        if self.metrics is not None:
            state.set_metrics(WorkerMetrics(self.metrics, self.slot))
        if self.audit is not None:
            state.audit = self.audit.client(loop, self.config.audit)
        policy = PolicyRuntime(self.config, self.ratelimit_table)
        self.policy = policy
        state.router = policy.router
        policy.start(loop)
        for name, upstream in self.config.upstreams.items():
            state.pools[name] = UpstreamPool(upstream, state)
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGQUIT, self._quit)
        loop.run_until_complete(self._serve(state))
        self.heartbeats.beat(self.slot, self.pid, READY, self._flags())
        loop.call_later(_TICK, self._tick)
        # Requests allocate short-lived objects freed by reference counting; the cyclic
        # collector's frequent young-generation passes cost about 10% of a request here
        # (measured). Objects made at boot are frozen out of its sight and it runs less often.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20000, 20, 20)
        return loop

    async def _serve(self, state: WorkerState) -> None:
        loop = state.loop
        server_settings = self.config.server
        tls = None
        proto = b"http"
        if server_settings.tls_cert is not None and server_settings.tls_key is not None:
            # Read again here, after fork: a reload's new workers pick up a renewed certificate.
            tls = server_context(server_settings.tls_cert, server_settings.tls_key)
            proto = b"https"
        for sock in self.listeners:
            server = await loop.create_server(
                lambda: ClientConnection(state, proto), sock=sock, backlog=BACKLOG, ssl=tls
            )
            self.servers.append(server)
        if self.admin is not None:
            # Not in self.servers: a stopping worker keeps answering /readyz (503, stopping)
            # until it exits, rather than leaving admin connections queued unanswered.
            await loop.create_server(
                lambda: AdminConnection(self._readiness, self._metrics),
                sock=self.admin,
                backlog=BACKLOG,
            )

    def _tick(self) -> None:
        state = self.state
        loop = self.loop
        assert state is not None and loop is not None
        try:
            state.sweep()
            self._publish_jwt_cache()
            self._publish_audit()
        except Exception:
            # The tick also carries the heartbeat: it must outlive any bug in a sweep.
            log.exception("worker %d: sweep failed", self.pid)
        if os.getppid() != self.master_pid and not state.stopping:
            log.warning("worker %d: master is gone, stopping", self.pid)
            self.stop()
        if state.stopping:
            self.heartbeats.beat(self.slot, self.pid, STOPPING)
            assert self._stop_deadline is not None
            if not state.connections or loop.time() >= self._stop_deadline:
                for conn in list(state.connections):
                    conn._close(abort=True)
                if state.audit is not None:
                    if not self._draining:
                        # Every answer is out: hand the last records over before exiting.
                        self._draining = True
                        loop.create_task(self._drain_and_stop())
                else:
                    loop.stop()
                    return
        else:
            self.heartbeats.beat(self.slot, self.pid, READY, self._flags())
        loop.call_later(_TICK, self._tick)

    async def _drain_and_stop(self) -> None:
        state, loop = self.state, self.loop
        assert state is not None and state.audit is not None and loop is not None
        try:
            if not await state.audit.drain(self.config.server.graceful_timeout):
                log.warning("worker %d: the audit writer did not acknowledge every record", self.pid)
            self._publish_audit()  # what the drain got written counts too
        finally:
            state.audit.close()
            loop.stop()

    def _publish_audit(self) -> None:
        state = self.state
        if state is None or state.metrics is None or state.audit is None:
            return
        stats = state.audit.stats()
        # Written: what the writer acknowledged. Every record kept and every gap record made
        # stays queued until then, so a record held during a writer outage is not counted yet,
        # and one a killed worker held never is (the writer's gap record accounts for it).
        records = stats["records"] + stats["gaps"] - stats["queued"]
        gaps = stats["dropped"]
        seen_records, seen_gaps = self._audit_seen
        if records != seen_records or gaps != seen_gaps:
            state.metrics.audit_records(records - seen_records)
            state.metrics.audit_gaps(gaps - seen_gaps)
            self._audit_seen = (records, gaps)
        state.metrics.set_audit_queue_depth(stats["queued"])

    def _publish_jwt_cache(self) -> None:
        # The caches count per request; the shared counters take the difference once a tick.
        state, policy = self.state, self.policy
        if state is None or state.metrics is None or policy is None:
            return
        hits, misses = policy.jwt_cache_counts()
        seen_hits, seen_misses = self._jwt_seen
        if hits != seen_hits or misses != seen_misses:
            state.metrics.jwt_cache_hit(hits - seen_hits)
            state.metrics.jwt_cache_miss(misses - seen_misses)
            self._jwt_seen = (hits, misses)

    def _flags(self) -> int:
        flags = KEYS_LOADED if self.policy is not None and self.policy.keys_ready() else 0
        audit = self.state.audit if self.state is not None else None
        if audit is None or audit.available:
            flags |= AUDIT_CONNECTED
        return flags

    def stop(self) -> None:
        """Graceful: stop accepting, let answers in progress finish, then exit."""
        state = self.state
        loop = self.loop
        if state is None or loop is None or state.stopping:
            return
        state.stopping = True
        self._stop_deadline = loop.time() + self.config.server.graceful_timeout
        for server in self.servers:
            server.close()
        for conn in list(state.connections):
            conn.close_if_idle()
        for pool in state.pools.values():
            pool.close_idle(loop.time())
        if self.policy is not None:
            loop.create_task(self.policy.close())

    def _quit(self) -> None:
        sys.stderr.flush()
        os._exit(0)

    # -- admin endpoints ------------------------------------------------------------------------

    def _readiness(self) -> tuple[bool, dict[str, object]]:
        ready = self.heartbeats.ready_count()
        with_keys = self.heartbeats.ready_with(KEYS_LOADED)
        stopping = self.state is not None and self.state.stopping
        detail: dict[str, object] = {"workers_ready": ready, "workers": self.config.workers}
        if with_keys < ready:
            detail["workers_without_keys"] = ready - with_keys
            if self.policy is not None and self.policy.not_ready():
                detail["keys"] = self.policy.not_ready()
        writer_ok = True
        if self.audit is not None:
            writer_ok = self.audit.shared.writer_pid != 0
            detail["audit_writer"] = "serving" if writer_ok else "unavailable"
            # A worker the writer has not welcomed yet would answer fail_closed routes 503.
            connected = self.heartbeats.ready_with(AUDIT_CONNECTED)
            if connected < ready:
                detail["workers_without_audit"] = ready - connected
                writer_ok = False
        return ready > 0 and with_keys == ready and writer_ok and not stopping, detail

    def _metrics(self) -> bytes:
        """Every process's counters summed (fastproxy.metrics), then this worker's own view."""
        state = self.state
        connections = len(state.connections) if state is not None else 0
        summed = render(self.metrics) if self.metrics is not None else b""
        if self.audit is not None:
            summed += _audit_totals(self.audit.shared.stats())
        return summed + (
            b"# HELP fastproxy_workers_ready Workers that report ready.\n"
            b"# TYPE fastproxy_workers_ready gauge\n"
            b"fastproxy_workers_ready %d\n"
            b"# HELP fastproxy_worker_connections Client connections open in the worker that answered.\n"
            b"# TYPE fastproxy_worker_connections gauge\n"
            b"fastproxy_worker_connections %d\n" % (self.heartbeats.ready_count(), connections)
        )


def _audit_totals(stats: AuditStats) -> bytes:
    """What the writer accounts for (the table every process shares): written, lost, commits."""
    return (
        b"# HELP fastproxy_audit_written_total Audit records the writer wrote and synced.\n"
        b"# TYPE fastproxy_audit_written_total counter\n"
        b"fastproxy_audit_written_total %d\n"
        b"# HELP fastproxy_audit_lost_total Audit records lost with a worker that died, in gap records.\n"
        b"# TYPE fastproxy_audit_lost_total counter\n"
        b"fastproxy_audit_lost_total %d\n"
        b"# HELP fastproxy_audit_commits_total Batches the audit writer committed.\n"
        b"# TYPE fastproxy_audit_commits_total counter\n"
        b"fastproxy_audit_commits_total %d\n"
        b"# HELP fastproxy_audit_writer_up Whether an audit writer is serving.\n"
        b"# TYPE fastproxy_audit_writer_up gauge\n"
        b"fastproxy_audit_writer_up %d\n" % (stats.written, stats.lost, stats.commits, stats.writer_up)
    )
