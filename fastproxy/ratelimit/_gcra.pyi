# The shared-memory GCRA table (fastproxy/ratelimit/_gcra.c); fastproxy.ratelimit.gcra is the
# reference of its arithmetic.

from typing import Final, final

ALLOWED: Final[int]
LIMITED: Final[int]
NO_SLOT: Final[int]
LAYOUT_VERSION: Final[int]
WINDOW: Final[int]
SLOT_BYTES: Final[int]
HEADER_BYTES: Final[int]
GRACE_NS: Final[int]
MAX_TRIES: Final[int]

@final
class Table:
    """Table(slots): a rate-limit table in memory shared with the processes forked after it."""

    def __new__(cls, slots: int) -> Table: ...
    @property
    def slots(self) -> int: ...
    @property
    def window(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def header(self) -> dict[str, int]: ...
    def decide(
        self, key: bytes | str, interval_ns: int, burst: int, cost: int = 1, /
    ) -> tuple[int, int, int, int]:
        """(status, remaining, reset_after_ns, retry_after_ns) on the shared monotonic clock."""

    def admit(
        self, prefix: bytes, value: bytes | str, interval_ns: int, burst: int, shown_limit: bytes, /
    ) -> bytes | tuple[int, int, int, int]:
        """decide(prefix + value, ...): the RateLimit-* header lines if admitted, else the tuple."""

    def decide_at(
        self, now_ns: int, key: bytes | str, interval_ns: int, burst: int, cost: int = 1, /
    ) -> tuple[int, int, int, int]:
        """decide() at a clock the caller gives (now_ns >= 1)."""

    def key_hash(self, key: bytes | str, /) -> int: ...
    def slot(self, index: int, /) -> tuple[int, int]: ...
    def _store(self, index: int, tag: int, tat: int, /) -> None: ...
    def live_slots(self, now_ns: int | None = None, /) -> int: ...
    def stats(self) -> dict[str, int]: ...

def monotonic_ns() -> int: ...
def siphash13(key: bytes, data: bytes, /) -> int: ...
