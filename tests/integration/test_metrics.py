"""/metrics through the running proxy: summed over the workers, and still summed after a kill."""

from __future__ import annotations

import os
import re
import signal

import pytest

from .helpers import DevServer, ProxyLauncher, config_toml, request, wait_for

WORKERS = 4


def scrape(admin_port: int) -> str:
    response = request(admin_port, "GET", "/metrics", host="127.0.0.1")
    assert response.status == 200
    return response.body.decode()


def value(text: str, sample: str) -> float:
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.mark.timeout(60)
def test_totals_are_summed_over_workers_and_survive_a_kill(
    launcher: ProxyLauncher, devserver: DevServer
) -> None:
    routes = [{"name": "api", "path": "/api/*"}]
    proxy = launcher.start(config=config_toml(devserver.url, routes), workers=WORKERS)
    ok = 'fastproxy_requests_total{route="api",status="200",decision="allow"}'
    missing = 'fastproxy_requests_total{route="",status="404",decision="deny"}'
    sent = 0
    # New connections each time: the kernel spreads them over the workers.
    for _ in range(120):
        assert proxy.request("GET", "/api/x").status == 200
        sent += 1
    for _ in range(7):
        assert proxy.request("GET", "/nowhere").status == 404
    text = scrape(proxy.admin_port)
    assert value(text, ok) == sent
    assert value(text, missing) == 7
    assert value(text, 'fastproxy_request_duration_seconds_count{route="api"}') == sent
    assert value(text, "fastproxy_worker_restarts_total") == 0

    victim = proxy.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(set(proxy.worker_pids()) - {victim}) == WORKERS, 15, "the respawned worker")
    wait_for(lambda: proxy.readyz() is not None and proxy.readyz()[0] == 200, 15, "readiness")  # type: ignore[index]
    text = scrape(proxy.admin_port)
    assert value(text, ok) == sent  # the dead worker's counts are still in the sum
    assert value(text, "fastproxy_worker_restarts_total") == 1
    for _ in range(10):
        assert proxy.request("GET", "/api/x").status == 200
    assert value(scrape(proxy.admin_port), ok) == sent + 10
