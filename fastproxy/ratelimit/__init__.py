"""Rate limits shared by every worker: GCRA in a lock-free table of shared memory.

The master makes one :class:`Table` (``new_table(settings.ratelimit_slots)``) before it forks, after
:func:`require_native`, which refuses to start fastproxy without the C extension (never a silent,
non-atomic fallback). Each worker then decides per request, with no lock and no system call but the
vDSO clock read::

    limit = Limit.from_rate(rate, per, burst)              # once, at config load
    status, remaining, reset_ns, retry_ns = table.decide(key, limit.interval_ns, limit.burst)
    headers = rate_limit_headers(limit.limit, (status, remaining, reset_ns, retry_ns))

``status`` is ALLOWED, LIMITED (answer 429 with the headers, which then carry Retry-After) or
NO_SLOT: every slot of the key's probe window is held by another live key, so the table cannot
track this one; the limit's ``on_full`` (fail_open / fail_closed) decides, and
``table.stats()["no_slot"]`` counts it. Keys are bytes or str; :func:`table_key` builds one per
(limit, value) so that limits sharing the table never share a bucket. A slot is reused for another
key once its TAT has passed by ``GRACE_NS`` (1 s): a key forgotten that way had a full bucket anyway.

HTTP semantics: a limit is ``rate`` requests per ``per`` seconds sustained plus ``burst`` more at
once (a client idle long enough may send ``burst + 1`` at once, then one per ``per / rate``).
``RateLimit-Limit`` is ``burst + 1``, ``RateLimit-Remaining`` what is left now, ``RateLimit-Reset``
the seconds until the bucket is full again and ``Retry-After`` (429 only) the seconds until the
request would be admitted, both rounded up (:mod:`fastproxy.ratelimit.headers`).

Modules: :mod:`~fastproxy.ratelimit.gcra` (the arithmetic in pure Python: ``gcra.decide`` is the
reference the C is tested against), :mod:`~fastproxy.ratelimit.headers`,
:mod:`~fastproxy.ratelimit.table` (loading the extension) and ``_gcra.c`` (the table; its theory of
operation says why no interleaving admits more than the limit).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastproxy.ratelimit.gcra import ALLOWED, LIMITED, NO_SLOT, Decision, Limit, ReferenceTable
from fastproxy.ratelimit.headers import ceil_seconds, rate_limit_headers
from fastproxy.ratelimit.table import LAYOUT_VERSION, new_table, require_native

if TYPE_CHECKING:
    from fastproxy.ratelimit._gcra import Table

__all__ = [
    "ALLOWED",
    "LAYOUT_VERSION",
    "LIMITED",
    "NO_SLOT",
    "Decision",
    "Limit",
    "ReferenceTable",
    "Table",
    "ceil_seconds",
    "new_table",
    "rate_limit_headers",
    "require_native",
    "table_key",
]


def table_key(limit_name: str, value: str | bytes) -> bytes:
    """The table key of ``value`` (a principal, an IP, ...) under the limit named ``limit_name``.

    The name's length leads, so no (name, value) pair can spell another's key.
    """
    name = limit_name.encode()
    if isinstance(value, str):
        value = value.encode()
    return b"%d:%s:%s" % (len(name), name, value)


def __getattr__(name: str) -> object:
    # Table is the extension's type; importing this package must work without it, so that
    # require_native() can be the one to say what is wrong.
    if name == "Table":
        require_native()
        from fastproxy.ratelimit._gcra import Table

        return Table
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
