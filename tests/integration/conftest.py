"""Fixtures of the integration tests: a devserver, proxies started as real processes, a recorder.

Each proxy is a ``python -m fastproxy run`` master started by the test; teardown sends TERM to
that master only, waits, and KILLs it (and the workers it forked) if it does not exit in time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import DevServer, ProxyLauncher, RecordingUpstream


@pytest.fixture(scope="session")
def devserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    server = DevServer(tmp_path_factory.mktemp("devserver") / "devserver.log")
    yield server
    server.stop()


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[ProxyLauncher]:
    """Start proxies for one test: ``launcher.start(upstream, config=..., args=..., workers=...)``."""
    proxies = ProxyLauncher(tmp_path)
    yield proxies
    proxies.stop_all()


@pytest.fixture(scope="module")
def module_launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyLauncher]:
    """Like ``launcher``, for a proxy shared by the tests of one module."""
    proxies = ProxyLauncher(tmp_path_factory.mktemp("proxies"))
    yield proxies
    proxies.stop_all()


@pytest.fixture
def recorder() -> Iterator[RecordingUpstream]:
    upstream = RecordingUpstream()
    yield upstream
    upstream.close()
