"""KeySource: last good keys, periodic reloads, single-flight rate-limited refetch, the three loaders.

A real HTTP server on 127.0.0.1 plays the identity provider; it counts the requests it gets, which is
how the tests see single flight and rate limiting from the provider's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from fastproxy.identity.keysource import (
    KeySource,
    discovery_loader,
    discovery_url,
    file_loader,
    url_loader,
)

T = TypeVar("T")

Keys = list[dict[str, str]]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def jwks(*kids: str) -> bytes:
    return orjson.dumps({"keys": [{"kty": "EC", "kid": kid} for kid in kids]})


def parse(data: bytes) -> tuple[Keys, list[str]]:
    keys: Keys = orjson.loads(data)["keys"]  # orjson's decode error is a ValueError
    return keys, []


def kids(source: KeySource[Keys]) -> list[str]:
    assert source.keys is not None
    return [key["kid"] for key in source.keys]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Provider:
    """An identity provider: serves ``docs`` by path (404 otherwise), or ``status`` where set."""

    def __init__(self) -> None:
        self.docs: dict[str, bytes] = {}
        self.status: dict[str, int] = {}
        self.delay = 0.0  # seconds before each answer
        self.hits: Counter[str] = Counter()
        self.base = ""
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            path = request.split(b" ")[1].decode()
            self.hits[path] += 1
            if self.delay:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.delay):
                        await self._stopping.wait()
            status = self.status.get(path, 200 if path in self.docs else 404)
            body = self.docs[path] if status == 200 else b'{"error": "unavailable"}'
            writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            self._tasks.discard(task)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Provider]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            yield self
        finally:
            server.close()
            await server.wait_closed()
            self._stopping.set()  # ends delayed answers (a cancelled handler is logged as an error in 3.11)
            if self._tasks:
                await asyncio.wait(self._tasks)


@contextlib.asynccontextmanager
async def jwks_source(
    refresh: float = 3600.0, clock: Callable[[], float] = time.monotonic, **kwargs: Any
) -> AsyncIterator[tuple[Provider, KeySource[Keys]]]:
    """A provider serving jwks("k1") at /jwks and a started source that loaded it."""
    async with Provider().running() as provider:
        provider.docs["/jwks"] = jwks("k1")
        source = KeySource(
            "corp", url_loader(provider.base + "/jwks", 5.0), parse, refresh=refresh, clock=clock, **kwargs
        )
        await source.start()
        try:
            yield provider, source
        finally:
            await source.close()


async def eventually(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def refetch(source: KeySource[Keys]) -> bool | None:
    waiter = source.refetch_for_unknown_kid()
    return None if waiter is None else await waiter


# --- loading -------------------------------------------------------------------------------------


def test_initial_load_from_a_url() -> None:
    async def main() -> None:
        async with jwks_source() as (provider, source):
            assert source.ready
            assert kids(source) == ["k1"]
            assert source.generation == 1
            assert source.last_error is None
            assert provider.hits["/jwks"] == 1

    run(main())


def test_before_start_there_are_no_keys() -> None:
    async def load() -> bytes:
        return jwks("k1")

    source = KeySource("corp", load, parse, refresh=60.0)
    assert source.keys is None and not source.ready and source.generation == 0


def test_a_file_is_read_on_each_load_and_a_missing_one_keeps_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_bytes(jwks("k1"))
    clock = Clock()

    async def main() -> None:
        source = KeySource("corp", file_loader(path), parse, refresh=3600.0, clock=clock)
        await source.start()
        try:
            assert kids(source) == ["k1"]
            path.write_bytes(jwks("k1", "k2"))
            assert await refetch(source) is True
            assert kids(source) == ["k1", "k2"]
            path.unlink()
            clock.now += 30
            assert await refetch(source) is False
            assert kids(source) == ["k1", "k2"] and source.ready
            assert source.last_error is not None and "No such file" in source.last_error
        finally:
            await source.close()

    run(main())


def test_a_file_over_max_bytes_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_bytes(jwks("k1"))

    async def main() -> str | None:
        source = KeySource("corp", file_loader(path, max_bytes=10), parse, refresh=3600.0)
        await source.start()
        await source.close()
        assert not source.ready
        return source.last_error

    assert "over 10 bytes" in str(run(main()))


def test_start_survives_a_down_provider_and_retries_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with Provider().running() as provider:
            provider.docs["/jwks"] = jwks("k1")
            provider.status["/jwks"] = 503
            loader = url_loader(provider.base + "/jwks", 5.0)
            source = KeySource("corp", loader, parse, refresh=3600.0, initial_backoff=0.02)
            await source.start()  # does not raise
            try:
                assert not source.ready
                assert "status 503" in str(source.last_error)
                await eventually(lambda: provider.hits["/jwks"] >= 3)  # retried well before `refresh`
                del provider.status["/jwks"]
                await eventually(lambda: source.ready)
                assert kids(source) == ["k1"] and source.generation == 1
            finally:
                await source.close()

    with caplog.at_level(logging.WARNING, logger="fastproxy.identity"):
        run(main())
    assert any("issuer corp" in m and "status 503" in m and "no keys yet" in m for m in caplog.messages)


def test_a_failing_provider_keeps_the_last_good_keys(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()

    async def main() -> None:
        async with jwks_source(clock=clock) as (provider, source):
            provider.status["/jwks"] = 503
            assert await refetch(source) is False
            assert "status 503" in str(source.last_error)
            del provider.status["/jwks"]
            provider.docs["/jwks"] = b'{"keys": [SECRET-MATERIAL'  # not JSON
            clock.now += 30
            assert await refetch(source) is False
            assert "unusable key set" in str(source.last_error)
            assert source.ready and kids(source) == ["k1"] and source.generation == 1

    with caplog.at_level(logging.WARNING, logger="fastproxy.identity"):
        run(main())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "issuer corp" in m and "status 503" in m and "keeping the last good keys" in m for m in warnings
    )
    assert any("issuer corp" in m and "unusable key set" in m for m in warnings)
    assert not any("SECRET-MATERIAL" in m for m in caplog.messages)  # never the document


def test_skipped_entries_are_logged_as_warnings(caplog: pytest.LogCaptureFixture) -> None:
    def parse_skipping(data: bytes) -> tuple[Keys, list[str]]:
        return parse(data)[0], ["skipped key 'old': unsupported kty"]

    async def load() -> bytes:
        return jwks("k1")

    async def main() -> None:
        source = KeySource("corp", load, parse_skipping, refresh=3600.0)
        await source.start()
        await source.close()
        assert source.ready

    with caplog.at_level(logging.WARNING, logger="fastproxy.identity"):
        run(main())
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "issuer corp: skipped key 'old': unsupported kty"
    ]


def test_periodic_refresh_picks_up_a_rotation() -> None:
    async def main() -> None:
        async with jwks_source(refresh=0.05) as (provider, source):
            provider.docs["/jwks"] = jwks("k2")
            await eventually(lambda: source.generation == 2)
            assert kids(source) == ["k2"]
            await eventually(lambda: provider.hits["/jwks"] >= 4)  # keeps reloading...
            assert source.generation == 2  # ...but the same document installs nothing

    run(main())


# --- unknown kid ---------------------------------------------------------------------------------


def test_unknown_kid_refetch_is_single_flight_under_100_concurrent_callers() -> None:
    async def main() -> None:
        async with jwks_source() as (provider, source):
            provider.docs["/jwks"] = jwks("k1", "k2")
            provider.delay = 0.05  # the load stays in flight while the callers arrive
            results = await asyncio.gather(*(refetch(source) for _ in range(100)))
            assert results == [True] * 100  # all shared the one load that found k2
            assert provider.hits["/jwks"] == 2  # the initial load and one refetch
            assert kids(source) == ["k1", "k2"] and source.generation == 2

    run(main())


def test_unknown_kid_refetch_is_rate_limited() -> None:
    clock = Clock()

    async def main() -> None:
        async with jwks_source(clock=clock) as (provider, source):
            assert await refetch(source) is False  # same document: nothing new
            assert provider.hits["/jwks"] == 2
            provider.docs["/jwks"] = jwks("k2")
            clock.now += 29.9
            assert source.refetch_for_unknown_kid() is None  # answered at once, without a load
            await asyncio.sleep(0.05)
            assert provider.hits["/jwks"] == 2 and kids(source) == ["k1"]
            clock.now += 0.1
            assert await refetch(source) is True
            assert provider.hits["/jwks"] == 3 and kids(source) == ["k2"]
            # A failed refetch counts as well.
            provider.status["/jwks"] = 503
            clock.now += 30
            assert await refetch(source) is False
            clock.now += 10
            assert source.refetch_for_unknown_kid() is None
            await asyncio.sleep(0.05)
            assert provider.hits["/jwks"] == 4

    run(main())


def test_the_min_refetch_interval_is_a_parameter() -> None:
    clock = Clock()

    async def main() -> None:
        async with jwks_source(clock=clock, min_refetch_interval=5.0) as (provider, source):
            assert await refetch(source) is False
            clock.now += 4.9
            assert source.refetch_for_unknown_kid() is None
            clock.now += 0.1
            assert await refetch(source) is False
            assert provider.hits["/jwks"] == 3

    run(main())


def test_generation_increments_only_when_keys_are_installed() -> None:
    clock = Clock()

    async def main() -> None:
        async with jwks_source(clock=clock) as (provider, source):
            assert source.generation == 1
            assert await refetch(source) is False  # unchanged
            assert source.generation == 1
            provider.status["/jwks"] = 503
            clock.now += 30
            assert await refetch(source) is False  # failed
            assert source.generation == 1
            del provider.status["/jwks"]
            provider.docs["/jwks"] = jwks("k1", "k2")
            clock.now += 30
            assert await refetch(source) is True  # installed
            assert source.generation == 2
            assert source.last_error is None

    run(main())


def test_a_cancelled_caller_does_not_cancel_the_shared_load() -> None:
    async def main() -> None:
        async with jwks_source() as (provider, source):
            provider.docs["/jwks"] = jwks("k2")
            provider.delay = 0.05
            first = asyncio.ensure_future(refetch(source))
            second = asyncio.ensure_future(refetch(source))
            await asyncio.sleep(0)
            first.cancel()
            assert await second is True
            assert first.cancelled()
            assert kids(source) == ["k2"] and provider.hits["/jwks"] == 2

    run(main())


# --- lifecycle -----------------------------------------------------------------------------------


def test_close_stops_the_reloads_and_cancels_a_load_in_flight() -> None:
    async def main() -> None:
        async with jwks_source(refresh=0.02) as (provider, source):
            await eventually(lambda: provider.hits["/jwks"] >= 2)
            provider.delay = 5.0
            waiter = source.refetch_for_unknown_kid()
            assert waiter is not None
            await eventually(lambda: provider.hits["/jwks"] >= 3)  # the slow load reached the provider
            await source.close()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            hits = provider.hits["/jwks"]
            await asyncio.sleep(0.1)
            assert provider.hits["/jwks"] == hits  # no more reloads
            assert kids(source) == ["k1"]
            await source.close()  # twice is harmless

    run(main())


def test_start_twice_is_an_error() -> None:
    async def main() -> None:
        async with jwks_source() as (_, source):
            with pytest.raises(RuntimeError):
                await source.start()

    run(main())


# --- discovery -----------------------------------------------------------------------------------

DISCOVERY = "/.well-known/openid-configuration"


def test_discovery_url_joins_without_a_double_slash() -> None:
    assert discovery_url("https://idp.example.com/") == "https://idp.example.com" + DISCOVERY
    assert discovery_url("https://idp.example.com") == "https://idp.example.com" + DISCOVERY
    assert (
        discovery_url("https://idp.example.com/realms/x/") == "https://idp.example.com/realms/x" + DISCOVERY
    )


@pytest.mark.parametrize("slash", ["", "/"])
def test_discovery_finds_the_jwks_and_keeps_its_uri_until_a_load_fails(slash: str) -> None:
    clock = Clock()

    async def main() -> None:
        async with Provider().running() as provider:
            provider.docs[DISCOVERY] = orjson.dumps(
                {"issuer": provider.base, "jwks_uri": provider.base + "/jwks"}
            )
            provider.docs["/jwks"] = jwks("k1")
            loader = discovery_loader(provider.base + slash, 5.0)
            source = KeySource("corp", loader, parse, refresh=3600.0, clock=clock)
            await source.start()
            try:
                assert kids(source) == ["k1"]
                assert await refetch(source) is False
                assert (provider.hits[DISCOVERY], provider.hits["/jwks"]) == (1, 2)  # the uri was reused
                # The provider moves its keys: one failed load, then the next one rediscovers.
                provider.docs[DISCOVERY] = orjson.dumps({"jwks_uri": provider.base + "/keys/v2"})
                provider.docs["/keys/v2"] = jwks("k2")
                del provider.docs["/jwks"]
                clock.now += 30
                assert await refetch(source) is False
                assert "status 404" in str(source.last_error) and kids(source) == ["k1"]
                clock.now += 30
                assert await refetch(source) is True
                assert kids(source) == ["k2"]
                assert (provider.hits[DISCOVERY], provider.hits["/keys/v2"]) == (2, 1)
            finally:
                await source.close()

    run(main())


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b"<html>", "not JSON"),
        (b"[]", "no http(s) jwks_uri"),
        (b'{"issuer": "x"}', "no http(s) jwks_uri"),
        (b'{"jwks_uri": "file:///etc/passwd"}', "no http(s) jwks_uri"),
    ],
)
def test_an_unusable_discovery_document_is_a_failed_load(document: bytes, reason: str) -> None:
    async def main() -> str | None:
        async with Provider().running() as provider:
            provider.docs[DISCOVERY] = document
            source = KeySource("corp", discovery_loader(provider.base, 5.0), parse, refresh=3600.0)
            await source.start()
            await source.close()
            assert not source.ready
            assert provider.hits["/jwks"] == 0
            return source.last_error

    assert reason in str(run(main()))
