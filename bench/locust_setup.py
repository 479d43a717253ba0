"""Prepare a directory for the Locust scenarios of ``bench/locustfile.py``.

Usage: python -m bench.locust_setup --dir DIR --upstream URL [--port P] [--admin-port P]
                                    [--principals N] [--ttl S]

It writes, in DIR:

* ``signing-key.pem`` and ``jwks.json``: the issuer's RSA key and the JWK Set that verifies it;
* ``fastproxy.toml``: a full-policy configuration (JWT issuer from ``jwks.json``, API keys, a
  generous per-principal rate limit everywhere, a tight one on ``/api/hot/*``, a mask on ``/json``,
  an audit file next to it) in front of URL, which should be ``python -m fastproxy.devserver``;
* ``tokens.json``: what the scenarios send and what they must see (valid tokens for distinct
  principals minted by ``fastproxy token``, expired and forged tokens, API keys, hot users, an
  auditor, the limits and the masked fields).

Then it prints the command that starts the proxy. The files hold secrets of a throwaway test
issuer; they are written readable by their owner only.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fastproxy.identity.apikeys import config_line
from fastproxy.identity.mint import mint, public_jwks

ISSUER = "https://idp.locust.fastproxy/"
AUDIENCE = "orders-api"
KID = "corp-1"
ISSUER_NAME = "corp"  # [identity.jwt.corp]: the upstream sees X-Auth-Method "jwt:corp"

# The per-principal limit of every route but the hot one: far above what a principal of the
# scenarios sends, so a 429 there is a fault (a key collision, budgets shared across principals).
GENEROUS = {"rate": 2000, "per": 1.0, "burst": 2000}
# The hot route's limit: hot users send far more and must see 429 with Retry-After.
HOT = {"rate": 5, "per": 1.0, "burst": 5}

# The devserver's /json document and the values of it that the mask hides (the devserver serves
# it at /json only, and the proxy does not rewrite paths, so the masked route is /json).
MASKED_PATH = "/json"
MASKED_FIELDS = {
    "ssn": "078-05-1120",
    "owner.email": "alice@example.com",
    "items[*].card.number": "4111111111111111",
}
REPLACEMENT = "***"


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _rsa_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token_command(key: Path, sub: str, roles: list[str], ttl: float, kid: str = KID) -> list[str]:
    """The real ``fastproxy token`` command line for one principal."""
    return [
        sys.executable,
        "-m",
        "fastproxy",
        "token",
        "--key",
        str(key),
        "--sub",
        sub,
        "--roles",
        ",".join(roles),
        "--ttl",
        str(ttl),
        "--aud",
        AUDIENCE,
        "--iss",
        ISSUER,
        "--kid",
        kid,
    ]


def _run_token(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise SystemExit(f"fastproxy token failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip()


def mint_all(commands: list[list[str]]) -> list[str]:
    """Run the ``fastproxy token`` commands side by side (each is a Python start, ~0.2 s of CPU)."""
    with ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 1)) as pool:
        return list(pool.map(_run_token, commands))


def _forgeries(valid: str, rogue_same_kid: str, rogue_unknown_kid: str) -> list[dict[str, str]]:
    header, payload, signature = valid.split(".")
    # One character in the middle of the signature: the last one may only hold padding bits.
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    altered = signature[:middle] + flipped + signature[middle + 1 :]
    claims = json.loads(_unb64(payload))
    claims |= {"sub": "root", "roles": ["admin", "auditor"]}
    escalated = _b64(json.dumps(claims, separators=(",", ":")).encode())
    none_header = _b64(json.dumps({"alg": "none", "typ": "JWT"}, separators=(",", ":")).encode())
    return [
        {"how": "signature altered", "token": f"{header}.{payload}.{altered}"},
        {"how": "claims edited, signature kept", "token": f"{header}.{escalated}.{signature}"},
        {"how": "signed by another key under the issuer's kid", "token": rogue_same_kid},
        {"how": "signed by another key under an unknown kid", "token": rogue_unknown_kid},
        {"how": "alg none", "token": f"{none_header}.{payload}."},
    ]


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def config_text(upstream: str, port: int, admin_port: int, api_key_lines: list[str]) -> str:
    keys = "".join(f"    {line},\n" for line in api_key_lines)
    return f"""\
# fastproxy in front of the devserver for the Locust scenarios (written by bench/locust_setup.py).
# Relative paths are relative to this file.
[server]
listen = ["127.0.0.1:{port}"]
admin_listen = "127.0.0.1:{admin_port}"

[audit]
path = "audit.jsonl"
flush_interval = 0.05

[upstreams.api]
url = {json.dumps(upstream)}
pool_size = 128

[identity.jwt.{ISSUER_NAME}]
issuer = "{ISSUER}"
audience = ["{AUDIENCE}"]
algorithms = ["RS256"]
jwks_file = "jwks.json"

[identity.api_keys]
header = "x-api-key"
keys = [
{keys}]

[rate_limits.per-user]
key = "principal"
rate = {GENEROUS["rate"]}
per = {GENEROUS["per"]}
burst = {GENEROUS["burst"]}

[rate_limits.hot]
key = "principal"
rate = {HOT["rate"]}
per = {HOT["per"]}
burst = {HOT["burst"]}

[masks.pii]
fields = {_toml_list(list(MASKED_FIELDS))}
replacement = "{REPLACEMENT}"
exempt_roles = ["auditor"]

[[routes]]
name = "orders"
path = "/api/orders/*"
upstream = "api"
identity = ["jwt:{ISSUER_NAME}", "api_key"]
roles_any = ["reader", "admin"]
rate_limit = "per-user"

[[routes]]
name = "admin"
path = "/api/admin/*"
upstream = "api"
identity = ["jwt:{ISSUER_NAME}"]
roles_any = ["admin"]
rate_limit = "per-user"

[[routes]]
name = "hot"
path = "/api/hot/*"
upstream = "api"
identity = ["jwt:{ISSUER_NAME}"]
roles_any = ["reader", "admin"]
rate_limit = "hot"

[[routes]]
name = "customers"
methods = ["GET", "HEAD"]
path = "{MASKED_PATH}"
upstream = "api"
identity = ["jwt:{ISSUER_NAME}", "api_key"]
roles_any = ["reader", "admin", "auditor"]
rate_limit = "per-user"
mask = "pii"
"""


def setup(
    directory: Path,
    upstream: str,
    port: int = 8080,
    admin_port: int = 9901,
    principals: int = 20,
    hot_users: int = 3,
    ttl: float = 3600.0,
) -> Path:
    """Write the key, JWKS, config and tokens.json into ``directory``; return the config's path."""
    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / "signing-key.pem"
    rogue_path = directory / "rogue-key.pem"  # not in the JWKS: what it signs is forged
    pem = _rsa_pem()
    _write(key_path, pem)
    _write(rogue_path, _rsa_pem())
    _write(directory / "jwks.json", json.dumps(public_jwks(pem, KID), indent=2).encode())

    users: list[dict[str, Any]] = [
        {"sub": f"user-{i:02d}", "roles": ["admin"] if i % 5 == 4 else ["reader"]} for i in range(principals)
    ]
    hot: list[dict[str, Any]] = [{"sub": f"hot-{i}", "roles": ["reader"]} for i in range(hot_users)]
    auditor: dict[str, Any] = {"sub": "auditor-0", "roles": ["auditor"]}
    signed = [*users, *hot, auditor]
    commands = [token_command(key_path, p["sub"], p["roles"], ttl) for p in signed]
    commands.append(token_command(rogue_path, "mallory", ["admin"], ttl))
    commands.append(token_command(rogue_path, "mallory", ["admin"], ttl, kid="rogue-1"))
    tokens = mint_all(commands)
    for principal, token in zip(signed, tokens, strict=False):
        principal["token"] = token

    # `fastproxy token` refuses a ttl that is not positive ("ttl must be positive"), so it cannot
    # mint a token that is already expired; the function behind it can, given a `now` in the
    # past. Two hours ago with a ten-minute lifetime: expired well beyond the issuer's leeway.
    past = time.time() - 7200
    expired = [
        {
            "sub": f"expired-{i}",
            "token": mint(
                pem,
                sub=f"expired-{i}",
                roles=["reader"],
                ttl=600,
                aud=AUDIENCE,
                iss=ISSUER,
                now=past,
                kid=KID,
            ).decode(),
        }
        for i in range(3)
    ]
    forged = _forgeries(users[0]["token"], tokens[-2], tokens[-1])

    api_keys: list[dict[str, Any]] = [
        {"id": f"ci-bot-{i}", "key": "fpk-" + secrets.token_urlsafe(24), "roles": ["reader"]}
        for i in range(4)
    ]
    key_lines = [config_line(k["key"].encode(), k["id"], k["roles"]) for k in api_keys]
    unknown_api_keys = ["fpk-" + secrets.token_urlsafe(24) for _ in range(2)]

    config_path = directory / "fastproxy.toml"
    config_path.write_text(config_text(upstream, port, admin_port, key_lines))
    document: dict[str, Any] = {
        "host": f"http://127.0.0.1:{port}",
        "issuer": ISSUER,
        "issuer_name": ISSUER_NAME,
        "audience": AUDIENCE,
        "api_key_header": "x-api-key",
        "principals": users,
        "hot": hot,
        "auditor": auditor,
        "expired": expired,
        "forged": forged,
        "api_keys": api_keys,
        "unknown_api_keys": unknown_api_keys,
        "rate_limits": {"per-user": GENEROUS, "hot": HOT},
        "mask": {"path": MASKED_PATH, "replacement": REPLACEMENT, "fields": MASKED_FIELDS},
    }
    _write(directory / "tokens.json", json.dumps(document, indent=2).encode())
    return config_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.locust_setup", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, type=Path, help="directory to write into (made if missing)")
    parser.add_argument("--upstream", required=True, help="the devserver's URL, e.g. http://127.0.0.1:9000")
    parser.add_argument("--port", type=int, default=8080, help="the proxy's port (default 8080)")
    parser.add_argument(
        "--admin-port", type=int, default=9901, help="the admin listener's port (default 9901)"
    )
    parser.add_argument("--principals", type=int, default=20, help="distinct principals with valid tokens")
    parser.add_argument(
        "--ttl", type=float, default=3600.0, help="lifetime of the valid tokens (default 3600 s)"
    )
    args = parser.parse_args(argv)
    if args.principals < 1:
        parser.error("--principals must be at least 1")
    started = time.monotonic()
    config = setup(args.dir, args.upstream, args.port, args.admin_port, args.principals, ttl=args.ttl)
    directory = args.dir.resolve()
    print(f"wrote {directory} in {time.monotonic() - started:.1f}s; start the proxy with:", file=sys.stderr)
    print(f"fastproxy run --config {config.resolve()}")
    print("then, for example:", file=sys.stderr)
    locust = "locust -f bench/locustfile.py --headless -u 50 -r 10 -t 30s MixedTraffic"
    print(f"  FASTPROXY_LOCUST_DIR={directory} {locust}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
