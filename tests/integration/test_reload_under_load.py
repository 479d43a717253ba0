"""HUP under load: no refused connection, no 5xx, the new policy in force within 2 s."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import pytest

from .helpers import Client, DevServer, ProxyLauncher, config_toml, wait_for


class Load:
    """Threads sending requests as fast as they can, half on keep-alive connections and half on
    a new connection each time (the ones a listener hand-over would refuse)."""

    def __init__(self, port: int, paths: tuple[str, ...], threads: int = 4) -> None:
        self.port = port
        self.paths = paths
        self.outcomes: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i % 2 == 0,), daemon=True) for i in range(threads)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15.0)

    def _count(self, outcome: str) -> None:
        with self._lock:
            self.outcomes[outcome] += 1

    def _run(self, keep_alive: bool) -> None:
        i = 0
        client: Client | None = None
        while not self._stop.is_set():
            path = self.paths[i % len(self.paths)]
            i += 1
            try:
                if client is None:
                    client = Client(self.port)
                response = client.request("GET", path)
                self._count(str(response.status))
                if not keep_alive or response.closes:
                    client.close()
                    client = None
            except OSError as exc:
                self._count(type(exc).__name__)
                if client is not None:
                    client.close()
                    client = None
        if client is not None:
            client.close()


@pytest.mark.timeout(60)
def test_hup_under_load_refuses_nothing_and_applies_within_two_seconds(
    launcher: ProxyLauncher, devserver: DevServer
) -> None:
    def config(version: str) -> str:
        return config_toml(devserver.url, [{"name": version, "path": f"/{version}/*"}])

    proxy = launcher.start(config=config("v1"), workers=2)
    assert proxy.config_path is not None
    with Load(proxy.port, ("/v1/x", "/v2/x")) as load:
        wait_for(lambda: sum(load.outcomes.values()) > 200, 10, "traffic before the reload")
        proxy.config_path.write_text(config("v2"))
        sent = time.monotonic()
        proxy.signal(signal.SIGHUP)
        wait_for(lambda: proxy.request("GET", "/v2/x").status == 200, 10, "the new route")
        applied = time.monotonic() - sent
        served_before = sum(load.outcomes.values())
        wait_for(lambda: sum(load.outcomes.values()) > served_before + 200, 10, "traffic after the reload")

        # An invalid file: logged, and the running configuration keeps serving under the same load.
        proxy.config_path.write_text("[[routes]]\nname = 1\n")
        proxy.signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in proxy.log(), 10, "the refusal")
        served_before = sum(load.outcomes.values())
        wait_for(lambda: sum(load.outcomes.values()) > served_before + 200, 10, "traffic after the refusal")
    assert applied < 2.0, applied
    outcomes = dict(load.outcomes)
    assert set(outcomes) <= {"200", "404"}, outcomes  # 404: /v2 before the reload, /v1 after
    assert proxy.request("GET", "/v2/x").status == 200
    assert "Traceback" not in proxy.log()
