"""Where JWT verification keys come from: a file, a JWKS URL or OpenID discovery, kept fresh.

Theory of operation
-------------------
One :class:`KeySource` per configured issuer holds the *last good* parsed key set. It is generic over
the parsed type: it is given a ``load`` coroutine (file, URL or discovery, see the ``*_loader``
factories) that returns the raw document and a ``parse`` function that turns it into keys.

- **Last good keys.** A load or parse that fails is logged (issuer name and reason, never the document)
  and changes nothing: ``keys``, ``ready`` and ``generation`` keep their values. New keys are
  *installed* only when a document parses and differs byte for byte from the installed one; each install
  increments ``generation``, so callers can flush caches of verified tokens.
- **Single flight.** At most one load runs at a time. The periodic reload, the retries after a failure
  and every unknown-kid refetch share the in-flight load (:attr:`KeySource._inflight`); each caller
  awaits it through :func:`asyncio.shield`, so a caller that is cancelled (its client went away) does
  not cancel the load the others wait on.
- **Rate limit.** :meth:`KeySource.refetch_for_unknown_kid` starts a load only if the previous refetch
  it started (successful or not) began at least ``min_refetch_interval`` seconds ago by ``clock``.
  Otherwise it answers ``None`` at once and the caller rejects the token without waiting: tokens with
  made-up kids can cost the identity provider at most one request per interval, whatever their number.
  Periodic reloads do not count against that interval (they are bounded by ``refresh`` instead).
- **Schedule.** :meth:`KeySource.start` makes one attempt, then leaves a background task that reloads
  every ``refresh`` seconds. After a failed attempt it retries sooner, 1 s then doubling up to
  ``refresh``, so keys come back quickly after an outage without hammering a provider that stays down.

Nothing here blocks the event loop: URLs are fetched with asyncio streams (:func:`fetch`, a minimal
HTTP/1.1 client) and files are read in the loop's default executor.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Generic, TypeVar
from urllib.parse import unquote, urlsplit

import httptools
import orjson

__all__ = [
    "FetchError",
    "KeySource",
    "Loader",
    "discovery_loader",
    "discovery_url",
    "fetch",
    "file_loader",
    "redact_url",
    "url_loader",
]

T = TypeVar("T")

log = logging.getLogger("fastproxy.identity")

_MAX_HEAD_BYTES = 65536  # a response head bigger than this is not a JWKS server's
_READ_SIZE = 65536
_DISCOVERY_PATH = "/.well-known/openid-configuration"


# --------------------------------------------------------------------------------------------------
# fetch: a minimal HTTP/1.1 GET


class FetchError(Exception):
    """A GET that did not produce a 200 body; the message names the URL (without secrets) and why."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = redact_url(url)
        self.reason = reason
        super().__init__(f"GET {self.url}: {reason}")


def redact_url(url: str) -> str:
    """The URL without userinfo, query and fragment: what may appear in a log line."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "<unparsable URL>"
    return f"{parts.scheme}://{netloc}{parts.path}" + ("?..." if parts.query else "")


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Loading the system CA store takes milliseconds: once per process, not once per fetch.
    return ssl.create_default_context()


class _Response:
    """httptools callbacks for one response; they only assign or append."""

    def __init__(self) -> None:
        self.head_done = False
        self.complete = False
        self.framed = False  # Content-Length or Transfer-Encoding: the body does not end at EOF
        self.content_length: bytes | None = None
        self.content_encoding: bytes | None = None
        self.chunks: list[bytes] = []
        self.size = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length":
            self.framed = True
            self.content_length = value
        elif name == b"transfer-encoding":
            self.framed = True
        elif name == b"content-encoding":
            self.content_encoding = value

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.size += len(body)

    def on_message_complete(self) -> None:
        self.complete = True


def _request_for(url: str) -> tuple[str, int, bool, bytes]:
    """(host, port, tls, request bytes) for a GET of ``url``; raises FetchError on a URL it cannot use."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise FetchError(url, f"bad URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchError(url, "only http:// and https:// URLs can be fetched")
    host = parts.hostname
    if not host:
        raise FetchError(url, "bad URL (no host)")
    tls = scheme == "https"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    authority = f"[{host}]" if ":" in host else host
    # A space or control character would let the URL rewrite the request (header injection).
    if any(ch <= " " or ch == "\x7f" for ch in target + authority):
        raise FetchError(url, "bad URL (space or control character)")
    if port is not None:
        authority += f":{port}"
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {authority}",
        "Accept: application/json",
        "Connection: close",
        "User-Agent: fastproxy",
    ]
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        lines.append("Authorization: Basic " + base64.b64encode(credentials.encode()).decode("ascii"))
    try:
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    except UnicodeEncodeError:
        raise FetchError(url, "bad URL (not ASCII)") from None
    return host, port if port is not None else (443 if tls else 80), tls, request


async def fetch(url: str, *, timeout: float, max_bytes: int = 1 << 20) -> bytes:
    """GET ``url`` and return the body of a 200 answer.

    One request per connection (``Connection: close``); the body may be framed by Content-Length, by
    chunked encoding or by the end of the connection. Redirects are not followed: a 3xx is an error,
    like every status but 200 (configure the final URL). Userinfo in the URL is sent as Basic
    authentication. The whole exchange, from name resolution to the last body byte, is bounded by
    ``timeout`` seconds. Every failure raises :class:`FetchError`.
    """
    host, port, tls, request = _request_for(url)
    try:
        async with asyncio.timeout(timeout):
            return await _exchange(url, host, port, tls, request, max_bytes)
    except TimeoutError:
        raise FetchError(url, f"timed out after {timeout:g}s") from None
    except ConnectionRefusedError:
        raise FetchError(url, "connection refused") from None
    except ConnectionResetError:
        raise FetchError(url, "connection reset") from None
    except ssl.SSLError as exc:
        # A certificate failure says why in verify_message ("self-signed certificate", ...).
        detail = getattr(exc, "verify_message", None) or exc.reason or str(exc)
        raise FetchError(url, f"TLS error ({detail})") from None
    except OSError as exc:
        detail = exc.strerror or str(exc) or type(exc).__name__
        raise FetchError(url, f"connection error ({detail})") from None


async def _exchange(url: str, host: str, port: int, tls: bool, request: bytes, max_bytes: int) -> bytes:
    reader, writer = await asyncio.open_connection(
        host,
        port,
        ssl=_tls_context() if tls else None,
        server_hostname=host if tls else None,
    )
    try:
        writer.write(request)
        await writer.drain()
        return await _read_response(url, reader, max_bytes)
    finally:
        # One exchange per connection and the body is in hand (or the exchange failed): nothing left
        # to say to the peer, and a TLS close_notify handshake could wait on a silent server.
        writer.transport.abort()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _read_response(url: str, reader: asyncio.StreamReader, max_bytes: int) -> bytes:
    response = _Response()
    parser = httptools.HttpResponseParser(response)
    head_bytes = 0
    while not response.complete:
        data = await reader.read(_READ_SIZE)
        if not data:
            if not response.head_done:
                raise FetchError(url, "bad response (connection closed before the response head)")
            if response.framed:
                raise FetchError(url, "bad response (connection closed before the end of the body)")
            break  # no Content-Length nor chunked: the body ends with the connection
        head_was_done = response.head_done
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise FetchError(url, "bad response (protocol upgrade)") from None
        except httptools.HttpParserError as exc:
            if response.complete:
                break  # bytes after the end of the response (llhttp refuses them): not our business
            raise FetchError(url, f"bad response ({exc})") from None
        if not head_was_done:
            if not response.head_done:
                head_bytes += len(data)
                if head_bytes > _MAX_HEAD_BYTES:
                    raise FetchError(url, "bad response (head over 64 KiB)")
                continue
            _check_head(url, parser.get_status_code(), response, max_bytes)
        if response.size > max_bytes:
            raise FetchError(url, f"body over {max_bytes} bytes")
    return b"".join(response.chunks)


def _check_head(url: str, status: int, response: _Response, max_bytes: int) -> None:
    if status != 200:
        raise FetchError(url, f"status {status}")
    if response.content_encoding is not None and response.content_encoding.lower() != b"identity":
        raise FetchError(url, "bad response (unrequested Content-Encoding)")
    if response.content_length is not None:
        try:
            length = int(response.content_length)
        except ValueError:
            raise FetchError(url, "bad response (bad Content-Length)") from None
        if length > max_bytes:
            # Refused before reading any of it.
            raise FetchError(url, f"body over {max_bytes} bytes (Content-Length: {length})")


# --------------------------------------------------------------------------------------------------
# loaders: the three ways an issuer names its keys


Loader = Callable[[], Awaitable[bytes]]


def file_loader(path: str | Path, *, max_bytes: int = 1 << 20) -> Loader:
    """Reads ``path`` on each load, in the loop's default executor (a slow disk never stalls the loop)."""
    file = Path(path)

    def read() -> bytes:
        with file.open("rb") as f:
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise ValueError(f"{file}: over {max_bytes} bytes")
        return data

    async def load() -> bytes:
        return await asyncio.get_running_loop().run_in_executor(None, read)

    return load


def url_loader(url: str, timeout: float, *, max_bytes: int = 1 << 20) -> Loader:
    """GETs ``url`` on each load (see :func:`fetch`)."""

    async def load() -> bytes:
        return await fetch(url, timeout=timeout, max_bytes=max_bytes)

    return load


def discovery_url(issuer: str) -> str:
    """The OpenID discovery document's URL for ``issuer``, with or without its trailing slash."""
    return issuer.rstrip("/") + _DISCOVERY_PATH


def discovery_loader(issuer: str, timeout: float, *, max_bytes: int = 1 << 20) -> Loader:
    """Finds the JWKS through ``<issuer>/.well-known/openid-configuration`` and GETs it.

    The ``jwks_uri`` found is kept and reused by later loads until a load through it fails; the next
    load then reads the discovery document again. So a steady provider costs one request per load, and
    one that moves its keys is followed after a single failed load. Each load makes its requests in
    sequence, so one load is bounded by twice ``timeout``.
    """
    document_url = discovery_url(issuer)
    https_only = issuer.lower().startswith("https:")
    jwks_uri: str | None = None

    async def discover() -> str:
        data = await fetch(document_url, timeout=timeout, max_bytes=max_bytes)
        try:
            document = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ValueError(f"{redact_url(document_url)}: not JSON") from None
        uri = document.get("jwks_uri") if isinstance(document, dict) else None
        if not isinstance(uri, str) or not uri.lower().startswith(("http://", "https://")):
            raise ValueError(f"{redact_url(document_url)}: no http(s) jwks_uri")
        if https_only and not uri.lower().startswith("https://"):
            # Keys fetched in clear would undo the TLS that protected the discovery document.
            raise ValueError(f"{redact_url(document_url)}: jwks_uri is not https")
        return uri

    async def load() -> bytes:
        nonlocal jwks_uri
        uri = jwks_uri if jwks_uri is not None else await discover()
        jwks_uri = None  # forgotten unless this load succeeds
        data = await fetch(uri, timeout=timeout, max_bytes=max_bytes)
        jwks_uri = uri
        return data

    return load


# --------------------------------------------------------------------------------------------------
# KeySource


class KeySource(Generic[T]):
    """The last good keys of one issuer, reloaded periodically and on demand (see the module doc)."""

    def __init__(
        self,
        name: str,
        load: Loader,
        parse: Callable[[bytes], tuple[T, list[str]]],
        *,
        refresh: float,
        clock: Callable[[], float] = time.monotonic,
        min_refetch_interval: float = 30.0,
        initial_backoff: float = 1.0,
        initial: bytes | None = None,
    ) -> None:
        self.name = name
        self._load = load
        self._parse = parse
        self._refresh = refresh
        self._clock = clock
        self._min_refetch_interval = min_refetch_interval
        self._initial_backoff = initial_backoff
        self.keys: T | None = None
        self.generation = 0
        self.last_error: str | None = None  # why the latest load failed; None after a success
        self._document: bytes | None = None  # the installed keys' source, to spot an unchanged one
        self._inflight: asyncio.Task[bool] | None = None
        self._last_refetch: float | None = None
        self._task: asyncio.Task[None] | None = None
        if initial is not None:
            # A document loaded before this source existed (by the master, at start or reload):
            # installed at once, so that keys are there from the first request. Its skipped
            # entries were logged where it was loaded.
            try:
                self.keys, _ = parse(initial)
            except ValueError:
                pass
            else:
                self._document = initial
                self.generation = 1

    @property
    def ready(self) -> bool:
        """True once keys have been installed; a later failure does not take them away."""
        return self.keys is not None

    async def start(self) -> None:
        """One load attempt (its failure is logged, not raised), then the background reloads.

        A source given ``initial`` keys skips the first attempt: they were just loaded.
        """
        if self._task is not None:
            raise RuntimeError(f"key source {self.name!r} already started")
        if self.keys is None:
            await asyncio.shield(self._shared_load())
        self._task = asyncio.get_running_loop().create_task(
            self._reload_forever(), name=f"keysource-{self.name}"
        )

    async def close(self) -> None:
        """Stop the background reloads and any load in flight; the keys stay as they are."""
        tasks = [task for task in (self._task, self._inflight) if task is not None]
        self._task = self._inflight = None
        for task in tasks:
            task.cancel()
        if tasks:
            # wait(), not gather(): it neither raises the tasks' CancelledError nor hides our own.
            await asyncio.wait(tasks)

    def refetch_for_unknown_kid(self) -> Awaitable[bool] | None:
        """Reload because a token names a kid not in ``keys``; the awaitable says if new keys came.

        ``None`` means "not now" (a refetch started less than ``min_refetch_interval`` ago): reject the
        token without waiting. A load already in flight is shared rather than doubled.
        """
        if self._inflight is not None:
            return asyncio.shield(self._inflight)
        now = self._clock()
        if self._last_refetch is not None and now - self._last_refetch < self._min_refetch_interval:
            return None
        self._last_refetch = now
        return asyncio.shield(self._shared_load())

    def _shared_load(self) -> asyncio.Task[bool]:
        if self._inflight is None:
            task = asyncio.get_running_loop().create_task(
                self._load_once(), name=f"keysource-load-{self.name}"
            )
            task.add_done_callback(self._load_done)
            self._inflight = task
        return self._inflight

    def _load_done(self, task: asyncio.Task[bool]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _reload_forever(self) -> None:
        backoff = self._initial_backoff
        while True:
            if self.last_error is None:
                delay, backoff = self._refresh, self._initial_backoff
            else:
                delay, backoff = min(backoff, self._refresh), min(backoff * 2, self._refresh)
            await asyncio.sleep(delay)
            await asyncio.shield(self._shared_load())

    async def _load_once(self) -> bool:
        """Load, parse, install; True if new keys were installed. Never raises but CancelledError."""
        try:
            document = await self._load()
        except (FetchError, OSError, ValueError) as exc:
            return self._failed(f"cannot load keys: {exc}")
        except Exception as exc:
            log.error("issuer %s: unexpected error loading keys", self.name, exc_info=True)
            return self._failed(f"cannot load keys: {type(exc).__name__}")
        if document == self._document:
            self.last_error = None
            return False
        try:
            keys, skipped = self._parse(document)
        except ValueError as exc:
            return self._failed(f"unusable key set: {exc}")
        except Exception as exc:
            log.error("issuer %s: unexpected error parsing keys", self.name, exc_info=True)
            return self._failed(f"unusable key set: {type(exc).__name__}")
        for line in skipped:
            log.warning("issuer %s: %s", self.name, line)
        self.keys, self._document, self.last_error = keys, document, None
        self.generation += 1
        log.info("issuer %s: keys installed (generation %d)", self.name, self.generation)
        return True

    def _failed(self, why: str) -> bool:
        self.last_error = why
        kept = "keeping the last good keys" if self.ready else "no keys yet"
        log.warning("issuer %s: %s; %s", self.name, why, kept)
        return False
