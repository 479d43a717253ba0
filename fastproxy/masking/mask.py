"""A compiled ``[masks.NAME]`` and the decisions the response path asks of it.

Sans-I/O: nothing here reads a socket or a clock. The response path asks, in order:

1. :meth:`CompiledMask.applies_to` with the caller's roles (an exempt role sees the raw body);
2. :meth:`CompiledMask.plan` with the upstream's Content-Type, Content-Length (None when the body
   is chunked or close-delimited) and Content-Encoding, as soon as the response head arrives: mask
   (buffer the body), pass the response unchanged, or refuse it with a 502 -- the last two with a
   reason code for the audit record;
3. while buffering a body of unknown length, :meth:`CompiledMask.unmaskable` ("too_large") once
   more than :attr:`CompiledMask.max_bytes` have arrived;
4. :meth:`CompiledMask.apply` on the whole body: the verdict, the bytes to send, the count of
   replaced values (the audit's ``masked``).

Reason codes: ``not_json`` (no Content-Type, or not ``application/json`` nor ``*/*+json``),
``encoded`` (a Content-Encoding other than identity: the proxy does not decompress), ``too_large``
(over ``max_bytes``), ``invalid_json`` (a JSON media type with a body that is not JSON, or nested
deeper than the parser goes), ``empty`` (no body bytes: nothing to hide, never refused).

What the caller does with the answers: on MASK it holds the response head until the body is
complete, then sends the head with ``Content-Length`` set to the length of the bytes ``apply``
returned (a chunked upstream body becomes a sized one); on PASS it relays the response as it came
(after an overflow, the head and the bytes buffered so far, then the rest as it streams) and the
audit record carries the reason; on REFUSE it answers 502 (while the head is still unsent: ``plan``
and an overflow both come before it is) with the reason in the audit record. Masking never sees a
response of a caller ``applies_to`` says is exempt, nor one without a body (HEAD, 1xx, 204, 304).
Two request-side steps keep masking possible, and are the caller's: on a route with a mask, for a
caller it applies to, ask the upstream for an unencoded body (drop ``Accept-Encoding``, or send
``identity``) and drop ``Range`` (a partial document is not JSON).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import msgspec

from fastproxy.masking.body import InvalidJson, Splicer, mask_document, splice_document
from fastproxy.masking.paths import Segment, compile_paths, compile_walker, parse_path

if TYPE_CHECKING:
    from fastproxy.config.schema import Mask

__all__ = [
    "EMPTY",
    "ENCODED",
    "INVALID_JSON",
    "MASK",
    "NOT_JSON",
    "PASS",
    "REFUSE",
    "TOO_LARGE",
    "CompiledMask",
    "MaskConfigError",
    "Verdict",
    "compile_mask",
    "is_identity_encoding",
    "is_json_media_type",
    "mask_body",
]

# Actions.
MASK: Final = "mask"  # mask the body (buffer it first)
PASS: Final = "pass"  # send the response unchanged; the reason goes to the audit record
REFUSE: Final = "refuse"  # answer 502 instead; the reason goes to the audit record

# Reasons a response is not masked.
NOT_JSON: Final = "not_json"
ENCODED: Final = "encoded"
TOO_LARGE: Final = "too_large"
INVALID_JSON: Final = "invalid_json"
EMPTY: Final = "empty"

_REASONS: Final = (NOT_JSON, ENCODED, TOO_LARGE, INVALID_JSON)

# Segments in one mask path: far past any real document's schema, and what the C splicer's tree
# is built for (fastproxy/masking/_splice.c).
MAX_SEGMENTS: Final = 256


class Verdict(NamedTuple):
    action: str  # MASK, PASS or REFUSE
    reason: str | None  # None with MASK; a reason code otherwise


_MASK_VERDICT: Final = Verdict(MASK, None)
_EMPTY_VERDICT: Final = Verdict(PASS, EMPTY)


class MaskConfigError(ValueError):
    """What is wrong with a ``[masks.NAME]``: ``errors`` pairs a key under it with a message.

    Keys are relative to the mask's table (``fields[2]``, ``replacement``), so the loader can
    report ``masks.NAME.fields[2]: mask path 'a..b': empty key (at character 3)``.
    """

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{key}: {message}" for key, message in errors))
        self.errors = errors


class CompiledMask:
    """One ``[masks.NAME]``, validated and compiled; immutable, shared by every request."""

    __slots__ = (
        "_splice",
        "_unmaskable",
        "_walk",
        "exempt_roles",
        "fields",
        "max_bytes",
        "name",
        "refuse",
        "replacement",
    )

    def __init__(
        self,
        name: str,
        fields: Iterable[str],
        replacement: Any = "***",
        exempt_roles: Iterable[str] = (),
        max_bytes: object = 1 << 20,
        refuse: bool = False,
    ) -> None:
        """Raises :class:`MaskConfigError` naming each bad field path or a bad replacement.

        ``max_bytes`` is checked here, not by its annotation: compiled (setup.py), an ``int``
        parameter would take True as 1 and refuse "10" with a TypeError instead of this error.
        """
        self.name = name
        self.fields = tuple(fields)
        errors: list[tuple[str, str]] = []
        parsed: list[tuple[Segment, ...]] = []
        if not self.fields:
            errors.append(("fields", "at least one field path"))
        for index, text in enumerate(self.fields):
            try:
                segments = parse_path(text)
            except ValueError as exc:
                errors.append((f"fields[{index}]", str(exc)))
                continue
            if len(segments) > MAX_SEGMENTS:
                too_long = f"mask path of {len(segments)} segments (at most {MAX_SEGMENTS})"
                errors.append((f"fields[{index}]", too_long))
            parsed.append(segments)
        problem = _not_json_value(replacement)
        if problem:
            errors.append(("replacement", problem))
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            errors.append(("max_bytes", "a whole number of bytes, 0 or more"))
        if errors:
            raise MaskConfigError(errors)
        assert isinstance(max_bytes, int)
        self.replacement = replacement
        self.exempt_roles = frozenset(exempt_roles)
        self.max_bytes = max_bytes
        self.refuse = refuse
        tree = compile_paths(parsed)
        self._walk = compile_walker(tree)
        # The replacement's JSON text is spliced in as it is (msgspec writes any value
        # _not_json_value lets through, integers beyond 64 bits included).
        self._splice = None if Splicer is None else Splicer(tree, msgspec.json.encode(replacement))
        action = REFUSE if refuse else PASS
        self._unmaskable = {reason: Verdict(action, reason) for reason in _REASONS}

    def __repr__(self) -> str:
        return f"CompiledMask({self.name!r}, fields={list(self.fields)!r})"

    def applies_to(self, roles: Iterable[str]) -> bool:
        """False when one of ``roles`` is exempt: that caller gets the body as the upstream sent it."""
        return self.exempt_roles.isdisjoint(roles)

    def plan(
        self,
        content_type: bytes | str | None,
        content_length: int | None,
        content_encoding: bytes | str | None = None,
    ) -> Verdict:
        """What to do with a response, from its head alone.

        ``content_length`` is the declared length, or None for a chunked or close-delimited body
        (then MASK means "buffer it, up to max_bytes"). Call it only for responses that have a
        body (not for HEAD, 1xx, 204 or 304).
        """
        if content_length == 0:
            return _EMPTY_VERDICT
        if not is_json_media_type(content_type):
            return self._unmaskable[NOT_JSON]
        if not is_identity_encoding(content_encoding):
            return self._unmaskable[ENCODED]
        if content_length is not None and content_length > self.max_bytes:
            return self._unmaskable[TOO_LARGE]
        return _MASK_VERDICT

    def unmaskable(self, reason: str) -> Verdict:
        """PASS or REFUSE with ``reason``, as this mask's ``on_unmaskable`` says."""
        return self._unmaskable[reason]

    def apply(self, body: bytes) -> tuple[Verdict, bytes, int]:
        """``(verdict, bytes to send, values replaced)`` for a whole buffered body.

        The verdict is MASK (the bytes are the masked document, or ``body`` itself when nothing
        matched), or PASS/REFUSE with ``too_large`` or ``invalid_json`` (the bytes are ``body``).
        """
        if len(body) > self.max_bytes:
            return self._unmaskable[TOO_LARGE], body, 0
        try:
            if self._splice is not None:
                masked, count = splice_document(self._splice, body)
            else:
                masked, count = mask_document(self._walk, self.replacement, body)
        except InvalidJson:
            return self._unmaskable[INVALID_JSON], body, 0
        return _MASK_VERDICT, masked, count


def mask_body(mask: CompiledMask, body: bytes) -> tuple[bytes, int]:
    """``(body', replaced)``; ``body`` itself when nothing matched. Raises InvalidJson.

    No size check: that is :meth:`CompiledMask.plan`'s and :meth:`CompiledMask.apply`'s.
    """
    if mask._splice is not None:
        return splice_document(mask._splice, body)
    return mask_document(mask._walk, mask.replacement, body)


def compile_mask(name: str, settings: Mask) -> CompiledMask:
    """The loader's entry point: a ``[masks.NAME]`` table, compiled. Raises MaskConfigError."""
    return CompiledMask(
        name,
        settings.fields,
        settings.replacement,
        settings.exempt_roles,
        settings.max_bytes,
        settings.on_unmaskable == "refuse",
    )


def _not_json_value(value: Any, depth: int = 0) -> str | None:
    """Why ``value`` (from TOML) cannot stand for a masked value in JSON, or None."""
    if depth > 32:
        return "nested too deeply"
    if value is None or isinstance(value, (str, bool)):
        return None
    if isinstance(value, int):
        return None if -(2**63) <= value < 2**64 else "an integer beyond 64 bits"
    if isinstance(value, float):
        return None if math.isfinite(value) else "not a finite number (JSON has no inf or nan)"
    if isinstance(value, list):
        for item in value:
            problem = _not_json_value(item, depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return "an object with a key that is not a string"
            problem = _not_json_value(item, depth + 1)
            if problem:
                return problem
        return None
    return f"a JSON value (string, number, boolean, array or table), not {type(value).__name__}"


# Content-Type values repeat (an upstream sends one or two); remember the verdict of a few.
_MEDIA_CACHE: Final[dict[bytes | str, bool]] = {}
_MEDIA_CACHE_MAX: Final = 64


def is_json_media_type(content_type: bytes | str | None) -> bool:
    """``application/json`` or any ``type/subtype+json``; parameters ignored, case-insensitive."""
    if content_type is None:
        return False
    known = _MEDIA_CACHE.get(content_type)
    if known is not None:
        return known
    text = content_type.decode("latin-1") if isinstance(content_type, bytes) else content_type
    media = text.split(";", 1)[0].strip().lower()
    kind, slash, subtype = media.partition("/")
    verdict = bool(
        slash
        and kind
        and (
            (subtype == "json" and kind == "application") or (len(subtype) > 5 and subtype.endswith("+json"))
        )
        and not any(c.isspace() for c in media)
    )
    if len(_MEDIA_CACHE) >= _MEDIA_CACHE_MAX:
        _MEDIA_CACHE.clear()  # an upstream varying its Content-Type cannot grow this
    _MEDIA_CACHE[content_type] = verdict
    return verdict


def is_identity_encoding(content_encoding: bytes | str | None) -> bool:
    """No Content-Encoding, an empty one, or ``identity``: the body bytes are the document."""
    if not content_encoding:
        return True
    text = content_encoding.decode("latin-1") if isinstance(content_encoding, bytes) else content_encoding
    return text.strip().lower() == "identity"
