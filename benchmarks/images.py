"""The benchmark images: one real, sparse file per case, made with the real tools.

Each case is a name and a builder.  Builders write into a scratch directory and return the
path to introspect; every image is sparse (a 1 TiB image costs a few blocks of disk), except
the metadata-preallocated qcow2, whose L2 tables qemu writes out (about 160 MiB).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class ToolMissing(Exception):
    """The tool a case needs is not installed (or cannot make that image here)."""


def run(*args: str | Path) -> None:
    """Run a tool; a failure names the tool and carries its stderr."""
    tool = shutil.which(str(args[0]))
    if tool is None:
        raise ToolMissing(f"{args[0]} is not installed")
    proc = subprocess.run(
        [tool, *(str(a) for a in args[1:])], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(str(a) for a in args)} failed: {proc.stderr.strip()}")


def qemu_create(path: Path, fmt: str, size: str, *options: str) -> Path:
    run("qemu-img", "create", "-q", "-f", fmt, *options, path, size)
    return path


@dataclass(frozen=True)
class Case:
    """One benchmark image: ``build(directory)`` returns the file to introspect."""

    name: str
    build: Callable[[Path], Path]


def _qcow2_snapshots(d: Path) -> Path:
    path = qemu_create(d / "snap.qcow2", "qcow2", "10G")
    for tag in ("before-upgrade", "after-upgrade", "golden"):
        run("qemu-img", "snapshot", "-c", tag, path)
    return path


def _qcow2_backing(d: Path) -> Path:
    base = qemu_create(d / "base.qcow2", "qcow2", "10G")
    return qemu_create(d / "overlay.qcow2", "qcow2", "10G", "-b", str(base), "-F", "qcow2")


def _vmdk_two_gb_flat(d: Path) -> Path:
    # The descriptor is the file callers are handed; its five 2 GiB extents stay unread.
    return qemu_create(d / "flat.vmdk", "vmdk", "10G", "-o", "subformat=twoGbMaxExtentFlat")


def _with_data(path: Path, fmt: str) -> Path:
    """Write 4 MiB of guest data: an image as uploaded, larger than oslo's 256 KiB look-ahead.

    An empty image is only a few KiB, so oslo's detection reaches the end of the file early;
    real uploads hold data, and oslo then reads until all its inspectors are done.
    """
    run("qemu-io", "-f", fmt, "-c", "write -q -P 0x5a 0 4M", path)
    return path


def _luks(d: Path) -> Path:
    # A low iter-time keeps creation fast; the header layout does not depend on it.  qemu's
    # PBKDF calibration fails at once ("Unable to get accurate CPU usage") when the thread CPU
    # time it samples did not move during a trial round, about one try in two here: retry.
    options = ("--object", "secret,id=sec0,data=benchmark", "-o", "key-secret=sec0,iter-time=10")
    for _ in range(19):
        try:
            return qemu_create(d / "disk.luks", "luks", "1G", *options)
        except RuntimeError as exc:
            if "accurate CPU usage" not in str(exc):
                raise
    return qemu_create(d / "disk.luks", "luks", "1G", *options)


def _iso(d: Path) -> Path:
    tree = d / "iso-tree"
    (tree / "boot").mkdir(parents=True)
    (tree / "README.TXT").write_text("benchmark image\n")
    (tree / "boot" / "config.txt").write_text("timeout=5\n")
    path = d / "cdrom.iso"
    run("xorriso", "-as", "mkisofs", "-quiet", "-V", "BENCH_ISO", "-R", "-J", "-o", path, tree)
    return path


def _gpt(d: Path) -> Path:
    path = d / "gpt.img"
    with open(path, "wb") as f:
        f.truncate(1024**3)
    run("sgdisk", "-n", "1:2048:+100M", "-t", "1:ef00", "-n", "2:0:0", "-t", "2:8300", path)
    return path


def _raw(d: Path) -> Path:
    path = d / "disk.raw"
    with open(path, "wb") as f:
        f.truncate(1024**3)
    return path


CASES: tuple[Case, ...] = (
    Case("qcow2-10G", lambda d: qemu_create(d / "plain.qcow2", "qcow2", "10G")),
    Case(
        "qcow2-prealloc-1T",
        lambda d: qemu_create(d / "prealloc.qcow2", "qcow2", "1T", "-o", "preallocation=metadata"),
    ),
    Case("qcow2-snapshots", _qcow2_snapshots),
    Case(
        "qcow2-extl2-zstd",
        lambda d: qemu_create(
            d / "extl2.qcow2", "qcow2", "10G", "-o", "extended_l2=on,compression_type=zstd"
        ),
    ),
    Case("qcow2-backing", _qcow2_backing),
    Case(
        "vmdk-sparse-1T",
        lambda d: qemu_create(d / "sparse.vmdk", "vmdk", "1T", "-o", "subformat=monolithicSparse"),
    ),
    Case(
        "vmdk-stream-buslogic",
        lambda d: qemu_create(
            d / "stream.vmdk",
            "vmdk",
            "10G",
            "-o",
            "subformat=streamOptimized,adapter_type=buslogic",
        ),
    ),
    Case("vmdk-2gbflat-descriptor", _vmdk_two_gb_flat),
    Case(
        "vhd-dynamic",
        lambda d: qemu_create(d / "dynamic.vhd", "vpc", "10G", "-o", "subformat=dynamic"),
    ),
    Case(
        "vhd-dynamic-4M-data",
        lambda d: _with_data(
            qemu_create(d / "data.vhd", "vpc", "10G", "-o", "subformat=dynamic"), "vpc"
        ),
    ),
    Case(
        "vhd-fixed",
        lambda d: qemu_create(d / "fixed.vhd", "vpc", "1G", "-o", "subformat=fixed"),
    ),
    Case("vhdx-1T", lambda d: qemu_create(d / "disk.vhdx", "vhdx", "1T")),
    Case("vdi-10G", lambda d: qemu_create(d / "disk.vdi", "vdi", "10G")),
    Case(
        "vdi-4M-data",
        lambda d: _with_data(qemu_create(d / "data.vdi", "vdi", "10G"), "vdi"),
    ),
    Case("qed-10G", lambda d: qemu_create(d / "disk.qed", "qed", "10G")),
    Case("luks-1G", _luks),
    Case("raw-1G", _raw),
    Case("iso", _iso),
    Case("gpt-1G", _gpt),
)

CASE_NAMES: tuple[str, ...] = tuple(case.name for case in CASES)
