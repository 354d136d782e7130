"""VDI deep validation: the block-map walk and ``allocated_size``, against qemu-img and hostile
edits.

Expected values come from qemu: ``qemu-img map --output=json`` for the bytes of guest data
stored, ``qemu-img check`` for corruption it recognises.  The header and block map are read and
edited here with ``struct``, not through the module under test.
"""

from __future__ import annotations

import os
import struct
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
    qemu_map_data,
)
from tests.support import OnlyRead as Stream

pytestmark = needs_qemu

MakeImage = Callable[..., Path]
MiB = 1024 * 1024
FREE, ZERO = 0xFFFFFFFF, 0xFFFFFFFE
DEEP_CODES = {"vdi-block-index-out-of-range", "vdi-block-past-eof", "vdi-block-used-twice"}


# --- helpers -------------------------------------------------------------------------------


def header(path: Path) -> dict[str, int]:
    with open(path, "rb") as f:
        raw = f.read(0x200)
    map_at, data_at = struct.unpack_from("<II", raw, 0x154)
    block_size, _extra, blocks, allocated = struct.unpack_from("<IIII", raw, 0x178)
    return {
        "map": map_at,
        "data": data_at,
        "block_size": block_size,
        "blocks": blocks,
        "allocated": allocated,
    }


def block_map(path: Path) -> list[int]:
    h = header(path)
    with open(path, "rb") as f:
        f.seek(h["map"])
        return list(struct.unpack(f"<{h['blocks']}I", f.read(4 * h["blocks"])))


def set_entry(path: Path, index: int, value: int) -> None:
    patch(path, header(path)["map"] + 4 * index, struct.pack("<I", value))


def set_blocks_allocated(path: Path, count: int) -> None:
    patch(path, 0x184, struct.pack("<I", count))


def used(path: Path) -> list[int]:
    return [i for i, entry in enumerate(block_map(path)) if entry < ZERO]


@pytest.fixture
def with_data(make_image: MakeImage) -> Path:
    path = make_image("vdi", "64M")
    qemu_io(
        path,
        "vdi",
        "write -P 0xab 0 1M",
        "write -P 0xcd 10M 3M",
        "write -P 0x11 63M 1M",
        "write -P 0x22 40M 4k",
    )
    return path


# --- allocated_size against qemu-img map ---------------------------------------------------

WRITES = {
    "empty": ("64M", []),
    "scattered": ("64M", ["write -P 0xab 0 1M", "write -P 0xcd 10M 3M", "write -P 1 33M 4k"]),
    "whole-disk": ("16M", ["write -P 0x33 0 16M"]),
    # 5120000 bytes: five blocks, the last one holds 905216 bytes of the disk
    "last-partial-block": ("5000K", ["write -P 0x44 4M 904K"]),
}


@pytest.mark.parametrize(("size", "writes"), WRITES.values(), ids=WRITES.keys())
def test_allocated_size_matches_qemu_map(
    make_image: MakeImage, size: str, writes: list[str]
) -> None:
    path = make_image("vdi", size)
    if writes:
        qemu_io(path, "vdi", *writes)
    md = introspect(path)
    assert md.safe, md.findings
    assert md.allocated_size == qemu_map_data(path, "vdi")
    assert md.vdi is not None and md.vdi.allocation is not None
    assert md.vdi.allocation.allocated == len(used(path)) == header(path)["allocated"]
    assert md.vdi.allocation.entries == header(path)["blocks"]


def test_static_image_stores_every_block(make_image: MakeImage) -> None:
    path = make_image("vdi", "8M", "-o", "static=on")
    md = introspect(path)
    assert md.safe, md.findings
    assert md.allocated_size == md.virtual_size == qemu_map_data(path, "vdi")


def test_converted_image(tmp_path: Path) -> None:
    raw = tmp_path / "src.raw"
    with open(raw, "wb") as f:
        f.truncate(12 * MiB)
        for offset in (0, 5 * MiB + 4096, 11 * MiB):
            f.seek(offset)
            f.write(b"\x5a" * 70_000)
    path = tmp_path / "converted.vdi"
    qemu_img("convert", "-q", "-f", "raw", "-O", "vdi", raw, path)
    md = introspect(path)
    assert md.safe, md.findings
    assert md.allocated_size == qemu_map_data(path, "vdi") == 3 * MiB


def test_header_only_has_no_allocated_size(with_data: Path) -> None:
    md = introspect(with_data, deep=False)
    assert md.allocated_size is None
    assert md.vdi is not None and md.vdi.allocation is None


@pytest.mark.parametrize("chunk", [4096, MiB, 777])
def test_stream_agrees_with_seekable(with_data: Path, chunk: int) -> None:
    seekable = assert_stream_agrees(with_data, chunk).to_dict()
    assert seekable["allocated_size"] is not None


@pytest.mark.parametrize("chunk", [4096, MiB])
def test_stream_agrees_on_hostile_maps(with_data: Path, chunk: int) -> None:
    first, second = used(with_data)[:2]
    set_entry(with_data, second, block_map(with_data)[first])
    set_entry(with_data, 50, 1000)
    seekable = assert_stream_agrees(with_data, chunk)
    assert {"vdi-block-used-twice", "vdi-block-index-out-of-range"} <= seekable.codes()


# --- hostile block maps ----------------------------------------------------------------------


def test_index_at_blocks_allocated(with_data: Path) -> None:
    """Below ``blocks`` (qemu opens it) but at ``blocks_allocated``: the next block qemu
    allocates would land there too.  qemu-img check counts a corruption."""
    count = header(with_data)["allocated"]
    set_entry(with_data, 30, count)
    md = introspect(with_data)
    assert not md.safe
    message = finding(md, "vdi-block-index-out-of-range")
    assert f"block map entry 30 = {count:#010x}" in message
    assert qemu_corruptions(with_data, "vdi") > 0


def test_index_beyond_the_disk(with_data: Path) -> None:
    set_entry(with_data, 2, 0x00FFFFFF)
    md = introspect(with_data)
    assert "vdi-block-index-out-of-range" in md.codes()
    assert qemu_corruptions(with_data, "vdi") > 0


def test_index_used_twice(with_data: Path) -> None:
    first, second = used(with_data)[:2]
    set_entry(with_data, second, block_map(with_data)[first])
    md = introspect(with_data)
    assert not md.safe
    assert f"block map entry {second} " in finding(md, "vdi-block-used-twice")
    assert qemu_corruptions(with_data, "vdi") > 0


def test_data_block_past_the_end_of_the_file(with_data: Path) -> None:
    """The file cut inside its last data block: qemu-img check says nothing."""
    os.truncate(with_data, with_data.stat().st_size - 4096)
    md = introspect(with_data)
    assert {"vdi-block-past-eof", "truncated"} <= md.codes()
    last = max(block_map(with_data)[i] for i in used(with_data))
    assert f"names data block {last} " in finding(md, "vdi-block-past-eof")
    assert qemu_corruptions(with_data, "vdi") == 0


def test_zero_block_and_a_recount(with_data: Path) -> None:
    """0xFFFFFFFE reads as zeros; its data block is then unused, which qemu-img check calls a
    corruption ("allocated blocks mismatch") and we a warning."""
    before = introspect(with_data).allocated_size
    set_entry(with_data, used(with_data)[0], ZERO)
    md = introspect(with_data)
    assert md.safe, md.findings
    assert md.vdi is not None and md.vdi.allocation is not None
    assert md.vdi.allocation.zero == 1
    assert before is not None and md.allocated_size == before - MiB == qemu_map_data(
        with_data, "vdi"
    )
    assert "vdi-blocks-allocated-mismatch" in md.codes()
    assert qemu_corruptions(with_data, "vdi") > 0


def test_header_allocates_more_than_the_map_uses(with_data: Path) -> None:
    count = header(with_data)["allocated"]
    set_blocks_allocated(with_data, count + 1)
    os.truncate(with_data, with_data.stat().st_size + MiB)
    md = introspect(with_data)
    assert md.safe, md.findings
    assert f"says {count + 1}" in finding(md, "vdi-blocks-allocated-mismatch")


def test_every_kind_is_reported(with_data: Path) -> None:
    first, second = used(with_data)[:2]
    set_entry(with_data, second, block_map(with_data)[first])
    set_entry(with_data, 50, 1000)
    os.truncate(with_data, with_data.stat().st_size - 4096)
    md = introspect(with_data)
    assert md.codes() >= DEEP_CODES
    assert md.vdi is not None and md.vdi.allocation is not None
    assert md.vdi.allocation.bad == 3


def test_block_map_cut_off_by_the_end_of_the_file(with_data: Path) -> None:
    os.truncate(with_data, header(with_data)["map"] + 100)
    md = introspect(with_data)
    assert "truncated" in md.codes()
    assert md.allocated_size is None


def test_huge_counts_cost_what_the_file_holds(make_image: MakeImage) -> None:
    """blocks and blocks_allocated 2^32-1 in a 1 MiB file: the work is bounded by what the
    file holds (entries walked, bytes read), not by the 2^32 the header claims."""
    path = make_image("vdi", "4M")
    patch(path, 0x180, struct.pack("<II", 0xFFFFFFFF, 0xFFFFFFFF))
    os.truncate(path, MiB)
    data = path.read_bytes()
    for source in (CountingFile(path), Stream(data, MiB)):
        md = introspect(source)
        assert not md.safe and md.allocated_size is None
        assert md.vdi is not None
        if isinstance(source, CountingFile):
            assert source.bytes_read <= 2 * MiB
            assert md.vdi.allocation is not None  # a stream cuts the walk short: no summary
            assert md.vdi.allocation.entries <= MiB // 4  # 4-byte entries the file can hold


# --- hypothesis: any block-map bytes -------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("vdi") / "fuzz.vdi"
    qemu_img("create", "-q", "-f", "vdi", path, "24M")
    qemu_io(path, "vdi", "write -P 0x44 0 1M", "write -P 0x55 9M 2M", "write -P 0x66 23M 1M")
    return path.read_bytes()


@settings(max_examples=120)
@given(data=st.data())
def test_any_block_map_bytes(pristine: bytes, data: st.DataObject) -> None:
    image = bytearray(pristine)
    map_at = struct.unpack_from("<I", image, 0x154)[0]
    blocks = struct.unpack_from("<I", image, 0x180)[0]
    interesting = st.sampled_from([0, 1, 3, 4, 5, 24, FREE, ZERO, 0x80000000])
    values = data.draw(st.lists(st.integers(0, 0xFFFFFFFF) | interesting, max_size=blocks))
    start = data.draw(st.integers(0, blocks - len(values)))
    for k, value in enumerate(values):
        struct.pack_into("<I", image, map_at + 4 * (start + k), value)
    if data.draw(st.booleans()):
        struct.pack_into("<I", image, 0x184, data.draw(st.integers(0, 0xFFFFFFFF)))
    assert_stream_describes_alike(bytes(image), data.draw(st.sampled_from([4096, MiB])))
