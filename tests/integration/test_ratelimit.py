"""Rate limits through a running proxy: 4 workers sharing one table, the 429 and the RateLimit-* fields,
API-key callers, shadow mode, a reload that keeps everyone's budget, and a table too small to hold every key.

One proxy (4 workers, debug log) serves most of the module; the reload and full-table tests start their own.
Every limit here is keyed by a header whose value each test makes up, so no two tests share a bucket.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import secrets
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from .helpers import (
    SOCKET_TIMEOUT,
    Client,
    Proxy,
    ProxyLauncher,
    RecordingUpstream,
    Response,
    assert_error,
    build_request,
    wait_for,
)

WORKERS = 4
CI_KEY = "ci-" + secrets.token_urlsafe(24)
OPS_KEY = "ops-" + secrets.token_urlsafe(24)

# The contention limit: 50/s sustained, 5 more at once.
RATE = 50
BURST = 5


def routes(*entries: dict[str, Any]) -> str:
    """``[[routes]]`` tables, each to the upstream ``api``."""
    return "".join(
        "[[routes]]\n"
        + "".join(f"{key} = {json.dumps(value)}\n" for key, value in {"upstream": "api", **entry}.items())
        + "\n"
        for entry in entries
    )


def config(upstream: str) -> str:
    ci = hashlib.sha256(CI_KEY.encode()).hexdigest()
    ops = hashlib.sha256(OPS_KEY.encode()).hexdigest()
    route_text = routes(
        {"name": "hammer", "path": "/hammer/*", "public": True, "rate_limit": "hammer"},
        {"name": "limited", "path": "/limited/*", "public": True, "rate_limit": "small"},
        {
            "name": "keys",
            "path": "/keys/*",
            "identity": ["api_key"],
            "roles_any": ["reader"],
            "rate_limit": "per-caller",
        },
        {"name": "shadow", "path": "/shadow/*", "public": True, "rate_limit": "watch", "mode": "shadow"},
        {"name": "ip", "path": "/ip/*", "public": True, "rate_limit": "per-ip"},
        {"name": "masked", "path": "/masked/*", "public": True, "rate_limit": "small", "mask": "target"},
        {"name": "free", "path": "/free/*", "public": True},
    )
    return f"""
[server]
trusted_proxies = ["127.0.0.2/32"]

[upstreams.api]
url = "{upstream}"

[identity.api_keys]
header = "X-Api-Key"
keys = [
  {{ id = "ci", sha256 = "{ci}", roles = ["reader"] }},
  {{ id = "ops", sha256 = "{ops}", roles = ["reader"] }},
]

[rate_limits.hammer]
key = "header:X-Client"
rate = {RATE}
per = 1.0
burst = {BURST}

[rate_limits.small]
key = "header:X-Client"
rate = 1
per = 60
burst = 2

[rate_limits.per-caller]
key = "principal"
rate = 1
per = 60
burst = 1

[rate_limits.watch]
key = "header:X-Client"
rate = 1
per = 60

[rate_limits.per-ip]
key = "ip"
rate = 1
per = 60

[masks.target]
fields = ["target"]

{route_text}
"""


@dataclass
class Env:
    proxy: Proxy
    upstream: RecordingUpstream


@pytest.fixture(scope="module")
def env(module_launcher: ProxyLauncher) -> Iterator[Env]:
    upstream = RecordingUpstream()
    try:
        proxy = module_launcher.start(
            config=config(upstream.url), workers=WORKERS, args=["--log-level", "debug"]
        )
        yield Env(proxy, upstream)
    finally:
        upstream.close()


_ids = itertools.count()


def new_client() -> str:
    """An X-Client value no other request of this run has used: a fresh bucket."""
    return f"client-{secrets.token_hex(6)}"


def new_id() -> str:
    return f"it-rl-{next(_ids)}"


def forwarded(env: Env, client: str) -> int:
    return sum(1 for r in env.upstream.snapshot() if ("X-Client", client) in r.headers)


def ratelimit_fields(response: Response) -> tuple[int, int, int]:
    """(Limit, Remaining, Reset), each present exactly once."""
    found = []
    for name in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"):
        values = response.header_all(name)
        assert len(values) == 1, (name, response.headers)
        found.append(int(values[0]))
    return found[0], found[1], found[2]


def assert_no_ratelimit_fields(response: Response) -> None:
    names = {name.lower() for name, _ in response.headers}
    assert not names & {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "retry-after"}, (
        response.headers
    )


def near(value: int, expected: int) -> bool:
    """A whole-second header read a moment after the decision it describes (rounded up)."""
    return expected - 2 <= value <= expected


# -- 4 workers, one table ------------------------------------------------------------------------------


def test_workers_hammering_two_keys_admit_what_one_bucket_would(env: Env) -> None:
    keys = [new_client(), new_client()]
    threads_per_key = 4
    seconds = 2.0
    statuses: dict[str, Counter[int | str]] = {key: Counter() for key in keys}
    lock = threading.Lock()
    start = threading.Barrier(len(keys) * threads_per_key + 1)

    def hammer(key: str, deadline_box: list[float]) -> None:
        start.wait()
        seen: Counter[int | str] = Counter()
        deadline = deadline_box[0]
        while time.monotonic() < deadline:
            # A new connection every 20 requests: the kernel spreads them over the workers.
            with env.proxy.client() as client:
                for _ in range(20):
                    try:
                        seen[client.request("GET", "/hammer/x", [("X-Client", key)]).status] += 1
                    except OSError as exc:
                        seen[repr(exc)] += 1
                        break
                    if time.monotonic() >= deadline:
                        break
        with lock:
            statuses[key].update(seen)

    deadline_box = [0.0]
    threads = [
        threading.Thread(target=hammer, args=(key, deadline_box), daemon=True)
        for key in keys
        for _ in range(threads_per_key)
    ]
    for thread in threads:
        thread.start()
    began = time.monotonic()  # before any thread passes the barrier: before any decision
    deadline_box[0] = began + seconds
    start.wait()
    for thread in threads:
        thread.join(30)
    elapsed = time.monotonic() - began  # after every decision
    assert not any(thread.is_alive() for thread in threads)

    for key in keys:
        seen = statuses[key]
        assert set(seen) <= {200, 429}, seen
        admitted = seen[200]
        assert seen[429] > admitted, seen  # the clients did ask for more than the limit
        # Upper bound over everything that could have been decided (elapsed includes the joins);
        # lower bound over the planned window the clients kept asking in, less a 0.2 s stall
        # allowance: on a loaded 2-core box a client thread may not run for a moment.
        assert RATE * (seconds - 0.2) - 1 <= admitted <= RATE * elapsed + BURST + 1, (admitted, elapsed, seen)
        # What was refused never reached the upstream.
        assert forwarded(env, key) == admitted
    # Several workers decided for the same keys: their connections were spread.
    deciders = {
        match.group(1)
        for match in re.finditer(r"fastproxy\[(\d+)\] \S+: request \S+: 429 rate_limited", env.proxy.log())
    }
    assert len(deciders) >= 2, deciders


# -- answers -------------------------------------------------------------------------------------------


def test_admitted_responses_carry_the_fields_and_the_429_is_the_json_error(env: Env) -> None:
    client = new_client()
    with env.proxy.client() as connection:
        for remaining in (2, 1, 0):
            response = connection.request("GET", "/limited/x", [("X-Client", client)])
            assert response.status == 200, response.body
            assert response.json()["target"] == "/limited/x"  # the upstream's own answer
            assert response.header("Content-Type") == "application/json"
            limit, left, reset = ratelimit_fields(response)
            assert (limit, left) == (3, remaining)
            assert near(reset, 60 * (3 - remaining)), reset
            assert response.header("Retry-After") is None
        request_id = new_id()
        refused = connection.request(
            "GET", "/limited/x", [("X-Client", client), ("X-Request-Id", request_id)]
        )
        document = assert_error(refused, 429, "rate_limited")
        assert document["request_id"] == request_id
        limit, left, reset = ratelimit_fields(refused)
        assert (limit, left) == (3, 0)
        assert near(reset, 180), reset
        retry_after = refused.header_all("Retry-After")
        assert len(retry_after) == 1 and near(int(retry_after[0]), 60), retry_after
        assert not refused.closes
        # The connection goes on; a refused request spent nothing, so it is refused alike.
        again = connection.request("GET", "/limited/x", [("X-Client", client)])
        assert again.status == 429 and ratelimit_fields(again)[1] == 0
    assert forwarded(env, client) == 3
    line = wait_for(
        lambda: re.search(rf"request {request_id}: 429 rate_limited", env.proxy.log()), 5, "the 429 log line"
    )
    assert line
    # Another client of the same limit is untouched.
    other = env.proxy.request("GET", "/limited/x", [("X-Client", new_client())])
    assert other.status == 200 and ratelimit_fields(other)[:2] == (3, 2)


def test_a_head_request_is_limited_alike(env: Env) -> None:
    client = new_client()
    with env.proxy.client() as connection:
        for _ in range(3):
            response = connection.request("HEAD", "/limited/x", [("X-Client", client)])
            assert response.status == 200
            assert ratelimit_fields(response)[0] == 3
        refused = connection.request("HEAD", "/limited/x", [("X-Client", client)])
        assert refused.status == 429 and refused.body == b""
        assert refused.header("Retry-After") is not None


def test_a_masked_response_keeps_the_fields(env: Env) -> None:
    client = new_client()
    with env.proxy.client() as connection:
        for remaining in (2, 1, 0):
            response = connection.request("GET", "/masked/x", [("X-Client", client)])
            assert response.status == 200, response.body
            assert response.json()["target"] == "***"
            assert response.header("Content-Length") == str(len(response.body))
            assert ratelimit_fields(response)[:2] == (3, remaining)
        assert_error(connection.request("GET", "/masked/x", [("X-Client", client)]), 429, "rate_limited")


def test_a_route_without_a_limit_carries_no_fields(env: Env) -> None:
    for _ in range(5):
        response = env.proxy.request("GET", "/free/x", [("X-Client", "anyone")])
        assert response.status == 200
        assert_no_ratelimit_fields(response)


def test_pipelined_requests_are_decided_in_order(env: Env) -> None:
    client = new_client()
    with env.proxy.client() as connection:
        connection.send(build_request("GET", "/limited/x", [("X-Client", client)]) * 5)
        answers = [connection.read_response() for _ in range(5)]
    assert [a.status for a in answers] == [200, 200, 200, 429, 429]
    assert [ratelimit_fields(a)[1] for a in answers] == [2, 1, 0, 0, 0]
    assert forwarded(env, client) == 3


def test_a_refused_request_body_is_read_and_dropped_and_the_connection_goes_on(env: Env) -> None:
    client = new_client()
    body = b"x" * 100_000
    with env.proxy.client() as connection:
        for _ in range(3):
            assert connection.request("POST", "/limited/x", [("X-Client", client)], body).status == 200
        refused = connection.request("POST", "/limited/x", [("X-Client", client)], body)
        assert_error(refused, 429, "rate_limited")
        assert not refused.closes
        chunked = (
            build_request("POST", "/limited/x", [("X-Client", client), ("Transfer-Encoding", "chunked")])
            + b"5\r\nhello\r\n0\r\n\r\n"
        )
        connection.send(chunked)
        assert connection.read_response().status == 429
        assert connection.request("GET", "/free/x").status == 200
    assert forwarded(env, client) == 3


class ClientFrom(Client):
    """A client connection from a chosen loopback source address (127.0.0.2 is a trusted proxy)."""

    def __init__(self, port: int, source: str) -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=SOCKET_TIMEOUT, source_address=(source, 0)
        )
        self.rfile = self.sock.makefile("rb")


def test_ip_limit_counts_the_address_a_trusted_proxy_names_and_only_that(env: Env) -> None:
    def status(source: str, *headers: tuple[str, str]) -> int:
        with ClientFrom(env.proxy.port, source) as client:
            return client.request("GET", "/ip/x", headers).status

    via_proxy = "127.0.0.2"
    assert status(via_proxy, ("X-Forwarded-For", "198.51.100.7")) == 200
    assert status(via_proxy, ("X-Forwarded-For", "198.51.100.7")) == 429
    assert status(via_proxy, ("X-Forwarded-For", "203.0.113.5, 198.51.100.7")) == 429
    assert status(via_proxy, ("X-Forwarded-For", "198.51.100.8")) == 200
    assert status(via_proxy) == 200  # the proxy's own requests: its own address
    assert status(via_proxy) == 429
    # An untrusted peer is its own address, whatever X-Forwarded-For it makes up.
    assert status("127.0.0.1", ("X-Forwarded-For", "198.51.100.20")) == 200
    assert status("127.0.0.1", ("X-Forwarded-For", "198.51.100.21")) == 429
    assert status("127.0.0.1") == 429


def test_principal_limit_api_keys_have_their_own_buckets(env: Env) -> None:
    def call(*headers: tuple[str, str]) -> Response:
        return env.proxy.request("GET", "/keys/x", headers)

    ci, ops = ("X-Api-Key", CI_KEY), ("X-Api-Key", OPS_KEY)
    assert ratelimit_fields(call(ci))[:2] == (2, 1)
    # Refused before the limit (no key, a wrong key): no one's budget is spent.
    assert call().status == 401
    assert call(("X-Api-Key", "wrong-" + secrets.token_hex(8))).status == 401
    assert ratelimit_fields(call(ci))[:2] == (2, 0)
    assert_error(call(ci), 429, "rate_limited")
    first = call(ops)
    assert first.status == 200 and ratelimit_fields(first)[:2] == (2, 1)
    assert call(ops).status == 200
    assert call(ops).status == 429
    # Both keys' requests reached the upstream as themselves.
    methods = Counter(
        value for r in env.upstream.snapshot() for name, value in r.headers if name == "X-Auth-Method"
    )
    assert (methods["api_key:ci"], methods["api_key:ops"]) == (2, 2)


def test_shadow_route_never_answers_429_but_logs_what_it_would_deny(env: Env) -> None:
    client = new_client()
    ids = [new_id() for _ in range(4)]
    for request_id in ids:
        response = env.proxy.request("GET", "/shadow/x", [("X-Client", client), ("X-Request-Id", request_id)])
        assert response.status == 200, response.body
        assert ratelimit_fields(response)[:2] == (1, 0)
        assert response.header("Retry-After") is None
        assert near(ratelimit_fields(response)[2], 60)
    assert forwarded(env, client) == 4
    wait_for(
        lambda: all(
            f"request {i}: shadow: would deny (rate_limited), forwarded" in env.proxy.log() for i in ids[1:]
        ),
        5,
        "the shadow log lines",
    )
    assert f"request {ids[0]}: shadow" not in env.proxy.log()


def test_the_log_is_clean(env: Env) -> None:
    env.proxy.assert_clean_log()
    log = env.proxy.log()
    assert "rate-limit table: 1048576 slots shared by all workers" in log
    for secret in (CI_KEY, OPS_KEY):
        assert secret not in log


# -- a reload keeps the table ------------------------------------------------------------------------


def reload_config(upstream: str, extra_route: bool) -> str:
    text = f"""
[upstreams.api]
url = "{upstream}"

[rate_limits.small]
key = "header:X-Client"
rate = 1
per = 60
burst = 1

"""
    text += routes({"name": "limited", "path": "/limited/*", "public": True, "rate_limit": "small"})
    if extra_route:
        text += routes({"name": "other", "path": "/other/*", "public": True})
    return text


def test_a_reload_does_not_reset_a_clients_budget(
    launcher: ProxyLauncher, recorder: RecordingUpstream
) -> None:
    proxy = launcher.start(config=reload_config(recorder.url, False), workers=2)
    assert proxy.config_path is not None
    client, fresh = new_client(), new_client()
    assert [proxy.request("GET", "/limited/x", [("X-Client", client)]).status for _ in range(3)] == [
        200,
        200,
        429,
    ]
    old = set(proxy.worker_pids())

    proxy.config_path.write_text(reload_config(recorder.url, True))
    proxy.signal(signal.SIGHUP)
    wait_for(lambda: "reload complete" in proxy.log(), 15, "the reload to complete")
    wait_for(lambda: not set(proxy.worker_pids()) & old, 15, "the old workers to leave")
    assert proxy.request("GET", "/other/x").status == 200  # the new configuration serves

    refused = proxy.request("GET", "/limited/x", [("X-Client", client)])
    assert_error(refused, 429, "rate_limited")
    assert ratelimit_fields(refused)[:2] == (2, 0)
    assert int(refused.header("Retry-After") or 0) >= 1
    assert proxy.request("GET", "/limited/x", [("X-Client", fresh)]).status == 200
    log = proxy.log()
    assert log.count("rate-limit table:") == 1  # made once, before the first fork
    proxy.assert_clean_log()


def test_a_reload_that_adds_the_first_limit_makes_the_table_and_keeps_it(
    launcher: ProxyLauncher, recorder: RecordingUpstream
) -> None:
    unlimited = f'[upstreams.api]\nurl = "{recorder.url}"\n\n' + routes(
        {"name": "limited", "path": "/limited/*", "public": True}
    )
    proxy = launcher.start(config=unlimited, workers=1)
    assert proxy.config_path is not None
    assert "rate-limit table" not in proxy.log()
    assert_no_ratelimit_fields(proxy.request("GET", "/limited/x"))

    def reload(text: str, generation: int) -> None:
        assert proxy.config_path is not None
        old = set(proxy.worker_pids())
        proxy.config_path.write_text(text)
        proxy.signal(signal.SIGHUP)
        wait_for(lambda: proxy.log().count("reload complete") == generation, 15, "the reload to complete")
        wait_for(lambda: not set(proxy.worker_pids()) & old, 15, "the old workers to leave")

    reload("[server]\nratelimit_slots = 64\n" + reload_config(recorder.url, False), 1)
    assert "rate-limit table: 64 slots shared by all workers" in proxy.log()
    client = new_client()
    assert [proxy.request("GET", "/limited/x", [("X-Client", client)]).status for _ in range(3)] == [
        200,
        200,
        429,
    ]

    reload("[server]\nratelimit_slots = 128\n" + reload_config(recorder.url, True), 2)
    assert (
        "server.ratelimit_slots changed to 128: the table keeps 64 slots until the next start" in proxy.log()
    )
    assert proxy.request("GET", "/limited/x", [("X-Client", client)]).status == 429
    assert proxy.log().count("rate-limit table:") == 1
    proxy.assert_clean_log()


# -- a table too small ----------------------------------------------------------------------------------


def full_config(upstream: str) -> str:
    limits = "".join(
        f'[rate_limits.{name}]\nkey = "header:X-Client"\nrate = 1\nper = 60\non_full = "{on_full}"\n\n'
        for name, on_full in (("fail-open", "fail_open"), ("fail-closed", "fail_closed"))
    )
    return f'[upstreams.api]\nurl = "{upstream}"\n\n{limits}' + routes(
        {"name": "open", "path": "/open/*", "public": True, "rate_limit": "fail-open"},
        {"name": "open-too", "path": "/open-too/*", "public": True, "rate_limit": "fail-open"},
        {"name": "closed", "path": "/closed/*", "public": True, "rate_limit": "fail-closed"},
    )


def test_a_full_table_fails_open_or_closed_per_limit_and_says_so_once(
    launcher: ProxyLauncher, recorder: RecordingUpstream
) -> None:
    # 16 slots are one probe window: 16 live keys fill the table for the next 60 s.
    proxy = launcher.start(config=full_config(recorder.url), workers=1, args=["--ratelimit-slots", "16"])
    assert "rate-limit table: 16 slots shared by all workers" in proxy.log()
    clients = [new_client() for _ in range(16)]
    with proxy.client() as connection:
        for client in clients:
            response = connection.request("GET", "/open/x", [("X-Client", client)])
            assert response.status == 200 and ratelimit_fields(response)[:2] == (1, 0)
        for path in ("/open/x", "/open-too/x", "/open/x"):
            response = connection.request("GET", path, [("X-Client", new_client())])
            assert response.status == 200  # fail_open: admitted, the table knowing nothing of it
            assert_no_ratelimit_fields(response)
        for _ in range(2):
            response = connection.request("GET", "/closed/x", [("X-Client", new_client())])
            assert_error(response, 503, "unavailable")
            assert response.header_all("Retry-After") == ["60"]
            assert response.header("RateLimit-Limit") is None
        # The keys that hold a slot are still limited.
        assert connection.request("GET", "/open/x", [("X-Client", clients[0])]).status == 429
    log = proxy.log()
    assert log.count("rate limit fail-open: the table has no free slot for a key") == 1
    assert log.count("rate limit fail-closed: the table has no free slot for a key") == 1
    assert "admitting (on_full = fail_open)" in log and "refusing (on_full = fail_closed)" in log
    proxy.assert_clean_log()


# -- a table that cannot be made --------------------------------------------------------------------


def test_an_impossible_table_size_stops_the_start_with_one_line(
    launcher: ProxyLauncher, recorder: RecordingUpstream
) -> None:
    proxy = launcher.start(
        config=reload_config(recorder.url, False), args=["--ratelimit-slots", "5000000000"], wait=False
    )
    assert proxy.wait_exit() != 0
    log = proxy.log()
    assert "ratelimit" in log.replace("-", "").replace("_", "")
    assert "Traceback" not in log, log


def test_a_reload_asking_for_an_impossible_table_keeps_serving(
    launcher: ProxyLauncher, recorder: RecordingUpstream
) -> None:
    unlimited = f'[upstreams.api]\nurl = "{recorder.url}"\n\n' + routes(
        {"name": "limited", "path": "/limited/*", "public": True}
    )
    proxy = launcher.start(config=unlimited, workers=1)
    assert proxy.config_path is not None
    proxy.config_path.write_text(
        "[server]\nratelimit_slots = 5000000000\n" + reload_config(recorder.url, True)
    )
    proxy.signal(signal.SIGHUP)
    wait_for(
        lambda: "reload refused" in proxy.log() or proxy.proc.poll() is not None, 15, "the reload to end"
    )
    assert proxy.proc.poll() is None, proxy.log()
    assert proxy.request("GET", "/limited/x").status == 200
    assert proxy.request("GET", "/other/x").status == 404
    proxy.assert_clean_log()
