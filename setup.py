"""Build of wgpy's optional native data path (issue 15): small C extension modules against OpenSSL's libcrypto.

Everything else is in pyproject.toml. Each extension is optional: when the compiler, the Python headers or
libssl-dev are missing, or a source fails to compile, the build says so in one clear line and goes on, and wgpy
runs the pure-Python data path (src/wgpy/native.py picks the path at import time; WGPY_NATIVE=0 forces Python).

    WGPY_NATIVE_CFLAGS="-fsanitize=address -g -O1"   extra compiler flags (the fuzz script's ASan build)
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
NATIVE = {            # module name -> its C source (src/native/)
    "wgpy._crypto": "src/native/crypto.c",
    "wgpy._offload": "src/native/offload.c",
}
EXTRA = shlex.split(os.environ.get("WGPY_NATIVE_CFLAGS", ""))


class OptionalBuildExt(build_ext):
    """build_ext that never fails the install: a module that does not build is reported and left out."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:          # noqa: BLE001 - distutils raises several unrelated types here
            self._skip("the native data path", e)

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:          # noqa: BLE001
            self._skip(ext.name, e)

    @staticmethod
    def _skip(what: str, err: Exception) -> None:
        print(f"wgpy: WARNING: could not build {what} ({err}); wgpy will use the pure-Python data path. "
              "Install gcc, python3-dev and libssl-dev (scripts/setup.sh does) and reinstall to build it.",
              file=sys.stderr)


def extensions() -> list[Extension]:
    exts = []
    for name, src in NATIVE.items():
        if (HERE / src).exists():
            exts.append(Extension(name, [src], libraries=["crypto"],
                                  extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                                      "-fno-strict-aliasing", *EXTRA],
                                  extra_link_args=list(EXTRA)))
    return exts


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
