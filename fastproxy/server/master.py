"""The master: binds the sockets, forks the workers, keeps their number right, never serves.

Theory of operation
-------------------
Signal handlers only enqueue the signal number (and the wake-up fd wakes the loop); the master
loop drains the queue and dispatches to ``handle_<name>`` methods. Each pass of the loop is a short
list of steps, each safe to repeat: reap dead children, kill workers whose heartbeat is stale,
start the workers that are missing, retire a generation a reload has replaced.

Workers belong to a *generation*. A reload (HUP) loads and validates the new configuration in the
master; if it is invalid the old workers keep serving and the master logs why. If it is valid, a
new generation of workers is forked with it on the same listening sockets (still open in the
master, so no connection is refused), and only once every new worker reports ready are the old
ones asked to stop gracefully. New workers that fail to boot abort the reload instead.

A worker that exits before reporting ready counts as a boot failure; two in a row stop the master
with a non-zero status rather than respawning forever. Other deaths are respawned with an
exponential backoff that resets once a worker has lived a while.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import queue
import select
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastproxy.config import Config, ConfigError
from fastproxy.http import SPEEDUPS
from fastproxy.identity.issuers import prime_keys
from fastproxy.metrics import MASTER_SLOT, MetricsLayout, MetricsTableFull, SharedMetrics, WorkerMetrics
from fastproxy.net import Address
from fastproxy.ratelimit import new_table
from fastproxy.server import sockets
from fastproxy.server.auditor import AuditSupervisor, WorkerAudit
from fastproxy.server.heartbeat import READY, HeartbeatTable
from fastproxy.server.notify import Notifier
from fastproxy.server.worker import WORKER_BOOT_ERROR, Worker

if TYPE_CHECKING:
    from fastproxy.ratelimit._gcra import Table

__all__ = ["HALT_BOOT_FAILURE", "Master"]

log = logging.getLogger("fastproxy.master")

# Exit status of the master when workers cannot boot.
HALT_BOOT_FAILURE = 3

_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGUSR1,
    signal.SIGCHLD,
)
_HEARTBEAT_SLOTS = 1024
_BACKOFF_MIN = 0.1
_BACKOFF_MAX = 5.0
_STABLE_AFTER = 10.0  # seconds a worker must live before its crash no longer adds backoff


@dataclass
class WorkerRecord:
    pid: int
    slot: int
    generation: int
    started: float
    audit_slot: int = -1  # the worker's slot in the audit table, released when it is reaped
    ready: bool = False
    stopping: bool = False
    killed: bool = False


class Master:
    def __init__(self, config: Config, reload_config: Callable[[], Config]) -> None:
        self.config = config
        self.reload_config = reload_config
        self.pid = 0
        self.generation = 0
        self.workers: dict[int, WorkerRecord] = {}
        self.listeners: dict[Address, socket.socket] = {}
        self.heartbeats: HeartbeatTable | None = None
        self.ratelimit_table: Table | None = None
        self.audit: AuditSupervisor | None = None
        self.metrics: SharedMetrics | None = None
        self.metrics_layout: MetricsLayout | None = None  # the running configuration's
        self._metrics_release = False  # release names an older generation used, once it is gone
        self._restarts: WorkerMetrics | None = None
        self.signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.stopping = False
        self.stop_deadline = 0.0
        self.exit_status = 0
        self.boot_failures = 0
        self.crashes = 0
        self.next_spawn = 0.0
        self.reload_pending: Config | None = None
        self.notifier = Notifier()
        self._notified_ready = False
        self._wakeup_r = -1
        self._wakeup_w = -1

    # -- life -----------------------------------------------------------------------------------

    def run(self) -> int:
        self.pid = os.getpid()
        self.config = _with_keys(self.config, None)
        try:
            self._make_ratelimit_table(self.config)
        except (RuntimeError, ValueError, OSError) as exc:
            log.error("cannot make the rate-limit table: %s", exc)
            return 1
        try:
            self._bind(self.config)
        except OSError as exc:
            log.error("cannot listen: %s", exc)
            return 1
        self.heartbeats = HeartbeatTable(_HEARTBEAT_SLOTS)
        # Before the first fork: every process sums into this region (one slot each).
        self.metrics = SharedMetrics.create(
            MetricsLayout(*_metric_names(self.config), slots=_HEARTBEAT_SLOTS)
        )
        self.metrics_layout = self.metrics.layout
        self._restarts = WorkerMetrics(self.metrics, MASTER_SLOT)
        if self.config.audit.path is not None:
            self.audit = AuditSupervisor(
                self.config.audit, _HEARTBEAT_SLOTS, self.config.server.graceful_timeout
            )
        self._install_signals()
        self._write_pid_file()
        for warning in self.config.warnings:
            log.warning("%s", warning)
        if not SPEEDUPS:
            log.warning(
                "fastproxy.http._speedups is not built (no C compiler at install?): slower pure-Python path"
            )
        log.info(
            "listening on %s, %d workers%s",
            ", ".join(str(a) for a in self.config.listen),
            self.config.workers,
            f", admin on {self.config.admin}" if self.config.admin else "",
        )
        try:
            while True:
                self._reap()
                if self.stopping:
                    if self.audit is not None and self.workers:
                        # The workers' drains need a writer: start one at once if none runs.
                        self.audit.reconcile(lambda body: self._fork_child(body, writer=True), now=True)
                    if not self.workers:
                        # The audit writer goes last: it commits what the workers drained.
                        if self.audit is None or not self.audit.pid:
                            break
                        self.audit.stop()
                    if time.monotonic() >= self.stop_deadline:
                        self._kill_all(signal.SIGKILL)
                        if self.audit is not None and not self.workers:
                            self.audit.kill()
                else:
                    if self.audit is not None:
                        self.audit.reconcile(lambda body: self._fork_child(body, writer=True))
                    self._kill_stale()
                    self._spawn_missing()
                    self._finish_reload()
                    self._release_metric_names()
                    self._notify()
                self._wait_for_signals(self._wait_time())
        finally:
            self._remove_pid_file()
            for sock in self.listeners.values():
                sock.close()
        log.info("stopped")
        return self.exit_status

    # -- the loop's steps ----------------------------------------------------------------------

    def _wait_time(self) -> float:
        """Sleep at most a second; less while workers boot or a respawn is due."""
        if self.next_spawn > time.monotonic():
            return max(0.01, min(1.0, self.next_spawn - time.monotonic()))
        if any(not r.ready for r in self.workers.values()):
            return 0.05
        return 1.0

    def _wait_for_signals(self, timeout: float) -> None:
        with contextlib.suppress(InterruptedError):
            select.select([self._wakeup_r], [], [], timeout)
        try:
            while os.read(self._wakeup_r, 512):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                signum = self.signals.get_nowait()
            except queue.Empty:
                return
            handler = getattr(self, f"handle_{signal.Signals(signum).name[3:].lower()}", None)
            if handler is not None:
                handler()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.audit is not None and pid == self.audit.pid:
                self.audit.exited(os.waitstatus_to_exitcode(status))
                continue
            record = self.workers.pop(pid, None)
            if record is None:
                continue
            if self.audit is not None and record.audit_slot >= 0:
                self.audit.worker_exited(record.audit_slot)
            assert self.heartbeats is not None and self.metrics is not None
            record.ready = record.ready or self._ready(record)
            self.heartbeats.reset(record.slot)
            self.metrics.clear_gauges(record.slot)
            self._worker_exited(record, os.waitstatus_to_exitcode(status))

    def _worker_exited(self, record: WorkerRecord, code: int) -> None:
        if record.stopping or self.stopping:
            log.info("worker %d exited (%d)", record.pid, code)
            return
        if not record.ready or code == WORKER_BOOT_ERROR:
            self.boot_failures += 1
            log.error("worker %d failed to boot (exit %d)", record.pid, code)
            if record.generation != self.generation:
                return
            if self.reload_pending is not None:
                self._abort_reload()
                return
            if self.boot_failures >= 2:
                log.error("workers fail to boot twice in a row: stopping")
                self.exit_status = HALT_BOOT_FAILURE
                self._begin_stop(signal.SIGTERM, graceful=False)
            return
        lived = time.monotonic() - record.started
        self.crashes = 0 if lived >= _STABLE_AFTER else self.crashes + 1
        delay = 0.0 if self.crashes == 0 else min(_BACKOFF_MAX, _BACKOFF_MIN * 2 ** (self.crashes - 1))
        self.next_spawn = time.monotonic() + delay
        if self._restarts is not None:
            self._restarts.worker_restarted()
        log.warning("worker %d died (%s); respawning in %.1fs", record.pid, _describe(code), delay)

    def _ready(self, record: WorkerRecord) -> bool:
        assert self.heartbeats is not None
        pid, state, _ = self.heartbeats.read(record.slot)
        return pid == record.pid and state == READY

    def _kill_stale(self) -> None:
        assert self.heartbeats is not None
        now = time.monotonic()
        timeout = self.config.server.worker_timeout
        for record in list(self.workers.values()):
            pid, state, beat = self.heartbeats.read(record.slot)
            if not record.ready and pid == record.pid and state == READY:
                record.ready = True
                self.boot_failures = 0
                log.info("worker %d ready", record.pid)
            last = beat if pid == record.pid else record.started
            if not record.killed and now - last > timeout:
                log.error("worker %d sent no heartbeat for %.0fs: killing it", record.pid, now - last)
                record.killed = True
                self._signal(record.pid, signal.SIGKILL)

    def _spawn_missing(self) -> None:
        if time.monotonic() < self.next_spawn:
            return
        config = self.reload_pending or self.config
        current = [r for r in self.workers.values() if r.generation == self.generation and not r.stopping]
        for _ in range(config.workers - len(current)):
            self._spawn(config)

    def _notify(self) -> None:
        """systemd: READY=1 once the first generation is up; WATCHDOG=1 while workers beat."""
        if not self.notifier.enabled:
            return
        if not self._notified_ready:
            current = [r for r in self.workers.values() if r.generation == self.generation]
            if (
                self.reload_pending is None
                and len(current) >= self.config.workers
                and all(r.ready for r in current)
            ):
                self._notified_ready = True
                self.notifier.ready()
        now = time.monotonic()
        if self._notified_ready and self._workers_beating(now):
            self.notifier.watchdog(now)

    def _workers_beating(self, now: float) -> bool:
        """Every ready worker beat within the last 2 s (they beat every 0.25 s)."""
        assert self.heartbeats is not None
        ready = [r for r in self.workers.values() if r.ready and not r.stopping]
        for record in ready:
            pid, _, beat = self.heartbeats.read(record.slot)
            if pid != record.pid or now - beat > 2.0:
                return False
        return bool(ready)

    def _release_metric_names(self) -> None:
        """Rows only an older generation used are freed once no process of it is left."""
        if not self._metrics_release or self.metrics is None or self.metrics_layout is None:
            return
        if any(r.generation != self.generation for r in self.workers.values()):
            return
        self._metrics_release = False
        self.metrics.release([self.metrics_layout])

    def _finish_reload(self) -> None:
        pending = self.reload_pending
        if pending is None:
            return
        new = [r for r in self.workers.values() if r.generation == self.generation]
        if len(new) < pending.workers or not all(r.ready for r in new):
            return
        self.config = pending
        self.reload_pending = None
        for record in self.workers.values():
            if record.generation != self.generation:
                record.stopping = True
                self._signal(record.pid, signal.SIGTERM)
        self._close_unused_listeners()
        self.metrics_layout = self.metrics.layout if self.metrics is not None else None
        self._metrics_release = True
        log.info("reload complete: generation %d serving", self.generation)
        self.notifier.ready()

    # -- signal handlers: they only enqueue ------------------------------------------------------

    def _install_signals(self) -> None:
        read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wakeup_r = read_fd
        self._wakeup_w = write_fd
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        for signum in _SIGNALS:
            signal.signal(signum, self._enqueue)

    def _enqueue(self, signum: int, frame: object) -> None:
        self.signals.put_nowait(signum)

    def handle_term(self) -> None:
        self._begin_stop(signal.SIGTERM, graceful=True)

    def handle_int(self) -> None:
        self._begin_stop(signal.SIGTERM, graceful=True)

    def handle_quit(self) -> None:
        self._begin_stop(signal.SIGQUIT, graceful=False)

    def handle_hup(self) -> None:
        log.info("reloading configuration")
        self.notifier.reloading()
        try:
            config = self.reload_config()
        except ConfigError as exc:
            for line in exc.errors:
                log.error("reload refused, keeping the running configuration: %s", line)
            self.notifier.ready()
            return
        config = _with_keys(config, self.config)
        try:
            self._make_ratelimit_table(config)
        except (RuntimeError, ValueError, OSError) as exc:
            log.error("reload refused, keeping the running configuration: rate-limit table: %s", exc)
            self.notifier.ready()
            return
        try:
            self._bind(config)
        except OSError as exc:
            log.error("reload refused, keeping the running configuration: cannot listen: %s", exc)
            self.notifier.ready()
            return
        if self.reload_pending is not None:
            self._abort_reload(superseded=True)
        assert self.metrics is not None
        try:
            self.metrics.relayout(*_metric_names(config))
        except MetricsTableFull as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            self.notifier.ready()
            return
        self.reload_pending = config
        self.generation += 1
        self.boot_failures = 0
        self.next_spawn = 0.0
        self._spawn_missing()

    def handle_usr1(self) -> None:
        if self.audit is not None:
            log.info("reopening the audit file")
            self.audit.reopen()

    def handle_chld(self) -> None:
        pass  # the loop reaps on every pass

    # -- helpers ----------------------------------------------------------------------------------

    def _make_ratelimit_table(self, config: Config) -> None:
        """The shared rate-limit table, made once before the first worker that needs it is forked.

        It lives as long as the master, across reloads, so a reload resets no one's budget;
        a changed ``ratelimit_slots`` takes effect at the next start. Raises RuntimeError (with
        what to do) when the C extension is missing: never a non-atomic limiter.
        """
        if not config.uses_rate_limits():
            return
        if self.ratelimit_table is None:
            self.ratelimit_table = new_table(config.server.ratelimit_slots)
            log.info("rate-limit table: %d slots shared by all workers", self.ratelimit_table.slots)
        elif self.ratelimit_table.slots != config.server.ratelimit_slots:
            log.warning(
                "server.ratelimit_slots changed to %d: the table keeps %d slots until the next start",
                config.server.ratelimit_slots,
                self.ratelimit_table.slots,
            )

    def _bind(self, config: Config) -> None:
        wanted = [*config.listen, *([config.admin] if config.admin else [])]
        fresh = {}
        try:
            for address in wanted:
                if address not in self.listeners and address not in fresh:
                    fresh[address] = sockets.bind(address)
        except OSError as exc:
            for sock in fresh.values():
                sock.close()
            raise OSError(exc.errno, f"{address}: {exc.strerror}") from None
        self.listeners.update(fresh)

    def _close_unused_listeners(self) -> None:
        wanted = {*self.config.listen, *([self.config.admin] if self.config.admin else [])}
        for address in [a for a in self.listeners if a not in wanted]:
            self.listeners.pop(address).close()

    def _abort_reload(self, superseded: bool = False) -> None:
        if superseded:
            log.warning("reload superseded by another: its new workers are stopped")
        else:
            log.error("reload aborted: the new workers do not boot; keeping the running configuration")
        for record in self.workers.values():
            if record.generation == self.generation:
                record.stopping = True
                self._signal(record.pid, signal.SIGKILL)
        self.reload_pending = None
        if self.metrics is not None and self.metrics_layout is not None:
            self.metrics.layout = self.metrics_layout  # the new names were never used
            self._metrics_release = True
        self.generation += 1
        # The old generation carries on: re-adopt it as current.
        for record in self.workers.values():
            if not record.stopping:
                record.generation = self.generation
        self._close_unused_listeners()
        if not superseded:
            self.notifier.ready()

    def _spawn(self, config: Config) -> None:
        assert self.heartbeats is not None
        used = {r.slot for r in self.workers.values()}
        slot = next(s for s in range(self.heartbeats.slots) if s not in used)
        self.heartbeats.reset(slot)
        listeners = [self.listeners[a] for a in config.listen]
        admin = self.listeners[config.admin] if config.admin else None
        audit_slot = -1
        audit: WorkerAudit | None = None
        if self.audit is not None:
            audit_slot, _ = self.audit.worker_forked()
            audit = WorkerAudit(self.audit.shared, self.audit.endpoint.address, audit_slot)
        worker = Worker(
            config,
            listeners,
            admin,
            self.heartbeats,
            slot,
            self.pid,
            self.ratelimit_table,
            self.metrics,
            audit,
        )
        pid = self._fork_child(worker.run, keep=[*listeners, *([admin] if admin else [])])
        self.workers[pid] = WorkerRecord(pid, slot, self.generation, time.monotonic(), audit_slot)
        log.debug("spawned worker %d (slot %d, generation %d)", pid, slot, self.generation)

    def _fork_child(
        self, body: Callable[[], int], keep: list[socket.socket] | None = None, writer: bool = False
    ) -> int:
        """Fork a long-lived child that runs ``body`` and exits with its status."""
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                # The child needs neither the master's wake-up pipe nor the other sockets.
                signal.set_wakeup_fd(-1)
                os.close(self._wakeup_r)
                os.close(self._wakeup_w)
                for sock in self.listeners.values():
                    if sock not in (keep or ()):
                        sock.close()
                if self.audit is not None and not writer:
                    self.audit.endpoint.close()  # workers only connect to the writer
                status = body()
            except BaseException:
                log.exception("child process crashed")
            finally:
                logging.shutdown()
                os._exit(status)
        return pid

    def _begin_stop(self, sig: int, graceful: bool) -> None:
        if self.stopping and graceful:
            return
        self.stopping = True
        timeout = self.config.server.graceful_timeout if graceful else 2.0
        self.stop_deadline = time.monotonic() + timeout + 1.0
        log.info("stopping (%s)", "graceful" if graceful else "immediate")
        self.notifier.stopping()
        for record in self.workers.values():
            record.stopping = True
        self._kill_all(sig)

    def _kill_all(self, sig: int) -> None:
        for pid in list(self.workers):
            self._signal(pid, sig)

    def _signal(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                raise

    def _write_pid_file(self) -> None:
        path = self.config.server.pid_file
        if path:
            with open(path, "w") as f:
                f.write(f"{self.pid}\n")

    def _remove_pid_file(self) -> None:
        path = self.config.server.pid_file
        if path:
            try:
                with open(path) as f:
                    if f.read().strip() != str(self.pid):
                        return
                os.unlink(path)
            except OSError:
                pass


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit {code}"


def _with_keys(config: Config, running: Config | None) -> Config:
    """``config`` with its JWT issuers' keys loaded, so that workers are born holding them."""
    identity = prime_keys(
        config.identity, config.jwt_issuers_used(), running.identity if running is not None else None
    )
    return dataclasses.replace(config, identity=identity)


def _metric_names(config: Config) -> tuple[list[str], list[str]]:
    """The label values the metrics have rows for: route and upstream names, nothing else."""
    return [route.name for route in config.router.routes], list(config.upstreams)
