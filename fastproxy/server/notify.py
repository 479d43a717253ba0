"""systemd's notification protocol, from the master: a datagram per state change.

With ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
namespace) and waits for ``READY=1`` before it considers the service started; ``RELOADING=1``
(with ``MONOTONIC_USEC``, as systemd 253 asks for ``Type=notify-reload``) and ``READY=1`` frame a
reload, ``STOPPING=1`` starts a stop, and with ``WatchdogSec`` set (``WATCHDOG_USEC``) systemd
restarts the service unless ``WATCHDOG=1`` comes at least that often. The master sends it only
from a loop pass that has seen fresh heartbeats from its workers, so a master whose workers are
all hung is restarted too.

Without ``NOTIFY_SOCKET`` every call is a no-op; a send that fails is logged once, never raised:
the proxy serves whether or not systemd listens.
"""

from __future__ import annotations

import logging
import os
import socket
import time

__all__ = ["Notifier"]

log = logging.getLogger("fastproxy.master")


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # the abstract namespace
        self.address = address or None
        self._sock: socket.socket | None = None
        self._failed = False
        watchdog_usec = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        # WATCHDOG_PID, when set, names the process the watchdog is meant for.
        mine = not watchdog_pid or watchdog_pid == str(os.getpid())
        self.watchdog_interval: float | None = (
            int(watchdog_usec) / 1e6 / 2
            if watchdog_usec.isdigit() and int(watchdog_usec) > 0 and mine
            else None
        )
        self._last_watchdog = 0.0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def ready(self, status: str = "") -> None:
        self._send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def reloading(self) -> None:
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def watchdog(self, now: float) -> None:
        """Pet the watchdog, at half its interval; call only when the workers look alive."""
        interval = self.watchdog_interval
        if interval is None or now - self._last_watchdog < interval:
            return
        self._last_watchdog = now
        self._send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, message: str) -> None:
        if self.address is None:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode(), self.address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("cannot notify systemd at %s: %s", os.environ.get("NOTIFY_SOCKET"), exc)
