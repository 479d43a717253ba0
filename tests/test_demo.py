"""`fastproxy demo` starts, serves what it prints, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.timeout(40)
def test_demo_serves_and_stops_on_ctrl_c() -> None:
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastproxy", "demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        printed = b""
        deadline = time.monotonic() + 20
        while b"Ctrl-C stops the demo" not in printed:
            assert time.monotonic() < deadline, printed.decode(errors="replace")
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 65536)
                assert chunk, "demo exited early: " + printed.decode(errors="replace")
                printed += chunk
        text = printed.decode()
        assert f"curl -i http://127.0.0.1:{port}/hello" in text
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=5) as response:
            assert response.status == 200
            assert response.headers["X-Request-Id"]
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/nowhere", timeout=5)
            raise AssertionError("expected a 404")
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
            exc.close()
        _check_identity(text, port)
        _check_rate_limit(text, port)
        _check_masking(text, port)
        # Ctrl-C reaches the whole foreground process group.
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=15) == 0
        _check_audit(text)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _printed(text: str, name: str) -> str:
    match = re.search(rf"^  {name}='([^']+)'$", text, re.MULTILINE)
    assert match is not None, f"{name} not printed"
    return match.group(1)


def _answer(url: str, headers: dict[str, str]) -> tuple[int, bytes, Message]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read(), exc.headers


def _status(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    status, body, _ = _answer(url, headers)
    return status, body


def _check_identity(text: str, port: int) -> None:
    """The identity commands the demo prints do what their comments say."""
    base = f"http://127.0.0.1:{port}"
    reader = {"Authorization": "Bearer " + _printed(text, "READER")}
    admin = {"Authorization": "Bearer " + _printed(text, "ADMIN")}
    expired = {"Authorization": "Bearer " + _printed(text, "EXPIRED")}
    key = {"x-api-key": _printed(text, "KEY")}
    assert _status(f"{base}/api/orders/7", {})[0] == 401
    assert _status(f"{base}/api/orders/7", expired)[0] == 401
    status, body = _status(f"{base}/api/orders/echo", reader)
    assert status == 200
    seen = {name.lower(): value for name, value in orjson.loads(body)["headers"]}
    assert (seen["x-auth-subject"], seen["x-auth-roles"], seen["x-auth-method"]) == (
        "alice",
        "reader",
        "jwt:demo",
    )
    assert "authorization" not in seen
    status, body = _status(f"{base}/api/orders/echo", key)
    assert status == 200
    assert ["X-Auth-Method", "api_key:ci-bot"] in orjson.loads(body)["headers"]
    assert _status(f"{base}/api/admin/7", reader)[0] == 403
    assert _status(f"{base}/api/admin/7", admin)[0] == 200
    assert _status(f"{base}/api/internal/x", {})[0] == 403
    assert _status(f"{base}/api/reports/1", key)[0] == 200


def _check_rate_limit(text: str, port: int) -> None:
    """The rate-limited route: 2/s per address with a burst of 3, so a quick run of requests meets a 429."""
    url = f"http://127.0.0.1:{port}/api/limited/x"
    assert f"curl -i {url}" in text
    assert f"for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w '%{{http_code}}\\n' {url}; done" in text
    statuses = []
    while 429 not in statuses:
        assert len(statuses) < 20, statuses  # 2/s cannot keep up with requests sent back to back
        status, body, headers = _answer(url, {})
        statuses.append(status)
        assert headers["RateLimit-Limit"] == "4"
        if status == 200:
            assert int(headers["RateLimit-Remaining"]) >= 0
            assert headers["Retry-After"] is None
    # The first four at least were the burst; the 429 is the JSON error with the fields.
    assert statuses[:4] == [200] * 4 and statuses[-1] == 429, statuses
    assert orjson.loads(body)["error"] == "rate_limited"
    assert headers["RateLimit-Remaining"] == "0"
    assert int(headers["Retry-After"]) >= 1


def _check_masking(text: str, port: int) -> None:
    """The masked route: a reader (JWT or API key) gets "***" for each field, an auditor the raw body."""
    url = f"http://127.0.0.1:{port}/json"
    assert f'curl -s {url} -H "Authorization: Bearer $READER"' in text
    assert f'curl -s {url} -H "Authorization: Bearer $AUDITOR"' in text
    raw = {
        "id": 7,
        "owner": {"name": "Alice", "email": "alice@example.com"},
        "ssn": "078-05-1120",
        "items": [{"sku": "A1", "card": {"number": "4111111111111111"}}],
    }
    masked = {
        "id": 7,
        "owner": {"name": "Alice", "email": "***"},
        "ssn": "***",
        "items": [{"sku": "A1", "card": {"number": "***"}}],
    }
    assert _status(url, {})[0] == 401
    for credential, document in (
        ({"Authorization": "Bearer " + _printed(text, "READER")}, masked),
        ({"x-api-key": _printed(text, "KEY")}, masked),
        ({"Authorization": "Bearer " + _printed(text, "AUDITOR")}, raw),
    ):
        status, body, headers = _answer(url, credential)
        assert status == 200, body
        assert orjson.loads(body) == document
        assert headers["Content-Length"] == str(len(body))


def _check_audit(text: str) -> None:
    """After the stop, the audit file the demo names holds every answer, and verifies."""
    match = re.search(r"fastproxy audit verify (\S+)", text)
    assert match is not None, "no audit verify line printed"
    path = match.group(1)
    with open(path, "rb") as f:
        records = [line for line in f if b'"request_id"' in line]
    assert len(records) >= 10  # what the checks above asked for
    assert b"Bearer" not in b"".join(records)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    verify = subprocess.run(
        [sys.executable, "-m", "fastproxy", "audit", "verify", path], capture_output=True, env=env, timeout=30
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
