"""What the benchmark loads: a `Target` is a server with a URL and, for proxies, a process tree.

A new scenario (routes with policies, several workers, another proxy) is one more subclass: say how
to start it (`command`), which process tree to charge CPU to (`root_pid`) and which of its processes
are workers (`worker_pids`), then register it in `bench.run`.
"""

import json
import os
import sys
import time
from abc import ABC, abstractmethod
from pathlib import Path

from bench import procstat
from bench.process import ManagedProcess, ServerError, free_port

REPO_ROOT = Path(__file__).resolve().parents[1]


class Target(ABC):
    """A server the load generator points at."""

    # How many processes (or threads) serve traffic, set before start(); None where the target has
    # no such setting (direct, floor): a worker-count sweep measures it once, not once per count.
    workers: int | None = None

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    @abstractmethod
    def url(self) -> str: ...

    @abstractmethod
    def start(self, workdir: Path) -> None:
        """Start, and return only once the server answers 200 (workdir is private to the run)."""

    @abstractmethod
    def stop(self) -> None:
        """Stop everything start() started; safe to call more than once or before start()."""

    def root_pid(self) -> int | None:
        """Root of the process tree whose CPU time is charged to this target; None: nothing."""
        return None

    def worker_pids(self) -> list[int]:
        """The processes that serve traffic, whose memory is reported per worker."""
        return []

    def expected_workers(self) -> int | None:
        """How many worker_pids() there should be; a mismatch is reported. None: no check."""
        return None

    def request_headers(self) -> list[str]:
        """Headers the load generator sends with every request ("Name: value")."""
        return []

    # What the load generator asks for (a path after url; "" for the server's root).
    request_path = ""

    @abstractmethod
    def check_alive(self) -> None:
        """Raise ServerError when the server has died (so a round does not load a dead port)."""


class ServerTarget(Target):
    """A target backed by one server process that the harness starts on a free port."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._port: int | None = None
        self._server: ManagedProcess | None = None

    @abstractmethod
    def command(self, workdir: Path, port: int) -> list[str]:
        """argv that serves HTTP on 127.0.0.1:port in the foreground (workdir is this target's)."""

    def environment(self) -> dict[str, str] | None:
        """Environment for the server process; None inherits the harness's."""
        return None

    # The path polled for a 200 before the server counts as started (relative to url).
    ready_path = ""

    @property
    def url(self) -> str:
        if self._port is None:
            raise ServerError(f"{self.name} is not started")
        return f"http://127.0.0.1:{self._port}/"

    def start(self, workdir: Path) -> None:
        own_dir = workdir / self.name
        own_dir.mkdir(parents=True, exist_ok=True)
        self._port = free_port()
        self._server = ManagedProcess(
            self.name,
            self.command(own_dir, self._port),
            own_dir / "server.log",
            cwd=own_dir,
            env=self.environment(),
        )
        self._server.start()
        self._server.wait_ready(self.url + self.ready_path)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    def root_pid(self) -> int | None:
        return self._server.pid if self._server is not None else None

    def check_alive(self) -> None:
        if self._server is not None:
            self._server.check_alive()


class DirectTarget(Target):
    """No proxy: the load goes straight to the upstream, which the run starts and stops."""

    def __init__(self, upstream: Target) -> None:
        super().__init__("direct")
        self._upstream = upstream

    @property
    def url(self) -> str:
        return self._upstream.url

    def start(self, workdir: Path) -> None:
        pass

    def stop(self) -> None:
        pass

    def check_alive(self) -> None:
        self._upstream.check_alive()


def _repo_environment() -> dict[str, str]:
    # The server runs in a scratch directory; putting the repository first on the path makes it
    # load this working tree's fastproxy whether or not the package is installed in the venv.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


class DevserverUpstream(ServerTarget):
    """fastproxy's built-in development upstream, used when nginx is not installed."""

    def __init__(self) -> None:
        super().__init__("upstream-devserver")

    def command(self, workdir: Path, port: int) -> list[str]:
        return [sys.executable, "-m", "fastproxy.devserver", "--listen", f"127.0.0.1:{port}"]

    def environment(self) -> dict[str, str] | None:
        return _repo_environment()


class FastproxyTarget(ServerTarget):
    """`fastproxy run`: a master that forks N workers and one audit writer."""

    def __init__(
        self,
        upstream: Target,
        *,
        name: str = "fastproxy",
        workers: int = 1,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        super().__init__(name)
        self._upstream = upstream
        self.workers: int = workers
        self.extra_args = extra_args

    def command(self, workdir: Path, port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "fastproxy",
            "run",
            "--upstream",
            self._upstream.url.rstrip("/"),
            "--listen",
            f"127.0.0.1:{port}",
            "--workers",
            str(self.workers),
            "--admin-listen",
            "off",
            "--log-level",
            "warning",
            *self.extra_args,
        ]

    def environment(self) -> dict[str, str] | None:
        return _repo_environment()

    def worker_pids(self) -> list[int]:
        root = self.root_pid()
        if root is None:
            return []
        # The master's long-lived children are the workers and one audit writer; the writer is
        # told apart by its name (comm or command line), as it serves no traffic.
        return [pid for pid in procstat.children(root) if not _is_audit_writer(pid)]

    def expected_workers(self) -> int | None:
        return self.workers


class FastproxyConfigTarget(FastproxyTarget):
    """``fastproxy run --config``: one route "api" over everything, with what a scenario adds.

    ``sections`` are TOML tables before the routes (an issuer, a limit, a mask, the audit);
    ``route`` the lines of the "api" route after its path and upstream. Subclasses prepare
    files in the workdir (keys, tokens) in :meth:`prepare`.
    """

    ready_path = "__ready"  # public, whatever the "api" route asks for

    def __init__(
        self, upstream: Target, *, name: str, sections: str = "", route: str = "public = true"
    ) -> None:
        super().__init__(upstream, name=name)
        self.sections = sections
        self.route = route

    def prepare(self, workdir: Path) -> None:
        """Files the configuration refers to."""

    def command(self, workdir: Path, port: int) -> list[str]:
        self.prepare(workdir)
        authority = self._upstream.url.rstrip("/")
        (workdir / "fastproxy.toml").write_text(
            f"""\
[server]
listen = ["127.0.0.1:{port}"]
workers = {self.workers}
admin_listen = "off"
log_level = "warning"

[upstreams.bench]
url = "{authority}"

{self.sections}

[[routes]]
name = "ready"
path = "/{self.ready_path}"
upstream = "bench"
public = true

[[routes]]
name = "api"
path = "/*"
upstream = "bench"
{self.route}
"""
        )
        return [sys.executable, "-m", "fastproxy", "run", "--config", str(workdir / "fastproxy.toml")]


_ISSUER = """\
[identity.jwt.bench]
issuer = "https://idp.bench/"
audience = ["bench"]
algorithms = ["RS256"]
jwks_file = "jwks.json"
"""
_JWT_ROUTE = 'identity = ["jwt:bench"]\nroles_any = ["reader"]'
# A rate limit that never limits here: every request pays for a decision and is admitted.
_GENEROUS = 'key = "{key}"\nrate = 100000000\nburst = 1000\n'
_AUDIT = '[audit]\npath = "audit.jsonl"\nfsync = true\n'


class FastproxyJwtTarget(FastproxyConfigTarget):
    """Every request carries the same RS256 JWT (after the first, a verified-token cache hit).

    The signing key, JWKS and token are made in the workdir. The route decides what is checked:
    a role (``fastproxy-jwt``), nothing (``fastproxy-bearer``, the same requests through a
    public route: it isolates what checking the token costs from what carrying it costs), or
    the full policy (``fastproxy-full``).
    """

    def __init__(
        self, upstream: Target, *, name: str, sections: str = _ISSUER, route: str = _JWT_ROUTE
    ) -> None:
        super().__init__(upstream, name=name, sections=sections, route=route)
        self._token = ""

    def prepare(self, workdir: Path) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        from fastproxy.identity.mint import mint, public_jwks

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        (workdir / "jwks.json").write_text(json.dumps(public_jwks(pem, "bench")))
        self._token = mint(
            pem, sub="bench-user", roles=["reader"], ttl=86400, aud="bench", iss="https://idp.bench/",
            now=time.time(), kid="bench",
        ).decode()  # fmt: skip

    def request_headers(self) -> list[str]:
        return [f"Authorization: Bearer {self._token}"]


class FastproxyJsonTarget(FastproxyConfigTarget):
    """About 1 KB of JSON per response (the upstream's ``JSON_1K_PATH``), masked or not."""

    @property
    def request_path(self) -> str:  # type: ignore[override]
        from bench.nginx import JSON_1K_PATH

        return JSON_1K_PATH.lstrip("/")


def _mask_section() -> str:
    from bench.nginx import MASK_FIELDS

    return "[masks.pii]\nfields = [" + ", ".join(f'"{field}"' for field in MASK_FIELDS) + "]\n"


def fastproxy_jwt(upstream: Target) -> Target:
    """A cached RS256 JWT and a role check (against fastproxy-bearer)."""
    return FastproxyJwtTarget(upstream, name="fastproxy-jwt")


def fastproxy_bearer(upstream: Target) -> Target:
    """fastproxy-jwt's requests, token included, through a public route (its passthrough)."""
    return FastproxyJwtTarget(upstream, name="fastproxy-bearer", route="public = true")


def fastproxy_full(upstream: Target) -> Target:
    """Cached RS256 JWT + role check + rate limit + audit with fsync batching (against fastproxy)."""
    limit = "[rate_limits.per-user]\n" + _GENEROUS.format(key="principal")
    route = _JWT_ROUTE + '\nrate_limit = "per-user"\naudit = "fail_closed"'
    return FastproxyJwtTarget(
        upstream, name="fastproxy-full", sections=f"{_ISSUER}\n{limit}\n{_AUDIT}", route=route
    )


class FastproxyFullJsonTarget(FastproxyJwtTarget):
    """fastproxy-full on the upstream's 1 KB JSON document, masked (``fastproxy-full-masked``)."""

    @property
    def request_path(self) -> str:  # type: ignore[override]
        from bench.nginx import JSON_1K_PATH

        return JSON_1K_PATH.lstrip("/")


def fastproxy_full_masked(upstream: Target) -> Target:
    """fastproxy-full plus masking 7 values of a 1 KB JSON response (against fastproxy-json)."""
    limit = "[rate_limits.per-user]\n" + _GENEROUS.format(key="principal")
    route = _JWT_ROUTE + '\nrate_limit = "per-user"\naudit = "fail_closed"\nmask = "pii"'
    return FastproxyFullJsonTarget(
        upstream,
        name="fastproxy-full-masked",
        sections=f"{_ISSUER}\n{limit}\n{_AUDIT}\n{_mask_section()}",
        route=route,
    )


def fastproxy_limited(upstream: Target) -> Target:
    """A rate limit by client address that never limits (against fastproxy)."""
    return FastproxyConfigTarget(
        upstream,
        name="fastproxy-limited",
        sections="[rate_limits.generous]\n" + _GENEROUS.format(key="ip"),
        route='public = true\nrate_limit = "generous"',
    )


def fastproxy_audit(upstream: Target) -> Target:
    """Every request audited, fsync'd batches, the route failing closed (against fastproxy)."""
    return FastproxyConfigTarget(
        upstream, name="fastproxy-audit", sections=_AUDIT, route='public = true\naudit = "fail_closed"'
    )


def fastproxy_json(upstream: Target) -> Target:
    return FastproxyJsonTarget(upstream, name="fastproxy-json", sections=_mask_section())


def fastproxy_masked(upstream: Target) -> Target:
    """fastproxy-json with 7 values masked in each response (against fastproxy-json)."""
    return FastproxyJsonTarget(
        upstream, name="fastproxy-masked", sections=_mask_section(), route='public = true\nmask = "pii"'
    )


class FloorTarget(ServerTarget):
    """bench.floor: the minimal uvloop + httptools forwarder, what Python can do at best here."""

    def __init__(self, upstream: Target) -> None:
        super().__init__("floor")
        self._upstream = upstream

    def command(self, workdir: Path, port: int) -> list[str]:
        authority = self._upstream.url.split("//", 1)[1].rstrip("/")
        return [sys.executable, "-m", "bench.floor", "--listen", f"127.0.0.1:{port}", "--upstream", authority]

    def environment(self) -> dict[str, str] | None:
        return _repo_environment()

    def worker_pids(self) -> list[int]:
        root = self.root_pid()
        return [root] if root is not None else []

    def expected_workers(self) -> int | None:
        return 1


def _is_audit_writer(pid: int) -> bool:
    # The writer names itself (prctl) "fastproxy-audit"; its command line is the master's.
    stat = procstat.read_stat(pid)
    return stat is not None and stat.comm == "fastproxy-audit"
