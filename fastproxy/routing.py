"""Routing: explicit first match, by method and path.

Routes are tried in the order the configuration lists them; the first whose methods include the
request's method (an empty list means every method) and whose path pattern matches wins. No match
is a 404. Patterns:

* ``/x``   matches exactly ``/x``;
* ``/x/*`` matches ``/x``, ``/x/`` and everything below it, never ``/xy``;
* ``/*``   matches every path.

Matching is on the path as received, without the query string and without percent-decoding, so a
pattern can never be dodged by re-encoding: ``/api%2Fadmin`` is not below ``/api/``.

:class:`fastproxy.router.Router` matches requests against the routes, compiled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastproxy.config.model import Upstream
    from fastproxy.config.schema import RouteSettings
    from fastproxy.masking import CompiledMask
    from fastproxy.policy import Stage

__all__ = ["Route", "compile_pattern"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Z]+")


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    methods: frozenset[str]  # empty: any method
    exact: str | None  # "/x" patterns
    prefix: str | None  # "/x/*" patterns, stored as "/x" (the empty string for "/*")
    upstream: Upstream
    settings: RouteSettings
    stages: tuple[Stage, ...] = field(default=())
    # The client's credentials (Authorization, the API key header), which the parser took out of
    # the headers, go upstream as they came: a public route has no stage that consumes them.
    forward_credentials: bool = False
    # The route's [masks.*], compiled; applied to responses unless the caller's role is exempt.
    mask: CompiledMask | None = None

    @property
    def shadow(self) -> bool:
        return self.settings.mode == "shadow"

    def matches(self, method: str, path: str) -> bool:
        if self.methods and method not in self.methods:
            return False
        if self.exact is not None:
            return path == self.exact
        prefix = self.prefix
        assert prefix is not None
        if not path.startswith(prefix):
            return False
        # "/x/*" covers "/x" itself and "/x/...", but "/xy" only shares characters.
        return len(path) == len(prefix) or path[len(prefix)] == "/"


def compile_pattern(pattern: str) -> tuple[str | None, str | None]:
    """``(exact, prefix)`` for a route path; raises ValueError naming what is wrong."""
    if not pattern.startswith("/"):
        raise ValueError(f"must start with '/': {pattern!r}")
    if any(c in pattern for c in "?#") or any(ord(c) <= 0x20 or ord(c) >= 0x7F for c in pattern):
        raise ValueError(f"must be a plain path without query, spaces or control characters: {pattern!r}")
    if pattern.endswith("/*"):
        prefix = pattern[:-2]
        if "*" in prefix:
            raise ValueError(f"'*' is allowed only as a final '/*': {pattern!r}")
        return None, prefix
    if "*" in pattern:
        raise ValueError(f"'*' is allowed only as a final '/*': {pattern!r}")
    return pattern, None


def check_method(method: str) -> None:
    if not _TOKEN.fullmatch(method) or method != method.upper():
        raise ValueError(f"not an upper-case HTTP method: {method!r}")
