"""systemd notifications from a running master, received on a datagram socket the test owns."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from .helpers import DevServer, ProxyLauncher


@pytest.mark.timeout(60)
def test_the_master_notifies_start_reload_watchdog_and_stop(
    tmp_path: Path, launcher: ProxyLauncher, devserver: DevServer
) -> None:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    try:
        proxy = launcher.start(
            devserver.url, workers=2, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}
        )
        messages: list[str] = []

        def expect(state: str) -> str:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                message = sock.recv(4096).decode()
                messages.append(message)
                if message.startswith(state):
                    return message
            raise AssertionError(f"no {state} in {messages}")

        expect("READY=1")
        expect("WATCHDOG=1")
        proxy.signal(signal.SIGHUP)
        assert "MONOTONIC_USEC=" in expect("RELOADING=1")
        expect("READY=1")
        proxy.signal(signal.SIGTERM)
        expect("STOPPING=1")
        assert proxy.wait_exit() == 0
        # The master never says READY before its first workers are: nothing came before it.
        assert messages[0].startswith("READY=1")
    finally:
        sock.close()
