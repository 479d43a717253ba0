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
        # The audit's hot loops: encoding a record in the worker, sealing batches in the writer.
        Extension("fastproxy.audit._encode", ["fastproxy/audit/_encode.c"], extra_compile_args=["-O2"]),
        # Masking a JSON response in one pass over its bytes (body.mask_document is the reference).
        Extension("fastproxy.masking._splice", ["fastproxy/masking/_splice.c"], extra_compile_args=["-O2"]),
        # Optional: without OpenSSL's headers the writer chains in Python (the same bytes, slower).
        Extension(
            "fastproxy.audit._seal",
            ["fastproxy/audit/_seal.c"],
            extra_compile_args=["-O2"],
            libraries=["crypto"],
            optional=True,
        ),
    ],
)
