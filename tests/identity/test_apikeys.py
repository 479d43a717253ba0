"""ApiKeyTable: keys configured as SHA-256 digests, looked up by the digest of what a client sends."""

from __future__ import annotations

import hashlib
import tomllib

import pytest

from fastproxy.identity.apikeys import ApiKeyEntry, ApiKeyTable, config_line, digest


def entry(key_id: str, key: bytes, roles: tuple[str, ...] = ()) -> ApiKeyEntry:
    return ApiKeyEntry(key_id, digest(key), roles)


def test_digest_is_sha256() -> None:
    assert digest(b"secret-key") == hashlib.sha256(b"secret-key").digest()


def test_lookup_finds_the_entry_of_the_presented_key() -> None:
    table = ApiKeyTable([entry("ci-bot", b"key-one", ("reader",)), entry("ops", b"key-two", ("admin",))])
    assert len(table) == 2
    found = table.lookup(b"key-one")
    assert found is not None
    assert (found.id, found.roles) == ("ci-bot", ("reader",))
    found = table.lookup(b"key-two")
    assert found is not None and found.id == "ops"


@pytest.mark.parametrize(
    "presented",
    [
        b"",
        b"key-on",
        b"key-one ",
        b"KEY-ONE",
        digest(b"key-one"),  # the digest itself is not the key
        digest(b"key-one").hex().encode(),
    ],
)
def test_anything_but_the_key_itself_is_unknown(presented: bytes) -> None:
    table = ApiKeyTable([entry("ci-bot", b"key-one")])
    assert table.lookup(presented) is None


def test_an_empty_table_knows_no_key() -> None:
    table = ApiKeyTable([])
    assert len(table) == 0
    assert table.lookup(b"anything") is None


def test_a_repeated_id_is_refused() -> None:
    with pytest.raises(ValueError, match="duplicate API key id 'ci'"):
        ApiKeyTable([entry("ci", b"one"), entry("ci", b"two")])


def test_the_same_key_under_two_ids_is_refused() -> None:
    with pytest.raises(ValueError, match="API keys 'a' and 'b' are the same key"):
        ApiKeyTable([entry("a", b"same"), entry("b", b"same")])


def test_an_entry_holds_the_digest_not_the_key() -> None:
    table = ApiKeyTable([entry("ci-bot", b"the-plain-key")])
    found = table.lookup(b"the-plain-key")
    assert found is not None
    assert found.digest == hashlib.sha256(b"the-plain-key").digest()
    assert "the-plain-key" not in repr(found)


def test_config_line_is_toml_that_names_the_digest() -> None:
    line = config_line(b"k3y", "ci-bot", ["reader", "writer"])
    assert "k3y" not in line
    document = tomllib.loads(f"keys = [ {line} ]")
    assert document["keys"] == [
        {"id": "ci-bot", "sha256": hashlib.sha256(b"k3y").hexdigest(), "roles": ["reader", "writer"]}
    ]


def test_config_line_quotes_what_would_break_the_toml() -> None:
    line = config_line(b"k", 'say "hi" \\ there', ['a"b'])
    document = tomllib.loads(f"keys = [ {line} ]")
    assert document["keys"][0]["id"] == 'say "hi" \\ there'
    assert document["keys"][0]["roles"] == ['a"b']


def test_config_line_defaults() -> None:
    document = tomllib.loads(f"keys = [ {config_line(b'k')} ]")
    assert document["keys"][0]["id"] == "CHANGE-ME"
    assert document["keys"][0]["roles"] == []
