# One process's slot of the shared metrics region (fastproxy/metrics/_cells.c).

from collections.abc import Sequence
from typing import final

@final
class Cells:
    """``ints`` int64 cells at byte ``offset`` of a writable buffer, then ``floats`` doubles."""

    def __new__(
        cls, buffer: object, offset: int, ints: int, floats: int, buckets: Sequence[float]
    ) -> Cells: ...
    def add(self, cell: int, n: int = 1, /) -> None: ...
    def set(self, cell: int, value: int, /) -> None: ...
    def get(self, cell: int, /) -> int: ...
    def get_float(self, index: int, /) -> float: ...
    def request(self, cell: int, histogram: int, total: int, seconds: float, /) -> None:
        """Count one request in ``cell``, its duration in the histogram at ``histogram``, and add it to
        float cell ``total``."""

    def bucket(self, seconds: float, /) -> int:
        """bisect_left over the bounds: the bucket ``seconds`` falls in (len(buckets) is +Inf)."""
