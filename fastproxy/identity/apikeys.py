"""API keys: configured as SHA-256 digests only, never as the keys themselves.

A presented key is hashed and its digest looked up. The dictionary lookup is keyed by the digest,
so its timing can reveal at most something about a SHA-256 output, which says nothing usable
about any key; the final comparison is still :func:`hmac.compare_digest`, so equality itself is
decided in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ApiKeyEntry", "ApiKeyTable", "config_line", "digest"]


@dataclass(frozen=True, slots=True)
class ApiKeyEntry:
    id: str
    digest: bytes
    roles: tuple[str, ...]


def digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


class ApiKeyTable:
    """The configured keys, by digest; built once per configuration load."""

    __slots__ = ("_by_digest",)

    def __init__(self, entries: Iterable[ApiKeyEntry]) -> None:
        by_digest: dict[bytes, ApiKeyEntry] = {}
        ids: set[str] = set()
        for entry in entries:
            if entry.id in ids:
                raise ValueError(f"duplicate API key id {entry.id!r}")
            if entry.digest in by_digest:
                raise ValueError(f"API keys {by_digest[entry.digest].id!r} and {entry.id!r} are the same key")
            ids.add(entry.id)
            by_digest[entry.digest] = entry
        self._by_digest = by_digest

    def __len__(self) -> int:
        return len(self._by_digest)

    def lookup(self, key: bytes) -> ApiKeyEntry | None:
        """The entry whose key is ``key``, or None."""
        presented = digest(key)
        entry = self._by_digest.get(presented)
        if entry is None or not hmac.compare_digest(entry.digest, presented):
            return None
        return entry


def config_line(key: bytes, key_id: str = "CHANGE-ME", roles: Iterable[str] = ()) -> str:
    """The ``[identity.api_keys] keys`` entry for ``key`` (what ``fastproxy hash-key`` prints)."""
    # A JSON string is a TOML basic string: quotes, backslashes and control characters escaped.
    role_list = ", ".join(json.dumps(role, ensure_ascii=False) for role in roles)
    return (
        f"{{ id = {json.dumps(key_id, ensure_ascii=False)}, sha256 = "
        f'"{digest(key).hex()}", roles = [{role_list}] }}'
    )
