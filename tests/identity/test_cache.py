"""TokenCache: verified tokens until exp or max_age, invalid ones briefly, both bounded LRUs."""

from __future__ import annotations

from fastproxy.identity.cache import TokenCache

NOW = 1_000_000.0


def test_a_miss_then_a_hit() -> None:
    cache = TokenCache[str]()
    assert cache.get(b"t", NOW) is None
    cache.put(b"t", "alice", NOW + 100, NOW)
    assert cache.get(b"t", NOW + 1) == "alice"
    assert (cache.hits, cache.misses) == (1, 1)
    assert len(cache) == 1


def test_an_entry_ends_at_its_expiry_exactly() -> None:
    cache = TokenCache[str]()
    cache.put(b"t", "alice", NOW + 10, NOW)
    assert cache.get(b"t", NOW + 9.999) == "alice"
    # A fresh verification accepts while now < exp (+ leeway, included in expires_at by the caller).
    assert cache.get(b"t", NOW + 10) is None
    assert len(cache) == 0  # dropped, not kept to answer None again


def test_an_entry_lives_at_most_max_age() -> None:
    cache = TokenCache[str](max_age=5)
    cache.put(b"t", "alice", NOW + 3600, NOW)
    assert cache.get(b"t", NOW + 4.9) == "alice"
    assert cache.get(b"t", NOW + 5) is None


def test_an_already_expired_token_is_not_stored() -> None:
    cache = TokenCache[str]()
    cache.put(b"t", "alice", NOW, NOW)
    cache.put(b"u", "bob", NOW - 1, NOW)
    assert len(cache) == 0


def test_the_key_is_the_whole_token() -> None:
    cache = TokenCache[str]()
    signature = b".c2lnbmF0dXJl"
    cache.put(b"aGVhZGVy.cGF5bG9hZA" + signature, "alice", NOW + 100, NOW)
    assert cache.get(b"aGVhZGVy.b3RoZXI" + signature, NOW) is None
    assert cache.get(b"aGVhZGVy.cGF5bG9hZA" + signature, NOW) == "alice"


def test_tokens_that_end_alike_are_still_different_tokens() -> None:
    # Entries are found by the last 32 bytes; a hit still needs the whole token.
    cache = TokenCache[str]()
    tail = b"." + b"s" * 40
    real, forged = b"aGVhZGVy.cGF5bG9hZA" + tail, b"aGVhZGVy.b3RoZXI" + tail
    cache.put(real, "alice", NOW + 100, NOW)
    assert cache.get(forged, NOW) is None and cache.find(forged, NOW) is None
    assert cache.get_invalid(forged, NOW) is None
    # A forged token is remembered as invalid, apart: the verified one stays.
    cache.put_invalid(forged, "invalid_token:bad_signature", NOW)
    assert cache.get(real, NOW) == "alice"
    assert cache.get_invalid(forged, NOW) == "invalid_token:bad_signature"
    assert cache.get_invalid(real, NOW) is None
    # Two verified tokens that end alike take turns in one entry: a miss, never the other's value.
    other = b"aGVhZGVy.Ym9i" + tail
    cache.put(other, "bob", NOW + 100, NOW)
    assert cache.get(real, NOW) is None
    assert cache.get(other, NOW) == "bob"


def test_short_tokens_are_their_own_key() -> None:
    cache = TokenCache[str]()
    cache.put(b"t", "alice", NOW + 100, NOW)
    cache.put(b"tt", "bob", NOW + 100, NOW)
    assert (cache.get(b"t", NOW), cache.get(b"tt", NOW)) == ("alice", "bob")


def test_least_recently_used_is_evicted_first() -> None:
    cache = TokenCache[str](max_entries=2)
    cache.put(b"a", "A", NOW + 100, NOW)
    cache.put(b"b", "B", NOW + 100, NOW)
    assert cache.get(b"a", NOW) == "A"  # a is now younger than b
    cache.put(b"c", "C", NOW + 100, NOW)
    assert len(cache) == 2
    assert cache.get(b"b", NOW) is None
    assert cache.get(b"a", NOW) == "A"
    assert cache.get(b"c", NOW) == "C"


def test_putting_again_replaces_and_refreshes() -> None:
    cache = TokenCache[str](max_entries=2)
    cache.put(b"a", "A", NOW + 100, NOW)
    cache.put(b"b", "B", NOW + 100, NOW)
    cache.put(b"a", "A2", NOW + 200, NOW)
    cache.put(b"c", "C", NOW + 100, NOW)
    assert cache.get(b"a", NOW + 150) == "A2"
    assert cache.get(b"b", NOW) is None


def test_find_counts_a_hit_but_never_a_miss() -> None:
    cache = TokenCache[str]()
    assert cache.find(b"t", NOW) is None
    cache.put(b"t", "alice", NOW + 10, NOW)
    assert cache.find(b"t", NOW) == "alice"
    assert cache.find(b"t", NOW + 10) is None  # expired: not found, not counted
    assert (cache.hits, cache.misses) == (1, 0)


def test_invalid_tokens_are_remembered_for_bad_ttl() -> None:
    cache = TokenCache[str](bad_ttl=10)
    assert cache.get_invalid(b"forged", NOW) is None
    cache.put_invalid(b"forged", "invalid_token:bad_signature", NOW)
    assert cache.get_invalid(b"forged", NOW + 9.9) == "invalid_token:bad_signature"
    assert cache.get_invalid(b"forged", NOW + 10) is None
    assert cache.get_invalid(b"forged", NOW + 1) is None  # gone for good once expired
    # The invalid table is apart from the verified one.
    assert cache.get(b"forged", NOW) is None
    assert len(cache) == 0


def test_the_invalid_table_is_bounded() -> None:
    cache = TokenCache[str](max_bad=2)
    for token in (b"x", b"y", b"z"):
        cache.put_invalid(token, "invalid_token:expired", NOW)
    assert cache.get_invalid(b"x", NOW) is None
    assert cache.get_invalid(b"y", NOW) == "invalid_token:expired"
    assert cache.get_invalid(b"z", NOW) == "invalid_token:expired"


def test_clear_forgets_both_tables() -> None:
    cache = TokenCache[str]()
    cache.put(b"good", "alice", NOW + 100, NOW)
    cache.put_invalid(b"bad", "invalid_token:expired", NOW)
    cache.clear()
    assert cache.get(b"good", NOW) is None
    assert cache.get_invalid(b"bad", NOW) is None
