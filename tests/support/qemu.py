"""qemu-img and qemu-io, run for real, and our answer compared with qemu-img's."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from imageintrospect import ImageIntrospectError, Metadata, introspect
from imageintrospect.formats.base import QemuRefuses
from imageintrospect.qemu_json import qemu_info_dict

QEMU_IMG = shutil.which("qemu-img")

needs_qemu = pytest.mark.skipif(QEMU_IMG is None, reason="qemu-img (Debian qemu-utils) missing")


def run(*args: str | Path) -> str:
    """Run a tool, fail the test with its stderr if it fails."""
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{args[0]} failed: {proc.stderr.strip()}")
    return proc.stdout


def qemu_img(*args: str | Path) -> str:
    assert QEMU_IMG is not None, "qemu-img is required (apt-get install qemu-utils)"
    return run(QEMU_IMG, *args)


def qemu_io(path: Path, fmt: str, *commands: str) -> None:
    """Run ``qemu-io -f fmt -c command ...`` on ``path`` (how images get their data)."""
    args: list[str | Path] = ["qemu-io", "-f", fmt]
    for command in commands:
        args += ["-c", command]
    run(*args, path)


def qemu_info(path: Path, fmt: str | None = None) -> dict[str, Any]:
    """``qemu-img info --output=json`` of ``path`` (``-U``: never wait on a lock)."""
    args: list[str | Path] = ["info", "-U", "--output=json"]
    if fmt:
        args += ["-f", fmt]
    result: dict[str, Any] = json.loads(qemu_img(*args, path))
    return result


def qemu_map_data(path: Path, fmt: str) -> int:
    """Bytes ``qemu-img map`` says are data stored in this file."""
    extents = json.loads(qemu_img("map", "-f", fmt, "--output=json", path))
    return sum(e["length"] for e in extents if e["data"] and e["present"] and "offset" in e)


def qemu_corruptions(path: Path, fmt: str) -> int:
    """``corruptions`` from ``qemu-img check`` (it exits 2 when there are any)."""
    assert QEMU_IMG is not None
    args = [QEMU_IMG, "check", "-f", fmt, "--output=json", str(path)]
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    count: int = json.loads(proc.stdout).get("corruptions", 0)
    return count


def qemu_refuses(path: Path, fmt: str | None = None) -> bool:
    """True if ``qemu-img info`` (as ``fmt``, or probing) cannot open ``path``; then our
    qemu-img view must refuse it too (``--output qemu-json`` fails where qemu-img does)."""
    try:
        qemu_info(path, fmt)
    except AssertionError:
        assert_view_refuses(path)
        return True
    return False


def assert_view_refuses(path: Path) -> None:
    """Our qemu-img view of ``path`` fails (QemuRefuses) and the verdict is unsafe, or the
    image cannot be described at all."""
    try:
        md = introspect(path)
    except ImageIntrospectError:
        return  # nothing to show at all: the CLI fails too
    with pytest.raises(QemuRefuses):
        qemu_info_dict(md, str(path), None)
    assert not md.safe


def ours_as_qemu(path: Path) -> dict[str, Any]:
    """Our ``qemu-img info --output=json`` view of ``path`` (the CLI's qemu-json)."""
    return qemu_info_dict(introspect(path), str(path), None)


def assert_same_as_qemu(path: Path, fmt: str | None = None) -> Metadata:
    """Our qemu-img view equals qemu-img's, key for key, except the host's actual-size
    (which qemu takes from the host file system). Returns our Metadata."""
    theirs = qemu_info(path, fmt)
    theirs.pop("actual-size", None)
    assert ours_as_qemu(path) == theirs
    return introspect(path)
