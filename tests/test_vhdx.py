"""VHDX: real images from qemu-img, compared with qemu-img's own view, and hostile edits.

The hostile variants are qemu-made images edited with ``struct``; where an edit is meant to
reach the checks behind a checksum, the test recomputes the header's or region table's
CRC-32C, so the edit is not merely caught as a bad checksum.
"""

from __future__ import annotations

import io
import json
import os
import struct
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imageintrospect import Metadata, introspect
from imageintrospect.core import introspect_source
from imageintrospect.crc32c import crc32c, crc32c_bytewise
from imageintrospect.errors import FormatMismatch
from imageintrospect.formats.vhdx import VhdxSection
from imageintrospect.source import Source, StreamGap
from tests.support import (
    QEMU_IMG,
    CountingFile,
    OnlyRead,
    assert_same_as_qemu,
    forward_only,
    introspect_hostile,
    needs_qemu,
    patch,
    qemu_img,
    qemu_info,
    qemu_refuses,
)

MakeImage = Callable[..., Path]

KiB = 1024
MiB = 1024 * KiB
HEADERS = (64 * KiB, 128 * KiB)
REGION_TABLES = (192 * KiB, 256 * KiB)
BAT_GUID = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA_GUID = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
VIRTUAL_DISK_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
PAGE_83 = uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
LOGICAL_SECTOR = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
PHYSICAL_SECTOR = uuid.UUID("CDA348C7-445D-4471-9CC9-E9885251C556")
PARENT_LOCATOR = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
VHDX_LOCATOR_TYPE = uuid.UUID("B04AEFB7-D19E-4A81-B789-25B8E9445913")

# Header: signature, checksum, sequence, 3 GUIDs, log version, version, log length, log offset.
HEADER_FORMAT = "<4sIQ16s16s16sHHIQ"
HEADER_FIELDS = (
    "signature",
    "checksum",
    "sequence_number",
    "file_write_guid",
    "data_write_guid",
    "log_guid",
    "log_version",
    "version",
    "log_length",
    "log_offset",
)


# --- helpers: qemu's view and ours ---------------------------------------------------------


def section_of(md: Metadata) -> VhdxSection:
    assert isinstance(md.vhdx, VhdxSection)
    return md.vhdx


def qemu_version() -> str:
    first = qemu_img("--version").splitlines()[0]  # "qemu-img version 7.2.22 (Debian ...)"
    return first.split()[2]


# --- helpers: struct edits -----------------------------------------------------------------


def read(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def with_checksum(block: bytes) -> bytes:
    """``block`` with its CRC-32C (at offset 4, computed with the field zeroed) filled in."""
    zeroed = block[:4] + b"\0\0\0\0" + block[8:]
    return zeroed[:4] + struct.pack("<I", crc32c(zeroed)) + zeroed[8:]


def header(path: Path, index: int) -> dict[str, Any]:
    raw = read(path, HEADERS[index], 80)
    return dict(zip(HEADER_FIELDS, struct.unpack(HEADER_FORMAT, raw), strict=True))


def edit_header(path: Path, index: int, checksum: bool = True, **changes: Any) -> None:
    """Change header fields; recompute its CRC unless ``checksum`` is False."""
    fields = header(path, index) | changes
    packed = struct.pack(HEADER_FORMAT, *(fields[name] for name in HEADER_FIELDS))
    block = packed + read(path, HEADERS[index] + 80, 4096 - 80)
    patch(path, HEADERS[index], with_checksum(block) if checksum else block)


def regions(path: Path) -> list[list[Any]]:
    """Region table 1's entries as [guid, offset, length, flags]."""
    raw = read(path, REGION_TABLES[0], 64 * KiB)
    (count,) = struct.unpack_from("<I", raw, 8)
    return [
        [uuid.UUID(bytes_le=g), off, length, flags]
        for g, off, length, flags in (
            struct.unpack_from("<16sQII", raw, 16 + 32 * i) for i in range(count)
        )
    ]


def write_regions(
    path: Path, entries: list[list[Any]], tables: tuple[int, ...] = (0, 1), count: int | None = None
) -> None:
    """Rewrite the region table copies with these entries and a correct CRC."""
    body = struct.pack("<4sIII", b"regi", 0, len(entries) if count is None else count, 0)
    for guid, offset, length, flags in entries:
        body += struct.pack("<16sQII", guid.bytes_le, offset, length, flags)
    block = with_checksum(body.ljust(64 * KiB, b"\0"))
    for index in tables:
        patch(path, REGION_TABLES[index], block)


def metadata_offset(path: Path) -> int:
    return next(off for guid, off, _, _ in regions(path) if guid == METADATA_GUID)


def metadata_entries(path: Path) -> list[list[Any]]:
    """The metadata table's entries as [item_id, offset, length, flags]."""
    base = metadata_offset(path)
    raw = read(path, base, 64 * KiB)
    (count,) = struct.unpack_from("<H", raw, 10)
    return [
        [uuid.UUID(bytes_le=g), off, length, flags]
        for g, off, length, flags, _ in (
            struct.unpack_from("<16sIIII", raw, 32 + 32 * i) for i in range(count)
        )
    ]


def write_metadata_entries(path: Path, entries: list[list[Any]]) -> None:
    base = metadata_offset(path)
    body = struct.pack("<8sHH20s", b"metadata", 0, len(entries), b"")
    for item_id, offset, length, flags in entries:
        body += struct.pack("<16sIIII", item_id.bytes_le, offset, length, flags, 0)
    patch(path, base, body)


def item_offset(path: Path, item_id: uuid.UUID) -> int:
    entry = next(e for e in metadata_entries(path) if e[0] == item_id)
    return int(metadata_offset(path) + entry[1])


def write_item(path: Path, item_id: uuid.UUID, fmt: str, *values: int) -> None:
    patch(path, item_offset(path, item_id), struct.pack(fmt, *values))


def parent_locator(pairs: dict[str, str]) -> bytes:
    """A VHDX parent locator item: type GUID, count, 12-byte entries, UTF-16LE strings."""
    head = struct.pack("<16sHH", VHDX_LOCATOR_TYPE.bytes_le, 0, len(pairs))
    strings = b""
    entries = b""
    base = len(head) + 12 * len(pairs)
    for key, value in pairs.items():
        k, v = key.encode("utf-16-le"), value.encode("utf-16-le")
        key_at = base + len(strings)
        strings += k
        value_at = base + len(strings)
        strings += v
        entries += struct.pack("<IIHH", key_at, value_at, len(k), len(v))
    return head + entries + strings


def add_parent_locator(path: Path, pairs: dict[str, str], at: int = 128 * KiB) -> None:
    """Insert a parent locator item at ``at`` inside the metadata region (no CRC covers it)."""
    data = parent_locator(pairs)
    entries = metadata_entries(path)
    entries.append([PARENT_LOCATOR, at, len(data), 0x6])
    write_metadata_entries(path, entries)
    patch(path, metadata_offset(path) + at, data)


def set_has_parent(path: Path) -> None:
    offset = item_offset(path, FILE_PARAMETERS)
    block_size, flags = struct.unpack("<II", read(path, offset, 8))
    patch(path, offset, struct.pack("<II", block_size, flags | 2))


# --- CRC-32C -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"123456789", 0xE3069283),  # the catalogue check value of CRC-32C
        (b"", 0),
        (bytes(32), 0x8A9136AA),  # RFC 3720 (iSCSI) appendix B.4 vectors
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (bytes(range(31, -1, -1)), 0x113FDB5C),
    ],
)
def test_crc32c_known_vectors(data: bytes, expected: int) -> None:
    assert crc32c(data) == expected
    assert crc32c_bytewise(data) == expected


@settings(max_examples=200)
@given(st.binary(max_size=300), st.integers(0, 70_000), st.integers(0, 0xFFFFFFFF))
def test_crc32c_zero_run_shortcut_matches_bytewise(body: bytes, zeros: int, seed: int) -> None:
    data = body + bytes(zeros)
    assert crc32c(data, seed) == crc32c_bytewise(data, seed)
    # Continuing a CRC over a second piece equals the CRC of the whole.
    cut = len(data) // 3
    assert crc32c(data[cut:], crc32c(data[:cut], seed)) == crc32c(data, seed)


@needs_qemu
def test_crc32c_matches_qemu_written_checksums(make_image: MakeImage) -> None:
    path = make_image("vhdx", "64M")
    for offset, size in [(HEADERS[0], 4096), (HEADERS[1], 4096)] + [
        (table, 64 * KiB) for table in REGION_TABLES
    ]:
        block = read(path, offset, size)
        (stored,) = struct.unpack_from("<I", block, 4)
        assert crc32c(block[:4] + bytes(4) + block[8:]) == stored


# --- qemu-img images --------------------------------------------------------------------------

CREATE_CASES = [
    ("64M", "subformat=dynamic"),
    ("16M", "subformat=fixed"),
    ("64M", "block_size=1M"),
    ("64M", "block_size=8M"),
    ("100M", "block_size=32M"),
    ("64M", "block_size=256M"),
    ("64M", "log_size=2M"),
    ("64M", "block_state_zero=off"),
    ("64M", "block_state_zero=on"),
    ("1T", "subformat=dynamic"),
    ("1T", "block_size=1M"),
    ("4097M", "subformat=dynamic"),
    ("64T", "subformat=dynamic"),
]


@needs_qemu
@pytest.mark.parametrize(("size", "options"), CREATE_CASES, ids=lambda v: str(v))
def test_qemu_img_images_match_qemu(make_image: MakeImage, size: str, options: str) -> None:
    path = make_image("vhdx", size, "-o", options)
    theirs = qemu_info(path)
    md = assert_same_as_qemu(path)
    assert md.format == "vhdx"
    assert md.safe and md.findings == ()
    assert md.virtual_size == theirs["virtual-size"]
    assert md.image_size == path.stat().st_size
    section = section_of(md)
    assert section.block_size == theirs["cluster-size"]
    if options.startswith("block_size="):
        assert section.block_size == int(options.split("=")[1][:-1]) * MiB
    assert section.fixed == (options == "subformat=fixed")
    assert section.has_parent is False and section.parent_locator is None
    assert section.log_pending is False
    assert section.logical_sector_size == 512
    assert section.physical_sector_size in (512, 4096)
    assert section.creator == f"QEMU v{qemu_version()}"
    assert section.version == 1 and section.log_version == 0
    if options.startswith("log_size="):
        assert section.log_length == 2 * MiB
    assert uuid.UUID(section.virtual_disk_id or "") != uuid.UUID(int=0)
    assert md.glance_properties() == {
        "disk_format": "vhdx",
        "container_format": "bare",
        "virtual_size": theirs["virtual-size"],
    }


@needs_qemu
def test_section_reports_the_structures(make_image: MakeImage) -> None:
    path = make_image("vhdx", "1G", "-o", "block_size=16M")
    section = section_of(introspect(path))
    by_name = {r.name: r for r in section.regions}
    table = {guid: (off, length) for guid, off, length, _ in regions(path)}
    assert (by_name["bat"].file_offset, by_name["bat"].length) == table[BAT_GUID]
    assert (by_name["metadata"].file_offset, by_name["metadata"].length) == table[METADATA_GUID]
    names = {item.name for item in section.metadata_items}
    assert names == {
        "file_parameters",
        "virtual_disk_size",
        "page_83_data",
        "logical_sector_size",
        "physical_sector_size",
    }
    h1, h2 = header(path, 0), header(path, 1)
    active = 1 if h1["sequence_number"] > h2["sequence_number"] else 2
    assert section.active_header == active
    assert section.sequence_number == max(h1["sequence_number"], h2["sequence_number"])
    page83 = read(path, item_offset(path, PAGE_83), 16)
    assert section.virtual_disk_id == str(uuid.UUID(bytes_le=page83))
    # 2^23 * 512 / 16 MiB = 256 payload blocks per sector-bitmap block; 1 GiB = 64 blocks.
    assert section.chunk_ratio == 256
    assert section.bat is not None
    assert (section.bat.data_blocks, section.bat.entries) == (64, 64)
    assert all(copy.valid for copy in (*section.headers, *section.region_tables))


@needs_qemu
@pytest.mark.parametrize("subformat", ["dynamic", "fixed"])
def test_converted_with_data(tmp_path: Path, subformat: str) -> None:
    raw = tmp_path / "data.raw"
    with open(raw, "wb") as f:
        f.truncate(40 * MiB)
        for offset in (0, 9 * MiB, 33 * MiB + 512):
            f.seek(offset)
            f.write(os.urandom(300 * KiB))
    path = tmp_path / "data.vhdx"
    qemu_img("convert", "-f", "raw", "-O", "vhdx", "-o", f"subformat={subformat}", raw, path)
    md = assert_same_as_qemu(path)
    assert md.safe and md.findings == ()
    assert md.virtual_size == 40 * MiB
    assert section_of(md).fixed == (subformat == "fixed")


@needs_qemu
def test_to_dict_is_json(make_image: MakeImage) -> None:
    path = make_image("vhdx", "8M")
    add_parent_locator(path, {"parent_linkage": "{x}", "relative_path": "..\\p.vhdx"})
    data = json.loads(json.dumps(introspect(path).to_dict()))
    assert data["vhdx"]["parent_locator"]["relative_path"] == "..\\p.vhdx"
    assert data["vhdx"]["regions"][0]["name"] in ("bat", "metadata")


# --- hostile edits ------------------------------------------------------------------------------


@pytest.fixture
def plain(make_image: MakeImage) -> Path:
    return make_image("vhdx", "64M")


def codes(path: Path) -> set[str]:
    return introspect(path).codes()


def message(md: Metadata, code: str) -> str:
    return next(f.message for f in md.findings if f.code == code)


@needs_qemu
def test_differencing_with_parent_locator(plain: Path) -> None:
    set_has_parent(plain)
    pairs = {
        "parent_linkage": "{83ed6ff5-0f2a-4d3f-b5b3-000000000000}",
        "relative_path": "..\\base\\parent.vhdx",
        "volume_path": "\\\\?\\Volume{11111111-2222-3333-4444-555555555555}\\parent.vhdx",
        "absolute_win32_path": "C:\\images\\parent.vhdx",
    }
    add_parent_locator(plain, pairs)
    md = introspect(plain)
    assert not md.safe
    assert md.codes() == {"vhdx-differencing", "qemu-cannot-open"}
    text = message(md, "vhdx-differencing")
    assert "has-parent bit" in text
    for value in pairs.values():
        assert repr(value) in text
    section = section_of(md)
    assert section.has_parent is True
    assert section.parent_locator == pairs
    assert section.parent_locator_type == str(VHDX_LOCATOR_TYPE)
    assert md.virtual_size == 64 * MiB
    # qemu refuses differencing VHDX outright; we describe it and report the parent instead.
    assert qemu_refuses(plain)


@needs_qemu
def test_has_parent_bit_alone(plain: Path) -> None:
    set_has_parent(plain)
    md = introspect(plain)
    assert {"vhdx-differencing", "vhdx-bad-metadata"} <= md.codes() and not md.safe
    assert qemu_refuses(plain)


@needs_qemu
def test_parent_locator_without_the_bit(plain: Path) -> None:
    add_parent_locator(plain, {"parent_linkage": "{x}", "absolute_win32_path": "C:\\p.vhdx"})
    md = introspect(plain)
    assert md.codes() == {"vhdx-differencing", "qemu-cannot-open"}
    assert "C:\\\\p.vhdx" in message(md, "vhdx-differencing")
    assert section_of(md).has_parent is False
    assert qemu_refuses(plain)  # qemu supports no item set that includes a parent locator


@needs_qemu
def test_parent_locator_entry_outside_the_item(plain: Path) -> None:
    add_parent_locator(plain, {"parent_linkage": "{x}"})
    base = item_offset(plain, PARENT_LOCATOR)
    patch(plain, base + 20 + 4, struct.pack("<I", 0xFFFFFFF0))  # the value's offset
    md = introspect(plain)
    assert {"vhdx-differencing", "vhdx-bad-metadata"} <= md.codes()
    assert section_of(md).parent_locator == {}


@needs_qemu
def test_log_guid_set_is_a_warning(plain: Path) -> None:
    log_guid = uuid.uuid4().bytes_le
    for index in (0, 1):
        edit_header(plain, index, log_guid=log_guid)
    md = introspect(plain)
    assert md.codes() == {"vhdx-log-pending"} and md.safe
    section = section_of(md)
    assert section.log_pending is True
    assert section.log_guid == str(uuid.UUID(bytes_le=log_guid))
    # The log holds no valid entry, so qemu has nothing to replay and opens the image.
    assert_same_as_qemu(plain)


@needs_qemu
def test_one_bad_header_checksum_is_a_warning(plain: Path) -> None:
    patch(plain, HEADERS[0] + 200, b"\x01")
    md = assert_same_as_qemu(plain)
    assert md.codes() == {"vhdx-header-invalid"} and md.safe
    assert "checksum" in message(md, "vhdx-header-invalid")
    section = section_of(md)
    assert section.active_header == 2
    assert [copy.valid for copy in section.headers] == [False, True]


@needs_qemu
def test_both_headers_bad_is_unsafe(plain: Path) -> None:
    patch(plain, HEADERS[0] + 200, b"\x01")
    patch(plain, HEADERS[1], b"HEAD")
    md = introspect(plain)
    assert "vhdx-no-valid-header" in md.codes() and not md.safe
    assert "signature" in message(md, "vhdx-no-valid-header")
    section = section_of(md)
    assert section.active_header is None and section.log_pending is None
    # The region tables do not depend on the headers: the disk is still described.
    assert md.virtual_size == 64 * MiB
    assert qemu_refuses(plain)


@needs_qemu
def test_header_version_must_be_1(plain: Path) -> None:
    edit_header(plain, 1, version=2)
    md = introspect(plain)
    assert md.codes() == {"vhdx-header-invalid"}
    assert section_of(md).active_header == 1
    assert_same_as_qemu(plain)


@needs_qemu
def test_higher_sequence_number_wins(plain: Path) -> None:
    second = header(plain, 1)["sequence_number"]
    edit_header(plain, 0, sequence_number=second + 7)
    section = section_of(introspect(plain))
    assert section.active_header == 1 and section.sequence_number == second + 7


@needs_qemu
def test_equal_sequence_numbers(plain: Path) -> None:
    # Identical twins (what Disk2VHD writes) are fine, for qemu too.
    patch(plain, HEADERS[0], read(plain, HEADERS[1], 4096))
    md = assert_same_as_qemu(plain)
    assert md.findings == ()
    # Same sequence number, different content: which one is current is undefined.
    edit_header(plain, 0, file_write_guid=uuid.uuid4().bytes_le)
    md = introspect(plain)
    assert md.codes() == {"vhdx-header-conflict", "qemu-cannot-open"} and not md.safe
    assert qemu_refuses(plain)


@needs_qemu
def test_bad_log_location(plain: Path) -> None:
    for index in (0, 1):
        edit_header(plain, index, log_offset=MiB + 4096)
    md = introspect(plain)
    assert "vhdx-bad-log" in md.codes() and not md.safe
    assert qemu_refuses(plain)


@needs_qemu
def test_log_version(plain: Path) -> None:
    for index in (0, 1):
        edit_header(plain, index, log_version=1)
    assert codes(plain) == {"vhdx-bad-log", "qemu-cannot-open"}
    assert qemu_refuses(plain)


@needs_qemu
def test_first_region_table_bad_checksum_is_refused_like_qemu(plain: Path) -> None:
    patch(plain, REGION_TABLES[0] + 1000, b"\x01")
    md = introspect(plain)
    # Described from the second copy, but qemu (and so a consumer running it) cannot open it.
    assert md.codes() == {"vhdx-region-table-invalid", "qemu-cannot-open"} and not md.safe
    assert section_of(md).active_region_table == 2
    assert md.virtual_size == 64 * MiB
    # qemu reads only the first copy and refuses; the specification allows the second.
    assert qemu_refuses(plain)


@needs_qemu
def test_both_region_tables_bad(plain: Path) -> None:
    patch(plain, REGION_TABLES[0] + 1000, b"\x01")
    patch(plain, REGION_TABLES[1], b"REGI")
    md = introspect(plain)
    assert md.codes() == {"vhdx-no-valid-region-table", "qemu-cannot-open"} and not md.safe
    assert md.virtual_size is None and section_of(md).block_size is None
    assert qemu_refuses(plain)


@needs_qemu
def test_region_tables_differ(plain: Path) -> None:
    entries = regions(plain)
    write_regions(plain, [*entries, [uuid.uuid4(), 5 * MiB, MiB, 0]], tables=(1,))
    assert codes(plain) == {"vhdx-region-tables-differ"}


@needs_qemu
def test_overlapping_regions(plain: Path) -> None:
    entries = regions(plain)
    bat = next(e for e in entries if e[0] == BAT_GUID)
    for entry in entries:
        if entry[0] == METADATA_GUID:
            entry[1] = bat[1]
    write_regions(plain, entries)
    md = introspect(plain)
    assert "vhdx-bad-layout" in md.codes() and not md.safe
    assert "overlaps" in message(md, "vhdx-bad-layout")
    assert qemu_refuses(plain)


@needs_qemu
def test_region_over_the_log_and_headers(plain: Path) -> None:
    entries = regions(plain)
    entries.append([uuid.uuid4(), 0, 2 * MiB, 0])
    write_regions(plain, entries)
    md = introspect(plain)
    text = message(md, "vhdx-bad-layout")
    assert "the header section" in text and "the log" in text
    assert qemu_refuses(plain)


@needs_qemu
def test_misaligned_region_and_region_past_the_end(plain: Path) -> None:
    entries = regions(plain)
    for entry in entries:
        if entry[0] == BAT_GUID:
            entry[1] = 1 << 40
    entries.append([uuid.uuid4(), 5 * MiB + 4096, MiB, 0])
    write_regions(plain, entries)
    md = introspect(plain)
    assert {"vhdx-bad-layout", "truncated"} <= md.codes()
    assert "not 1 MiB aligned" in message(md, "vhdx-bad-layout")


@needs_qemu
def test_unknown_regions(plain: Path) -> None:
    entries = regions(plain)
    optional = uuid.uuid4()
    write_regions(plain, [*entries, [optional, 5 * MiB, MiB, 0]])
    md = assert_same_as_qemu(plain)  # an optional unknown region is ignored, by qemu too
    assert md.findings == ()
    assert str(optional) in {r.guid for r in section_of(md).regions}
    required = uuid.uuid4()
    write_regions(plain, [*entries, [required, 5 * MiB, MiB, 1]])
    md = introspect(plain)
    assert md.codes() == {"vhdx-unknown-required-region", "qemu-cannot-open"}
    assert str(required) in message(md, "vhdx-unknown-required-region")
    assert qemu_refuses(plain)


@needs_qemu
def test_region_table_entry_count(plain: Path) -> None:
    write_regions(plain, regions(plain), count=3000)
    md = introspect(plain)
    assert "vhdx-bad-region-table" in md.codes() and not md.safe
    assert qemu_refuses(plain)


@needs_qemu
def test_missing_and_duplicate_regions(plain: Path) -> None:
    entries = regions(plain)
    bat = next(e for e in entries if e[0] == BAT_GUID)
    write_regions(plain, [bat, [BAT_GUID, 5 * MiB, MiB, 1]])
    text = message(introspect(plain), "vhdx-bad-region-table")
    assert "no metadata region" in text and "a second bat region" in text
    assert qemu_refuses(plain)


@needs_qemu
@pytest.mark.parametrize("offset", [0x100, 2 * MiB], ids=["inside-table", "past-region"])
def test_metadata_item_out_of_range(plain: Path, offset: int) -> None:
    entries = metadata_entries(plain)
    for entry in entries:
        if entry[0] == VIRTUAL_DISK_SIZE:
            entry[1] = offset
    write_metadata_entries(plain, entries)
    md = introspect(plain)
    assert "vhdx-bad-metadata" in md.codes() and not md.safe
    assert "virtual_disk_size" in message(md, "vhdx-bad-metadata")


@needs_qemu
def test_overlapping_metadata_items(plain: Path) -> None:
    entries = metadata_entries(plain)
    params = next(e for e in entries if e[0] == FILE_PARAMETERS)
    for entry in entries:
        if entry[0] == PAGE_83:
            entry[1] = params[1]
    write_metadata_entries(plain, entries)
    assert "overlaps" in message(introspect(plain), "vhdx-bad-metadata")


@needs_qemu
def test_missing_metadata_item(plain: Path) -> None:
    entries = [e for e in metadata_entries(plain) if e[0] != PHYSICAL_SECTOR]
    write_metadata_entries(plain, entries)
    md = introspect(plain)
    assert md.codes() == {"vhdx-bad-metadata", "qemu-cannot-open"}
    assert section_of(md).physical_sector_size is None
    assert qemu_refuses(plain)


@needs_qemu
def test_unknown_metadata_items(plain: Path) -> None:
    entries = metadata_entries(plain)
    write_metadata_entries(plain, [*entries, [uuid.uuid4(), 96 * KiB, 16, 0]])
    md = assert_same_as_qemu(plain)
    assert md.findings == ()
    write_metadata_entries(plain, [*entries, [uuid.uuid4(), 96 * KiB, 16, 0x4]])
    assert codes(plain) == {"vhdx-unknown-required-metadata", "qemu-cannot-open"}
    assert qemu_refuses(plain)


@needs_qemu
def test_bad_metadata_signature(plain: Path) -> None:
    patch(plain, metadata_offset(plain), b"METADATA")
    md = introspect(plain)
    assert md.codes() == {"vhdx-bad-metadata", "qemu-cannot-open"} and md.virtual_size is None
    assert qemu_refuses(plain)


@needs_qemu
@pytest.mark.parametrize("block_size", [3 * MiB, 512 * KiB, 512 * MiB])
def test_bad_block_size(plain: Path, block_size: int) -> None:
    write_item(plain, FILE_PARAMETERS, "<I", block_size)
    md = introspect(plain)
    assert "vhdx-bad-block-size" in md.codes() and not md.safe
    assert section_of(md).block_size == block_size
    assert qemu_refuses(plain)


@needs_qemu
@pytest.mark.parametrize("item", [LOGICAL_SECTOR, PHYSICAL_SECTOR])
def test_bad_sector_size(plain: Path, item: uuid.UUID) -> None:
    write_item(plain, item, "<I", 1024)
    assert "vhdx-bad-sector-size" in codes(plain)


@needs_qemu
def test_virtual_size_2_to_the_63(plain: Path) -> None:
    write_item(plain, VIRTUAL_DISK_SIZE, "<Q", 1 << 63)
    md = introspect(plain)
    assert {"vhdx-bad-virtual-size", "vhdx-bat-too-small"} <= md.codes()
    assert md.virtual_size is None
    assert section_of(md).virtual_disk_size == 1 << 63


@needs_qemu
@pytest.mark.parametrize("size", [0, 64 * 1024**4 + MiB, 64 * MiB + 100])
def test_bad_virtual_size(plain: Path, size: int) -> None:
    write_item(plain, VIRTUAL_DISK_SIZE, "<Q", size)
    assert "vhdx-bad-virtual-size" in codes(plain)


@needs_qemu
def test_bat_too_small(plain: Path) -> None:
    # 1 TiB in the 8 MiB blocks of a 64 MiB image needs 131072 + 255 entries: over 1 MiB.
    write_item(plain, VIRTUAL_DISK_SIZE, "<Q", 1024**4)
    md = introspect(plain)
    assert md.codes() == {"vhdx-bat-too-small", "qemu-cannot-open"}
    assert qemu_refuses(plain)


def _region_over_header_section(path: Path) -> None:
    write_regions(path, [*regions(path), [uuid.uuid4(), 0, MiB, 0]])


def _misaligned_region(path: Path) -> None:
    write_regions(path, [*regions(path), [uuid.uuid4(), 5 * MiB + 4096, MiB, 0]])


def _bat_past_the_end(path: Path) -> None:
    entries = regions(path)
    for entry in entries:
        if entry[0] == BAT_GUID:
            entry[1] = 1 << 40
    write_regions(path, entries)


def _overlapping_items(path: Path) -> None:
    entries = metadata_entries(path)
    params = next(e for e in entries if e[0] == FILE_PARAMETERS)
    for entry in entries:
        if entry[0] == PAGE_83:
            entry[1] = params[1]
    write_metadata_entries(path, entries)


@needs_qemu
@pytest.mark.parametrize(
    ("edit", "code"),
    [
        (_region_over_header_section, "vhdx-bad-layout"),
        (_misaligned_region, "vhdx-bad-layout"),
        (_bat_past_the_end, "truncated"),
        (_overlapping_items, "vhdx-bad-metadata"),
        (lambda p: write_item(p, PHYSICAL_SECTOR, "<I", 1024), "vhdx-bad-sector-size"),
        (lambda p: write_item(p, VIRTUAL_DISK_SIZE, "<Q", 64 * MiB + 100), "vhdx-bad-virtual-size"),
    ],
    ids=["header-section", "misaligned", "bat-past-end", "items-overlap", "physical", "unaligned"],
)
def test_checks_qemu_does_not_make(plain: Path, edit: Callable[[Path], None], code: str) -> None:
    """Documented differences: qemu opens these images, we flag them unsafe."""
    edit(plain)
    md = introspect(plain)
    assert md.codes() == {code} and not md.safe
    theirs = qemu_info(plain)
    # qemu rounds an unaligned size down to whole 512-byte sectors; we report the item.
    assert theirs["virtual-size"] == 64 * MiB


@needs_qemu
def test_4096_byte_logical_sectors(plain: Path) -> None:
    write_item(plain, LOGICAL_SECTOR, "<I", 4096)
    md = introspect(plain)
    # The specification allows it; qemu 7.2 does not, so it does not pass the gate.
    assert md.codes() == {"qemu-cannot-open"} and md.virtual_size == 64 * MiB
    section = section_of(md)
    assert section.logical_sector_size == 4096
    assert section.chunk_ratio == (1 << 23) * 4096 // (8 * MiB)
    assert qemu_refuses(plain)  # qemu 7.2 supports only 512-byte logical sectors


@needs_qemu
@pytest.mark.parametrize("length", [100, 100 * KiB, 200 * KiB, 3 * MiB + 100])
def test_truncated(plain: Path, tmp_path: Path, length: int) -> None:
    cut = tmp_path / "cut.vhdx"
    cut.write_bytes(read(plain, 0, length))
    md = introspect(cut)
    assert md.format == "vhdx"
    assert "truncated" in md.codes() and not md.safe


@needs_qemu
def test_expected_format(plain: Path, tmp_path: Path) -> None:
    assert introspect(plain, expected_format="vhdx").format == "vhdx"
    for other in ("raw", "vpc", "qcow2"):
        with pytest.raises(FormatMismatch):
            introspect(plain, expected_format=other)
    raw = tmp_path / "x.raw"
    raw.write_bytes(bytes(MiB))
    with pytest.raises(FormatMismatch):
        introspect(raw, expected_format="vhdx")


# --- access patterns ----------------------------------------------------------------------------


@needs_qemu
def test_header_only_reads_little(make_image: MakeImage) -> None:
    path = make_image("vhdx", "1T", "-o", "block_size=1M")
    with CountingFile(path) as f:
        md = introspect(f, deep=False)
        assert f.bytes_read <= MiB
    assert md.virtual_size == 1024**4 and md.safe


@needs_qemu
@pytest.mark.parametrize("chunk", [511, 65536, MiB])
def test_stream_and_seekable_agree(make_image: MakeImage, chunk: int) -> None:
    path = make_image("vhdx", "64M")
    add_parent_locator(path, {"parent_linkage": "{x}", "relative_path": "p.vhdx"})
    assert introspect(forward_only(path, chunk)).to_dict() == introspect(path).to_dict()


@needs_qemu
@pytest.mark.parametrize(
    ("size", "options"),
    [("64M", "log_size=2M"), ("64M", "log_size=8M"), ("4T", "subformat=dynamic")],
)
def test_stream_keeps_a_metadata_region_far_in(
    make_image: MakeImage, size: str, options: str
) -> None:
    # qemu puts the metadata region after the log and the BAT: at 4 MiB with a 2 MiB log or
    # a 2 MiB BAT, past any fixed head a stream reader keeps; it is kept as it goes by.
    path = make_image("vhdx", size, "-o", options)
    assert metadata_offset(path) >= 4 * MiB
    seekable = introspect(path)
    assert seekable.safe and seekable.findings == ()
    assert introspect(forward_only(path)).to_dict() == seekable.to_dict()


class GappySource(Source):
    """Image bytes with one range that a stream reader did not keep."""

    is_stream = True

    def __init__(self, data: bytes, gap: tuple[int, int]) -> None:
        super().__init__(len(data))
        self._data = data
        self._gap = gap

    def _read(self, offset: int, length: int) -> bytes:
        start, end = self._gap
        if offset < end and offset + length > start:
            raise StreamGap(offset, length)
        return self._data[offset : offset + length]


@needs_qemu
def test_metadata_lost_from_a_stream_is_unsafe(plain: Path) -> None:
    """Fail closed: without the metadata the has-parent bit is unknown."""
    base = metadata_offset(plain)
    source = GappySource(plain.read_bytes(), (base, base + MiB))
    md = introspect_source(source, deep=True, expected_format=None)
    assert md.codes() == {"stream-unchecked", "vhdx-metadata-unchecked"} and not md.safe
    assert md.virtual_size is None and section_of(md).has_parent is None


# --- mutation fuzzing ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed_images(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    if QEMU_IMG is None:
        pytest.skip("qemu-img missing")
    directory = tmp_path_factory.mktemp("vhdx-seeds")
    seeds = []
    for index, options in enumerate(["subformat=dynamic", "block_size=1M,log_size=1M"]):
        path = directory / f"s{index}.vhdx"
        qemu_img("create", "-q", "-f", "vhdx", "-o", options, path, "16M")
        if index == 1:
            set_has_parent(path)
            add_parent_locator(path, {"parent_linkage": "{x}", "relative_path": "p.vhdx"})
        seeds.append(path.read_bytes())
    return seeds


def _windows(blob: bytes) -> list[tuple[int, int]]:
    """Where the structures are: file identifier, headers, region tables, metadata."""
    (meta,) = [
        off
        for g, off, _, _ in (
            struct.unpack_from("<16sQII", blob, REGION_TABLES[0] + 16 + 32 * i) for i in range(2)
        )
        if uuid.UUID(bytes_le=g) == METADATA_GUID
    ]
    return [
        (0, 64),
        (HEADERS[0], 80),
        (HEADERS[1], 80),
        (REGION_TABLES[0], 96),
        (REGION_TABLES[1], 96),
        (meta, 256),
        (meta + 64 * KiB, 256),
        (meta + 128 * KiB, 256),
    ]


def _fix_checksums(blob: bytearray) -> None:
    for offset, size in [(HEADERS[0], 4096), (HEADERS[1], 4096)] + [
        (table, 64 * KiB) for table in REGION_TABLES
    ]:
        blob[offset : offset + size] = with_checksum(bytes(blob[offset : offset + size]))


@needs_qemu
@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_structures_never_escape(seed_images: list[bytes], data: st.DataObject) -> None:
    seed = data.draw(st.sampled_from(seed_images))
    blob = bytearray(seed)
    windows = _windows(seed)
    for _ in range(data.draw(st.integers(1, 12))):
        start, size = data.draw(st.sampled_from(windows))
        offset = start + data.draw(st.integers(0, size - 1))
        blob[offset] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        _fix_checksums(blob)  # reach past the CRCs into the tables they guard
    if data.draw(st.integers(0, 4)) == 0:
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    for source in (io.BytesIO(bytes(blob)), OnlyRead(bytes(blob))):
        md = introspect_hostile(source)
        if md is None:
            continue
