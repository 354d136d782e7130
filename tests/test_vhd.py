"""VHD (qemu's "vpc"): real images from qemu-img, compared with qemu-img -f vpc, hostile edits.

The footer and dynamic header are decoded here independently with ``struct`` (not with the
module under test), so the expected values come from the bytes qemu wrote, or from qemu-img.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imageintrospect import Metadata, introspect
from imageintrospect.errors import FormatMismatch
from imageintrospect.formats.base import QemuRefuses
from imageintrospect.qemu_json import qemu_info_dict
from tests.support import (
    QEMU_IMG,
    CountingBytes,
    assert_view_refuses,
    forward_only,
    introspect_hostile,
    needs_qemu,
    ours_as_qemu,
    patch,
    qemu_img,
    qemu_info,
    read_at,
)

pytestmark = needs_qemu

MakeImage = Callable[..., Path]

# Footer layout (big-endian): cookie, features, version, data offset, timestamp, creator app,
# creator version, host OS, original size, current size, C, H, S, type, checksum, uuid, saved.
FOOTER_FMT = ">8sIIQI4sI4sQQHBBII16sB"
FOOTER_KEYS = [
    *("cookie", "features", "version", "data_offset", "timestamp", "creator_app"),
    *("creator_version", "host_os", "original_size", "current_size", "cylinders", "heads"),
    *("sectors", "disk_type", "checksum", "uuid", "saved_state"),
]
# Offsets (start of each field) in the footer and in the dynamic header.
FOOTER_OFFSETS = {
    "data_offset": 16,
    "creator_app": 28,
    "current_size": 48,
    "chs": 56,
    "disk_type": 60,
    "checksum": 64,
    "saved_state": 84,
}
HEADER_OFFSETS = {
    "table_offset": 16,
    "max_table_entries": 28,
    "block_size": 32,
    "checksum": 36,
    "parent_uuid": 40,
    "parent_timestamp": 56,
    "parent_name": 64,
    "locators": 576,
}


def footer_of(data: bytes) -> dict[str, Any]:
    return dict(zip(FOOTER_KEYS, struct.unpack_from(FOOTER_FMT, data), strict=True))


def vhd_checksum(block: bytes | bytearray, at: int) -> int:
    return ~(sum(block) - sum(block[at : at + 4])) & 0xFFFFFFFF


def seal(block: bytearray, at: int) -> None:
    """Recompute a footer's (at=64) or dynamic header's (at=36) checksum in place."""
    struct.pack_into(">I", block, at, vhd_checksum(block, at))


def edit_footers(
    path: Path, edit: Callable[[bytearray], None], *, head: bool = True, tail: bool = True
) -> None:
    """Apply ``edit`` to the footer copy at 0 and/or the footer at the end, then reseal them."""
    data = bytearray(path.read_bytes())
    for offset, wanted in ((0, head), (len(data) - 512, tail)):
        if wanted and data[offset : offset + 8] == b"conectix":
            footer = bytearray(data[offset : offset + 512])
            edit(footer)
            seal(footer, FOOTER_OFFSETS["checksum"])
            data[offset : offset + 512] = footer
    path.write_bytes(bytes(data))


def edit_header(path: Path, edit: Callable[[bytearray], None], *, reseal: bool = True) -> None:
    data = bytearray(path.read_bytes())
    at = footer_of(data)["data_offset"]
    header = bytearray(data[at : at + 1024])
    edit(header)
    if reseal:
        seal(header, HEADER_OFFSETS["checksum"])
    data[at : at + 1024] = header
    path.write_bytes(bytes(data))


def assert_same_as_qemu(path: Path) -> Metadata:
    """Our qemu-img view equals ``qemu-img info -f vpc``'s, key for key, but actual-size."""
    theirs = qemu_info(path, "vpc")
    theirs.pop("actual-size", None)
    assert ours_as_qemu(path) == theirs
    return introspect(path)


def qemu_refuses(path: Path) -> str:
    """qemu-img's error message for an image it cannot open as vpc."""
    assert QEMU_IMG is not None
    proc = subprocess.run(
        [QEMU_IMG, "info", "-U", "-f", "vpc", str(path)], capture_output=True, text=True
    )
    assert proc.returncode != 0, f"qemu-img opened {path}"
    assert_view_refuses(path)
    return proc.stderr


def to_bytes(size: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    return int(size[:-1]) * units[size[-1]]


@pytest.fixture
def dynamic(make_image: MakeImage) -> Path:
    return make_image("vpc", "64M", name="dynamic.vhd")


@pytest.fixture
def fixed(make_image: MakeImage) -> Path:
    return make_image("vpc", "10M", "-o", "subformat=fixed", name="fixed.vhd")


# --- qemu-img create: every option, sizes where CHS rounding matters --------------------------

SIZES = ["1M", "10M", "100M", "1G", "130G", "200G"]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("force_size", ["off", "on"])
@pytest.mark.parametrize("subformat", ["dynamic", "fixed"])
def test_qemu_img_create_matches_qemu(
    make_image: MakeImage, subformat: str, force_size: str, size: str
) -> None:
    path = make_image("vpc", size, "-o", f"subformat={subformat},force_size={force_size}")
    md = assert_same_as_qemu(path)
    file_size = path.stat().st_size
    footer = footer_of(read_at(path, file_size - 512, 512))
    assert md.format == "vhd" and md.safe, md.findings
    assert md.vhd is not None
    section = md.vhd.to_dict()
    assert section["disk_type"] == subformat
    assert section["current_size"] == footer["current_size"]
    assert section["original_size"] == footer["original_size"]
    assert section["geometry"] == {
        "cylinders": footer["cylinders"],
        "heads": footer["heads"],
        "sectors": footer["sectors"],
    }
    assert section["uuid"].replace("-", "") == footer["uuid"].hex()
    assert section["checksum_valid"] is True
    assert section["creator_application"] == footer["creator_app"].decode().strip()
    assert md.image_size == file_size
    if force_size == "on":
        assert md.virtual_size == to_bytes(size)  # what the user asked for, exactly
    else:
        assert md.virtual_size is not None and md.virtual_size >= to_bytes(size)
    if subformat == "fixed":
        assert section["footer_location"] == "tail" and section["block_size"] is None
        assert file_size == footer["current_size"] + 512
    else:
        assert section["footer_copies"] == ["head", "tail"]
        assert read_at(path, 0, 512) == read_at(path, file_size - 512, 512)
        assert section["block_size"] == 2 * 1024 * 1024


def test_chs_rounding_differs_from_the_requested_size(make_image: MakeImage) -> None:
    """100M is not a whole CHS geometry: qemu rounds up and reports the CHS size."""
    path = make_image("vpc", "100M")
    md = assert_same_as_qemu(path)
    assert md.vhd is not None
    assert md.virtual_size != 100 * 1024 * 1024
    assert md.vhd.to_dict()["virtual_size_source"] == "chs"
    geometry = md.vhd.to_dict()["geometry"]
    assert md.virtual_size == geometry["cylinders"] * geometry["heads"] * geometry["sectors"] * 512


def test_fixed_vhd_is_raw_to_qemu_but_vhd_here(fixed: Path) -> None:
    """qemu-img probes only offset 0, so without -f a fixed VHD looks raw to it."""
    assert qemu_info(fixed)["format"] == "raw"
    md = introspect(fixed)
    assert md.format == "vhd"
    assert qemu_info(fixed, "vpc")["virtual-size"] == md.virtual_size
    with pytest.raises(FormatMismatch):
        introspect(fixed, expected_format="raw")


def test_largest_dynamic_disk(make_image: MakeImage) -> None:
    path = make_image("vpc", "2040G")
    md = assert_same_as_qemu(path)
    assert md.safe and md.virtual_size == 2040 * (1 << 30)


def test_empty_fixed_disk(make_image: MakeImage) -> None:
    """qemu-img cannot open its own empty fixed VHD (the footer is also at offset 0)."""
    path = make_image("vpc", "0", "-o", "subformat=fixed")
    assert path.stat().st_size == 512
    assert "dynamic" in qemu_refuses(path)
    md = introspect(path)
    assert md.format == "vhd" and md.virtual_size == 0
    assert md.codes() == {"qemu-cannot-open"} and not md.safe  # qemu cannot use it
    assert md.vhd is not None and md.vhd.to_dict()["footer_location"] == "tail"


@pytest.mark.parametrize("subformat", ["dynamic", "fixed"])
def test_converted_with_data(tmp_path: Path, subformat: str) -> None:
    raw = tmp_path / "data.raw"
    raw.write_bytes(os.urandom(3 * 1024 * 1024) + bytes(5 * 1024 * 1024))
    path = tmp_path / "data.vhd"
    qemu_img("convert", "-f", "raw", "-O", "vpc", "-o", f"subformat={subformat}", raw, path)
    md = assert_same_as_qemu(path)
    assert md.safe and md.vhd is not None
    assert md.vhd.to_dict()["disk_type"] == subformat


# --- how the virtual size is chosen ------------------------------------------------------------

CREATORS = [b"vpc ", b"qemu", b"qem2", b"win ", b"d2v ", b"CTXS", b"tap\0", b"tap ", b"WIN "]


@pytest.mark.parametrize("creator", CREATORS, ids=lambda c: c.decode().replace("\0", "\\0"))
def test_creator_decides_chs_or_current_size(fixed: Path, creator: bytes) -> None:
    """A geometry smaller than the current size (as Virtual PC writes): qemu picks by creator."""

    def small_chs(footer: bytearray) -> None:
        footer[28:32] = creator
        struct.pack_into(">HBB", footer, FOOTER_OFFSETS["chs"], 100, 4, 17)

    edit_footers(fixed, small_chs)
    md = assert_same_as_qemu(fixed)
    assert md.safe, md.findings
    chs = 100 * 4 * 17 * 512
    current = footer_of(fixed.read_bytes()[-512:])["current_size"]
    assert md.virtual_size in (chs, current) and chs != current


@pytest.mark.parametrize("chs", [(65535, 16, 255), (65535, 255, 16)], ids=["max", "max-product"])
def test_maximum_geometry_means_current_size(fixed: Path, chs: tuple[int, int, int]) -> None:
    edit_footers(fixed, lambda f: struct.pack_into(">HBB", f, FOOTER_OFFSETS["chs"], *chs))
    md = assert_same_as_qemu(fixed)
    assert md.virtual_size == footer_of(fixed.read_bytes()[-512:])["current_size"]


def test_current_size_not_a_sector_multiple(fixed: Path) -> None:
    def odd_size(footer: bytearray) -> None:
        footer[28:32] = b"win "
        struct.pack_into(">Q", footer, FOOTER_OFFSETS["current_size"], 10 * 1024 * 1024 - 100)

    edit_footers(fixed, odd_size)
    md = assert_same_as_qemu(fixed)
    assert "vhd-size-mismatch" in md.codes()  # the file holds more than the footer says


def test_geometry_beyond_the_current_size(fixed: Path) -> None:
    edit_footers(fixed, lambda f: struct.pack_into(">HBB", f, FOOTER_OFFSETS["chs"], 65535, 16, 9))
    md = assert_same_as_qemu(fixed)  # qemu opens it, with a size the file does not back
    assert "vhd-size-mismatch" in md.codes() and not md.safe


# --- differencing disks and parent locators ----------------------------------------------------

PARENT_UUID = bytes(range(1, 17))


def make_differencing(
    path: Path,
    parent_name: str = "base.vhd",
    locators: tuple[tuple[bytes, bytes], ...] = (
        (b"W2ku", "C:\\x".encode("utf-16-le")),
        (b"W2ru", "/etc/passwd".encode("utf-16-le")),
    ),
    disk_type: int = 4,
) -> Path:
    """Turn a qemu-made dynamic disk into a differencing one, as Hyper-V lays them out:
    the locators' data in whole sectors after the BAT, before the footer."""
    data = bytearray(path.read_bytes())
    body, footer = data[:-512], bytearray(data[-512:])
    at = footer_of(footer)["data_offset"]
    header = bytearray(body[at : at + 1024])
    header[40:56] = PARENT_UUID
    struct.pack_into(">I", header, 56, 12345)
    header[64:576] = parent_name.encode("utf-16-be").ljust(512, b"\0")
    for index, (code, blob) in enumerate(locators):
        space = -(-len(blob) // 512) * 512
        struct.pack_into(">4sIIIQ", header, 576 + 24 * index, code, space, len(blob), 0, len(body))
        body += blob.ljust(space, b"\0")
    seal(header, HEADER_OFFSETS["checksum"])
    body[at : at + 1024] = header
    struct.pack_into(">I", footer, FOOTER_OFFSETS["disk_type"], disk_type)
    seal(footer, FOOTER_OFFSETS["checksum"])
    body[:512] = footer
    path.write_bytes(bytes(body + footer))
    return path


def test_differencing_disk_names_its_parent(dynamic: Path) -> None:
    make_differencing(dynamic)
    md = introspect(dynamic)
    assert not md.safe
    [finding] = [f for f in md.findings if f.code == "vhd-differencing"]
    assert finding.severity == "unsafe"
    for name in ("base.vhd", "C:\\\\x", "/etc/passwd"):  # repr() doubles the backslash
        assert name in finding.message, finding.message
    assert md.vhd is not None
    section = md.vhd.to_dict()
    assert section["disk_type"] == "differencing"
    assert section["parent_name"] == "base.vhd"
    assert section["parent_uuid"].replace("-", "") == PARENT_UUID.hex()
    assert [(loc["platform"], loc["path"]) for loc in section["parent_locators"]] == [
        ("W2ku", "C:\\x"),
        ("W2ru", "/etc/passwd"),
    ]
    assert section["header_checksum_valid"] is True


def test_qemu_opens_a_differencing_disk_without_its_parent(dynamic: Path) -> None:
    """qemu reads type 4 as dynamic and prints no backing file; ours names the parent."""
    make_differencing(dynamic)
    theirs = qemu_info(dynamic, "vpc")
    theirs.pop("actual-size")
    assert "backing-filename" not in theirs
    ours = ours_as_qemu(dynamic)
    assert ours.pop("backing-filename") == "base.vhd"
    ours.pop("full-backing-filename")
    assert ours == theirs


def test_parent_named_only_by_a_locator(dynamic: Path) -> None:
    make_differencing(
        dynamic, parent_name="", locators=((b"W2ru", "..\\p.vhd".encode("utf-16-le")),)
    )
    md = introspect(dynamic)
    assert "vhd-differencing" in md.codes()
    assert ours_as_qemu(dynamic)["backing-filename"] == "..\\p.vhd"


def test_every_locator_platform(dynamic: Path) -> None:
    locators = (
        (b"Wi2k", b"C:\\old\\abs.vhd"),
        (b"Wi2r", b".\\rel.vhd"),
        (b"MacX", b"file://localhost/Users/a/p.vhd"),
        (b"Mac ", b"\x00\x00\x01\x02alias record"),
        (b"Zzzz", b"???"),
    )
    make_differencing(dynamic, locators=locators)
    md = introspect(dynamic)
    assert md.vhd is not None
    paths = {loc["platform"]: loc["path"] for loc in md.vhd.to_dict()["parent_locators"]}
    assert paths == {
        "Wi2k": "C:\\old\\abs.vhd",
        "Wi2r": ".\\rel.vhd",
        "MacX": "file://localhost/Users/a/p.vhd",
        "Mac": None,  # an alias record is binary: reported, not guessed at
        "Zzzz": None,
    }


def test_locator_outside_the_file(dynamic: Path) -> None:
    make_differencing(dynamic)

    def far_away(header: bytearray) -> None:
        struct.pack_into(">Q", header, HEADER_OFFSETS["locators"] + 16, 1 << 40)

    edit_header(dynamic, far_away)
    md = introspect(dynamic)
    assert {"vhd-differencing", "truncated"} <= md.codes()
    assert md.vhd is not None
    first = md.vhd.to_dict()["parent_locators"][0]
    assert first["path"] is None and first["complete"] is False


def test_oversized_locator_is_read_bounded(dynamic: Path) -> None:
    make_differencing(dynamic, locators=((b"W2ku", ("A" * 40000).encode("utf-16-le")),))
    md = introspect(dynamic)
    assert md.vhd is not None
    [locator] = md.vhd.to_dict()["parent_locators"]
    assert locator["complete"] is False and locator["path"] == "A" * 32768


def test_parent_fields_on_a_dynamic_disk(dynamic: Path) -> None:
    make_differencing(dynamic, disk_type=3)
    md = assert_same_as_qemu(dynamic)
    assert "vhd-stray-parent" in md.codes() and "vhd-differencing" not in md.codes()
    assert md.safe  # a warning: nothing reads a dynamic disk's parent fields


def test_parent_files_are_never_opened(dynamic: Path) -> None:
    make_differencing(dynamic, locators=((b"W2ru", str(dynamic).encode("utf-16-le")),))
    data = dynamic.read_bytes()
    with mock.patch("builtins.open", side_effect=AssertionError("opened a file")):
        md = introspect(io.BytesIO(data))
    assert "vhd-differencing" in md.codes()


# --- hostile edits -----------------------------------------------------------------------------


def test_bad_footer_checksum(dynamic: Path) -> None:
    patch(dynamic, FOOTER_OFFSETS["checksum"], b"\0\0\0\0")
    assert "checksum" in qemu_refuses(dynamic)
    md = introspect(dynamic)
    assert "vhd-footer-checksum" in md.codes() and not md.safe
    assert md.vhd is not None and md.vhd.to_dict()["checksum_valid"] is False


def test_bad_fixed_footer_checksum(fixed: Path) -> None:
    size = fixed.stat().st_size
    patch(fixed, size - 512 + FOOTER_OFFSETS["current_size"], b"\x7f")
    assert "checksum" in qemu_refuses(fixed)
    assert "vhd-footer-checksum" in introspect(fixed).codes()


def test_bad_dynamic_header_checksum(dynamic: Path) -> None:
    edit_header(dynamic, lambda h: h.__setitem__(slice(36, 40), b"\1\2\3\4"), reseal=False)
    md = assert_same_as_qemu(dynamic)  # qemu does not check it
    assert "vhd-dynamic-header-checksum" in md.codes() and not md.safe


def test_head_footer_disagrees_with_tail(dynamic: Path) -> None:
    """The copy at offset 0 says Hyper-V and a bigger size; qemu believes it, so do we."""

    def hyper_v(footer: bytearray) -> None:
        footer[28:32] = b"win "
        struct.pack_into(">Q", footer, FOOTER_OFFSETS["current_size"], 64 * 1024 * 1024)

    edit_footers(dynamic, hyper_v, tail=False)
    md = assert_same_as_qemu(dynamic)
    [finding] = [f for f in md.findings if f.code == "vhd-footer-mismatch"]
    assert "current_size" in finding.message and "creator_app" in finding.message
    assert not md.safe


def test_dynamic_disk_without_the_copy_at_offset_0(dynamic: Path) -> None:
    patch(dynamic, 0, bytes(512))
    assert "invalid VPC image" in qemu_refuses(dynamic)
    md = introspect(dynamic)
    assert "vhd-footer-mismatch" in md.codes() and md.format == "vhd"


def test_fixed_disk_with_a_footer_at_offset_0(fixed: Path) -> None:
    patch(fixed, 0, fixed.read_bytes()[-512:])
    qemu_refuses(fixed)
    assert "vhd-footer-mismatch" in introspect(fixed).codes()


def test_bat_past_end_of_file(dynamic: Path) -> None:
    edit_header(dynamic, lambda h: struct.pack_into(">Q", h, 16, 1 << 30))
    assert "truncated" in qemu_refuses(dynamic)
    md = introspect(dynamic)
    assert "truncated" in md.codes() and not md.safe


def test_bat_over_the_dynamic_header(dynamic: Path) -> None:
    edit_header(dynamic, lambda h: struct.pack_into(">Q", h, 16, 0x200))
    assert "vhd-bad-dynamic-header" in introspect(dynamic).codes()


def test_dynamic_header_not_where_the_footer_points(dynamic: Path) -> None:
    edit_footers(dynamic, lambda f: struct.pack_into(">Q", f, 16, 0x600))
    assert "magic" in qemu_refuses(dynamic)
    assert "vhd-bad-dynamic-header" in introspect(dynamic).codes()


def test_dynamic_header_past_end_of_file(dynamic: Path) -> None:
    edit_footers(dynamic, lambda f: struct.pack_into(">Q", f, 16, 1 << 40))
    qemu_refuses(dynamic)
    md = introspect(dynamic)
    assert "truncated" in md.codes() and md.vhd is not None and md.vhd.block_size is None


def test_truncated_dynamic_disk(dynamic: Path) -> None:
    data = dynamic.read_bytes()
    dynamic.write_bytes(data[:-512])
    md = introspect(dynamic)
    assert "truncated" in md.codes() and not md.safe
    assert md.vhd is not None and md.vhd.to_dict()["footer_copies"] == ["head"]


@pytest.mark.parametrize("length", [0, 7, 100, 511])
def test_file_shorter_than_a_footer(tmp_path: Path, length: int) -> None:
    path = tmp_path / "short.vhd"
    path.write_bytes(b"conectix"[:length] + bytes(max(0, length - 8)))
    md = introspect(path)
    if length >= 8:  # the cookie is there, the footer is not: described, and unsafe
        assert md.format == "vhd" and not md.safe, md.findings
    else:
        assert md.format == "raw"


def test_legacy_511_byte_footer(fixed: Path) -> None:
    data = fixed.read_bytes()
    assert data[-1] == 0
    fixed.write_bytes(data[:-1])
    md = assert_same_as_qemu(fixed)  # qemu rounds the file up to a sector and finds it too
    assert md.format == "vhd" and md.safe
    assert md.codes() == {"vhd-legacy-footer"}
    assert md.vhd is not None and md.vhd.to_dict()["legacy_footer"] is True


def test_fixed_file_shorter_than_its_disk(fixed: Path) -> None:
    data = fixed.read_bytes()
    fixed.write_bytes(data[: -512 - 4096] + data[-512:])
    md = assert_same_as_qemu(fixed)
    assert "vhd-size-mismatch" in md.codes() and not md.safe


def test_fixed_file_longer_than_its_disk(fixed: Path) -> None:
    data = fixed.read_bytes()
    fixed.write_bytes(data[:-512] + bytes(4096) + data[-512:])
    md = assert_same_as_qemu(fixed)
    assert "vhd-size-mismatch" in md.codes()


def test_unknown_disk_type(dynamic: Path) -> None:
    edit_footers(dynamic, lambda f: struct.pack_into(">I", f, FOOTER_OFFSETS["disk_type"], 6))
    md = assert_same_as_qemu(dynamic)  # qemu reads any type at offset 0 as dynamic
    assert "vhd-unknown-disk-type" in md.codes()
    assert md.vhd is not None and md.vhd.disk_type == "type-6"


@pytest.mark.parametrize("block_size", [0, 256, 3000, 0x80000001])
def test_bad_block_size(dynamic: Path, block_size: int) -> None:
    edit_header(dynamic, lambda h: struct.pack_into(">I", h, 32, block_size))
    qemu_refuses(dynamic)
    assert "vhd-bad-block-size" in introspect(dynamic).codes()


def test_small_block_size_is_fine_when_the_bat_covers_the_disk(make_image: MakeImage) -> None:
    path = make_image("vpc", "1M")

    def half_megabyte_blocks(header: bytearray) -> None:
        struct.pack_into(">I", header, 32, 512 * 1024)
        struct.pack_into(">I", header, 28, 4)

    edit_header(path, half_megabyte_blocks)
    md = assert_same_as_qemu(path)
    assert md.safe and md.vhd is not None and md.vhd.block_size == 512 * 1024


def test_bat_too_small_for_the_disk(dynamic: Path) -> None:
    edit_header(dynamic, lambda h: struct.pack_into(">I", h, 28, 3))
    assert "too small" in qemu_refuses(dynamic)
    assert "vhd-size-mismatch" in introspect(dynamic).codes()


def test_disk_over_2040_gib(dynamic: Path) -> None:
    def huge(footer: bytearray) -> None:
        struct.pack_into(">Q", footer, FOOTER_OFFSETS["current_size"], 3 << 40)
        struct.pack_into(">HBB", footer, FOOTER_OFFSETS["chs"], 65535, 16, 255)

    edit_footers(dynamic, huge)
    assert "too large" in qemu_refuses(dynamic)
    assert "vhd-too-large" in introspect(dynamic).codes()


def test_saved_state_is_a_warning(dynamic: Path) -> None:
    edit_footers(dynamic, lambda f: f.__setitem__(FOOTER_OFFSETS["saved_state"], 1))
    md = assert_same_as_qemu(dynamic)
    assert md.codes() == {"vhd-saved-state"} and md.safe


def test_polyglot_with_qcow2(make_image: MakeImage, fixed: Path) -> None:
    path = make_image("qcow2", "1M")
    path.write_bytes(path.read_bytes() + fixed.read_bytes()[-512:])
    md = introspect(path)
    assert md.format == "qcow2" and "format-ambiguous" in md.codes()


# --- API: expected formats, Glance, streams, bounds -------------------------------------------


@pytest.mark.parametrize("name", ["vhd", "vpc", "VPC", " Vhd "])
def test_expected_format_names(dynamic: Path, fixed: Path, name: str) -> None:
    assert introspect(dynamic, expected_format=name).format == "vhd"
    assert introspect(fixed, expected_format=name).format == "vhd"


def test_expected_format_mismatch(dynamic: Path, make_image: MakeImage) -> None:
    with pytest.raises(FormatMismatch):
        introspect(dynamic, expected_format="qcow2")
    with pytest.raises(FormatMismatch):
        introspect(make_image("raw", "1M"), expected_format="vhd")


def test_glance_properties(dynamic: Path, fixed: Path) -> None:
    for path in (dynamic, fixed):
        props = introspect(path).glance_properties()
        assert props == {
            "disk_format": "vhd",
            "container_format": "bare",
            "virtual_size": qemu_info(path, "vpc")["virtual-size"],
        }


def image_variants(dynamic: Path, fixed: Path) -> list[bytes]:
    legacy = fixed.read_bytes()[:-1]
    diff = make_differencing(dynamic).read_bytes()
    return [diff, fixed.read_bytes(), legacy, diff[:-512]]


@pytest.mark.parametrize("chunk", [1000, 65536])
def test_stream_and_seekable_agree(dynamic: Path, fixed: Path, chunk: int) -> None:
    for data in image_variants(dynamic, fixed):
        seekable = introspect(io.BytesIO(data)).to_dict()
        assert introspect(forward_only(data, chunk)).to_dict() == seekable
        json.dumps(seekable)


def test_stream_of_a_large_fixed_disk(make_image: MakeImage) -> None:
    """Only the head and tail windows are kept; the footer is in the tail."""
    path = make_image("vpc", "12M", "-o", "subformat=fixed")
    data = path.read_bytes()
    assert introspect(forward_only(data)).to_dict() == introspect(path).to_dict()


@pytest.mark.parametrize("subformat", ["dynamic", "fixed"])
def test_cli_qemu_json_is_qemu_img_output(make_image: MakeImage, subformat: str) -> None:
    """Line for line, key order included (actual-size comes from the same file system)."""
    path = make_image("vpc", "100M", "-o", f"subformat={subformat}")
    ours = subprocess.run(
        [sys.executable, "-m", "imageintrospect", "info", "--output", "qemu-json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    theirs = qemu_img("info", "-U", "-f", "vpc", "--output=json", path)
    assert ours.strip() == theirs.strip()


def test_header_only_reads_little(dynamic: Path) -> None:
    blob = ("Z" * 40000).encode("utf-16-le")
    make_differencing(dynamic, locators=tuple((b"W2ku", blob) for _ in range(8)))
    counting = CountingBytes(dynamic.read_bytes())
    md = introspect(counting, deep=False)
    assert "vhd-differencing" in md.codes()
    assert counting.bytes_read <= 1024 * 1024


# --- mutation fuzzing ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed_images(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    directory = tmp_path_factory.mktemp("vhd-seeds")
    seeds = []
    for index, options in enumerate(["subformat=dynamic", "subformat=fixed", "force_size=on"]):
        path = directory / f"s{index}.vhd"
        qemu_img("create", "-q", "-f", "vpc", "-o", options, path, "2M")
        if index == 0:
            make_differencing(path)
        seeds.append(path.read_bytes())
    return seeds


# Where the metadata lives in the seeds: the footer copy, the dynamic header, the last sectors.
REGIONS = st.one_of(st.integers(0, 1535), st.integers(-1536, -1))
BIG_FIELDS = [16, 40, 48, -512 + 16, -512 + 40, -512 + 48, 512 + 16, 512 + 592]


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_metadata_never_escapes(seed_images: list[bytes], data: st.DataObject) -> None:
    blob = bytearray(data.draw(st.sampled_from(seed_images)))
    for offset, value in data.draw(st.lists(st.tuples(REGIONS, st.integers(0, 255)), max_size=12)):
        blob[offset] = value
    for offset in data.draw(st.lists(st.sampled_from(BIG_FIELDS), max_size=3)):
        value = data.draw(st.sampled_from([0, 1, 511, 1 << 31, (1 << 64) - 1]))
        struct.pack_into(">Q", blob, offset % len(blob), value)
    if data.draw(st.booleans()):  # reseal, so the checks past the checksums are reached too
        for at in (0, len(blob) - 512):
            if blob[at : at + 8] == b"conectix":
                footer = bytearray(blob[at : at + 512])
                seal(footer, FOOTER_OFFSETS["checksum"])
                blob[at : at + 512] = footer
        if blob[512:520] == b"cxsparse":
            header = bytearray(blob[512:1536])
            seal(header, HEADER_OFFSETS["checksum"])
            blob[512:1536] = header
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    md = introspect_hostile(io.BytesIO(bytes(blob)))
    if md is None:
        return
    if md.format == "vhd":
        try:
            json.dumps(qemu_info_dict(md, "x.vhd", None))
        except QemuRefuses:
            assert "qemu-cannot-open" in md.codes()
        assert introspect(forward_only(bytes(blob), 4096)).to_dict() == md.to_dict()
