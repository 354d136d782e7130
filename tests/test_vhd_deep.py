"""VHD deep validation: the BAT walk and ``allocated_size``, against qemu-img and hostile edits.

Expected values come from qemu: ``qemu-img map -f vpc --output=json`` (the bytes of guest data
the image stores), and the BAT is located and edited here with ``struct`` from the bytes qemu
wrote, not through the module under test.
"""

from __future__ import annotations

import os
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imageintrospect import introspect
from imageintrospect.formats.blocktables import STREAM_HOLD_LIMIT
from tests.support import (
    QEMU_IMG,
    CountingFile,
    assert_stream_agrees,
    assert_stream_describes_alike,
    finding,
    needs_qemu,
    patch,
    qemu_img,
    qemu_io,
    qemu_map_data,
    read_at,
)
from tests.support import OnlyRead as Stream

pytestmark = needs_qemu

MakeImage = Callable[..., Path]
MiB = 1024 * 1024
GiB = 1024 * MiB
UNALLOCATED = 0xFFFFFFFF
DEEP_CODES = {"vhd-bat-out-of-range", "vhd-bat-in-metadata", "vhd-bat-claimed-twice"}


# --- helpers -------------------------------------------------------------------------------


def qemu_opens(path: Path) -> bool:
    assert QEMU_IMG is not None
    args = [QEMU_IMG, "info", "-f", "vpc", "--output=json", str(path)]
    return subprocess.run(args, capture_output=True, check=False).returncode == 0


def bat_of(path: Path) -> dict[str, int]:
    """BAT offset, entry count and block size, read from the dynamic header qemu wrote."""
    header_at = struct.unpack(">Q", read_at(path, 16, 8))[0]
    fields = struct.unpack(">QIII", read_at(path, header_at + 16, 20))
    table_at, _version, entries, block_size = fields
    return {"header": header_at, "offset": table_at, "entries": entries, "block_size": block_size}


def bat_entries(path: Path) -> list[int]:
    bat = bat_of(path)
    return list(
        struct.unpack(f">{bat['entries']}I", read_at(path, bat["offset"], 4 * bat["entries"]))
    )


def set_entry(path: Path, index: int, sector: int) -> None:
    patch(path, bat_of(path)["offset"] + 4 * index, struct.pack(">I", sector))


def allocated_indexes(path: Path) -> list[int]:
    return [i for i, sector in enumerate(bat_entries(path)) if sector != UNALLOCATED]


@pytest.fixture
def with_data(make_image: MakeImage) -> Path:
    """A 64 MiB dynamic VHD with data in five of its 33 blocks, the last (partial) one too."""
    path = make_image("vpc", "64M")
    qemu_io(
        path,
        "vpc",
        "write -P 0xab 0 1M",
        "write -P 0xcd 10M 3M",
        "write -P 0x11 63M 1M",
        "write -P 0x22 67108864 16384",  # the 16 KiB of block 32 inside the disk
    )
    return path


# --- allocated_size against qemu-img map ---------------------------------------------------

WRITES = {
    "empty": [],
    "one-sector": ["write -P 0x01 512 512"],
    "scattered": ["write -P 0xab 0 1M", "write -P 0xcd 10M 3M", "write -P 0x11 33M 4k"],
    "last-partial-block": ["write -P 0x22 67108864 16384"],
    "whole-disk": ["write -P 0x33 0 67125248"],
}


@pytest.mark.parametrize("writes", WRITES.values(), ids=WRITES.keys())
def test_allocated_size_matches_qemu_map(make_image: MakeImage, writes: list[str]) -> None:
    path = make_image("vpc", "64M")
    if writes:
        qemu_io(path, "vpc", *writes)
    md = introspect(path)
    assert md.safe, md.findings
    assert md.allocated_size == qemu_map_data(path, "vpc")
    assert md.vhd is not None and md.vhd.allocation is not None
    allocated = allocated_indexes(path)
    assert md.vhd.allocation.allocated == len(allocated)
    assert md.vhd.allocation.entries == bat_of(path)["entries"]
    assert md.vhd.allocation.bad == 0


def test_block_straddling_the_end_counts_up_to_the_end(with_data: Path) -> None:
    """qemu's 64M disk is 67125248 bytes: block 32 holds only 16 KiB of it."""
    bat = bat_of(with_data)
    size = introspect(with_data).virtual_size
    assert size is not None and size % bat["block_size"] == 16384
    assert allocated_indexes(with_data)[-1] == size // bat["block_size"]
    md = introspect(with_data)
    whole_blocks = (len(allocated_indexes(with_data)) - 1) * bat["block_size"]
    assert md.allocated_size == whole_blocks + 16384 == qemu_map_data(with_data, "vpc")


def test_converted_image(tmp_path: Path) -> None:
    raw = tmp_path / "src.raw"
    with open(raw, "wb") as f:
        f.truncate(20 * MiB)
        for offset in (0, 5 * MiB, 19 * MiB):
            f.seek(offset)
            f.write(b"\x5a" * 300_000)
    path = tmp_path / "converted.vhd"
    qemu_img("convert", "-q", "-f", "raw", "-O", "vpc", raw, path)
    md = introspect(path)
    assert md.safe, md.findings
    assert md.allocated_size == qemu_map_data(path, "vpc") > 0


def test_fixed_disk_stores_every_byte(make_image: MakeImage) -> None:
    """qemu-img map -f vpc says data everywhere: allocated_size is the virtual size."""
    path = make_image("vpc", "64M", "-o", "subformat=fixed")
    md = introspect(path)
    assert md.vhd is not None and md.vhd.disk_type == "fixed"
    assert md.allocated_size == md.virtual_size == qemu_map_data(path, "vpc")
    assert md.vhd.allocation is None


def test_header_only_has_no_allocated_size(with_data: Path) -> None:
    md = introspect(with_data, deep=False)
    assert md.allocated_size is None
    assert md.vhd is not None and md.vhd.allocation is None


def test_differencing_disk_walks_its_own_blocks(with_data: Path) -> None:
    """A type-4 disk (qemu reads it as dynamic): the blocks this file stores."""
    data = bytearray(with_data.read_bytes())
    for footer_at in (0, len(data) - 512):
        struct.pack_into(">I", data, footer_at + 60, 4)
        struct.pack_into(">I", data, footer_at + 64, 0)
        checksum = ~sum(data[footer_at : footer_at + 512]) & 0xFFFFFFFF
        struct.pack_into(">I", data, footer_at + 64, checksum)
    with_data.write_bytes(data)
    md = introspect(with_data)
    assert "vhd-differencing" in md.codes()
    assert md.allocated_size == qemu_map_data(with_data, "vpc")


# --- streams -------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [4096, MiB, 777])
def test_stream_agrees_with_seekable(with_data: Path, chunk: int) -> None:
    seekable = assert_stream_agrees(with_data, chunk).to_dict()
    assert seekable["allocated_size"] is not None


@pytest.mark.parametrize("chunk", [4096, MiB])
def test_stream_agrees_on_hostile_tables(with_data: Path, chunk: int) -> None:
    first, second = allocated_indexes(with_data)[:2]
    set_entry(with_data, second, bat_entries(with_data)[first])
    set_entry(with_data, 7, 0x7FFFFFF0)
    seekable = assert_stream_agrees(with_data, chunk)
    assert {"vhd-bat-claimed-twice", "vhd-bat-out-of-range"} <= seekable.codes()


def test_stream_too_large_to_hold_is_unchecked(with_data: Path, monkeypatch: Any) -> None:
    from imageintrospect.formats import blocktables

    monkeypatch.setattr(blocktables, "STREAM_HOLD_LIMIT", 64)  # the BAT is 132 bytes
    md = introspect(Stream(with_data.read_bytes(), 65536))
    assert "stream-unchecked" in md.codes()
    assert md.allocated_size is None
    assert introspect(with_data).allocated_size is not None
    assert 16 * MiB <= STREAM_HOLD_LIMIT  # enough for a 2040 GiB disk in 512 KiB blocks


# --- hostile BAT entries -------------------------------------------------------------------


def test_entry_past_the_end_of_the_file(with_data: Path) -> None:
    set_entry(with_data, 3, 0x10000000)
    md = introspect(with_data)
    assert not md.safe
    message = finding(md, "vhd-bat-out-of-range")
    assert "BAT entry 3 = 0x10000000" in message and "1 bad BAT entry" in message
    assert md.vhd is not None and md.vhd.allocation is not None
    assert md.vhd.allocation.bad == 1
    assert not qemu_opens(with_data)  # "free_data_block_offset points after the end of file"


def test_block_running_into_the_footer(with_data: Path) -> None:
    """The last block moved one sector on: its last sector is the footer's."""
    last = allocated_indexes(with_data)[-1]
    set_entry(with_data, last, bat_entries(with_data)[last] + 1)
    md = introspect(with_data)
    assert "vhd-bat-out-of-range" in md.codes()
    assert f"BAT entry {last} " in finding(md, "vhd-bat-out-of-range")
    assert qemu_opens(with_data)  # it ends at the end of the file: qemu serves the footer


@pytest.mark.parametrize(
    ("sector", "what"), [(0, "footer copy"), (1, "dynamic header"), (3, "BAT")]
)
def test_entry_into_the_metadata(with_data: Path, sector: int, what: str) -> None:
    bat = bat_of(with_data)
    assert (bat["header"], bat["offset"]) == (512, 1536)  # qemu's layout, as the test assumes
    set_entry(with_data, 2, sector)
    md = introspect(with_data)
    assert not md.safe
    assert f"BAT entry 2 = {sector:#010x}" in finding(md, "vhd-bat-in-metadata")
    assert qemu_opens(with_data), what


def test_two_entries_for_the_same_block(with_data: Path) -> None:
    first, second = allocated_indexes(with_data)[:2]
    set_entry(with_data, second, bat_entries(with_data)[first])
    md = introspect(with_data)
    assert not md.safe
    assert f"BAT entry {second} " in finding(md, "vhd-bat-claimed-twice")
    assert qemu_opens(with_data)


def test_overlapping_blocks(with_data: Path) -> None:
    """An entry that starts one sector into another block overlaps it."""
    first, second = allocated_indexes(with_data)[:2]
    set_entry(with_data, second, bat_entries(with_data)[first] + 1)
    assert "vhd-bat-claimed-twice" in introspect(with_data).codes()


def test_entry_over_a_parent_locator(with_data: Path) -> None:
    """A locator whose data lies inside a block: the block overlaps the parent's name."""
    bat = bat_of(with_data)
    block_at = bat_entries(with_data)[allocated_indexes(with_data)[1]] * 512
    data = bytearray(with_data.read_bytes())
    locator_at = bat["header"] + 576
    struct.pack_into(">4sIIIQ", data, locator_at, b"W2ku", 512, 20, 0, block_at + 4096)
    struct.pack_into(">I", data, bat["header"] + 36, 0)
    checksum = ~sum(data[bat["header"] : bat["header"] + 1024]) & 0xFFFFFFFF
    struct.pack_into(">I", data, bat["header"] + 36, checksum)
    with_data.write_bytes(data)
    md = introspect(with_data)
    assert "parent locator" in finding(md, "vhd-bat-in-metadata")


def test_every_kind_is_reported(with_data: Path) -> None:
    first, second = allocated_indexes(with_data)[:2]
    set_entry(with_data, second, bat_entries(with_data)[first])
    set_entry(with_data, 20, 2)
    set_entry(with_data, 21, 0x0FFFFFFF)
    md = introspect(with_data)
    assert md.codes() >= DEEP_CODES
    assert md.vhd is not None and md.vhd.allocation is not None
    assert md.vhd.allocation.bad == 3
    assert "3 bad BAT entries" in finding(md, "vhd-bat-in-metadata")


def test_bad_entries_are_not_counted_as_data(with_data: Path) -> None:
    good = introspect(with_data).allocated_size
    set_entry(with_data, 20, 0x0FFFFFFF)
    assert introspect(with_data).allocated_size == good


def test_entries_beyond_the_disk_are_not_walked(with_data: Path) -> None:
    """max_table_entries larger than the disk needs: qemu never reads the extra entries."""
    data = bytearray(with_data.read_bytes())
    bat = bat_of(with_data)
    struct.pack_into(">I", data, bat["header"] + 28, bat["entries"] + 1)
    # the extra entry is the first 4 bytes of the BAT's padding: make it garbage
    struct.pack_into(">I", data, bat["offset"] + 4 * bat["entries"], 0x00000001)
    struct.pack_into(">I", data, bat["header"] + 36, 0)
    checksum = ~sum(data[bat["header"] : bat["header"] + 1024]) & 0xFFFFFFFF
    struct.pack_into(">I", data, bat["header"] + 36, checksum)
    with_data.write_bytes(data)
    md = introspect(with_data)
    assert not DEEP_CODES & md.codes(), md.findings
    assert md.vhd is not None and md.vhd.allocation is not None
    assert md.vhd.allocation.entries == bat["entries"]


def test_bat_cut_off_by_the_end_of_the_file(with_data: Path) -> None:
    os.truncate(with_data, bat_of(with_data)["offset"] + 40)
    md = introspect(with_data)
    assert "truncated" in md.codes()
    assert md.allocated_size is None


def test_huge_table_claim_costs_what_the_file_holds(make_image: MakeImage) -> None:
    """max_table_entries 2^32-1 and a current size of 2^63 in a 4 MiB file."""
    path = make_image("vpc", "4M")
    data = bytearray(path.read_bytes())
    header_at = struct.unpack_from(">Q", data, 16)[0]
    struct.pack_into(">I", data, header_at + 28, 0xFFFFFFFF)
    for footer_at in (0, len(data) - 512):
        struct.pack_into(">QQ", data, footer_at + 40, 1 << 63, 1 << 63)
        struct.pack_into(">I", data, footer_at + 64, 0)
        checksum = ~sum(data[footer_at : footer_at + 512]) & 0xFFFFFFFF
        struct.pack_into(">I", data, footer_at + 64, checksum)
    path.write_bytes(data)
    # the work is bounded by what the file holds, not by the 2^32 entries claimed
    for source in (CountingFile(path), Stream(bytes(data), MiB)):
        md = introspect(source)
        assert not md.safe and md.allocated_size is None
        assert md.vhd is not None and md.vhd.allocation is not None
        assert md.vhd.allocation.entries <= len(data) // 4
        if isinstance(source, CountingFile):
            assert source.bytes_read <= 2 * len(data)


def test_file_too_large_for_the_claim_map(with_data: Path) -> None:
    """Over 128 GiB (a sparse file): ranges are checked, overlaps are not (info finding)."""
    footer = read_at(with_data, with_data.stat().st_size - 512, 512)
    big = 129 * GiB
    with open(with_data, "r+b") as f:
        f.truncate(big - 512)
        f.seek(big - 512)
        f.write(footer)
    md = introspect(with_data)
    assert md.safe, md.findings
    assert "vhd-overlap-unchecked" in md.codes()
    set_entry(with_data, 9, (big - 512) // 512)  # a block running into the footer
    assert "vhd-bat-out-of-range" in introspect(with_data).codes()


# --- hypothesis: any BAT bytes -------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("vhd") / "fuzz.vhd"
    qemu_img("create", "-q", "-f", "vpc", path, "16M")
    qemu_io(path, "vpc", "write -P 0x44 0 1M", "write -P 0x55 9M 2M")
    return path.read_bytes()


@settings(max_examples=120)
@given(data=st.data())
def test_any_bat_bytes(pristine: bytes, data: st.DataObject) -> None:
    image = bytearray(pristine)
    table_at = struct.unpack_from(">Q", image, 512 + 16)[0]
    entries = struct.unpack_from(">I", image, 512 + 28)[0]
    interesting = st.sampled_from([0, 1, 3, 4, 0xFFFFFFFF, 0xFFFFFFFE, 0x7FFFFFFF, 0x1005, 0x2006])
    values = data.draw(st.lists(st.integers(0, 0xFFFFFFFF) | interesting, max_size=entries))
    start = data.draw(st.integers(0, entries - len(values)))
    for k, value in enumerate(values):
        struct.pack_into(">I", image, table_at + 4 * (start + k), value)
    assert_stream_describes_alike(bytes(image), data.draw(st.sampled_from([4096, MiB])))
