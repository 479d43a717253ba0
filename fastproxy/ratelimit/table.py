"""The shared table is the C extension or nothing: loading it, and refusing to run without it.

Python has no compare-and-swap on shared memory, and a limiter that reads, computes and writes a
TAT without one lets concurrent workers admit more than the limit. So there is no Python fallback:
if ``fastproxy.ratelimit._gcra`` did not build or does not load, :func:`require_native` (the master
calls it before it serves) raises with the reason, and fastproxy does not start.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, cast

from fastproxy.ratelimit.gcra import ALLOWED, LIMITED, NO_SLOT

if TYPE_CHECKING:
    from fastproxy.ratelimit._gcra import Table

__all__ = ["LAYOUT_VERSION", "new_table", "require_native"]

# The slot layout this Python expects; a stale build of the extension says another and is refused.
LAYOUT_VERSION = 1

_native: ModuleType | None
_import_error: BaseException | None
try:
    _native = importlib.import_module("fastproxy.ratelimit._gcra")
    _import_error = None
except ImportError as exc:  # reported by require_native(), where the master can say it
    _native = None
    _import_error = exc


def _problem() -> str | None:
    if _native is None:
        return f"it did not load: {_import_error}"
    if _native.LAYOUT_VERSION != LAYOUT_VERSION:
        return f"it is a stale build (layout {_native.LAYOUT_VERSION}, this fastproxy needs {LAYOUT_VERSION})"
    if (_native.ALLOWED, _native.LIMITED, _native.NO_SLOT) != (ALLOWED, LIMITED, NO_SLOT):
        return "it is a stale build (its decision codes differ from fastproxy.ratelimit.gcra's)"
    return None


def require_native() -> None:
    """Raises RuntimeError, saying why and what to do, unless the C rate-limit table is usable."""
    problem = _problem()
    if problem is not None:
        raise RuntimeError(
            "fastproxy cannot start: its shared-memory rate limiter, the C extension "
            f"fastproxy.ratelimit._gcra, is unusable ({problem}). It is compiled when fastproxy is "
            "installed from source: reinstall with a C compiler and the Python headers present "
            "(scripts/install). fastproxy never falls back to a limiter without atomic updates."
        ) from _import_error


def new_table(slots: int) -> Table:
    """A table of ``slots`` slots in fresh shared memory: make it in the master, before forking."""
    require_native()
    assert _native is not None
    return cast("Table", _native.Table(slots))
