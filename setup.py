"""Build of the compiled hot paths (everything else is declared in pyproject.toml).

The C sources are hand-written on purpose: they are the product's own hot-path codecs,
where no library reaches the rates the exchange needs (see each source's header comment).
A pure-Python implementation of each stays in the tree as the reference the tests compare
the compiled one against.
"""
from setuptools import Extension, setup

CFLAGS = ["-O2", "-std=c11", "-Wall", "-Wno-unused-function"]

setup(
    ext_modules=[
        Extension("marketdata.fast._fastvm", ["marketdata/fast/_fastvm.c"],
                  extra_compile_args=CFLAGS),
        Extension("fix_gateway._fixfast", ["fix_gateway/_fixfast.c"],
                  extra_compile_args=CFLAGS),
    ],
)
