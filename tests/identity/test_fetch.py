"""fetch(): a minimal HTTP/1.1 GET, exercised against a real server on 127.0.0.1 with scripted answers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import socket
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fastproxy.identity import keysource
from fastproxy.identity.keysource import FetchError, fetch, redact_url

T = TypeVar("T")

JWKS = b'{"keys": [{"kty": "oct", "kid": "k1"}]}'

Reply = Callable[["Server", asyncio.StreamWriter], Awaitable[None]]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def head(status: str, *headers: str) -> bytes:
    return (f"HTTP/1.1 {status}\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n").encode()


async def send(writer: asyncio.StreamWriter, *parts: bytes) -> None:
    # Separate writes with a drain (and a loop turn) between them, so the client sees them in pieces.
    for part in parts:
        writer.write(part)
        await writer.drain()
        await asyncio.sleep(0)


async def content_length(server: Server, writer: asyncio.StreamWriter) -> None:
    await send(writer, head("200 OK", f"Content-Length: {len(JWKS)}", "Content-Type: application/json"), JWKS)


async def chunked(server: Server, writer: asyncio.StreamWriter) -> None:
    await send(
        writer,
        head("200 OK", "Transfer-Encoding: chunked"),
        b"%x\r\n%s\r\n" % (len(JWKS[:10]), JWKS[:10]),
        b"%x\r\n%s\r\n" % (len(JWKS[10:]), JWKS[10:]),
        b"0\r\n\r\n",
    )


async def to_close(server: Server, writer: asyncio.StreamWriter) -> None:
    await send(writer, head("200 OK", "Connection: close"), JWKS[:5], JWKS[5:])


async def unavailable(server: Server, writer: asyncio.StreamWriter) -> None:
    await send(writer, head("503 Service Unavailable", "Content-Length: 4"), b"busy")


async def redirect(server: Server, writer: asyncio.StreamWriter) -> None:
    await send(writer, head("302 Found", "Location: /cl", "Content-Length: 0"))


async def slow(server: Server, writer: asyncio.StreamWriter) -> None:
    await send(writer, head("200 OK", "Content-Length: 100"), b"{")
    await server.stopping.wait()


async def large_declared(server: Server, writer: asyncio.StreamWriter) -> None:
    # Only the head: the client must refuse on Content-Length alone, before any body arrives.
    await send(writer, head("200 OK", "Content-Length: 5000"))
    await server.stopping.wait()


async def large_chunked(server: Server, writer: asyncio.StreamWriter) -> None:
    await send(writer, head("200 OK", "Transfer-Encoding: chunked"))
    for _ in range(10):
        await send(writer, b"200\r\n" + b"x" * 0x200 + b"\r\n")
    await send(writer, b"0\r\n\r\n")


async def large_to_close(server: Server, writer: asyncio.StreamWriter) -> None:
    await send(writer, head("200 OK"), b"x" * 5000)


async def cut_length(server: Server, writer: asyncio.StreamWriter) -> None:
    await send(writer, head("200 OK", "Content-Length: 100"), JWKS[:10])


async def cut_chunked(server: Server, writer: asyncio.StreamWriter) -> None:
    await send(writer, head("200 OK", "Transfer-Encoding: chunked"), b"40\r\n" + JWKS[:10])


async def cut_head(server: Server, writer: asyncio.StreamWriter) -> None:
    await send(writer, b"HTTP/1.1 200 OK\r\nContent-Le")


async def garbage(server: Server, writer: asyncio.StreamWriter) -> None:
    await send(writer, b"SSH-2.0-OpenSSH_9.6\r\n\r\n")


async def huge_head(server: Server, writer: asyncio.StreamWriter) -> None:
    await send(writer, b"HTTP/1.1 200 OK\r\n", *(b"X-Filler: " + b"y" * 1000 + b"\r\n" for _ in range(80)))
    await server.stopping.wait()


async def gzipped(server: Server, writer: asyncio.StreamWriter) -> None:
    await send(writer, head("200 OK", "Content-Encoding: gzip", "Content-Length: 3"), b"\x1f\x8b\x08")


async def trailing_junk(server: Server, writer: asyncio.StreamWriter) -> None:
    await send(writer, head("200 OK", f"Content-Length: {len(JWKS)}") + JWKS + b"junk after the end\r\n")


ROUTES: dict[str, Reply] = {
    "/cl": content_length,
    "/chunked": chunked,
    "/eof": to_close,
    "/503": unavailable,
    "/redirect": redirect,
    "/slow": slow,
    "/large-declared": large_declared,
    "/large-chunked": large_chunked,
    "/large-eof": large_to_close,
    "/cut-length": cut_length,
    "/cut-chunked": cut_chunked,
    "/cut-head": cut_head,
    "/garbage": garbage,
    "/huge-head": huge_head,
    "/gzip": gzipped,
    "/junk": trailing_junk,
}


class Server:
    """Answers each path of ROUTES; records every request head and counts hits per path."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.requests: list[bytes] = []
        self.base = ""
        self.stopping = asyncio.Event()  # the hanging answers end when it is set
        self._tasks: set[asyncio.Task[Any]] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if await reader.readexactly(4) != b"GET ":
                return  # not HTTP (a TLS ClientHello): hang up
            request = b"GET " + await reader.readuntil(b"\r\n\r\n")
            self.requests.append(request)
            path = request.split(b" ")[1].split(b"?")[0].decode()
            self.hits[path] += 1
            await ROUTES[path](self, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            self._tasks.discard(task)

    @contextlib.asynccontextmanager
    async def running(self, tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=tls)
        scheme = "https" if tls else "http"
        self.base = f"{scheme}://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            yield self
        finally:
            server.close()
            await server.wait_closed()
            # Ended, not cancelled: Python 3.11's start_server logs a cancelled handler as an error.
            self.stopping.set()
            if self._tasks:
                await asyncio.wait(self._tasks)


async def fetch_from(path: str, **kwargs: Any) -> tuple[bytes, Server]:
    kwargs.setdefault("timeout", 5.0)
    async with Server().running() as server:
        return await fetch(server.base + path, **kwargs), server


async def failure(path: str, **kwargs: Any) -> FetchError:
    with pytest.raises(FetchError) as info:
        await fetch_from(path, **kwargs)
    return info.value


# --- framings ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/cl", "/chunked", "/eof", "/junk"])
def test_each_framing_gives_the_whole_body(path: str) -> None:
    body, server = run(fetch_from(path))
    assert body == JWKS
    assert server.hits[path] == 1


def test_the_request_is_a_plain_http11_get() -> None:
    _, server = run(fetch_from("/cl?tenant=a%20b"))
    request_line, *header_lines = server.requests[0].decode().split("\r\n")
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in header_lines if line)}
    assert request_line == "GET /cl?tenant=a%20b HTTP/1.1"
    assert headers == {
        "host": server.base.removeprefix("http://"),
        "accept": "application/json",
        "connection": "close",
        "user-agent": "fastproxy",
    }


def test_userinfo_is_sent_as_basic_authentication_and_kept_out_of_errors() -> None:
    async def main() -> tuple[Server, FetchError]:
        async with Server().running() as server:
            authed = server.base.replace("http://", "http://jwks%40corp:s3cret@")
            await fetch(authed + "/cl", timeout=5.0)
            with pytest.raises(FetchError) as info:
                await fetch(authed + "/503?token=hunter2", timeout=5.0)
            return server, info.value

    server, error = run(main())
    assert b"Authorization: Basic " + base64.b64encode(b"jwks@corp:s3cret") in server.requests[0]
    assert "s3cret" not in str(error) and "hunter2" not in str(error)
    assert f"{server.base}/503?..." in str(error)


def test_max_bytes_is_inclusive() -> None:
    body, _ = run(fetch_from("/chunked", max_bytes=len(JWKS)))
    assert body == JWKS


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/503", "status 503"),
        ("/redirect", "status 302"),  # redirects are not followed
        ("/cut-length", "connection closed before the end of the body"),
        ("/cut-chunked", "connection closed before the end of the body"),
        ("/cut-head", "connection closed before the response head"),
        ("/garbage", "bad response"),
        ("/huge-head", "head over 64 KiB"),
        ("/gzip", "Content-Encoding"),
    ],
)
def test_errors_name_the_url_and_the_problem(path: str, reason: str) -> None:
    error = run(failure(path))
    assert reason in error.reason
    assert str(error).startswith(f"GET {error.url}: ")
    assert error.url.startswith("http://127.0.0.1:") and error.url.endswith(path)


@pytest.mark.parametrize("path", ["/large-declared", "/large-chunked", "/large-eof"])
def test_a_body_over_max_bytes_is_refused(path: str) -> None:
    error = run(failure(path, max_bytes=4096))
    assert "body over 4096 bytes" in error.reason


def test_the_whole_exchange_is_bounded_by_the_timeout() -> None:
    async def main() -> tuple[FetchError, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        error = await failure("/slow", timeout=0.2)
        return error, loop.time() - start

    error, elapsed = run(main())
    assert error.reason == "timed out after 0.2s"
    assert elapsed < 1.5


def test_connection_refused() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(FetchError) as info:
        run(fetch(f"http://127.0.0.1:{port}/jwks", timeout=5.0))
    assert info.value.reason == "connection refused"


def test_https_to_a_plain_http_server_fails_cleanly() -> None:
    async def main() -> None:
        async with Server().running() as server:
            await fetch(server.base.replace("http:", "https:") + "/cl", timeout=5.0)

    with pytest.raises(FetchError) as info:
        run(main())
    assert info.value.url.startswith("https://127.0.0.1:")
    assert info.value.reason in (
        "connection reset",
        "bad response (connection closed before the response head)",
    )


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://127.0.0.1/jwks", "only http:// and https://"),
        ("file:///etc/passwd", "only http:// and https://"),
        ("http:///jwks", "no host"),
        ("http://127.0.0.1:99999/jwks", "bad URL"),
        ("http://127.0.0.1/a b", "space or control character"),
        ("http://127.0.0.1/caf\u00e9", "not ASCII"),
    ],
)
def test_unusable_urls_fail_before_connecting(url: str, reason: str) -> None:
    with pytest.raises(FetchError) as info:
        run(fetch(url, timeout=5.0))
    assert reason in info.value.reason


def test_redact_url() -> None:
    assert (
        redact_url("https://u:p@idp.example.com:8443/keys?key=secret#x")
        == "https://idp.example.com:8443/keys?..."
    )
    assert redact_url("http://idp/jwks") == "http://idp/jwks"


def test_the_same_under_uvloop() -> None:
    """The workers run uvloop: the framings, a timeout and a refusal behave the same there."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        for path in ("/cl", "/chunked", "/eof"):
            body, _ = await fetch_from(path)
            assert body == JWKS
        assert (await failure("/slow", timeout=0.2)).reason == "timed out after 0.2s"
        assert (await failure("/large-eof", max_bytes=4096)).reason == "body over 4096 bytes"
        assert (await failure("/cut-chunked")).reason.endswith("before the end of the body)")

    uvloop.run(main())


# --- TLS -----------------------------------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA) and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fastproxy test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_server_context(tmp_path: Path) -> ssl.SSLContext:
    cert_path, key_path = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context


@pytest.fixture
def trusted_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Makes fetch() trust the test certificate: OpenSSL reads SSL_CERT_FILE when the context is made."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "cert.pem"))
    keysource._tls_context.cache_clear()
    yield
    keysource._tls_context.cache_clear()


async def fetch_over_tls(context: ssl.SSLContext, path: str) -> bytes:
    async with Server().running(tls=context) as server:
        return await fetch(server.base + path, timeout=5.0)


@pytest.mark.parametrize("path", ["/cl", "/chunked", "/eof"])
def test_https(tls_server_context: ssl.SSLContext, trusted_ca: None, path: str) -> None:
    assert run(fetch_over_tls(tls_server_context, path)) == JWKS


def test_https_refuses_an_untrusted_certificate(tls_server_context: ssl.SSLContext) -> None:
    keysource._tls_context.cache_clear()  # the system's CAs, whatever an earlier test set
    with pytest.raises(FetchError) as info:
        run(fetch_over_tls(tls_server_context, "/cl"))
    assert info.value.reason.startswith("TLS error (") and "certificate" in info.value.reason
