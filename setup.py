import platform

from setuptools import Extension, setup

# The rate-limit table swaps 16-byte slots atomically: x86-64 needs -mcx16 for an inline cmpxchg16b.
_CAS16 = ["-mcx16"] if platform.machine().lower() in ("x86_64", "amd64") else []

setup(
    ext_modules=[
        Extension("fastproxy.http._speedups", ["fastproxy/http/_speedups.c"], extra_compile_args=["-O2"]),
        Extension(
            "fastproxy.ratelimit._gcra", ["fastproxy/ratelimit/_gcra.c"], extra_compile_args=["-O2", *_CAS16]
        ),
    ],
)
