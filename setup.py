import glob
import os
import platform

from setuptools import Extension, setup

# The rate-limit table swaps 16-byte slots atomically: x86-64 needs -mcx16 for an inline cmpxchg16b.
_CAS16 = ["-mcx16"] if platform.machine().lower() in ("x86_64", "amd64") else []

# The modules every request runs through, compiled to C with mypyc from the same (strictly typed)
# sources: attribute access on their classes becomes a struct read and calls between them C calls.
# That took a third off the worker's in-process cost per request (bench.micro_path: 6.0 -> 4.3 us).
# FASTPROXY_PURE_PYTHON=1 builds without them (and removes those an earlier build left). Not here:
# fastproxy.http.request and .response, with the C twins in _speedups: their Python references
# stay interpreted, as the tests check them.
_COMPILED = [
    "fastproxy/server/connection.py",
    "fastproxy/server/upstream.py",
    "fastproxy/server/state.py",
    "fastproxy/policy.py",
    "fastproxy/routing.py",
    "fastproxy/http/head.py",
    "fastproxy/http/parser.py",
    "fastproxy/http/forward.py",
    "fastproxy/stages/authenticate.py",
    "fastproxy/stages/authorize.py",
    "fastproxy/stages/ratelimit.py",
    "fastproxy/identity/cache.py",
    "fastproxy/audit/client.py",
    "fastproxy/audit/batcher.py",
    "fastproxy/masking/mask.py",
    "fastproxy/masking/body.py",
    "fastproxy/metrics/shared.py",
]


# One shared library for the group, inside the package (not a top-level module next to it).
_GROUP = "fastproxy._compiled"


def _pure() -> bool:
    return os.environ.get("FASTPROXY_PURE_PYTHON", "").lower() in ("1", "true", "yes")


def _remove_compiled() -> None:
    """An extension is imported before the .py beside it: a pure build removes the ones a
    compiled build left, or they would go on running the code they were built from."""
    group_library = _GROUP.replace(".", "/") + "__mypyc"
    for stem in [*(path.removesuffix(".py") for path in _COMPILED), group_library]:
        for leftover in glob.glob(stem + ".*.so"):
            os.remove(leftover)


def _compiled() -> list[Extension]:
    if _pure():
        _remove_compiled()
        return []
    from mypyc.build import mypycify

    return mypycify(_COMPILED, group_name=_GROUP, opt_level="3")


setup(
    ext_modules=[
        Extension("fastproxy.http._speedups", ["fastproxy/http/_speedups.c"], extra_compile_args=["-O2"]),
        Extension(
            "fastproxy.ratelimit._gcra", ["fastproxy/ratelimit/_gcra.c"], extra_compile_args=["-O2", *_CAS16]
        ),
        # The audit's hot loops: encoding a record in the worker, sealing batches in the writer.
        Extension("fastproxy.audit._encode", ["fastproxy/audit/_encode.c"], extra_compile_args=["-O2"]),
        # Masking a JSON response in one pass over its bytes (body.mask_document is the reference).
        Extension("fastproxy.masking._splice", ["fastproxy/masking/_splice.c"], extra_compile_args=["-O2"]),
        # A worker's metric cells, written in place (a memoryview boxes every read and write).
        Extension("fastproxy.metrics._cells", ["fastproxy/metrics/_cells.c"], extra_compile_args=["-O2"]),
        # Optional: without OpenSSL's headers the writer chains in Python (the same bytes, slower).
        Extension(
            "fastproxy.audit._seal",
            ["fastproxy/audit/_seal.c"],
            extra_compile_args=["-O2"],
            libraries=["crypto"],
            optional=True,
        ),
        *_compiled(),
    ],
)
