"""HAProxy with JWT verification and a stick-table rate limit: the like-for-like anchor.

Debian's HAProxy 2.6 verifies RS256 tokens itself (``jwt_verify``, against a public key file) and
can count requests per subject in a stick table. This target does what fastproxy's full policy
does: check the bearer token's signature, expiry and an authorization claim, count the subject's
rate, forward over pooled connections. HAProxy verifies the signature on every request (it has no
verified-token cache). Its `workers` are threads of one process (nbthread): one thread serves like
one fastproxy worker.
"""

import shutil
import subprocess
import time
from pathlib import Path

from bench.targets import ServerTarget, Target

_CONF = """\
global
    nbthread {threads}
    maxconn 8000
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend bench
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain string ok if {{ path /__ready }}
    http-request set-var(txn.bearer) http_auth_bearer
    http-request deny deny_status 401 unless {{ var(txn.bearer) -m found }}
    http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('$.alg')
    http-request deny deny_status 401 unless {{ var(txn.alg) -m str RS256 }}
    http-request deny deny_status 401 unless {{ var(txn.bearer),jwt_verify(txn.alg,"{public_key}") -m int 1 }}
    http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('$.exp','int')
    http-request set-var(txn.now) date()
    http-request deny deny_status 401 if {{ var(txn.exp),sub(txn.now) -m int lt 0 }}
    http-request deny deny_status 403 unless {{ var(txn.bearer),jwt_payload_query('$.scope') -m sub reader }}
    http-request set-var(txn.sub) var(txn.bearer),jwt_payload_query('$.sub')
    stick-table type string len 64 size 1m expire 60s store http_req_rate(1s)
    http-request track-sc0 var(txn.sub)
    http-request deny deny_status 429 if {{ sc_http_req_rate(0) gt 100000000 }}
    default_backend upstream
backend upstream
    http-reuse always
    server upstream {upstream}
"""


def haproxy_path() -> str | None:
    return shutil.which("haproxy")


def haproxy_version() -> str | None:
    path = haproxy_path()
    if path is None:
        return None
    proc = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10, check=False)
    first = proc.stdout.split()
    return first[2] if len(first) > 2 else "unknown"


class HaproxyJwtTarget(ServerTarget):
    ready_path = "__ready"

    def __init__(self, upstream: Target, name: str = "haproxy-jwt") -> None:
        super().__init__(name)
        self._upstream = upstream
        self._token = ""
        self.workers: int = 1

    def command(self, workdir: Path, port: int) -> list[str]:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        from fastproxy.identity.mint import mint

        haproxy = haproxy_path()
        if haproxy is None:
            raise FileNotFoundError("haproxy is not installed")
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        public_key = workdir / "public.pem"
        public_key.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        # The same claims fastproxy-full checks; HAProxy's JSON query reads strings, not arrays,
        # so its authorization claim is the scope string.
        self._token = mint(
            pem, sub="bench-user", roles=["reader"], scope="reader", ttl=86400, aud="bench",
            iss="https://idp.bench/", now=time.time(), kid="bench",
        ).decode()  # fmt: skip
        authority = self._upstream.url.split("//", 1)[1].rstrip("/")
        conf = workdir / "haproxy.cfg"
        conf.write_text(
            _CONF.format(port=port, threads=self.workers, public_key=public_key, upstream=authority)
        )
        return [haproxy, "-f", str(conf), "-db"]

    def request_headers(self) -> list[str]:
        return [f"Authorization: Bearer {self._token}"]

    def worker_pids(self) -> list[int]:
        root = self.root_pid()
        return [root] if root is not None else []

    def expected_workers(self) -> int | None:
        return 1  # one process, whatever nbthread
