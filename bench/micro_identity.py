"""What identity costs, in-process: cold JWT verification per algorithm, and the cached path.

* cold: ``Verifier.verify`` of a fresh token, per algorithm (what a cache miss costs a worker);
* cached: one proxied request through a route that needs an RS256 JWT and a role, with the token
  already in the worker's cache, against the same request through a public route — fed through
  fake transports exactly as :mod:`bench.micro_path` does, so the difference is the Python cost
  of authentication and authorization per request.

``python -m bench.micro_identity``
"""

import argparse
import os
import tempfile
import time
from collections.abc import Callable

import orjson
import uvloop
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from bench.micro_path import REQUEST, best_of, wired_exchange
from fastproxy.identity.jwk import KeySet, hmac_key, parse_jwks
from fastproxy.identity.jws import Verifier
from fastproxy.identity.mint import mint, public_jwks

ISSUER = "https://idp.bench/"
SECRET = b"s" * 64


def _pem(key: object) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _hs_token(alg: str, now: float) -> bytes:
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    header = b64(orjson.dumps({"alg": alg, "typ": "JWT"}))
    claims = b64(orjson.dumps({"iss": ISSUER, "aud": "bench", "sub": "u", "exp": int(now + 3600)}))
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    return header + b"." + claims + b"." + b64(hmac.new(SECRET, header + b"." + claims, digest).digest())


def cold_costs(number: int = 300) -> dict[str, float]:
    """Microseconds per verification of a token not seen before, per algorithm."""
    keys_by_alg: dict[str, tuple[bytes, str | None]] = {}
    rsa_pem = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"):
        keys_by_alg[alg] = (rsa_pem, alg)
    for alg, curve in (("ES256", ec.SECP256R1()), ("ES384", ec.SECP384R1()), ("ES512", ec.SECP521R1())):
        keys_by_alg[alg] = (_pem(ec.generate_private_key(curve)), None)
    keys_by_alg["EdDSA"] = (_pem(ed25519.Ed25519PrivateKey.generate()), None)
    now = time.time()
    costs: dict[str, float] = {}
    for alg, (pem, forced) in keys_by_alg.items():
        keys, _ = parse_jwks(orjson.dumps(public_jwks(pem, "k", forced)))
        tokens = [
            mint(pem, sub=f"u{i}", aud="bench", iss=ISSUER, now=now, kid="k", alg=forced)
            for i in range(number)
        ]
        costs[alg] = _time_verify(
            Verifier(issuer=ISSUER, audience=["bench"], algorithms=[alg]), tokens, keys, now
        )
    hmac_keys = KeySet([hmac_key(SECRET)])
    for alg in ("HS256", "HS384", "HS512"):
        tokens = [_hs_token(alg, now + i) for i in range(number)]
        costs[alg] = _time_verify(
            Verifier(issuer=ISSUER, audience=["bench"], algorithms=[alg]), tokens, hmac_keys, now
        )
    return costs


def _time_verify(verifier: Verifier, tokens: list[bytes], keys: KeySet, now: float) -> float:
    verifier.verify(tokens[0], keys, now)
    start = time.perf_counter()
    for token in tokens:
        verifier.verify(token, keys, now)
    return (time.perf_counter() - start) / len(tokens) * 1e6


def _exchange(config_text: str, request: bytes, workdir: str) -> Callable[[], None]:
    from fastproxy.config import load_config
    from fastproxy.server.state import WorkerState
    from fastproxy.stages.build import PolicyRuntime

    path = os.path.join(workdir, "fastproxy.toml")
    with open(path, "w") as f:
        f.write(config_text)
    config = load_config(path)
    state = WorkerState(config, uvloop.new_event_loop())
    policy = PolicyRuntime(config)
    for issuer in policy.issuers.values():
        with open(os.path.join(workdir, "jwks.json"), "rb") as f:
            issuer.source.keys = parse_jwks(f.read())[0]  # as its first load would
    state.router = policy.router
    return wired_exchange(state, "api", request)


_CONFIG = """
[upstreams.api]
url = "http://127.0.0.1:9"

[identity.jwt.bench]
issuer = "https://idp.bench/"
audience = ["bench"]
algorithms = ["RS256"]
jwks_file = "jwks.json"

[[routes]]
name = "api"
path = "/*"
upstream = "api"
"""


def cached_path_cost() -> tuple[float, float]:
    """(passthrough, cached JWT + role check) microseconds per proxied request, in-process."""
    with tempfile.TemporaryDirectory() as workdir:
        pem = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        with open(os.path.join(workdir, "jwks.json"), "wb") as f:
            f.write(orjson.dumps(public_jwks(pem, "bench")))
        token = mint(
            pem, sub="bench-user", roles=["reader"], aud="bench", iss=ISSUER, now=time.time(), kid="bench"
        )
        authorized = REQUEST.replace(b"\r\n\r\n", b"\r\nAuthorization: Bearer " + token + b"\r\n\r\n")
        passthrough = best_of(_exchange(_CONFIG + "public = true\n", authorized, workdir))
        jwt = best_of(
            _exchange(_CONFIG + 'identity = ["jwt:bench"]\nroles_any = ["reader"]\n', authorized, workdir)
        )
    return passthrough, jwt


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.micro_identity", description=__doc__.splitlines()[0])
    parser.parse_args()
    print("cold verification, us per token:")
    for alg, cost in cold_costs().items():
        print(f"  {alg:6} {cost:8.1f}")
    passthrough, jwt = cached_path_cost()
    print(f"passthrough route:           {passthrough:.2f} us per request (best of 7)")
    print(f"cached RS256 JWT + role:     {jwt:.2f} us per request (+{jwt - passthrough:.2f})")


if __name__ == "__main__":
    main()
