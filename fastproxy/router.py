"""The router: each request's route, the first that matches its method and path.

The rules are :mod:`fastproxy.routing`'s (``Route.matches`` is the reference). This half runs for
every request, so it is compiled with mypyc (setup.py); :mod:`fastproxy.routing` is not, because
compiling its ``Route`` dataclass needs the field types at import time, an import cycle through
:mod:`fastproxy.config`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastproxy.routing import Route

__all__ = ["Router"]


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
