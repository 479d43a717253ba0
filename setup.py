from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("fastproxy.http._speedups", ["fastproxy/http/_speedups.c"], extra_compile_args=["-O2"]),
    ],
)
