"""`fastproxy token` and `fastproxy hash-key`, run as the commands an operator types."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from fastproxy.identity.jwk import parse_jwks
from fastproxy.identity.jws import Verifier, split_token
from fastproxy.identity.mint import public_jwks

ROOT = Path(__file__).resolve().parent.parent


def fastproxy(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "fastproxy", *args], input=stdin, capture_output=True, env=env, timeout=30
    )


def pem_of(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.mark.parametrize(
    ("make", "alg"),
    [
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "ES256"),
        (lambda: ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
    ],
)
def test_token_verifies_with_the_public_half(tmp_path: Path, make: object, alg: str) -> None:
    pem = pem_of(make())  # type: ignore[operator]
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(pem)
    result = fastproxy(
        "token", "--key", str(key_file), "--sub", "alice", "--roles", "reader, admin",
        "--scope", "orders:read orders:write", "--ttl", "120", "--aud", "api", "--iss", "https://idp/",
        "--kid", "k1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert result.stdout.endswith(b"\n") and b"\n" not in token
    keys, skipped = parse_jwks(orjson.dumps(public_jwks(pem, "k1")))
    assert not skipped
    verifier = Verifier(issuer="https://idp/", audience=["api"], algorithms=[alg])
    claims = verifier.verify(token, keys, time.time())
    assert claims.subject == "alice"
    assert claims.roles == ("reader", "admin")
    assert claims.scopes == frozenset({"orders:read", "orders:write"})
    assert time.time() + 100 < claims.expires_at <= time.time() + 121
    assert split_token(token).kid == "k1"


def test_token_refuses_an_unreadable_or_bad_key(tmp_path: Path) -> None:
    missing = fastproxy("token", "--key", str(tmp_path / "nope.pem"), "--sub", "a")
    assert missing.returncode == 2
    assert b"cannot read" in missing.stderr and b"Traceback" not in missing.stderr
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    bad = fastproxy("token", "--key", str(garbage), "--sub", "a")
    assert bad.returncode == 2
    assert bad.stderr.startswith(b"fastproxy token: ") and b"Traceback" not in bad.stderr


def test_hash_key_prints_a_config_line_without_the_key() -> None:
    result = fastproxy("hash-key", "--id", "ci-bot", "--roles", "reader,deployer", stdin=b"s3cret-key\n")
    assert result.returncode == 0, result.stderr
    line = result.stdout.decode().strip()
    digest = hashlib.sha256(b"s3cret-key").hexdigest()
    assert line == f'{{ id = "ci-bot", sha256 = "{digest}", roles = ["reader", "deployer"] }}'
    assert "s3cret" not in line


def test_hash_key_refuses_an_empty_stdin() -> None:
    result = fastproxy("hash-key", stdin=b"\n")
    assert result.returncode == 2
    assert result.stderr == b"fastproxy hash-key: no key on stdin\n"


def _audit_lines(count: int) -> list[bytes]:
    from fastproxy.audit.chain import Chain
    from fastproxy.audit.record import RecordEncoder

    encoder = RecordEncoder("b00700000000beef", 1, lambda: 1_795_834_800_123_456_000)
    records = [encoder.worker_start(1, 42)]
    records += [
        encoder.request(
            seq, f"req-{seq}", "203.0.113.7", "GET", "/a", "r", "alice", "jwt:corp", "allow", "ok",
            "enforce", None, 200, "api", 1.0, 0, 10, 0,
        )
        for seq in range(2, count + 1)
    ]  # fmt: skip
    lines: list[bytes] = []
    Chain().extend(records, lines)
    return lines


def test_audit_verify_passes_good_files_in_order(tmp_path: Path) -> None:
    lines = _audit_lines(10)
    (tmp_path / "audit.jsonl.1").write_bytes(b"".join(lines[:4]))
    (tmp_path / "audit.jsonl").write_bytes(b"".join(lines[4:]))
    result = fastproxy("audit", "verify", str(tmp_path / "audit.jsonl.1"), str(tmp_path / "audit.jsonl"))
    assert result.returncode == 0, result.stdout + result.stderr
    head = orjson.loads(lines[-1])["hash"]
    assert result.stdout.decode() == (
        "ok: 10 records in 2 files (from its start): 9 requests, 0 gap records accounting for 0 lost, "
        f"1 markers, 1 worker streams; head {head}\n"
    )
    kept_head = fastproxy(
        "audit", "verify", "--head", head, str(tmp_path / "audit.jsonl.1"), str(tmp_path / "audit.jsonl")
    )
    assert kept_head.returncode == 0


def test_audit_verify_names_the_first_bad_file_and_line(tmp_path: Path) -> None:
    lines = _audit_lines(10)
    first, second = tmp_path / "audit.jsonl.1", tmp_path / "audit.jsonl"
    first.write_bytes(b"".join(lines[:4]))
    second.write_bytes(b"".join(lines[4:6] + lines[7:]))  # line 3 of the second file removed
    result = fastproxy("audit", "verify", str(first), str(second))
    assert result.returncode == 1
    assert result.stdout.decode() == (
        f"fastproxy audit verify: {second}:3: prev is not the hash of the line before: "
        "a line was inserted, removed or reordered here\n"
    )
    second.write_bytes(b"".join(lines[4:]) + b'{"v":1,"ts":"2026')
    truncated = fastproxy("audit", "verify", str(first), str(second))
    assert truncated.returncode == 1 and f"{second}:7: truncated".encode() in truncated.stdout


def test_audit_verify_usage_errors_exit_2(tmp_path: Path) -> None:
    missing = fastproxy("audit", "verify", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2
    assert (
        missing.stderr.decode()
        == f"fastproxy audit verify: cannot read {tmp_path / 'nope.jsonl'}: No such file or directory\n"
    )
    assert fastproxy("audit", "verify").returncode == 2
    assert fastproxy("audit").returncode == 2
