"""``fastproxy demo``: the built-in upstream and the proxy in front of it, ready to try with curl.

Each capability adds its part to the demo config and the printed commands as it lands. The demo
makes its own keys at start: an RSA signing key (its public half is the JWT issuer's JWKS file),
tokens for three users (a reader, an admin and an auditor), and an API key whose digest goes in the
config.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fastproxy.identity.apikeys import digest
from fastproxy.identity.mint import mint, public_jwks

__all__ = ["DemoSecrets", "demo_config", "make_secrets", "run_demo"]

ISSUER = "https://idp.demo.fastproxy/"
AUDIENCE = "demo-api"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class DemoSecrets:
    reader_token: str  # alice: role reader, scope orders:read
    admin_token: str  # bob: role admin
    auditor_token: str  # erin: role auditor (exempt from the demo's mask)
    expired_token: str
    api_key: str  # role reader
    api_key_sha256: str


def make_secrets(workdir: str) -> DemoSecrets:
    """A signing key and the JWKS that verifies it in ``workdir``, tokens, and an API key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with open(os.path.join(workdir, "signing-key.pem"), "wb") as f:
        f.write(pem)
    with open(os.path.join(workdir, "jwks.json"), "wb") as f:
        f.write(orjson.dumps(public_jwks(pem, "demo-1"), option=orjson.OPT_INDENT_2))
    now = time.time()

    def token(
        sub: str, roles: list[str], scope: str | None = None, ttl: float = 3600.0, at: float = now
    ) -> str:
        return mint(
            pem, sub=sub, roles=roles, scope=scope, ttl=ttl, aud=AUDIENCE, iss=ISSUER, now=at, kid="demo-1"
        ).decode()

    api_key = "demo-" + secrets.token_urlsafe(24)
    return DemoSecrets(
        reader_token=token("alice", ["reader"], "orders:read"),
        admin_token=token("bob", ["admin"], "orders:read orders:write"),
        auditor_token=token("erin", ["auditor"]),
        expired_token=token("carol", ["reader"], at=now - 7200),
        api_key=api_key,
        api_key_sha256=digest(api_key.encode()).hex(),
    )


def demo_config(port: int, admin_port: int, upstream_port: int, api_key_sha256: str) -> str:
    return f"""\
# The fastproxy demo configuration (written by `fastproxy demo`).
[server]
listen = ["127.0.0.1:{port}"]
workers = 2
admin_listen = "127.0.0.1:{admin_port}"

[limits]
max_body_bytes = 10485760
header_timeout = 10.0

[audit]
path = "audit.jsonl"             # next to this file; one hash-chained line per answered request
flush_interval = 0.05

[upstreams.demo]
url = "http://127.0.0.1:{upstream_port}"
pool_size = 64

[identity.jwt.demo]
issuer = "{ISSUER}"
audience = ["{AUDIENCE}"]
algorithms = ["RS256"]
jwks_file = "jwks.json"          # the public half of signing-key.pem, next to this file

[identity.api_keys]
header = "x-api-key"
keys = [ {{ id = "ci-bot", sha256 = "{api_key_sha256}", roles = ["reader"] }} ]

[rate_limits.per-ip]
key = "ip"                       # principal | ip | api_key | route | header:<name>
rate = 2                         # 2 requests per `per` seconds, sustained
per = 1.0
burst = 3                        # 3 more at once: 4 in a row, then 429 until a token is back

[masks.pii]
fields = ["owner.email", "ssn", "items[*].card.number"]
replacement = "***"
exempt_roles = ["auditor"]       # these callers see the raw body

[[routes]]
name = "orders"                  # a JWT or an API key, with the reader or admin role
path = "/api/orders/*"
upstream = "demo"
identity = ["jwt:demo", "api_key"]
roles_any = ["reader", "admin"]

[[routes]]
name = "orders-write"            # JWT only, and the orders:write scope
methods = ["POST", "PUT", "DELETE"]
path = "/api/admin/*"
upstream = "demo"
identity = ["jwt:demo"]
roles_any = ["admin"]
scopes_all = ["orders:write"]

[[routes]]
name = "admin-read"
methods = ["GET", "HEAD"]
path = "/api/admin/*"
upstream = "demo"
identity = ["jwt:demo"]
roles_any = ["admin"]

[[routes]]
name = "internal"                # only from 10.0.0.0/8: refused from loopback
path = "/api/internal/*"
upstream = "demo"
public = true
allow_ips = ["10.0.0.0/8"]

[[routes]]
name = "reports-shadow"          # shadow mode: would need admin, but is never blocked
path = "/api/reports/*"
upstream = "demo"
identity = ["jwt:demo", "api_key"]
roles_any = ["admin"]
mode = "shadow"

[[routes]]
name = "limited"                 # public, at most 2/s per client address (burst 3)
path = "/api/limited/*"
upstream = "demo"
public = true
rate_limit = "per-ip"

[[routes]]
name = "customers"               # a JSON document with personal data, masked unless the caller is an auditor
methods = ["GET", "HEAD"]
path = "/json"                   # the built-in upstream's document (the proxy does not rewrite paths)
upstream = "demo"
identity = ["jwt:demo", "api_key"]
mask = "pii"

[[routes]]
name = "hello"
methods = ["GET", "HEAD"]
path = "/hello"
upstream = "demo"
public = true

[[routes]]
name = "public-api"
path = "/api/public/*"
upstream = "demo"
public = true

[[routes]]
name = "echo"
path = "/echo"
upstream = "demo"
public = true

[[routes]]
name = "files"
methods = ["GET", "HEAD"]
path = "/bytes/*"
upstream = "demo"
public = true
"""


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_demo(port: int) -> int:
    upstream_port = _free_port()
    admin_port = _free_port()
    workdir = tempfile.mkdtemp(prefix="fastproxy-demo-")
    config_path = os.path.join(workdir, "demo.toml")
    demo = make_secrets(workdir)
    with open(config_path, "w") as f:
        f.write(demo_config(port, admin_port, upstream_port, demo.api_key_sha256))

    upstream = subprocess.Popen(
        [sys.executable, "-m", "fastproxy.devserver", "--listen", f"127.0.0.1:{upstream_port}"]
    )
    proxy = subprocess.Popen([sys.executable, "-m", "fastproxy", "run", "--config", config_path])
    try:
        if not _wait_ready(f"http://127.0.0.1:{admin_port}/readyz", proxy):
            print("fastproxy demo: the proxy did not become ready (see the log above)", file=sys.stderr)
            return 1
        base = f"http://127.0.0.1:{port}"
        print(
            f"""
fastproxy demo is running.
  proxy     {base}   (2 workers, config: {config_path})
  upstream  http://127.0.0.1:{upstream_port}   (built-in)
  admin     http://127.0.0.1:{admin_port}

Try:
  curl -i {base}/hello                        # proxied, with X-Request-Id
  curl -s {base}/echo -d 'hi'                 # what the upstream received (X-Forwarded-*)
  curl -s {base}/echo -H 'Connection: X-Secret' -H 'X-Secret: 1'   # hop-by-hop headers stripped
  curl -s -o /dev/null -w '%{{size_download}}\\n' {base}/bytes/5242880   # 5 MB streamed
  curl -i {base}/nowhere                      # 404 with a JSON error
  curl -i {base}/api/public/../../echo --path-as-is   # 400: dot segments refused

Identity (keys and tokens made for this run, in {workdir}):
  READER='{demo.reader_token}'
  ADMIN='{demo.admin_token}'
  AUDITOR='{demo.auditor_token}'
  EXPIRED='{demo.expired_token}'
  KEY='{demo.api_key}'
  curl -i {base}/api/orders/7                                      # 401: no credentials
  curl -s {base}/api/orders/echo -H "Authorization: Bearer $READER"   # X-Auth-* as the upstream sees them
  curl -i {base}/api/orders/7 -H "Authorization: Bearer $EXPIRED"  # 401 invalid_token
  curl -s {base}/api/orders/echo -H "x-api-key: $KEY"              # API key ci-bot
  curl -i {base}/api/admin/7 -H "Authorization: Bearer $READER"    # 403: admin role needed
  curl -i {base}/api/admin/7 -H "Authorization: Bearer $ADMIN"     # 200
  curl -i -X POST {base}/api/admin/7 -H "Authorization: Bearer $READER"   # 403
  curl -i {base}/api/internal/x                                    # 403: IP not allowed
  curl -i {base}/api/reports/1 -H "x-api-key: $KEY"                # shadow: would deny, served
  fastproxy token --key {workdir}/signing-key.pem --sub dave --roles admin --kid demo-1 \\
      --aud {AUDIENCE} --iss {ISSUER}                    # mint your own
  curl -s http://127.0.0.1:{admin_port}/readyz
  kill -HUP {proxy.pid}                       # reload the config without dropping a connection

Rate limits (2/s per client address and burst 3: 4 at once, then 429; both workers share one table):
  curl -i {base}/api/limited/x                 # 200 with RateLimit-Limit, -Remaining, -Reset
  for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w '%{{http_code}}\\n' {base}/api/limited/x; done
  curl -i {base}/api/limited/x                 # 429 with Retry-After, until a request is due again

Masking (owner.email, ssn and items[*].card.number; the auditor role sees them):
  curl -s {base}/json -H "Authorization: Bearer $READER"    # "***" in place of each
  curl -s {base}/json -H "x-api-key: $KEY"                  # the same for the API key
  curl -s {base}/json -H "Authorization: Bearer $AUDITOR"   # the raw document

Audit and metrics:
  tail -n 3 {workdir}/audit.jsonl             # one record per answer: decision, reason, principal
  fastproxy audit verify {workdir}/audit.jsonl   # the hash chain, sequences and gaps
  curl -s http://127.0.0.1:{admin_port}/metrics | grep fastproxy_requests_total   # summed over workers

Ctrl-C stops the demo.""",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            proxy.wait()
        return 0
    finally:
        _stop(proxy)
        _stop(upstream)
