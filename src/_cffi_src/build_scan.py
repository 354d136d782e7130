"""cffi builder of ``imageintrospect._scan_c`` (out-of-line API mode).

The declarations come from ``csrc/scan.h`` (the text between ``/* CDEF BEGIN */`` and
``/* CDEF END */``), so the header is the single source of truth for both the C compiler
and cffi. setup.py names this file in ``cffi_modules``; scripts/sanitize.sh runs it directly
to build an instrumented copy (``python src/_cffi_src/build_scan.py OUTDIR``); without
OUTDIR it rebuilds the module next to the package, like ``pip install -e .``.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parents[2]
HEADER = Path("csrc") / "scan.h"
SOURCE = Path("csrc") / "scan.c"
MODULE = "imageintrospect._scan_c"


def read_cdef(header: Path) -> str:
    """The part of the header cffi should see."""
    text = header.read_text(encoding="utf-8")
    match = re.search(r"/\* CDEF BEGIN \*/(.*?)/\* CDEF END \*/", text, re.DOTALL)
    if match is None:
        raise RuntimeError(f"{header}: no /* CDEF BEGIN */ ... /* CDEF END */ section")
    return match.group(1)


def compile_args() -> list[str]:
    """-O2 and C99 with warnings; scan.c itself turns its warnings into errors by pragma,
    so cffi's generated wrapper is not held to -Werror. Extra flags (sanitizers) come from
    the usual CFLAGS/LDFLAGS environment variables, which distutils honours."""
    if sys.platform == "win32":
        return []
    return ["-O2", "-std=c99", "-Wall", "-Wextra"]


def make_builder(base: Path = Path()) -> FFI:
    """The builder, with sources named relative to ``base``: setuptools wants paths relative
    to the project root (its working directory), a direct compile() wants absolute ones."""
    builder = FFI()
    builder.cdef(read_cdef(ROOT / HEADER))
    builder.set_source(
        MODULE,
        '#include "scan.h"',
        sources=[str(base / SOURCE)],
        # depends: rebuild when the header changes, and ship it in the sdist
        depends=[str(base / HEADER)],
        include_dirs=[str(base / HEADER.parent)],
        extra_compile_args=compile_args(),
        # the stable ABI (cffi's default, said out loud): the wheel is tagged abi3
        py_limited_api=True,
    )
    return builder


ffibuilder = make_builder()


def build_into(out_dir: Path) -> Path:
    """Compile with ``out_dir`` as the build directory; the module lands in
    ``out_dir/imageintrospect/``."""
    return Path(make_builder(ROOT).compile(tmpdir=str(out_dir), verbose=True))


if __name__ == "__main__":
    # python src/_cffi_src/build_scan.py OUTDIR: build there (scripts/sanitize.sh);
    # without OUTDIR: build in a scratch directory and copy the module next to the package.
    if len(sys.argv) > 1:
        build_into(Path(sys.argv[1]).resolve())
    else:
        package = ROOT / "src" / "imageintrospect"
        with tempfile.TemporaryDirectory() as scratch:
            built = build_into(Path(scratch))
            for stale in package.glob("_scan_c*.so"):  # another name could shadow this one
                stale.unlink()
            shutil.copy2(built, package / built.name)
