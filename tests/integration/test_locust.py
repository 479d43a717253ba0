"""The Locust scenarios of bench/locustfile.py, each run headless for a few seconds against a real proxy.

One proxy (two workers) in front of the devserver serves the module, configured by
``bench.locust_setup`` exactly as a person running the scenarios by hand would. Locust runs in a
subprocess (it monkey-patches the standard library with gevent: never import it here). Each
scenario must exit 0 with requests made, no failure in its CSV, and the answers it exists to
provoke (429s for the hot users, 401s for forged tokens, ...). At the end the proxy is stopped and
its audit file must verify and hold one record for every request Locust saw answered.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .helpers import ROOT, DevServer, Proxy, ProxyLauncher, _python_env, free_ports, wait_for

pytestmark = pytest.mark.timeout(45)

SECONDS = 3
USERS = 10
WORKERS = 2

# For each scenario, kinds of request (as Locust names them) and the statuses each must have seen.
EXPECTED: dict[str, dict[str, set[str]]] = {
    "MixedTraffic": {
        "jwt: read order": {"200"},
        "jwt: identity seen upstream": {"200"},
        "api key: read order": {"200"},
        "masked read: reader": {"200"},
        "jwt: expired -> 401": {"401"},
        "jwt: forged -> 401": {"401"},
        "admin route: reader -> 403": {"403"},
    },
    "HotUsers": {
        "hot user: 200 or 429": {"200", "429"},
        "hot route: quiet neighbour -> 200": {"200"},
    },
    "BadCredentials": {
        "forged: signature altered -> 401": {"401"},
        "forged: claims edited, signature kept -> 401": {"401"},
        "forged: alg none -> 401": {"401"},
        "jwt: expired -> 401": {"401"},
        "api key: unknown -> 401": {"401"},
        "jwt: read order": {"200"},
    },
}


@dataclass
class Bench:
    directory: Path
    proxy: Proxy
    answered: Counter[str] = field(default_factory=Counter)  # scenario -> requests Locust saw answered


@pytest.fixture(scope="module")
def bench(
    devserver: DevServer, module_launcher: ProxyLauncher, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bench]:
    directory = tmp_path_factory.mktemp("locust")
    # The command a person runs (bench/ is not a package the tests can import).
    argv = [sys.executable, "-m", "bench.locust_setup", "--dir", str(directory), "--upstream", devserver.url]
    port, admin_port = free_ports(2)
    argv += ["--port", str(port), "--admin-port", str(admin_port)]
    done = subprocess.run(
        argv, cwd=ROOT, env=_python_env(), capture_output=True, text=True, timeout=40, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    config = directory / "fastproxy.toml"
    assert done.stdout.strip() == f"fastproxy run --config {config.resolve()}"
    proxy = module_launcher.start(args=["--config", str(config)], workers=WORKERS, wait=False)
    # Not proxy.wait_ready(): it counts the master's children as workers, and one is the audit writer.
    wait_for(lambda: ready(proxy), 20, "the proxy and its audit writer to be ready")
    yield Bench(directory, proxy)


def ready(proxy: Proxy) -> bool:
    if proxy.proc.poll() is not None:
        raise AssertionError(f"proxy exited with {proxy.proc.returncode}:\n{proxy.log()}")
    answer = proxy.readyz()
    return (
        answer is not None
        and answer[0] == 200
        and answer[1].get("workers_ready") == WORKERS
        and answer[1].get("audit_writer") == "serving"
    )


def run_locust(bench: Bench, scenario: str) -> tuple[subprocess.CompletedProcess[str], str]:
    prefix = str(bench.directory / scenario)
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(ROOT / "bench" / "locustfile.py"),
        "--headless",
        "-u",
        str(USERS),
        "-r",
        str(USERS),
        "-t",
        f"{SECONDS}s",
        "--host",
        f"http://127.0.0.1:{bench.proxy.port}",
        "--csv",
        prefix,
        "--only-summary",
        "--exit-code-on-error",
        "1",
        scenario,
    ]
    env = _python_env({"FASTPROXY_LOCUST_DIR": str(bench.directory)})
    done = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=SECONDS + 25, check=False
    )
    return done, prefix


def read_csv(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("scenario", list(EXPECTED))
def test_scenario_runs_headless_without_a_wrong_answer(bench: Bench, scenario: str) -> None:
    done, prefix = run_locust(bench, scenario)
    output = (done.stdout + done.stderr)[-6000:]
    assert done.returncode == 0, f"locust exited {done.returncode}:\n{output}"

    stats = read_csv(f"{prefix}_stats.csv")
    total = next(row for row in stats if row["Name"] == "Aggregated")
    assert int(total["Request Count"]) > 0, output
    failing = {row["Name"]: row["Failure Count"] for row in stats if int(row["Failure Count"])}
    assert not failing, f"{failing}\n{output}"
    assert read_csv(f"{prefix}_failures.csv") == [], output

    answers: dict[str, dict[str, int]] = json.loads(Path(f"{prefix}_answers.json").read_text())
    for kind, statuses in EXPECTED[scenario].items():
        assert set(answers.get(kind, {})) == statuses, f"{kind}: {answers.get(kind)}\n{output}"
    assert not any("no answer" in counts for counts in answers.values()), answers
    bench.answered[scenario] = sum(sum(counts.values()) for counts in answers.values())


def test_the_audit_holds_every_answer_and_verifies(bench: Bench) -> None:
    bench.proxy.signal(signal.SIGTERM)  # a graceful stop flushes the audit
    assert bench.proxy.wait_exit(20) == 0, bench.proxy.log()
    bench.proxy.assert_clean_log()
    audit = bench.directory / "audit.jsonl"
    verify = subprocess.run(
        [sys.executable, "-m", "fastproxy", "audit", "verify", str(audit)],
        cwd=ROOT,
        env=_python_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr

    records = [json.loads(line) for line in audit.read_text().splitlines()]
    answered = [record for record in records if "request_id" in record]
    seen = sum(bench.answered.values())
    # Locust stops its users mid-request: the proxy may have answered (and audited) a request
    # whose answer Locust did not wait for, at most one per user and scenario.
    assert seen <= len(answered) <= seen + USERS * len(bench.answered), (seen, len(answered))
    if {"MixedTraffic", "HotUsers"} <= set(bench.answered):
        reasons = Counter(record["reason"] for record in answered)
        assert {"ok", "rate_limited", "invalid_token:expired", "forbidden:role"} <= set(reasons), reasons
        assert any(record["route"] == "customers" and record["masked"] == 3 for record in answered)
