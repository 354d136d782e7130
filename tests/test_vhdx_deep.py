"""VHDX deep validation: the BAT walk and ``allocated_size``, against qemu-img and hostile edits.

``qemu-img map`` gives no per-block detail for VHDX (it reports the whole disk as one data
extent), so the expected ``allocated_size`` comes from what the test wrote (the blocks the
writes touched) and from the BAT decoded here with ``struct``; ``qemu-img check`` is the oracle
for the corruption it recognises (blocks past the end of the file or over the metadata).
"""

from __future__ import annotations

import json
import struct
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imageintrospect import introspect
from tests.support import (
    CountingFile,
    assert_stream_agrees,
    assert_stream_describes_alike,
    finding,
    needs_qemu,
    patch,
    qemu_corruptions,
    qemu_img,
    qemu_io,
    read_at,
)
from tests.support import OnlyRead as Stream

pytestmark = needs_qemu

MakeImage = Callable[..., Path]
KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
BAT_GUID = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA_GUID = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
NOT_PRESENT, ZERO, FULLY_PRESENT, PARTIALLY_PRESENT = 0, 2, 6, 7
DEEP_CODES = {
    "vhdx-bat-reserved-bits",
    "vhdx-bat-bad-state",
    "vhdx-bat-out-of-range",
    "vhdx-bat-in-metadata",
    "vhdx-bat-claimed-twice",
}


# --- helpers -------------------------------------------------------------------------------


def region(path: Path, guid: uuid.UUID) -> tuple[int, int]:
    """(offset, length) of a region, from the first region table."""
    raw = read_at(path, 192 * KiB, 64 * KiB)
    (count,) = struct.unpack_from("<I", raw, 8)
    for i in range(count):
        raw_guid, offset, length, _flags = struct.unpack_from("<16sQII", raw, 16 + 32 * i)
        if uuid.UUID(bytes_le=raw_guid) == guid:
            return offset, length
    raise AssertionError(f"no region {guid}")


def file_parameters_at(path: Path) -> int:
    base, _ = region(path, METADATA_GUID)
    raw = read_at(path, base, 64 * KiB)
    (count,) = struct.unpack_from("<H", raw, 10)
    for i in range(count):
        item, offset, _length, _flags, _ = struct.unpack_from("<16sIIII", raw, 32 + 32 * i)
        if uuid.UUID(bytes_le=item) == FILE_PARAMETERS:
            return base + offset
    raise AssertionError("no file parameters item")


def block_size_of(path: Path) -> int:
    size: int = struct.unpack("<I", read_at(path, file_parameters_at(path), 4))[0]
    return size


def set_has_parent(path: Path) -> None:
    at = file_parameters_at(path)
    block_size, flags = struct.unpack("<II", read_at(path, at, 8))
    patch(path, at, struct.pack("<II", block_size, flags | 2))


def entry_index(block: int, block_size: int, sector: int = 512) -> int:
    """The BAT index of payload block ``block``: a sector-bitmap entry follows every
    chunk_ratio payload entries."""
    chunk_ratio = (1 << 23) * sector // block_size
    return block + block // chunk_ratio


def bat(path: Path, count: int) -> list[int]:
    offset, _ = region(path, BAT_GUID)
    return list(struct.unpack(f"<{count}Q", read_at(path, offset, 8 * count)))


def set_entry(path: Path, index: int, value: int) -> None:
    offset, _ = region(path, BAT_GUID)
    patch(path, offset + 8 * index, struct.pack("<Q", value))


def present_offsets(path: Path, count: int) -> list[int]:
    return [e >> 20 << 20 for e in bat(path, count) if e & 7 in (FULLY_PRESENT, PARTIALLY_PRESENT)]


def touched_blocks(writes: list[tuple[int, int]], block_size: int) -> set[int]:
    return {
        b
        for start, length in writes
        for b in range(start // block_size, -(-(start + length) // block_size))
    }


@pytest.fixture
def with_data(make_image: MakeImage) -> Path:
    """64 MiB in 8 MiB blocks (qemu's choice), data in blocks 0, 1 and 7."""
    path = make_image("vhdx", "64M")
    assert block_size_of(path) == 8 * MiB
    qemu_io(path, "vhdx", "write -P 0xab 0 1M", "write -P 0xcd 10M 3M", "write -P 0x11 63M 1M")
    return path


# --- allocated_size against what was written -----------------------------------------------

CASES = {
    # size, block size, writes (offset, length)
    "empty": ("64M", None, []),
    "default-blocks": ("64M", None, [(0, MiB), (10 * MiB, 3 * MiB), (63 * MiB, MiB)]),
    "1M-blocks": ("40M", "1M", [(0, 4096), (5 * MiB - 512, 1024), (39 * MiB, MiB)]),
    "32M-blocks": ("100M", "32M", [(50 * MiB, 4096)]),
    # 20 MiB in 8 MiB blocks: block 2 holds 4 MiB of the disk
    "last-partial-block": ("20M", "8M", [(0, 4096), (19 * MiB, MiB)]),
}


@pytest.mark.parametrize(("size", "block", "writes"), CASES.values(), ids=CASES.keys())
def test_allocated_size_is_what_was_written(
    make_image: MakeImage, size: str, block: str | None, writes: list[tuple[int, int]]
) -> None:
    path = make_image("vhdx", size, *(["-o", f"block_size={block}"] if block else []))
    if writes:
        qemu_io(path, "vhdx", *(f"write -P 0x5a {start} {length}" for start, length in writes))
    md = introspect(path)
    assert md.safe, md.findings
    assert md.virtual_size is not None
    block_size = block_size_of(path)
    blocks = touched_blocks(writes, block_size)
    expected = sum(min(block_size, md.virtual_size - b * block_size) for b in blocks)
    assert md.allocated_size == expected
    assert md.vhdx is not None and md.vhdx.allocation is not None
    entries = bat(path, entry_index(-(-md.virtual_size // block_size) - 1, block_size) + 1)
    present = [i for i, e in enumerate(entries) if e & 7 == FULLY_PRESENT]
    assert present == [entry_index(b, block_size) for b in sorted(blocks)]
    assert md.vhdx.allocation.allocated == len(blocks)
    assert md.vhdx.allocation.bad == 0
    assert qemu_corruptions(path, "vhdx") == 0


def test_fixed_disk_stores_every_block(make_image: MakeImage) -> None:
    path = make_image("vhdx", "24M", "-o", "subformat=fixed,block_size=8M,block_state_zero=off")
    md = introspect(path)
    assert md.safe, md.findings
    assert md.vhdx is not None and md.vhdx.fixed
    assert md.allocated_size == md.virtual_size == 24 * MiB


def test_fixed_disk_with_zero_blocks_stores_no_data(make_image: MakeImage) -> None:
    """qemu's default for a fixed disk (block_state_zero=on): the file has room for every
    block but the BAT says each reads as zeros, so no guest data is stored."""
    path = make_image("vhdx", "24M", "-o", "subformat=fixed,block_size=8M")
    assert {e & 7 for e in bat(path, 3)} == {ZERO}
    md = introspect(path)
    assert md.safe, md.findings
    assert md.allocated_size == 0
    assert md.vhdx is not None and md.vhdx.allocation is not None
    assert md.vhdx.allocation.zero == 3


def test_qemu_img_map_has_no_detail(with_data: Path) -> None:
    """Why the tests compare with the writes: qemu says 'data' for the whole disk."""
    extents = json.loads(qemu_img("map", "-f", "vhdx", "--output=json", with_data))
    assert [(e["start"], e["length"], e["data"]) for e in extents] == [(0, 64 * MiB, True)]


def test_one_tib_disk_across_sector_bitmap_entries(tmp_path: Path) -> None:
    """1 TiB in 1 MiB blocks: an 8 MiB BAT with a sector-bitmap entry after every 4096
    payload entries; data on both sides of the first two of them and in the last block."""
    path = tmp_path / "big.vhdx"
    qemu_img("create", "-q", "-f", "vhdx", "-o", "block_size=1M", path, "1T")
    blocks = [0, 4095, 4096, 8191, 8192, 1024 * 1024 - 1]
    qemu_io(path, "vhdx", *(f"write -P 0x77 {b * MiB + 4096} 512" for b in blocks))
    entries = bat(path, entry_index(blocks[-1], MiB) + 1)
    present = [i for i, e in enumerate(entries) if e & 7 == FULLY_PRESENT]
    assert present == [entry_index(b, MiB) for b in blocks]
    assert entry_index(4096, MiB) == 4097  # index 4096 is a sector-bitmap entry
    for source in (CountingFile(path), Stream(path.read_bytes(), MiB)):
        md = introspect(source)
        if isinstance(source, CountingFile):  # the 8 MiB BAT and the metadata, not the 1 TiB
            assert source.bytes_read <= 12 * MiB, source.bytes_read
        assert md.safe, md.findings
        assert md.allocated_size == len(blocks) * MiB
        assert md.vhdx is not None and md.vhdx.allocation is not None
        assert md.vhdx.allocation.entries == 1024 * 1024 + 255  # no bitmap entry after the last


def test_header_only_has_no_allocated_size(with_data: Path) -> None:
    md = introspect(with_data, deep=False)
    assert md.allocated_size is None
    assert md.vhdx is not None and md.vhdx.allocation is None


@pytest.mark.parametrize("chunk", [4096, MiB, 777])
def test_stream_agrees_with_seekable(with_data: Path, chunk: int) -> None:
    """qemu writes the BAT before the metadata region that sizes it: a stream must keep it."""
    bat_at, _ = region(with_data, BAT_GUID)
    metadata_at, _ = region(with_data, METADATA_GUID)
    assert bat_at < metadata_at
    seekable = assert_stream_agrees(with_data, chunk).to_dict()
    assert seekable["allocated_size"] == 3 * 8 * MiB


@pytest.mark.parametrize("chunk", [4096, MiB])
def test_stream_agrees_on_hostile_tables(with_data: Path, chunk: int) -> None:
    offsets = present_offsets(with_data, 8)
    set_entry(with_data, 1, offsets[0] | FULLY_PRESENT)
    set_entry(with_data, 3, FULLY_PRESENT | 1 << 12)
    seekable = assert_stream_agrees(with_data, chunk)
    assert {"vhdx-bat-claimed-twice", "vhdx-bat-reserved-bits"} <= seekable.codes()


# --- hostile BAT entries -------------------------------------------------------------------


def test_block_past_the_end_of_the_file(with_data: Path) -> None:
    set_entry(with_data, 2, 100 * MiB | FULLY_PRESENT)
    md = introspect(with_data)
    assert not md.safe
    assert "BAT entry 2 (payload block 2)" in finding(md, "vhdx-bat-out-of-range")
    assert qemu_corruptions(with_data, "vhdx") > 0


@pytest.mark.parametrize(("offset", "what"), [(0, "header section"), (MiB, "log")])
def test_block_over_the_headers_or_the_log(with_data: Path, offset: int, what: str) -> None:
    set_entry(with_data, 2, offset | FULLY_PRESENT)
    md = introspect(with_data)
    assert what in finding(md, "vhdx-bat-in-metadata")


@pytest.mark.parametrize("guid", [BAT_GUID, METADATA_GUID])
def test_block_over_a_region(with_data: Path, guid: uuid.UUID) -> None:
    offset, _ = region(with_data, guid)
    set_entry(with_data, 2, offset | FULLY_PRESENT)
    md = introspect(with_data)
    name = "bat" if guid == BAT_GUID else "metadata"
    assert f"the {name} region" in finding(md, "vhdx-bat-in-metadata")
    assert qemu_corruptions(with_data, "vhdx") > 0


def test_two_entries_for_the_same_block(with_data: Path) -> None:
    """qemu-img check does not notice this one."""
    first = present_offsets(with_data, 8)[0]
    set_entry(with_data, 5, first | FULLY_PRESENT)
    md = introspect(with_data)
    assert not md.safe
    assert "BAT entry 5 (payload block 5)" in finding(md, "vhdx-bat-claimed-twice")
    assert qemu_corruptions(with_data, "vhdx") == 0


def test_reserved_bits_and_a_misaligned_offset(with_data: Path) -> None:
    """A byte offset that is not a whole MiB sets bits 3-19: reserved."""
    first = present_offsets(with_data, 8)[0]
    set_entry(with_data, 0, (first + 4096) | FULLY_PRESENT)
    md = introspect(with_data)
    assert "reserved bits 3-19 are 0x200" in finding(md, "vhdx-bat-reserved-bits")


@pytest.mark.parametrize("state", [4, 5])
def test_undefined_payload_state(with_data: Path, state: int) -> None:
    set_entry(with_data, 4, state)
    md = introspect(with_data)
    assert "state " + str(state) in finding(md, "vhdx-bat-bad-state")


def test_partially_present_needs_a_parent(with_data: Path) -> None:
    first = present_offsets(with_data, 8)[0]
    set_entry(with_data, 0, first | PARTIALLY_PRESENT)
    md = introspect(with_data)
    assert "needs a parent" in finding(md, "vhdx-bat-bad-state")


def test_partially_present_with_a_parent(with_data: Path) -> None:
    """With the has-parent bit a partially present block is this file's data (in part)."""
    before = introspect(with_data).allocated_size
    first = present_offsets(with_data, 8)[0]
    set_entry(with_data, 0, first | PARTIALLY_PRESENT)
    set_has_parent(with_data)
    md = introspect(with_data)
    assert not DEEP_CODES & md.codes(), md.findings
    assert "vhdx-differencing" in md.codes()
    assert md.vhdx is not None and md.vhdx.allocation is not None
    assert md.vhdx.allocation.partially_present == 1
    assert md.allocated_size == before


def test_differencing_entries_past_the_disk_store_nothing(with_data: Path) -> None:
    """A differencing disk's BAT runs to the end of its last chunk (512 payload entries
    here, 8 of them inside the disk): a block past the disk is checked, not counted."""
    before = introspect(with_data).allocated_size
    set_has_parent(with_data)
    spare = with_data.stat().st_size
    with open(with_data, "r+b") as f:
        f.truncate(spare + 8 * MiB)
    set_entry(with_data, 100, spare | FULLY_PRESENT)
    md = introspect(with_data)
    assert not DEEP_CODES & md.codes(), md.findings
    assert md.vhdx is not None and md.vhdx.allocation is not None
    assert md.vhdx.allocation.entries == 513
    assert md.vhdx.allocation.allocated == 4
    assert md.allocated_size == before
    set_entry(with_data, 200, 300 * MiB | FULLY_PRESENT)
    assert "BAT entry 200 " in finding(introspect(with_data), "vhdx-bat-out-of-range")


def test_bad_sector_bitmap_state(tmp_path: Path) -> None:
    """8 GiB in 1 MiB blocks: entry 4096 is the first chunk's sector-bitmap entry."""
    path = tmp_path / "chunks.vhdx"
    qemu_img("create", "-q", "-f", "vhdx", "-o", "block_size=1M", path, "8G")
    set_entry(path, 4096, ZERO)
    md = introspect(path)
    assert "BAT entry 4096 (sector bitmap of chunk 0)" in finding(md, "vhdx-bat-bad-state")


def test_every_kind_is_reported(with_data: Path) -> None:
    first = present_offsets(with_data, 8)[0]
    set_entry(with_data, 1, first | FULLY_PRESENT)  # claimed twice
    set_entry(with_data, 2, 5)  # bad state
    set_entry(with_data, 3, 200 * MiB | FULLY_PRESENT)  # past the end
    set_entry(with_data, 4, FULLY_PRESENT | 1 << 19)  # reserved bits
    set_entry(with_data, 5, FULLY_PRESENT)  # offset 0: the header section
    md = introspect(with_data)
    assert md.codes() >= DEEP_CODES
    assert md.vhdx is not None and md.vhdx.allocation is not None
    assert md.vhdx.allocation.bad == 5
    assert "5 bad BAT entries" in finding(md, "vhdx-bat-bad-state")


def test_zero_and_unmapped_blocks_store_nothing(with_data: Path) -> None:
    set_entry(with_data, 0, ZERO)
    set_entry(with_data, 1, 3)  # unmapped
    md = introspect(with_data)
    assert md.safe, md.findings
    assert md.allocated_size == 8 * MiB


def test_bat_region_too_small_is_walked_as_far_as_it_goes(make_image: MakeImage) -> None:
    """A 64 TiB claim in 1 MiB blocks needs a 512 MiB BAT; the region holds 1 MiB."""
    path = make_image("vhdx", "64M", "-o", "block_size=1M")
    base, _ = region(path, METADATA_GUID)
    raw = read_at(path, base, 64 * KiB)
    size_item = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
    for i in range(struct.unpack_from("<H", raw, 10)[0]):
        item, offset, *_ = struct.unpack_from("<16sIIII", raw, 32 + 32 * i)
        if uuid.UUID(bytes_le=item) == size_item:
            patch(path, base + offset, struct.pack("<Q", 64 * 1024 * GiB))
    counted = CountingFile(path)
    md = introspect(counted)
    assert counted.bytes_read <= 4 * MiB  # the 1 MiB region and the metadata, not 512 MiB
    assert "vhdx-bat-too-small" in md.codes()
    assert md.allocated_size is None
    assert md.vhdx is not None and md.vhdx.allocation is not None
    assert md.vhdx.allocation.entries == MiB // 8


# --- hypothesis: any BAT bytes -------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("vhdx") / "fuzz.vhdx"
    qemu_img("create", "-q", "-f", "vhdx", "-o", "block_size=1M", path, "12M")
    qemu_io(path, "vhdx", "write -P 0x44 0 1M", "write -P 0x55 9M 2M")
    return path.read_bytes()


@settings(max_examples=120)
@given(data=st.data())
def test_any_bat_bytes(pristine: bytes, data: st.DataObject) -> None:
    image = bytearray(pristine)
    table_at = 2 * MiB  # qemu's BAT region for this image (asserted below)
    assert image[192 * KiB + 16 : 192 * KiB + 32] == BAT_GUID.bytes_le
    entries = 12
    states = st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7])
    offsets = st.sampled_from([0, 1, 2, 3, 4, 5, 6, 12, 13, 14, 1 << 20])
    structured = st.builds(lambda s, o, r: s | o << 20 | r << 3, states, offsets, st.integers(0, 3))
    values = data.draw(st.lists(st.integers(0, (1 << 64) - 1) | structured, max_size=entries))
    start = data.draw(st.integers(0, entries - len(values)))
    for k, value in enumerate(values):
        struct.pack_into("<Q", image, table_at + 8 * (start + k), value)
    assert_stream_describes_alike(bytes(image), data.draw(st.sampled_from([4096, MiB])))
