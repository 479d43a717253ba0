"""Response masking: replace sensitive JSON fields before a response leaves the proxy.

A ``[masks.NAME]`` table compiles once, at load, into a :class:`CompiledMask`
(:func:`compile_mask`); the response path asks it whether the caller is exempt
(:meth:`~CompiledMask.applies_to`), what to do with a response given its head
(:meth:`~CompiledMask.plan`), and masks the buffered body (:meth:`~CompiledMask.apply`, or
:func:`mask_body`). Path syntax and matching rules: :mod:`fastproxy.masking.paths`; the order of the
calls and the reason codes: :mod:`fastproxy.masking.mask`.
"""

from fastproxy.masking.body import InvalidJson
from fastproxy.masking.mask import (
    EMPTY,
    ENCODED,
    INVALID_JSON,
    MASK,
    NOT_JSON,
    PASS,
    REFUSE,
    TOO_LARGE,
    CompiledMask,
    MaskConfigError,
    Verdict,
    compile_mask,
    is_identity_encoding,
    is_json_media_type,
    mask_body,
)
from fastproxy.masking.paths import parse_path

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
    "InvalidJson",
    "MaskConfigError",
    "Verdict",
    "compile_mask",
    "is_identity_encoding",
    "is_json_media_type",
    "mask_body",
    "parse_path",
]
