"""prime_keys: the master loads each used issuer's keys before forking, and keeps the running
configuration's keys for a source it cannot load now."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fastproxy.config import load_config
from fastproxy.identity.issuers import prime_keys
from fastproxy.identity.mint import public_jwks

CONFIG = """
[upstreams.api]
url = "http://127.0.0.1:9"

[identity.jwt.corp]
issuer = "https://idp.test/"
algorithms = ["ES256"]
jwks_file = "{jwks}"

[identity.jwt.unused]
issuer = "https://other.test/"
algorithms = ["ES256"]
jwks_url = "http://127.0.0.1:9/jwks"

[[routes]]
name = "r"
path = "/*"
upstream = "api"
identity = ["jwt:corp"]
"""


def jwks_document(kid: str) -> bytes:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return orjson.dumps(public_jwks(pem, kid))


def write_config(tmp_path: Path, jwks_name: str = "jwks.json") -> str:
    path = tmp_path / "fastproxy.toml"
    path.write_text(CONFIG.format(jwks=jwks_name))
    return str(path)


def test_used_issuers_start_with_the_loaded_document(tmp_path: Path) -> None:
    document = jwks_document("k1")
    (tmp_path / "jwks.json").write_bytes(document)
    config = load_config(write_config(tmp_path))
    assert config.jwt_issuers_used() == {"corp"}
    primed = prime_keys(config.identity, config.jwt_issuers_used())
    assert primed.issuers["corp"].document == document
    assert primed.issuers["unused"].document is None  # never fetched: no route uses it
    source = primed.issuers["corp"].key_source()
    assert source.ready and source.generation == 1
    assert source.keys is not None and set(source.keys.keys_by_kid) == {"k1"}


def test_a_source_that_cannot_be_loaded_keeps_the_running_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    document = jwks_document("k1")
    (tmp_path / "jwks.json").write_bytes(document)
    running = prime_keys(load_config(write_config(tmp_path)).identity, {"corp"})
    new = load_config(write_config(tmp_path)).identity
    (tmp_path / "jwks.json").write_text("not json")  # the provider is "down" at reload
    with caplog.at_level(logging.WARNING, "fastproxy.identity"):
        primed = prime_keys(new, {"corp"}, running)
    assert primed.issuers["corp"].document == document
    assert "keeping the keys of the running configuration" in caplog.text
    # Without a running configuration for the same source, the workers are left to load them.
    assert prime_keys(new, {"corp"}).issuers["corp"].document is None


def test_keys_are_kept_only_for_the_same_source(tmp_path: Path) -> None:
    (tmp_path / "jwks.json").write_bytes(jwks_document("k1"))
    (tmp_path / "other.json").write_bytes(jwks_document("k2"))
    running = prime_keys(load_config(write_config(tmp_path)).identity, {"corp"})
    moved = load_config(write_config(tmp_path, "other.json")).identity
    (tmp_path / "other.json").write_text("{}")
    assert prime_keys(moved, {"corp"}, running).issuers["corp"].document is None
