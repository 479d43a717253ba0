"""Routing: explicit first match, by method and path.

Routes are tried in the order the configuration lists them; the first whose methods include the
request's method (an empty list means every method) and whose path pattern matches wins. No match
is a 404. Patterns:

* ``/x``   matches exactly ``/x``;
* ``/x/*`` matches ``/x``, ``/x/`` and everything below it, never ``/xy``;
* ``/*``   matches every path.

Matching is on the path as received, without the query string and without percent-decoding, so a
pattern can never be dodged by re-encoding: ``/api%2Fadmin`` is not below ``/api/``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from fastproxy.config.model import Upstream
    from fastproxy.config.schema import RouteSettings
    from fastproxy.masking import CompiledMask
    from fastproxy.policy import Stage

__all__ = ["Route", "Router", "check_method", "compile_pattern"]

_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Z]+")


class Route:
    """One [[routes]] entry, compiled: what matches it, where it goes, what runs on the way.

    Treat it as immutable (:meth:`with_stages` makes the copy the stage builder needs): the
    workers of one generation share it. A plain class rather than a frozen dataclass so that this
    module compiles (setup.py): a compiled dataclass needs its field types at import time, an
    import cycle through fastproxy.config; compiled, every field read is a struct load.
    """

    __slots__ = (
        "audit_fail_closed",
        "exact",
        "forward_credentials",
        "mask",
        "methods",
        "mode",
        "name",
        "prefix",
        "settings",
        "stages",
        "upstream",
        "upstream_name",
    )

    def __init__(
        self,
        name: str,
        methods: frozenset[str],  # empty: any method
        exact: str | None,  # "/x" patterns
        prefix: str | None,  # "/x/*" patterns, stored as "/x" (the empty string for "/*")
        upstream: Upstream,
        settings: RouteSettings,
        stages: tuple[Stage, ...] = (),
        # The client's credentials (Authorization, the API key header), which the parser took
        # out of the headers, go upstream as they came: a public route has no stage that
        # consumes them.
        forward_credentials: bool = False,
        # The route's [masks.*], compiled; applied to responses unless the caller's role is exempt.
        mask: CompiledMask | None = None,
    ) -> None:
        self.name = name
        self.methods = methods
        self.exact = exact
        self.prefix = prefix
        self.upstream = upstream
        self.settings = settings
        self.stages = stages
        self.forward_credentials = forward_credentials
        self.mask = mask
        # Read per request (by the stages, by the audit record): taken out of settings and the
        # upstream (neither compiled: each read is a lookup on the type) once.
        self.mode = settings.mode
        self.audit_fail_closed = settings.audit == "fail_closed"
        self.upstream_name = upstream.name

    @property
    def shadow(self) -> bool:
        return self.mode == "shadow"

    def with_stages(self, stages: tuple[Stage, ...]) -> Route:
        return Route(
            self.name,
            self.methods,
            self.exact,
            self.prefix,
            self.upstream,
            self.settings,
            stages,
            self.forward_credentials,
            self.mask,
        )

    def __repr__(self) -> str:
        return f"Route({self.name!r}, upstream={self.upstream.name!r}, stages={len(self.stages)})"

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


class Router:
    __slots__ = ("_table", "routes")

    def __init__(self, routes: tuple[Route, ...]) -> None:
        self.routes = routes
        # What matching reads, taken out of each Route once: the loop then reads no attributes.
        self._table: tuple[tuple[frozenset[str], str | None, str, Route], ...] = tuple(
            (route.methods, route.exact, route.prefix or "", route) for route in routes
        )

    def match(self, method: str, path: str) -> Route | None:
        for methods, exact, prefix, route in self._table:
            if methods and method not in methods:
                continue
            if exact is not None:
                if path == exact:
                    return route
                continue
            # "/x/*" covers "/x" itself and "/x/...", but "/xy" only shares characters.
            if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
                return route
        return None


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
