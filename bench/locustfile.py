"""Locust scenarios against a running fastproxy, each one a user class named on the command line.

Prepare a directory with ``python -m bench.locust_setup --dir DIR --upstream URL``, start the
devserver and ``fastproxy run --config DIR/fastproxy.toml``, then::

    FASTPROXY_LOCUST_DIR=DIR locust -f bench/locustfile.py --headless -u 50 -r 10 -t 30s MixedTraffic

Scenarios:

* ``MixedTraffic``: many principals, each with its own token; reads, writes, the identity the
  upstream sees, API keys, masked reads by readers and by an exempt auditor, a reader on an
  admin route (403), and a share of expired, forged and missing credentials (401).
* ``HotUsers``: a few principals hammering a route limited to 5/s (burst 5): 429 with
  Retry-After is the expected answer, and a principal never gets more than its budget; a quiet
  neighbour on the same route is never limited.
* ``BadCredentials``: a flood of expired, forged, alg-none and unknown-kid tokens and unknown API
  keys, every one a 401, while valid callers keep getting 200.

An expected refusal (401, 403, 429) counts as a success when it is the right answer; a wrong
answer (a forged token let through, a masked value visible to a reader, a 429 without
Retry-After) is a failure whose message says what was wrong. Requests are named by kind, and the
answers each kind got are tallied by status: logged at the end, and written to
``<csv prefix>_answers.json`` when ``--csv`` is given.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from locust import FastHttpUser, between, constant, events, task
from locust.contrib.fasthttp import ResponseContextManager
from locust.env import Environment
from locust.runners import WorkerRunner

DIR_VARIABLE = "FASTPROXY_LOCUST_DIR"

log = logging.getLogger("fastproxy.locust")


def _load() -> dict[str, Any] | None:
    directory = os.environ.get(DIR_VARIABLE)
    if not directory:
        return None
    data: dict[str, Any] = json.loads((Path(directory) / "tokens.json").read_text())
    return data


DATA = _load()
HOST = DATA["host"] if DATA else None


@events.init.add_listener
def _require_data(environment: Environment, **_: Any) -> None:
    if DATA is None:
        raise SystemExit(
            f"{DIR_VARIABLE} is not set: run `python -m bench.locust_setup --dir DIR --upstream URL` "
            f"and set {DIR_VARIABLE}=DIR"
        )


def data() -> dict[str, Any]:
    assert DATA is not None, f"{DIR_VARIABLE} is not set"
    return DATA


# -- the answers each kind of request got ------------------------------------------------------

ANSWERS: defaultdict[str, Counter[str]] = defaultdict(Counter)


@events.request.add_listener
def _count(name: str, response: Any = None, exception: Any = None, **_: Any) -> None:
    status = getattr(response, "status_code", 0) or 0
    ANSWERS[name][str(status) if status else "no answer"] += 1


@events.report_to_master.add_listener
def _send_answers(client_id: str, data: dict[str, Any]) -> None:
    data["fastproxy_answers"] = {name: dict(counts) for name, counts in ANSWERS.items()}
    ANSWERS.clear()


@events.worker_report.add_listener
def _merge_answers(client_id: str, data: dict[str, Any]) -> None:
    for name, counts in data.get("fastproxy_answers", {}).items():
        ANSWERS[name].update(counts)


@events.quitting.add_listener
def _report_answers(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    lines = [f"{'answers by kind':<48} {'status: count'}"]
    for name in sorted(ANSWERS):
        counts = ", ".join(f"{status}: {n}" for status, n in sorted(ANSWERS[name].items()))
        lines.append(f"{name:<48} {counts}")
    log.info("\n%s", "\n".join(lines))
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if prefix:
        document = {name: dict(counts) for name, counts in sorted(ANSWERS.items())}
        Path(f"{prefix}_answers.json").write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")


# -- checks ------------------------------------------------------------------------------------


def headers(response: ResponseContextManager, name: str) -> list[str]:
    found = response.headers.get_all(name) if response.headers is not None else None
    return list(found or [])


def header(response: ResponseContextManager, name: str) -> str | None:
    values = headers(response, name)
    return values[0] if len(values) == 1 else None


def answered(response: ResponseContextManager) -> bool:
    """False (and a failure recorded) when the request got no HTTP answer at all."""
    if response.status_code:
        return True
    response.failure(f"no answer: {getattr(response, 'error', None)!r}")
    return False


def error_code(response: ResponseContextManager) -> str | None:
    try:
        document = json.loads(response.content or b"")
    except ValueError:
        return None
    if not isinstance(document, dict) or set(document) != {"error", "request_id"}:
        return None
    code = document["error"]
    return code if isinstance(code, str) else None


def expect_ok(response: ResponseContextManager, what: str) -> bool:
    """A 200; anything else is a failure naming ``what``. True when the caller may check further."""
    if not answered(response):
        return False
    if response.status_code != 200:
        # The error code, not the body: a body with its request id would make each failure unique.
        got = error_code(response) or response.content[:80]
        response.failure(f"{what}: expected 200, got {response.status_code} {got!r}")
        return False
    return True


def expect_refusal(response: ResponseContextManager, status: int, what: str, invalid: bool = False) -> None:
    """The proxy's own JSON refusal; a 401 carries a Bearer challenge (with invalid_token if ``invalid``)."""
    if not answered(response):
        return
    if response.status_code != status:
        verdict = "LET THROUGH" if 200 <= response.status_code < 300 else "wrong answer"
        response.failure(f"{what}: {verdict}, expected {status}, got {response.status_code}")
        return
    codes = {401: "unauthorized", 403: "forbidden", 429: "rate_limited"}
    if error_code(response) != codes[status]:
        response.failure(f"{what}: {status} without the JSON error body: {response.content[:120]!r}")
        return
    if status == 401:
        challenge = header(response, "WWW-Authenticate") or ""
        if not challenge.startswith("Bearer") or (invalid != ('error="invalid_token"' in challenge)):
            response.failure(f"{what}: 401 with the wrong challenge {challenge!r}")
            return
    response.success()


def check_ratelimit_fields(response: ResponseContextManager, limit: dict[str, Any], what: str) -> bool:
    """RateLimit-Limit is burst + 1, Remaining and Reset whole numbers; a 429 carries Retry-After."""
    expected = str(limit["burst"] + 1)
    fields = {
        name: header(response, name) for name in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
    }
    if fields["RateLimit-Limit"] != expected:
        response.failure(f"{what}: RateLimit-Limit {fields['RateLimit-Limit']!r}, expected {expected}")
        return False
    if not all(value is not None and value.isdigit() for value in fields.values()):
        response.failure(f"{what}: RateLimit fields not whole numbers: {fields}")
        return False
    retry_after = headers(response, "Retry-After")
    if response.status_code == 429:
        if len(retry_after) != 1 or not retry_after[0].isdigit():
            response.failure(f"{what}: 429 without one whole-second Retry-After: {retry_after}")
            return False
    elif retry_after:
        response.failure(f"{what}: Retry-After on a {response.status_code}")
        return False
    return True


def values_at(document: Any, path: str) -> list[Any]:
    """The values at a mask path: dotted keys, ``[*]`` for every element of an array."""
    found = [document]
    for part in path.split("."):
        key, star = (part[:-3], True) if part.endswith("[*]") else (part, False)
        found = [node[key] for node in found if isinstance(node, dict) and key in node]
        if star:
            found = [item for node in found if isinstance(node, list) for item in node]
    return found


def check_masked(response: ResponseContextManager, exempt: bool, what: str) -> None:
    """Every masked field replaced (or, for an exempt caller, every raw value there)."""
    mask = data()["mask"]
    try:
        document = json.loads(response.content)
    except ValueError:
        response.failure(f"{what}: the body is not JSON: {response.content[:120]!r}")
        return
    for path, raw in mask["fields"].items():
        values = values_at(document, path)
        want = raw if exempt else mask["replacement"]
        if not values or any(value != want for value in values):
            shown = "raw values hidden from an exempt caller" if exempt else "a masked field visible"
            response.failure(f"{what}: {shown} at {path}: {values!r}")
            return
        if not exempt and raw.encode() in response.content:
            response.failure(f"{what}: the raw value of {path} is in the body")
            return
    response.success()


def echoed_headers(response: ResponseContextManager) -> dict[str, list[str]] | None:
    """The headers the devserver's /echo saw, by lowercase name (None if the body is not an echo)."""
    try:
        document = json.loads(response.content)
        pairs = document["headers"]
    except (ValueError, KeyError, TypeError):
        return None
    seen: dict[str, list[str]] = defaultdict(list)
    for name, value in pairs:
        seen[name.lower()].append(value)
    return seen


def check_identity_upstream(
    response: ResponseContextManager, subject: str, method: str, roles: list[str], what: str
) -> None:
    """The upstream saw who the caller is, as the proxy established it, and not the credential."""
    seen = echoed_headers(response)
    if seen is None:
        response.failure(f"{what}: not an echo of the request: {response.content[:120]!r}")
        return
    wanted = {"x-auth-subject": [subject], "x-auth-method": [method], "x-auth-roles": [",".join(roles)]}
    for name, value in wanted.items():
        if seen.get(name) != value:
            response.failure(f"{what}: the upstream saw {name} {seen.get(name)!r}, expected {value!r}")
            return
    leaked = {"authorization", data()["api_key_header"]} & set(seen)
    if leaked:
        response.failure(f"{what}: the credential reached the upstream ({', '.join(sorted(leaked))})")
        return
    response.success()


# -- scenarios ---------------------------------------------------------------------------------

_next_principal = itertools.count()
_next_hot = itertools.count()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class ProxyUser(FastHttpUser):
    """What the scenarios share: the host from tokens.json and a principal of one's own."""

    abstract = True
    host = HOST

    def on_start(self) -> None:
        principals = data()["principals"]
        # Round robin: with no more users than principals, every user is a principal of its own.
        self.principal: dict[str, Any] = principals[next(_next_principal) % len(principals)]
        self.auth = bearer(self.principal["token"])
        self.is_admin = "admin" in self.principal["roles"]

    def read_order(self) -> None:
        with self.client.get(
            f"/api/orders/{random.randrange(10_000)}",
            headers=self.auth,
            name="jwt: read order",
            catch_response=True,
        ) as response:
            what = f"read order as {self.principal['sub']}"
            if expect_ok(response, what) and check_ratelimit_fields(
                response, data()["rate_limits"]["per-user"], what
            ):
                response.success()


class MixedTraffic(ProxyUser):
    """Realistic traffic: mostly valid readers, some writers and admins, API keys, masked reads, and
    a share of bad credentials."""

    wait_time = between(0.0, 0.02)

    @task(40)
    def read(self) -> None:
        self.read_order()

    @task(8)
    def identity_upstream(self) -> None:
        with self.client.get(
            f"/api/orders/{random.randrange(10_000)}/echo",
            headers=self.auth,
            name="jwt: identity seen upstream",
            catch_response=True,
        ) as response:
            if expect_ok(response, "identity seen upstream"):
                method = f"jwt:{data()['issuer_name']}"
                sub = self.principal["sub"]
                check_identity_upstream(
                    response, sub, method, self.principal["roles"], "identity seen upstream"
                )

    @task(5)
    def write(self) -> None:
        body = json.dumps({"sku": f"A{random.randrange(1000)}", "quantity": random.randint(1, 9)})
        with self.client.post(
            "/api/orders/echo",
            data=body,
            headers={**self.auth, "Content-Type": "application/json"},
            name="jwt: create order (POST body)",
            catch_response=True,
        ) as response:
            if not expect_ok(response, "create order"):
                return
            try:
                echo = json.loads(response.content)
            except ValueError:
                response.failure("create order: the answer is not the upstream's echo")
                return
            if echo.get("method") != "POST" or echo.get("body_bytes") != len(body.encode()):
                response.failure(
                    f"create order: the upstream got {echo.get('method')} {echo.get('body_bytes')} B"
                )
            else:
                response.success()

    @task(8)
    def api_key_read(self) -> None:
        api_key = random.choice(data()["api_keys"])
        with self.client.get(
            f"/api/orders/{random.randrange(10_000)}/echo",
            headers={data()["api_key_header"]: api_key["key"]},
            name="api key: read order",
            catch_response=True,
        ) as response:
            if expect_ok(response, "api key read"):
                method = f"api_key:{api_key['id']}"
                check_identity_upstream(response, api_key["id"], method, api_key["roles"], "api key read")

    @task(8)
    def masked_read(self) -> None:
        with self.client.get(
            data()["mask"]["path"], headers=self.auth, name="masked read: reader", catch_response=True
        ) as response:
            if expect_ok(response, "masked read"):
                check_masked(response, exempt=False, what=f"masked read as {self.principal['sub']}")

    @task(2)
    def masked_read_api_key(self) -> None:
        api_key = random.choice(data()["api_keys"])
        with self.client.get(
            data()["mask"]["path"],
            headers={data()["api_key_header"]: api_key["key"]},
            name="masked read: api key",
            catch_response=True,
        ) as response:
            if expect_ok(response, "masked read by api key"):
                check_masked(response, exempt=False, what=f"masked read as {api_key['id']}")

    @task(2)
    def auditor_read(self) -> None:
        with self.client.get(
            data()["mask"]["path"],
            headers=bearer(data()["auditor"]["token"]),
            name="masked read: auditor (exempt)",
            catch_response=True,
        ) as response:
            if expect_ok(response, "auditor read"):
                check_masked(response, exempt=True, what="auditor read")

    @task(4)
    def admin_route(self) -> None:
        name = "admin route: admin -> 200" if self.is_admin else "admin route: reader -> 403"
        with self.client.get(
            f"/api/admin/{random.randrange(100)}", headers=self.auth, name=name, catch_response=True
        ) as response:
            if self.is_admin:
                if expect_ok(response, f"admin route as {self.principal['sub']}"):
                    response.success()
            else:
                expect_refusal(response, 403, f"admin route as reader {self.principal['sub']}")

    @task(4)
    def expired(self) -> None:
        token = random.choice(data()["expired"])
        with self.client.get(
            "/api/orders/1", headers=bearer(token["token"]), name="jwt: expired -> 401", catch_response=True
        ) as response:
            expect_refusal(response, 401, f"expired token of {token['sub']}", invalid=True)

    @task(4)
    def forged(self) -> None:
        forged = random.choice(data()["forged"])
        with self.client.get(
            "/api/orders/1", headers=bearer(forged["token"]), name="jwt: forged -> 401", catch_response=True
        ) as response:
            expect_refusal(response, 401, f"forged token ({forged['how']})", invalid=True)

    @task(2)
    def unknown_api_key(self) -> None:
        with self.client.get(
            "/api/orders/1",
            headers={data()["api_key_header"]: random.choice(data()["unknown_api_keys"])},
            name="api key: unknown -> 401",
            catch_response=True,
        ) as response:
            expect_refusal(response, 401, "unknown api key", invalid=True)

    @task(1)
    def no_credentials(self) -> None:
        with self.client.get("/api/orders/1", name="no credentials -> 401", catch_response=True) as response:
            expect_refusal(response, 401, "no credentials")


class HotUsers(ProxyUser):
    """A few principals far over their limit on /api/hot/*, and a quiet neighbour who is not."""

    wait_time = constant(0)
    # (sub) -> [when this process first asked for it, how many 200s it got]: a principal's
    # admitted requests never exceed burst + 1 + rate x elapsed, whichever worker answered.
    admitted: dict[str, list[float]] = {}  # noqa: RUF012 - one tally for every user of the process

    def on_start(self) -> None:
        super().on_start()
        hot = data()["hot"]
        self.hot: dict[str, Any] = hot[next(_next_hot) % len(hot)]
        self.hot_auth = bearer(self.hot["token"])
        self.limit: dict[str, Any] = data()["rate_limits"]["hot"]
        self.last_quiet = 0.0
        HotUsers.admitted.setdefault(self.hot["sub"], [time.monotonic(), 0])

    @task
    def hammer(self) -> None:
        sub = self.hot["sub"]
        with self.client.get(
            f"/api/hot/{random.randrange(100)}",
            headers=self.hot_auth,
            name="hot user: 200 or 429",
            catch_response=True,
        ) as response:
            what = f"hot user {sub}"
            if not answered(response):
                return
            if response.status_code not in (200, 429):
                response.failure(f"{what}: expected 200 or 429, got {response.status_code}")
                return
            if not check_ratelimit_fields(response, self.limit, what):
                return
            if response.status_code == 429:
                expect_refusal(response, 429, what)
                return
            tally = HotUsers.admitted[sub]
            tally[1] += 1
            elapsed = time.monotonic() - tally[0]
            budget = self.limit["burst"] + 1 + self.limit["rate"] / self.limit["per"] * elapsed
            if tally[1] > budget + 1:  # + 1: the decision of this answer may round either way
                response.failure(f"{what}: {int(tally[1])} admitted in {elapsed:.1f}s, budget {budget:.0f}")
            else:
                response.success()
        self.quiet_neighbour()

    def quiet_neighbour(self) -> None:
        """Once a second, a principal under its limit asks on the same route: never a 429."""
        now = time.monotonic()
        if now - self.last_quiet < 1.0:
            return
        self.last_quiet = now
        with self.client.get(
            "/api/hot/quiet", headers=self.auth, name="hot route: quiet neighbour -> 200", catch_response=True
        ) as response:
            what = f"quiet neighbour {self.principal['sub']} beside hot users"
            if expect_ok(response, what) and check_ratelimit_fields(response, self.limit, what):
                response.success()


class BadCredentials(ProxyUser):
    """Probing: every bad credential is a 401, and valid callers are not hurt by the flood."""

    wait_time = constant(0)

    @task(3)
    def forged(self) -> None:
        forged = random.choice(data()["forged"])
        with self.client.get(
            f"/api/admin/{random.randrange(100)}",
            headers=bearer(forged["token"]),
            name=f"forged: {forged['how']} -> 401",
            catch_response=True,
        ) as response:
            expect_refusal(response, 401, f"forged token ({forged['how']})", invalid=True)

    @task(2)
    def expired(self) -> None:
        token = random.choice(data()["expired"])
        with self.client.get(
            "/api/orders/1", headers=bearer(token["token"]), name="jwt: expired -> 401", catch_response=True
        ) as response:
            expect_refusal(response, 401, f"expired token of {token['sub']}", invalid=True)

    @task(1)
    def garbage(self) -> None:
        junk = random.choice(["x", "a.b", "a.b.c", "eyJhbGciOiJSUzI1NiJ9..", "%%%.%%%.%%%", "A" * 9000])
        with self.client.get(
            "/api/orders/1",
            headers=bearer(junk),
            name="jwt: malformed or oversized -> 401",
            catch_response=True,
        ) as response:
            expect_refusal(response, 401, f"malformed token of {len(junk)} characters", invalid=True)

    @task(1)
    def unknown_api_key(self) -> None:
        with self.client.get(
            "/json",
            headers={data()["api_key_header"]: "fpk-" + os.urandom(12).hex()},
            name="api key: unknown -> 401",
            catch_response=True,
        ) as response:
            expect_refusal(response, 401, "unknown api key", invalid=True)

    @task(1)
    def valid_with_a_bad_one(self) -> None:
        """A valid API key beside a forged token is refused: a bad credential is never outvoted."""
        api_key = random.choice(data()["api_keys"])
        forged = random.choice(data()["forged"])
        with self.client.get(
            "/api/orders/1",
            headers={**bearer(forged["token"]), data()["api_key_header"]: api_key["key"]},
            name="api key + forged token -> 401",
            catch_response=True,
        ) as response:
            expect_refusal(response, 401, f"api key beside a forged token ({forged['how']})", invalid=True)

    @task(2)
    def valid(self) -> None:
        self.read_order()
