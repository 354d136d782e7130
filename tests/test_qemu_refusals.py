"""Images qemu cannot open do not pass the gate, and the qemu-img view fails as qemu-img does.

Each image is made by qemu-img and then edited where needed; ``qemu-img info`` is run on it
and its exit status compared with ``imageintrospect info --output qemu-json`` (which must
print nothing on standard output and qemu's reason on standard error), and the verdict must
be unsafe with a ``qemu-cannot-open`` finding.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from imageintrospect import introspect
from tests.support import QEMU_IMG, needs_qemu, patch

MakeImage = Callable[..., Path]


def qemu_info_status(path: Path) -> tuple[int, str]:
    assert QEMU_IMG is not None
    proc = subprocess.run(
        [QEMU_IMG, "info", "--output=json", str(path)], capture_output=True, text=True
    )
    return proc.returncode, proc.stderr


def ours_status(path: Path) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "imageintrospect", "info", "--output", "qemu-json", str(path)],
        capture_output=True,
        text=True,
    )
    return proc.returncode, proc.stdout, proc.stderr


def assert_refused_like_qemu(path: Path, reason: str) -> None:
    """qemu-img refuses ``path`` with ``reason``; so do our view and our verdict."""
    status, qemu_stderr = qemu_info_status(path)
    assert status == 1 and reason in qemu_stderr
    ours, stdout, stderr = ours_status(path)
    assert (ours, stdout) == (status, "")
    assert stderr.startswith(f"qemu-img: Could not open '{path}': {reason}")
    md = introspect(path)
    assert "qemu-cannot-open" in md.codes() and not md.safe
    assert reason in next(f.message for f in md.findings if f.code == "qemu-cannot-open")


def qcow2_edit(make_image: MakeImage, offset: int, fmt: str, value: int) -> Path:
    path = make_image("qcow2", "1M")
    patch(path, offset, struct.pack(fmt, value))
    return path


@needs_qemu
@pytest.mark.parametrize(
    ("offset", "fmt", "value", "reason"),
    [
        (24, ">Q", 1 << 62, "Image is too big"),  # the virtual size
        (24, ">Q", 1 << 40, "L1 table is too small"),
        (36, ">I", (32 << 20) // 8 + 1, "Active L1 table too large"),  # l1_size
        (20, ">I", 22, "Unsupported cluster size: 2^22"),  # cluster_bits
        (72, ">Q", 1 << 40, "Unsupported qcow2 feature(s)"),  # incompatible features
    ],
)
def test_qcow2_refused(
    make_image: MakeImage, offset: int, fmt: str, value: int, reason: str
) -> None:
    assert_refused_like_qemu(qcow2_edit(make_image, offset, fmt, value), reason)


@needs_qemu
def test_qcow2_qemu_opens_stays_openable(make_image: MakeImage) -> None:
    # The largest size qemu still opens with a big enough L1 table: no refusal.
    path = make_image("qcow2", "4T")
    status, _ = qemu_info_status(path)
    ours, stdout, _ = ours_status(path)
    assert status == ours == 0 and stdout
    assert "qemu-cannot-open" not in introspect(path).codes()


# --- VMDK ------------------------------------------------------------------------------------


@needs_qemu
def test_one_extent_of_a_split_vmdk_alone(make_image: MakeImage) -> None:
    path = make_image("vmdk", "3G", "-o", "subformat=twoGbMaxExtentSparse")
    piece = path.with_name(path.stem + "-s001.vmdk")
    status, _ = qemu_info_status(piece)
    ours, stdout, _ = ours_status(piece)
    assert status == ours == 1 and stdout == ""
    md = introspect(piece)
    assert {"qemu-cannot-open", "vmdk-descriptor-missing"} <= md.codes() and not md.safe
    # The whole split disk, opened through its descriptor, is not refused by qemu.
    assert qemu_info_status(path)[0] == 0
    assert "qemu-cannot-open" not in introspect(path).codes()


def descriptor_without(make_image: MakeImage, prefix: str) -> Path:
    path = make_image("vmdk", "1M", "-o", "subformat=monolithicFlat")
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(line for line in lines if not line.startswith(prefix)))
    return path


@needs_qemu
@pytest.mark.parametrize(
    ("line", "reason"),
    [("createType", "invalid VMDK image descriptor"), ("parentCID", "Invalid argument")],
)
def test_descriptor_lacking_a_line_qemu_requires(
    make_image: MakeImage, line: str, reason: str
) -> None:
    path = descriptor_without(make_image, line)
    status, qemu_stderr = qemu_info_status(path)
    assert status == 1 and reason in qemu_stderr
    ours, stdout, stderr = ours_status(path)
    assert (ours, stdout) == (1, "") and stderr.startswith(f"qemu-img: Could not open '{path}': ")
    assert "qemu-cannot-open" in introspect(path).codes()


@needs_qemu
def test_descriptor_lacking_cid_opens_in_qemu(make_image: MakeImage) -> None:
    path = descriptor_without(make_image, "CID")
    assert qemu_info_status(path)[0] == 0
    assert ours_status(path)[0] == 0
    assert "qemu-cannot-open" not in introspect(path).codes()


@needs_qemu
def test_descriptor_without_extents_aborts_qemu_img(make_image: MakeImage) -> None:
    path = descriptor_without(make_image, "RW ")
    status, qemu_stderr = qemu_info_status(path)
    assert status == -6 and "num_extents" in qemu_stderr  # qemu-img 7.2 dies on SIGABRT
    ours, stdout, _ = ours_status(path)
    assert (ours, stdout) == (128 + 6, "")  # what a shell reports for qemu-img
    assert "qemu-cannot-open" in introspect(path).codes()


@needs_qemu
def test_zero_size_vmdk_qemu_made_but_cannot_open(make_image: MakeImage) -> None:
    path = make_image("vmdk", "0")
    assert_refused_like_qemu(path, "Unsupported image type 'monolithicSparse'")
