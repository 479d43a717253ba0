"""The master's side of the audit pipeline: the writer process and what workers connect to.

Theory of operation
-------------------
When ``[audit] path`` is set, the master makes, before its first fork, the shared slot table
(:class:`AuditShared`: each worker's stream counters, how the writer accounts for a worker that
died) and the writer's listening socket (:class:`WriterEndpoint`), then forks the one writer.
Every worker gets a slot claimed in the master before it is forked and released when it is
reaped, whatever its exit; the writer turns what a dead worker never sent into a gap record.

The writer is respawned whenever it exits while the proxy runs, after a backoff that doubles
from 0.5 s to 10 s and resets once a writer has lived 10 s. Meanwhile workers keep what the
writer has not acknowledged, ``client.admits()`` is False (fail_closed routes answer 503) and
``/readyz`` says why. USR1 is forwarded to it (reopen the file after external rotation). On a
stop it is the last to go: the master sends it TERM once every worker has exited (each drained
its batches first), and it commits, fsyncs and exits 0.

Settings of ``[audit]`` take effect at start; a reload that changes them is logged and served
with the running writer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastproxy.audit import EXIT_BAD_TAIL, AuditClient, AuditShared, WriterEndpoint, new_boot_id, run_writer
from fastproxy.config.schema import AuditSettings

__all__ = ["AuditSupervisor", "WorkerAudit"]

log = logging.getLogger("fastproxy.master")

_BACKOFF_MIN = 0.5
_BACKOFF_MAX = 10.0
_STABLE_AFTER = 10.0


@dataclass(frozen=True, slots=True)
class WorkerAudit:
    """What a worker needs to audit, made in the master before it forks the worker."""

    shared: AuditShared
    address: str | bytes
    slot: int

    def client(self, loop: asyncio.AbstractEventLoop, settings: AuditSettings) -> AuditClient:
        """The worker's client, made after fork on its loop (and started)."""
        client = AuditClient(
            loop,
            self.address,
            self.shared,
            self.slot,
            batch_max=settings.batch_max,
            flush_interval=settings.flush_interval,
        )
        client.start()
        return client


class AuditSupervisor:
    def __init__(self, settings: AuditSettings, slots: int, drain_timeout: float) -> None:
        self.settings = settings
        self.shared = AuditShared.create(boot=new_boot_id(), slots=slots)
        self.endpoint = WriterEndpoint.create()
        self.drain_timeout = drain_timeout
        self.pid = 0
        self.started = 0.0
        self.next_start = 0.0
        self.failures = 0
        self.stopping = False

    def reconcile(self, fork_child: Callable[[Callable[[], int]], int], now: bool = False) -> None:
        """Start the writer when none runs and its backoff has passed (``now``: regardless).

        Never once it was told to stop: the stop is the last thing the writer does.
        """
        if self.pid or self.stopping or (not now and time.monotonic() < self.next_start):
            return
        self.pid = fork_child(self._run)
        self.started = time.monotonic()
        log.info("audit writer %d started (%s)", self.pid, self.settings.path)

    def _run(self) -> int:
        return run_writer(self.settings, self.endpoint, self.shared, drain_timeout=self.drain_timeout)

    def exited(self, code: int) -> None:
        """The master reaped the writer; the next starts after a backoff (at once while the
        master stops and workers still drain: see reconcile)."""
        self.shared.writer_exited()
        self.pid = 0
        if self.stopping:
            log.info("audit writer exited (%d)", code)
            return
        lived = time.monotonic() - self.started
        self.failures = 0 if lived >= _STABLE_AFTER else self.failures + 1
        delay = min(_BACKOFF_MAX, _BACKOFF_MIN * 2 ** max(0, self.failures - 1))
        self.next_start = time.monotonic() + delay
        why = (
            "its file does not end with a valid record: move it aside"
            if code == EXIT_BAD_TAIL
            else f"status {code}"
        )
        log.error("audit writer exited (%s); audit is unavailable; restarting in %.1fs", why, delay)

    def reopen(self) -> None:
        if self.pid:
            os.kill(self.pid, signal.SIGUSR1)

    def stop(self) -> None:
        """Every worker is gone: let the writer commit what they sent, and exit."""
        if self.stopping:
            return
        self.stopping = True
        if self.pid:
            os.kill(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        if self.pid:
            os.kill(self.pid, signal.SIGKILL)

    def worker_forked(self) -> tuple[int, int]:
        """A slot for a worker about to be forked: (slot, worker number)."""
        return self.shared.claim()

    def worker_exited(self, slot: int) -> None:
        self.shared.worker_exited(slot)
