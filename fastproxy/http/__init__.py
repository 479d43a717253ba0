"""HTTP/1.1 on both sides of the proxy, kept free of sockets (sans-I/O).

The two hottest rewrites (the upstream's response head, the head sent upstream) have a C twin in
``_speedups``, built with the package and byte-for-byte equal to the Python reference (tested
differentially). Without a C compiler the reference is used; ``SPEEDUPS`` says which.
"""

try:
    from fastproxy.http import _speedups as _speedups
except ImportError:  # pragma: no cover - only without a compiler
    SPEEDUPS = False
else:
    SPEEDUPS = True

__all__ = ["SPEEDUPS"]
