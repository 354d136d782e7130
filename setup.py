"""Only here for cffi: everything else about the package lives in pyproject.toml.

The C scanners (imageintrospect._scan_c) are optional. Without a working C compiler the
build prints a warning and the package installs anyway, running on the pure-Python twin
(imageintrospect.scan._python).
"""

from __future__ import annotations

import warnings

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import BaseError, CCompilerError

# What a missing or broken compiler raises: CompileError/LinkError (CCompilerError), an
# unusable platform or a failed spawn (BaseError = DistutilsError), a missing binary (OSError).
BUILD_FAILURES = (CCompilerError, BaseError, OSError)


class OptionalBuildExt(build_ext):
    """build_ext that turns a failed C build into a warning."""

    def run(self) -> None:
        try:
            super().run()
        except BUILD_FAILURES as exc:
            self._skip(exc)

    def build_extension(self, ext: object) -> None:
        try:
            super().build_extension(ext)
        except BUILD_FAILURES as exc:
            self._skip(exc)

    @staticmethod
    def _skip(exc: BaseException) -> None:
        message = (
            f"imageintrospect: building the C scanners failed ({exc}); "
            "installing the pure-Python backend only"
        )
        warnings.warn(message, stacklevel=1)
        print(f"WARNING: {message}")


# The C module uses only the stable ABI (cffi builds it with Py_LIMITED_API), so one wheel
# serves CPython 3.10 and every later version: tag it cp310-abi3.
LIMITED_API = "cp310"

setup(
    cffi_modules=["src/_cffi_src/build_scan.py:ffibuilder"],
    cmdclass={"build_ext": OptionalBuildExt},
    options={"bdist_wheel": {"py_limited_api": LIMITED_API}},
)
