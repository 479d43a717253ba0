"""The audit trail through a running proxy: one record per answer, the chain, and what survives what.

One proxy (two workers, debug log) serves the field tests: every kind of answer it makes (allowed,
denied by each stage, upstream errors, protocol errors) is matched to its record by the X-Request-Id
of the response. The tests that stop, signal or kill a process start proxies of their own, each with
its audit file in its own directory: TERM flushes everything, USR1 after an external ``mv``,
rotation, the writer killed (and unable to start again for a while: the audit path made a directory,
which no ``open`` of a file gets past, root included), a worker killed.

``fastproxy audit verify`` runs as a command on the files the proxies wrote; the last field test
greps those files and the proxy's log for every token and API key sent.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fastproxy.identity.mint import mint, public_jwks

from .helpers import (
    ROOT,
    Proxy,
    ProxyLauncher,
    Recorded,
    RecordingUpstream,
    Response,
    build_request,
    children_of,
    free_port,
    json_response,
    request,
    wait_for,
)

WORKERS = 2
WRITER_NAME = "fastproxy-audit"
ISSUER = "https://idp.audit.test/"
AUDIENCE = "audit-api"
CI_KEY = "ci-" + secrets.token_urlsafe(24)
OPS_KEY = "ops-" + secrets.token_urlsafe(24)
MAX_BODY = 1000
MAX_HEADER = 4096

# Every token and API key sent: none may reach an audit file or a log line.
SENT: set[str] = {CI_KEY, OPS_KEY}

DOCUMENT = {
    "id": 7,
    "owner": {"name": "Alice", "email": "alice@example.com"},
    "ssn": "078-05-1120",
    "items": [{"card": {"number": "4111111111111111"}}, {"card": {"number": "5500000000000004"}}],
}
MASKED_VALUES = 4  # ssn, owner.email and two card numbers
SLOW_TIMEOUT = 0.5
RECORDS = "fastproxy_audit_records_total"
QUEUE = "fastproxy_audit_queue_depth"

_EC_KEY = ec.generate_private_key(ec.SECP256R1()).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)
_ids = itertools.count()


def token(roles: tuple[str, ...] = ("reader",), sub: str = "alice", now: float | None = None) -> str:
    value = mint(
        _EC_KEY,
        sub=sub,
        roles=roles,
        ttl=600,
        aud=AUDIENCE,
        iss=ISSUER,
        now=time.time() if now is None else now,
        kid="k1",
    ).decode()
    SENT.add(value)
    return value


def secret(value: str) -> str:
    SENT.add(value)
    return value


def bearer(value: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {value}")


def api_key(value: str) -> tuple[str, str]:
    SENT.add(value)
    return ("X-Api-Key", value)


def new_id(tag: str) -> str:
    return f"it-audit-{tag}-{next(_ids)}-{secrets.token_hex(3)}"


# -- configuration ------------------------------------------------------------------------------


def routes(*entries: dict[str, Any]) -> str:
    return "".join(
        "[[routes]]\n"
        + "".join(f"{key} = {json.dumps(value)}\n" for key, value in {"upstream": "api", **entry}.items())
        + "\n"
        for entry in entries
    )


def simple_config(upstream: str, audit_path: Path, audit: str = "", flush_interval: float = 0.02) -> str:
    """Two public routes, /open (best_effort) and /strict (fail_closed), and an [audit] section."""
    return f"""
[upstreams.api]
url = "{upstream}"

[audit]
path = "{audit_path}"
flush_interval = {flush_interval}
{audit}

{
        routes(
            {"name": "open", "path": "/open/*", "public": True},
            {"name": "strict", "path": "/strict/*", "public": True, "audit": "fail_closed"},
        )
    }
"""


def field_config(upstream: str, jwks_path: Path, audit_path: Path) -> str:
    ci = hashlib.sha256(CI_KEY.encode()).hexdigest()
    ops = hashlib.sha256(OPS_KEY.encode()).hexdigest()
    both = ["jwt:corp", "api_key"]
    route_text = routes(
        {"name": "open", "path": "/open/*", "public": True},
        {"name": "strict", "path": "/strict/*", "public": True, "audit": "fail_closed"},
        {"name": "orders", "path": "/orders/*", "identity": both, "roles_any": ["reader"]},
        {"name": "admin", "path": "/admin/*", "identity": both, "roles_any": ["admin"]},
        {"name": "shadow", "path": "/shadow/*", "identity": both, "roles_any": ["admin"], "mode": "shadow"},
        {"name": "masked", "path": "/masked/*", "public": True, "mask": "pii"},
        {"name": "limited", "path": "/limited/*", "public": True, "rate_limit": "small"},
        {"name": "slow", "path": "/slow/*", "public": True, "upstream": "slow"},
        {"name": "down", "path": "/down/*", "public": True, "upstream": "down"},
    )
    return f"""
[upstreams.api]
url = "{upstream}"

[upstreams.slow]
url = "{upstream}"
timeout = {SLOW_TIMEOUT}

[upstreams.down]
url = "http://127.0.0.1:{free_port()}"

[identity.jwt.corp]
issuer = "{ISSUER}"
audience = ["{AUDIENCE}"]
algorithms = ["ES256"]
jwks_file = "{jwks_path}"

[identity.api_keys]
header = "X-Api-Key"
keys = [
  {{ id = "ci-bot", sha256 = "{ci}", roles = ["reader"] }},
  {{ id = "ops", sha256 = "{ops}", roles = ["admin", "reader"] }},
]

[rate_limits.small]
key = "header:X-Client"
rate = 1
per = 60

[masks.pii]
fields = ["ssn", "owner.email", "items[*].card.number"]

[audit]
path = "{audit_path}"
flush_interval = 0.02

{route_text}
"""


def responder(request: Recorded) -> bytes:
    if request.target.startswith("/masked/"):
        return json_response(DOCUMENT)
    if request.target.startswith("/slow/cut"):
        # A head and part of the body, then nothing for longer than the upstream's timeout.
        return [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"p" * 10, *[b""] * 15, b"p" * 90]
    if request.target.startswith("/slow/"):
        time.sleep(SLOW_TIMEOUT + 1.0)
    return json_response({"ok": True, "target": request.target})


# -- processes ----------------------------------------------------------------------------------


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def writer_pids(proxy: Proxy) -> list[int]:
    return [pid for pid in children_of(proxy.pid) if comm(pid) == WRITER_NAME]


def worker_pids(proxy: Proxy) -> list[int]:
    """The master's children other than the audit writer."""
    return [pid for pid in children_of(proxy.pid) if comm(pid) != WRITER_NAME]


def ready(proxy: Proxy) -> bool:
    if proxy.proc.poll() is not None:
        raise AssertionError(f"proxy exited with {proxy.proc.returncode}:\n{proxy.log()}")
    answer = proxy.readyz()
    return (
        answer is not None
        and answer[0] == 200
        and answer[1].get("workers_ready") == proxy.workers
        and answer[1].get("audit_writer") == "serving"
        and len(worker_pids(proxy)) == proxy.workers
        and len(writer_pids(proxy)) == 1
    )


def start(launcher: ProxyLauncher, config: str, workers: int = WORKERS, debug: bool = False) -> Proxy:
    """A proxy with an audit writer: ready once its workers are and its writer serves.

    (helpers' wait_ready counts the master's children as workers; here one of them is the writer.)
    """
    args = ["--max-body-bytes", str(MAX_BODY), "--max-header-bytes", str(MAX_HEADER)]
    if debug:
        args += ["--log-level", "debug"]
    proxy = launcher.start(config=config, workers=workers, args=args, wait=False)
    wait_for(lambda: ready(proxy), 20, "the proxy and its audit writer to be ready")
    return proxy


def stop(proxy: Proxy) -> None:
    """Graceful stop: exit 0 once the workers drained and the writer committed."""
    proxy.signal(signal.SIGTERM)
    assert proxy.wait_exit(20) == 0, proxy.log()
    proxy.assert_clean_log()


# -- the audit files ------------------------------------------------------------------------------


def lines_of(*paths: Path) -> list[dict[str, Any]]:
    """Every complete line of the files, parsed, in order (a line being written is left out)."""
    records = []
    for path in paths:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        records += [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]
    return records


def rotated(path: Path) -> list[Path]:
    """The files the writer rotated ``path`` to, oldest first (their names sort by time)."""
    return sorted(
        p for p in path.parent.glob(path.name + ".*") if re.search(r"\.\d{8}T\d{6}\.\d{6}Z", p.name)
    )


def by_id(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if "request_id" in record:
            found.setdefault(record["request_id"], []).append(record)
    return found


def wait_records(ids: list[str], *paths: Path, timeout: float = 10) -> dict[str, dict[str, Any]]:
    """Until every id has its record; each must have exactly one."""

    def present() -> dict[str, list[dict[str, Any]]] | None:
        found = by_id(lines_of(*paths))
        return found if all(i in found for i in ids) else None

    found = wait_for(present, timeout, f"the audit records of {len(ids)} requests")
    for request_id in ids:
        assert len(found[request_id]) == 1, found[request_id]
    return {i: found[i][0] for i in ids}


def verify(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastproxy", "audit", "verify", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )


def assert_verifies(*paths: Path) -> str:
    result = verify(*paths)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok: "), result.stdout
    return result.stdout


def answered(response: Response) -> str:
    request_id = response.header("X-Request-Id")
    assert request_id, response
    return request_id


def lost_total(records: list[dict[str, Any]]) -> int:
    return sum(r["gap"] for r in records if "gap" in r)


# -- the field tests: one proxy for the module --------------------------------------------------


@dataclass
class Env:
    proxy: Proxy
    upstream: RecordingUpstream
    audit: Path


@pytest.fixture(scope="module")
def env(module_launcher: ProxyLauncher) -> Iterator[Env]:
    upstream = RecordingUpstream(responder=responder)
    directory = module_launcher.directory
    jwks = directory / "jwks.json"
    jwks.write_text(json.dumps(public_jwks(_EC_KEY, "k1")))
    audit = directory / "audit" / "audit.jsonl"
    audit.parent.mkdir()
    try:
        proxy = start(module_launcher, field_config(upstream.url, jwks, audit), debug=True)
        yield Env(proxy, upstream, audit)
    finally:
        upstream.close()


def send(
    env: Env, method: str, path: str, *headers: tuple[str, str], body: bytes = b"", tag: str = "req"
) -> tuple[str, Response]:
    request_id = new_id(tag)
    with env.proxy.client() as client:
        response = client.request(method, path, [("X-Request-Id", request_id), *headers], body)
    assert answered(response) == request_id
    return request_id, response


def check(record: dict[str, Any], response: Response, **expected: Any) -> None:
    """The fields every record of a request has, then the ones the test names."""
    assert record["v"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", record["ts"]), record
    assert isinstance(record["boot"], str) and record["boot"]
    assert record["worker"] >= 1 and record["seq"] >= 2  # seq 1 is the stream's worker_start
    assert record["client_ip"] == "127.0.0.1"
    assert record["status"] == response.status
    assert record["decision"] == ("allow" if response.status < 400 else "deny")
    assert record["latency_ms"] >= 0
    # bytes_out counts the head too: at least the body, at most a plausible head more.
    assert len(response.body) < record["bytes_out"] <= len(response.body) + 2048, record
    assert re.fullmatch(r"[0-9a-f]{64}", record["prev"]) and re.fullmatch(r"[0-9a-f]{64}", record["hash"])
    if "would_deny" not in expected:
        assert "would_deny" not in record
    for name, value in expected.items():
        assert record[name] == value, (name, record)


def test_every_answer_has_one_record_with_its_fields(env: Env) -> None:
    reader = token()
    cases: list[tuple[str, Response, dict[str, Any]]] = []

    def case(method: str, path: str, *headers: tuple[str, str], body: bytes = b"", **expected: Any) -> None:
        request_id, response = send(env, method, path, *headers, body=body)
        cases.append((request_id, response, {"method": method, "path": path, **expected}))

    allow = {"decision": "allow", "reason": "ok", "mode": "enforce", "masked": 0}
    public = {"principal": None, "auth": None}
    case("GET", "/open/1", status=200, route="open", upstream="api", bytes_in=0, **allow, **public)
    case("POST", "/open/2", body=b"x" * 321, status=200, route="open", upstream="api", bytes_in=321, **allow)
    case("GET", "/strict/1", status=200, route="strict", upstream="api", **allow, **public)
    case("HEAD", "/open/3", status=200, route="open", **allow)
    case(
        "GET", "/orders/1", bearer(reader),
        status=200, route="orders", principal="alice", auth="jwt:corp", upstream="api", **allow,
    )  # fmt: skip
    case(
        "GET", "/orders/2", api_key(CI_KEY),
        status=200, route="orders", principal="ci-bot", auth="api_key:ci-bot", upstream="api", **allow,
    )  # fmt: skip
    case(
        "GET", "/masked/1",
        status=200, route="masked", upstream="api", reason="ok", decision="allow", masked=MASKED_VALUES,
    )  # fmt: skip
    case(
        "GET", "/shadow/1", bearer(reader),
        status=200, route="shadow", mode="shadow", decision="allow", reason="ok",
        would_deny="forbidden:role", principal="alice", upstream="api",
    )  # fmt: skip
    case(
        "GET", "/shadow/2", bearer(token(roles=("admin",))),
        status=200, route="shadow", mode="shadow", decision="allow", reason="ok", principal="alice",
    )  # fmt: skip
    deny = {"decision": "deny", "upstream": None, "masked": 0, "mode": "enforce"}
    case("GET", "/nowhere", status=404, reason="no_route", route=None, principal=None, auth=None, **deny)
    case("GET", "/orders/3", status=401, reason="no_credentials", route="orders", principal=None, **deny)
    case(
        "GET", "/orders/4", bearer(token(now=time.time() - 3600)),
        status=401, reason="invalid_token:expired", route="orders", principal=None, auth=None, **deny,
    )  # fmt: skip
    case(
        "GET", "/orders/5", api_key("wrong-" + secrets.token_urlsafe(16)),
        status=401, reason="invalid_api_key", route="orders", principal=None, **deny,
    )  # fmt: skip
    case(
        "GET", "/admin/1", bearer(reader),
        status=403, reason="forbidden:role", route="admin", principal="alice", auth="jwt:corp", **deny,
    )  # fmt: skip
    case(
        "GET", "/admin/2", api_key(CI_KEY),
        status=403, reason="forbidden:role", route="admin", principal="ci-bot", auth="api_key:ci-bot", **deny,
    )  # fmt: skip
    case(
        "GET", "/admin/3", api_key(OPS_KEY),
        status=200, route="admin", principal="ops", auth="api_key:ops", upstream="api", **allow,
    )  # fmt: skip
    client_name = new_id("client")
    case("GET", "/limited/1", ("X-Client", client_name), status=200, route="limited", **allow)
    case(
        "GET", "/limited/2", ("X-Client", client_name),
        status=429, reason="rate_limited", route="limited", **deny,
    )  # fmt: skip
    # An upstream that failed is named: it was called.
    failed = {"decision": "deny", "principal": None, "masked": 0}
    case(
        "GET", "/down/1", status=502, reason="upstream_connect_error", route="down", upstream="down", **failed
    )
    case("GET", "/slow/1", status=504, reason="upstream_timeout", route="slow", upstream="slow", **failed)

    records = wait_records([c[0] for c in cases], env.audit)
    streams = set()
    for request_id, response, expected in cases:
        record = records[request_id]
        check(record, response, **expected)
        streams.add((record["boot"], record["worker"]))
    assert len({boot for boot, _ in streams}) == 1
    slow = records[cases[-1][0]]
    # Deadlines are checked once a worker tick (0.25 s) against the time of the last tick.
    assert slow["latency_ms"] >= (SLOW_TIMEOUT - 0.25) * 1000
    # The requests that reached the upstream are exactly the allowed ones.
    forwarded = {
        value for r in env.upstream.snapshot() for name, value in r.headers if name.lower() == "x-request-id"
    }
    for request_id, response, _ in cases:
        reached = request_id in forwarded
        assert reached == (response.status < 400 or response.status == 504), (request_id, response)


def raw_exchange(env: Env, data: bytes) -> Response:
    with env.proxy.client() as client:
        client.send(data)
        response = client.read_response()
        assert client.closed_by_peer()
    return response


def test_protocol_errors_have_their_records(env: Env) -> None:
    sent_id = new_id("proto")
    chunked_413 = raw_exchange(
        env,
        build_request("POST", "/open/big", [("X-Request-Id", sent_id), ("Transfer-Encoding", "chunked")])
        + b"%x\r\n%s\r\n" % (MAX_BODY + 10, b"y" * (MAX_BODY + 10)),
    )
    declared_413 = raw_exchange(
        env, build_request("POST", "/open/big", [("Content-Length", str(MAX_BODY + 1))])
    )
    framing_400 = raw_exchange(env, build_request("POST", "/open/x", [("Transfer-Encoding", "gzip")], b"x"))
    headers_431 = raw_exchange(env, build_request("GET", "/open/x", [("X-Big", "z" * (MAX_HEADER + 10))]))
    cases = [
        (chunked_413, 413, "too_large", "POST", "/open/big", "open"),
        (declared_413, 413, "too_large", "", "", None),
        (framing_400, 400, "bad_framing", "", "", None),
        (headers_431, 431, "headers_too_large", "", "", None),
    ]
    assert answered(chunked_413) == sent_id  # its head was read: the client's id is kept
    records = wait_records([answered(c[0]) for c in cases], env.audit)
    for response, status, reason, method, path, route in cases:
        record = records[answered(response)]
        check(
            record,
            response,
            status=status,
            reason=reason,
            decision="deny",
            method=method,
            path=path,
            route=route,
            principal=None,
            auth=None,
            masked=0,
        )
    assert 0 <= records[sent_id]["bytes_in"] <= MAX_BODY + 10


def test_a_response_cut_short_still_has_its_record(env: Env) -> None:
    request_id = new_id("cut")
    with env.proxy.client() as client:
        client.send(build_request("GET", "/slow/cut", [("X-Request-Id", request_id)]))
        head = client.rfile.readline()
        assert head.startswith(b"HTTP/1.1 200 "), head  # the client saw the answer begin
        # The rest of the head and the 10 body bytes that came, then the close.
        client.sock.settimeout(5.0)
        received = b""
        try:
            while chunk := client.rfile.read1(65536):
                received += chunk
        except ConnectionResetError:
            pass
        assert received.endswith(b"p" * 10) and len(received.split(b"\r\n\r\n", 1)[1]) == 10
    record = wait_records([request_id], env.audit, timeout=2)[request_id]
    assert (record["status"], record["route"], record["upstream"]) == (200, "slow", "slow")


def scrape(admin_port: int) -> str:
    response = request(admin_port, "GET", "/metrics", host="127.0.0.1")
    assert response.status == 200
    return response.body.decode()


def value(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"no {name} in /metrics"
    return float(match.group(1))


def metric(admin_port: int, name: str) -> float:
    return value(scrape(admin_port), name)


def test_metrics_count_the_records_written(env: Env) -> None:
    # Each worker publishes what the writer acknowledged once a tick (0.25 s).
    wait_for(lambda: metric(env.proxy.admin_port, RECORDS) > 0, 5, "records in /metrics")
    before = metric(env.proxy.admin_port, RECORDS)
    ids = [send(env, "GET", "/open/metrics")[0] for _ in range(10)]
    wait_records(ids, env.audit)
    wait_for(
        lambda: metric(env.proxy.admin_port, RECORDS) >= before + 10, 5, "the records total to grow by 10"
    )
    wait_for(lambda: metric(env.proxy.admin_port, QUEUE) == 0, 5, "an empty queue once all is written")
    assert metric(env.proxy.admin_port, "fastproxy_audit_gaps_total") == 0


def test_the_writer_is_named_for_ps(env: Env) -> None:
    children = children_of(env.proxy.pid)
    names = sorted(comm(pid) for pid in children)
    assert len(children) == WORKERS + 1
    assert names.count(WRITER_NAME) == 1, names  # /proc/PID/comm: what ps and top show


def test_no_secret_reaches_the_audit_file_or_the_log(env: Env) -> None:
    # Credentials of every kind once more, allowed and refused, and a valid-looking one that
    # matches no key; then every byte the proxy wrote is searched for every value sent.
    ids = [
        send(env, "GET", "/orders/9", bearer(token()))[0],
        send(env, "GET", "/admin/9", bearer(token()))[0],
        send(env, "GET", "/orders/9", api_key("nokey-" + secrets.token_urlsafe(20)))[0],
        send(env, "GET", "/orders/9", bearer(secret(token()[:-4] + "AAAA")))[0],
        send(env, "GET", "/open/9", ("Authorization", "Basic " + secret(secrets.token_urlsafe(18))))[0],
    ]
    wait_records(ids, env.audit)
    texts = {env.audit: env.audit.read_text(), env.proxy.log_path: env.proxy.log()}
    assert "request it-audit-" in texts[env.proxy.log_path]  # the debug log did log requests
    for path, text in texts.items():
        for value in SENT:
            for piece in (value, value[-24:]):
                assert piece not in text, f"a credential reached {path}"
    env.proxy.assert_clean_log()


# -- stops, signals and kills: a proxy each -------------------------------------------------------


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    server = RecordingUpstream()
    yield server
    server.close()


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    directory = tmp_path / "audit"
    directory.mkdir()
    return directory / "audit.jsonl"


def summary(output: str) -> dict[str, int]:
    """The counts of verify's "ok: ..." line."""
    match = re.match(
        r"ok: (\d+) records in (\d+) files \(.*?\): (\d+) requests, "
        r"(\d+) gap records accounting for (\d+) lost, (\d+) markers, (\d+) worker streams",
        output,
    )
    assert match, output
    names = ("records", "files", "requests", "gaps", "lost", "markers", "streams")
    return dict(zip(names, map(int, match.groups()), strict=True))


def get(proxy: Proxy, path: str) -> tuple[str, Response]:
    response = proxy.request("GET", path)
    return answered(response), response


class Load:
    """Clients sending GETs on fresh connections (so both workers serve) until stopped."""

    def __init__(self, proxy: Proxy, paths: tuple[str, ...], clients: int = 2) -> None:
        self.proxy = proxy
        self.paths = paths
        self.answers: list[tuple[str, int, str | None]] = []  # (request id, status, Retry-After)
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]
        for thread in self._threads:
            thread.start()

    def _run(self, index: int) -> None:
        for n in itertools.count():
            if self._stop.is_set():
                return
            try:
                response = self.proxy.request("GET", f"{self.paths[n % len(self.paths)]}{index}-{n}")
            except BaseException as exc:  # recorded and re-raised by stop()
                self.errors.append(exc)
                return
            with self._lock:
                self.answers.append((answered(response), response.status, response.header("Retry-After")))
            time.sleep(0.005)

    def count(self) -> int:
        with self._lock:
            return len(self.answers)

    def stop(self) -> list[tuple[str, int, str | None]]:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)
        assert not self.errors, self.errors
        return self.answers


def test_term_writes_every_record_and_verify_finds_an_edited_line(
    launcher: ProxyLauncher, upstream: RecordingUpstream, audit_path: Path
) -> None:
    # Batches wait for a flush_interval of a minute: only the stop's drain can send them.
    proxy = start(launcher, simple_config(upstream.url, audit_path, "batch_max = 10000", flush_interval=60.0))
    ids = [get(proxy, f"/open/{n}")[0] for n in range(20)] + [get(proxy, f"/strict/{n}")[0] for n in range(5)]
    ids.append(get(proxy, "/nowhere")[0])
    stop(proxy)
    records = wait_records(ids, audit_path, timeout=0)
    assert {r["worker"] for r in records.values()} <= set(range(1, WORKERS + 1))
    counts = summary(assert_verifies(audit_path))
    assert counts["requests"] == len(ids)
    assert counts["gaps"] == counts["lost"] == 0
    assert counts["streams"] == WORKERS

    lines = audit_path.read_bytes().splitlines(keepends=True)
    target = next(i for i, line in enumerate(lines) if b'"status":404' in line)
    lines[target] = lines[target].replace(b'"status":404', b'"status":200')
    audit_path.write_bytes(b"".join(lines))
    result = verify(audit_path)
    assert result.returncode == 1
    assert result.stdout.startswith(f"fastproxy audit verify: {audit_path}:{target + 1}: "), result.stdout


def test_usr1_after_an_external_move_continues_the_chain_in_a_new_file(
    launcher: ProxyLauncher, upstream: RecordingUpstream, audit_path: Path
) -> None:
    proxy = start(launcher, simple_config(upstream.url, audit_path))
    before = [get(proxy, f"/open/before-{n}")[0] for n in range(6)]
    wait_records(before, audit_path)
    moved = audit_path.with_name("audit.jsonl.1")
    audit_path.rename(moved)  # what logrotate does; the writer still appends to the moved file
    between = [get(proxy, f"/open/between-{n}")[0] for n in range(4)]
    wait_records(between, moved)
    assert not audit_path.exists()
    proxy.signal(signal.SIGUSR1)
    wait_for(lambda: any(r.get("event") == "reopen" for r in lines_of(audit_path)), 10, "the reopen marker")
    after = [get(proxy, f"/open/after-{n}")[0] for n in range(6)]
    wait_records(after, audit_path)
    stop(proxy)

    old, new = by_id(lines_of(moved)), by_id(lines_of(audit_path))
    assert set(before + between) <= set(old) and not set(before + between) & set(new)
    assert set(after) <= set(new) and not set(after) & set(old)
    new_lines = lines_of(audit_path)
    assert new_lines[0]["event"] == "reopen" and new_lines[0]["prev"] == lines_of(moved)[-1]["hash"]
    counts = summary(assert_verifies(moved, audit_path))
    assert counts["files"] == 2 and counts["gaps"] == 0
    assert counts["requests"] == len(before + between + after)
    assert verify(audit_path).returncode == 0  # a continuing chain verifies alone too
    assert verify(audit_path, moved).returncode == 1  # but not out of order


def test_rotation_under_load_continues_the_chain_across_files(
    launcher: ProxyLauncher, upstream: RecordingUpstream, audit_path: Path
) -> None:
    proxy = start(launcher, simple_config(upstream.url, audit_path, "rotate_bytes = 4000"))
    load = Load(proxy, ("/open/", "/strict/"), clients=3)
    wait_for(lambda: load.count() >= 90, 20, "90 answers under load")
    answers = load.stop()
    assert {status for _, status, _ in answers} == {200}
    stop(proxy)
    files = [*rotated(audit_path), audit_path]
    assert len(files) >= 4, files
    records = wait_records([i for i, _, _ in answers], *files, timeout=0)
    counts = summary(assert_verifies(*files))
    assert counts["files"] == len(files) and counts["requests"] == len(records) and counts["gaps"] == 0
    for earlier, later in itertools.pairwise(files):
        first = lines_of(later)[0]
        assert first["event"] == "rotate" and first["previous"] == earlier.name
        assert first["prev"] == lines_of(earlier)[-1]["hash"]
        assert earlier.stat().st_size >= 4000
    assert verify(*files[1:]).returncode == 0  # continuing a chain whose start is not given
    assert verify(files[1], files[0]).returncode == 1


def readyz_writer(proxy: Proxy) -> tuple[int, str] | None:
    answer = proxy.readyz()
    return None if answer is None else (answer[0], str(answer[1].get("audit_writer")))


def test_a_killed_writer_is_restarted_fail_closed_routes_refuse_meanwhile_and_nothing_is_lost(
    launcher: ProxyLauncher, upstream: RecordingUpstream, audit_path: Path
) -> None:
    proxy = start(launcher, simple_config(upstream.url, audit_path))
    load = Load(proxy, ("/open/", "/strict/"))
    wait_for(lambda: load.count() >= 20, 10, "answers under load")

    # kill -9 alone: the master starts another writer, which continues the chain.
    first = writer_pids(proxy)[0]
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: writer_pids(proxy) not in ([], [first]), 10, "a new writer")
    wait_for(lambda: readyz_writer(proxy) == (200, "serving"), 10, "the new writer to serve")
    counted = load.count()
    wait_for(lambda: load.count() >= counted + 20, 10, "answers with the new writer")

    # Now one that cannot start again: the audit path is a directory, which no open() of a file
    # gets past (root included). The file is moved aside first, with whatever it holds.
    second = writer_pids(proxy)[0]
    aside = audit_path.with_name("aside.jsonl")
    audit_path.rename(aside)
    audit_path.mkdir()
    os.kill(second, signal.SIGKILL)
    wait_for(
        lambda: readyz_writer(proxy) == (503, "unavailable"), 10, "/readyz to say the writer is unavailable"
    )
    refused = wait_for(lambda: (r := proxy.request("GET", "/strict/x")).status == 503 and r, 10, "a 503")
    assert refused.json() == {"error": "unavailable", "request_id": answered(refused)}
    assert refused.header("Retry-After") == "1"
    assert proxy.request("GET", "/open/x").status == 200  # best_effort goes on
    counted = load.count()
    wait_for(lambda: load.count() >= counted + 10, 10, "answers while no writer runs")
    wait_for(lambda: "audit writer exited (status 74)" in proxy.log(), 10, "the failed restart in the log")
    assert readyz_writer(proxy) == (503, "unavailable")
    # Nothing is written meanwhile: the workers queue, and the records total waits.
    written = metric(proxy.admin_port, RECORDS)
    queued = wait_for(
        lambda: metric(proxy.admin_port, QUEUE) >= 10 and metric(proxy.admin_port, QUEUE), 10, "a queue"
    )
    assert metric(proxy.admin_port, RECORDS) == written

    audit_path.rmdir()
    aside.rename(audit_path)
    wait_for(lambda: readyz_writer(proxy) == (200, "serving"), 15, "a writer to serve again")
    wait_for(lambda: proxy.request("GET", "/strict/y").status == 200, 5, "fail_closed routes to answer again")
    wait_for(lambda: metric(proxy.admin_port, RECORDS) >= written + queued, 10, "the queued records written")
    counted = load.count()
    wait_for(lambda: load.count() >= counted + 10, 10, "answers after the restart")
    answers = load.stop()
    stop(proxy)

    statuses = {(path_status[1], path_status[2]) for path_status in answers}
    assert (503, "1") in statuses and (200, None) in statuses
    assert statuses <= {(200, None), (503, "1")}
    records = lines_of(audit_path)
    found = by_id(records)
    ids = [i for i, _, _ in answers] + [answered(refused)]
    missing = [i for i in ids if i not in found]
    assert all(len(found[i]) == 1 for i in ids if i in found)
    # Records may only be dropped when a queue was full, and each drop is a gap record's.
    assert len(missing) <= lost_total(records), missing
    assert all(r["reason"] == "queue_full" for r in records if "gap" in r)
    for i, status, _ in answers:
        if i in found:
            assert found[i][0]["status"] == status
            if status == 503:
                assert found[i][0]["reason"] == "audit_unavailable" and found[i][0]["upstream"] is None
    assert sum(r.get("event") == "writer_start" for r in records) >= 3
    counts = summary(assert_verifies(audit_path))
    assert counts["requests"] == len(found)


def test_a_killed_worker_leaves_a_gap_record_for_what_it_had_not_sent(
    launcher: ProxyLauncher, upstream: RecordingUpstream, audit_path: Path
) -> None:
    # One worker, batches of 4, no flush by time: what it sent and what it held are known exactly.
    proxy = start(
        launcher, simple_config(upstream.url, audit_path, "batch_max = 4", flush_interval=60.0), workers=1
    )
    victim = worker_pids(proxy)[0]
    ids = [get(proxy, f"/open/{n}")[0] for n in range(10)]
    # seq 1 is the stream's worker_start: seqs 1-4 and 5-8 went in two full batches, that is
    # the first 7 requests; seqs 9-11 (the last 3 requests) wait in the open batch.
    sent = wait_records(ids[:7], audit_path)
    worker = {r["worker"] for r in sent.values()}
    assert len(worker) == 1

    # A record is submitted just after its response's last byte is written: the kill must come
    # after the last submit, which /metrics shows: 8 records written, 3 queued in the worker.
    def held() -> bool:
        text = scrape(proxy.admin_port)
        return value(text, "fastproxy_audit_records_total") == 8 and value(text, QUEUE) == 3

    wait_for(held, 5, "the worker to hold the last 3 records")
    os.kill(victim, signal.SIGKILL)

    def gap() -> dict[str, Any] | None:
        return next((r for r in lines_of(audit_path) if r.get("reason") == "lost_with_worker"), None)

    record = wait_for(gap, 10, "the lost_with_worker gap record")
    assert (record["worker"], record["seq"], record["gap"]) == (*worker, 9, 3)
    assert not set(ids[7:]) & set(by_id(lines_of(audit_path)))
    wait_for(lambda: ready(proxy) and victim not in worker_pids(proxy), 15, "the respawned worker")
    assert metric(proxy.admin_port, "fastproxy_audit_lost_total") == 3
    after = [get(proxy, f"/open/after-{n}")[0] for n in range(3)]
    stop(proxy)
    wait_records(after, audit_path, timeout=0)
    counts = summary(assert_verifies(audit_path))
    assert (counts["gaps"], counts["lost"], counts["streams"]) == (1, 3, 2)
    assert counts["requests"] == 7 + 3


def test_a_worker_the_writer_has_not_welcomed_is_not_ready(
    launcher: ProxyLauncher, upstream: RecordingUpstream, audit_path: Path
) -> None:
    # Until its audit client has a writer's welcome a worker's fail_closed routes answer 503:
    # /readyz counts it as not ready. A stopped writer still serves (its pid is published) but
    # welcomes no one, which is how the respawned worker here is held before its welcome.
    proxy = start(launcher, simple_config(upstream.url, audit_path), workers=1)
    writer, victim = writer_pids(proxy)[0], worker_pids(proxy)[0]
    os.kill(writer, signal.SIGSTOP)
    try:
        os.kill(victim, signal.SIGKILL)

        def unwelcomed() -> bool:
            answer = proxy.readyz()
            return (
                answer is not None
                and answer[0] == 503
                and answer[1].get("workers_ready") == 1
                and answer[1].get("workers_without_audit") == 1
                and victim not in worker_pids(proxy)
            )

        wait_for(unwelcomed, 15, "the respawned worker to be ready but for its welcome")
    finally:
        os.kill(writer, signal.SIGCONT)
    wait_for(lambda: ready(proxy), 15, "the welcome")
    answer = proxy.readyz()
    assert answer is not None and "workers_without_audit" not in answer[1]
    stop(proxy)


def test_term_just_after_the_writer_died_still_accounts_for_every_answer(
    launcher: ProxyLauncher, upstream: RecordingUpstream, audit_path: Path
) -> None:
    config = simple_config(upstream.url, audit_path, "batch_max = 10000", flush_interval=60.0)
    proxy = launcher.start(config=config, workers=1, args=["--graceful-timeout", "1"], wait=False)
    wait_for(lambda: ready(proxy), 20, "the proxy and its audit writer to be ready")
    ids = [get(proxy, f"/open/{n}")[0] for n in range(5)]  # held in the worker's open batch
    os.kill(writer_pids(proxy)[0], signal.SIGKILL)
    proxy.signal(signal.SIGTERM)  # within the writer's restart backoff (0.5 s at least)
    assert proxy.wait_exit(20) == 0
    records = lines_of(audit_path)
    missing = [i for i in ids if i not in by_id(records)]
    assert len(missing) <= lost_total(records), f"{len(missing)} answers with neither a record nor a gap"
