"""VMDK deep validation: grain directories, grain tables and stream markers.

Images come from qemu-img/qemu-io (every sparse subformat, with data) and from the VMware
stream builder; hostile variants are struct edits made here, at offsets found by walking the
files with the small independent readers below.  ``allocated_size`` is compared with
``qemu-img map`` and a table entry past the end with ``qemu-img check``; nothing expected is
copied from our own output.
"""

from __future__ import annotations

import io
import json
import os
import random
import struct
import subprocess
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imageintrospect import (
    ImageIntrospectError,
    InspectingReader,
    InternalParserError,
    Metadata,
    introspect,
)
from tests.support import (
    CountingBytes,
    OnlyRead,
    needs_qemu,
    patch,
    qemu_img,
    qemu_io,
    streamed,
)
from tests.support import vmware_stream as vs

pytestmark = needs_qemu

MakeImage = Callable[..., Path]
SECTOR = 512
GRAIN = 65536
MIB = 1024 * 1024
CHUNKS = (4096, MIB)


# --- independent readers of the layouts ------------------------------------------------------


@dataclass
class Header:
    flags: int
    capacity: int
    grain: int  # sectors
    gtes: int
    rgd: int  # sectors
    gd: int  # sectors
    overhead: int  # sectors


def header(data: bytes, at: int = 0) -> Header:
    fields = struct.unpack_from("<4sIIQQQQIQQQ", data, at)
    assert fields[0] == b"KDMV"
    return Header(fields[2], fields[3], fields[4], fields[7], fields[8], fields[9], fields[10])


def gt_offsets(data: bytes, gd_sector: int, entries: int) -> list[int]:
    """Byte offsets of the grain tables a directory names (0 for an absent table)."""
    return [s * SECTOR for s in struct.unpack_from(f"<{entries}I", data, gd_sector * SECTOR)]


def gd_entries(h: Header) -> int:
    return -(-h.capacity // (h.gtes * h.grain))


@dataclass
class Marker:
    offset: int
    lba: int
    size: int  # 0: a metadata marker
    kind: int  # metadata type, -1 for a grain


def markers(data: bytes, start: int) -> Iterator[Marker]:
    pos = start
    while pos + 16 <= len(data):
        lba, size, kind = struct.unpack_from("<QII", data, pos)
        if size:
            yield Marker(pos, lba, size, -1)
            pos += -(-(12 + size) // SECTOR) * SECTOR
            continue
        yield Marker(pos, lba, 0, kind)
        if kind == 0:
            return
        pos += SECTOR + lba * SECTOR


def grain_markers(data: bytes) -> list[Marker]:
    return [m for m in markers(data, header(data).overhead * SECTOR) if m.kind == -1]


def map_allocated(path: Path) -> int:
    """Guest bytes ``qemu-img map`` says the image stores (compressed grains have no offset)."""
    entries = json.loads(qemu_img("map", "--output=json", "-f", "vmdk", path))
    return sum(e["length"] for e in entries if e["data"] and e["present"])


def qemu_check_ok(path: Path) -> bool:
    proc = subprocess.run(
        ["qemu-img", "check", "-f", "vmdk", str(path)], capture_output=True, check=False
    )
    return proc.returncode == 0


# --- helpers ----------------------------------------------------------------------------------


def deep(path: Path) -> Metadata:
    """Seekable introspection, checked against streamed reads at every chunk size."""
    md = introspect(path)
    data = path.read_bytes()
    for chunk in CHUNKS:
        assert streamed(data, chunk).to_dict() == md.to_dict(), chunk
    return md


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def edited(path: Path, edits: list[tuple[int, bytes]], name: str) -> Path:
    data = bytearray(path.read_bytes())
    for offset, value in edits:
        data[offset : offset + len(value)] = value
    return write(path.with_name(name), bytes(data))


WRITES = ("write -P 0x11 0 192k", "write -P 0x22 5M 64k", "write -P 0x33 40M 4k")
#: qemu writes a stream only in whole grains, in ascending order
STREAM_WRITES = ("write -P 0x11 0 192k", "write -P 0x22 5M 64k", "write -P 0x33 40M 64k")


@pytest.fixture
def sparse(make_image: MakeImage) -> Path:
    path = make_image("vmdk", "64M")
    qemu_io(path, "vmdk", *WRITES)
    return path


@pytest.fixture
def qemu_stream(make_image: MakeImage) -> Path:
    path = make_image("vmdk", "64M", "-o", "subformat=streamOptimized")
    qemu_io(path, "vmdk", *STREAM_WRITES)
    return path


def vmware_grains() -> dict[int, bytes]:
    rng = random.Random(5)
    return {i: rng.randbytes(3000) + bytes(500) for i in (0, 1, 2, 7, 600, 1023)}


@pytest.fixture
def vmware(tmp_path: Path) -> tuple[Path, vs.StreamLayout]:
    layout = vs.build_stream(8192 * 16, vmware_grains())
    return write(tmp_path / "vmware.vmdk", layout.data), layout


# --- real images ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "writes"),
    [
        ("subformat=monolithicSparse", WRITES),
        ("zeroed_grain=on", (*WRITES, "write -z 1M 128k", "write -z 5M 64k")),
        ("subformat=streamOptimized", STREAM_WRITES),
        ("subformat=streamOptimized,zeroed_grain=on", STREAM_WRITES),
    ],
)
def test_qemu_images_with_data(make_image: MakeImage, options: str, writes: tuple[str]) -> None:
    path = make_image("vmdk", "64M", "-o", options)
    qemu_io(path, "vmdk", *writes)
    md = deep(path)
    assert md.safe, md.findings
    assert md.allocated_size == map_allocated(path)
    section = md.vmdk
    assert section is not None and section.tables is not None
    tables = section.tables
    assert tables.source == "directory"
    assert tables.bad_entries == 0
    assert tables.redundant_mismatches == 0  # qemu writes a redundant directory
    if "zeroed_grain" in options and "stream" not in options:
        assert tables.zeroed_grains == 3  # the -z writes: two grains, then one more
    if "stream" in options:
        walk = section.markers
        assert walk is not None and walk.complete and walk.eos_offset is not None
        assert walk.grains == len(grain_markers(path.read_bytes()))
        assert walk.grains == tables.allocated_grains
        assert md.allocated_size == walk.grains * GRAIN
    else:
        assert section.markers is None
        assert md.allocated_size == tables.allocated_grains * GRAIN


def test_converted_stream_of_random_data(make_image: MakeImage, tmp_path: Path) -> None:
    raw = write(tmp_path / "raw.img", os.urandom(3 * MIB) + bytes(MIB) + os.urandom(MIB))
    path = tmp_path / "conv.vmdk"
    qemu_img("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, path)
    md = deep(path)
    assert md.safe, md.findings
    assert md.allocated_size == map_allocated(path) == 4 * MIB
    assert md.vmdk is not None and md.vmdk.markers is not None
    assert md.vmdk.markers.compressed_bytes == sum(m.size for m in grain_markers(path.read_bytes()))


@pytest.mark.parametrize("layout", ["qemu", "vmware"])
def test_seekable_stream_walk_reads_markers_not_grains(
    make_image: MakeImage, tmp_path: Path, layout: str
) -> None:
    """On a seekable file the walk jumps over grain data it need not read (here 128
    incompressible 64 KiB grains); the answer is the one a pass over every byte gives."""
    path = tmp_path / "random.vmdk"
    if layout == "qemu":
        raw = write(tmp_path / "raw.img", os.urandom(8 * MIB))
        options = "subformat=streamOptimized"
        qemu_img("convert", "-f", "raw", "-O", "vmdk", "-o", options, raw, path)
    else:
        grains = {i: os.urandom(GRAIN) for i in range(128)}
        write(path, vs.build_stream(8 * MIB // SECTOR, grains).data)
    data = path.read_bytes()
    counting = CountingBytes(data)
    md = introspect(counting)
    assert md.to_dict() == deep(path).to_dict() == streamed(data, 1 << 20).to_dict()
    assert md.vmdk is not None and md.vmdk.markers is not None
    assert md.vmdk.markers.grains == 128 and md.allocated_size == 8 * MIB
    assert counting.bytes_read < len(data) // 16


def test_two_gb_extents_add_up_to_the_map(make_image: MakeImage) -> None:
    path = make_image("vmdk", "5G", "-o", "subformat=twoGbMaxExtentSparse")
    qemu_io(path, "vmdk", "write -P 1 0 128k", "write -P 2 3G 64k", "write -P 3 4G 4k")
    extents = sorted(path.parent.glob(path.stem + "-s*.vmdk"))
    assert len(extents) == 3
    total = 0
    for extent in extents:
        md = deep(extent)
        assert md.vmdk is not None and md.vmdk.tables is not None
        assert md.vmdk.tables.bad_entries == 0
        # a piece of a split disk, which qemu cannot open alone
        assert md.codes() == {"vmdk-descriptor-missing", "qemu-cannot-open"}
        assert md.allocated_size is not None
        total += md.allocated_size
    assert total == map_allocated(path)


def test_empty_qemu_stream_has_no_markers(make_image: MakeImage) -> None:
    path = make_image("vmdk", "1G", "-o", "subformat=streamOptimized")
    md = deep(path)
    assert md.safe and md.allocated_size == 0 == map_allocated(path)
    assert md.vmdk is not None and md.vmdk.markers is None  # not even an end-of-stream marker


def test_stream_without_eos_from_convert_into_existing(
    make_image: MakeImage, tmp_path: Path
) -> None:
    """``qemu-img convert -n`` into a stream writes grains but no end-of-stream marker."""
    path = make_image("vmdk", "8M", "-o", "subformat=streamOptimized")
    raw = write(tmp_path / "raw.img", os.urandom(MIB))
    qemu_img("convert", "-n", "-f", "raw", "-O", "vmdk", raw, path)
    md = deep(path)
    assert md.safe, md.findings
    assert md.vmdk is not None and md.vmdk.markers is not None
    assert md.vmdk.markers.eos_offset is None
    assert md.allocated_size == map_allocated(path) == MIB


def test_header_only_walks_nothing(sparse: Path, qemu_stream: Path) -> None:
    for path in (sparse, qemu_stream):
        md = introspect(path, deep=False)
        assert md.allocated_size is None
        assert md.vmdk is not None and md.vmdk.tables is None and md.vmdk.markers is None


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"progress_markers": True},
        {"gd_at_end": False},
        {"descriptor": vs.virtualbox_descriptor(capacity=8192 * 16)},
        {"grain_size": 16, "num_gtes_per_gt": 128},
    ],
)
def test_vmware_layouts(tmp_path: Path, options: dict[str, Any]) -> None:
    grains = {i: os.urandom(700) + bytes(300) for i in (0, 3, 130, 511, 700)}
    layout = vs.build_stream(8192 * 16, grains, **options)
    path = write(tmp_path / "vmware.vmdk", layout.data)
    md = deep(path)
    assert md.safe, md.findings
    grain_bytes = options.get("grain_size", 128) * SECTOR
    assert md.allocated_size == len(grains) * grain_bytes == map_allocated(path)
    section = md.vmdk
    assert section is not None and section.tables is not None and section.markers is not None
    assert section.tables.source == "markers"
    assert section.tables.grain_tables == len(layout.gt_offsets)
    assert section.markers.gt_markers == len(layout.gt_offsets)
    assert section.markers.eos_offset == layout.eos_offset
    assert section.markers.other_markers == (len(grains) if options.get("progress_markers") else 0)


@pytest.mark.parametrize(
    ("size", "options", "writes"),
    [
        ("40G", "subformat=streamOptimized", ("write -P 1 0 1M", "write -P 2 30G 64k")),
        ("100G", "subformat=monolithicSparse", ("write -P 1 0 1M", "write -P 2 70G 64k")),
    ],
)
def test_tables_beyond_what_a_stream_keeps_anyway(
    make_image: MakeImage, size: str, options: str, writes: tuple[str, ...]
) -> None:
    """Megabytes of grain tables past the kept head: kept because the directory asked."""
    path = make_image("vmdk", size, "-o", options)
    qemu_io(path, "vmdk", *writes)
    h = header(path.read_bytes())
    assert gt_offsets(path.read_bytes(), h.gd, gd_entries(h))[-1] > 2 * MIB
    md = deep(path)
    assert md.safe, md.findings
    assert md.allocated_size == map_allocated(path)
    assert md.vmdk is not None and md.vmdk.tables is not None
    assert md.vmdk.tables.grain_tables == gd_entries(h)


def test_disk_inside_a_streamed_ova(tmp_path: Path, qemu_stream: Path) -> None:
    from tests.test_ova import vmware_ova

    rng = random.Random(3)
    layout = vs.build_stream(8192 * 64, {i: rng.randbytes(60000) for i in range(40)})
    for disk in (layout.data, qemu_stream.read_bytes()):
        ova = vmware_ova(tmp_path, disk)
        md = deep(ova)
        assert md.ova is not None
        image = md.ova.disks[0].image
        assert image is not None and image.allocated_size is not None
        assert image.vmdk is not None and image.vmdk.markers is not None
        assert image.vmdk.markers.complete, image.findings


def test_inspecting_reader_walks_as_bytes_pass(vmware: tuple[Path, vs.StreamLayout]) -> None:
    path, _ = vmware
    data = path.read_bytes()
    for size in (1000, 4096, 65536):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        reader = InspectingReader(iter(chunks))
        assert b"".join(reader) == data
        assert reader.metadata().to_dict() == introspect(path).to_dict()


# --- hostile sparse extents -------------------------------------------------------------------


def sparse_edits(data: bytes, case: str) -> tuple[list[tuple[int, bytes]], str]:
    """Edits for one hostile case and the finding code it must raise."""
    h = header(data)
    gt = gt_offsets(data, h.gd, gd_entries(h))[0]
    rgt = gt_offsets(data, h.rgd, gd_entries(h))[0]
    grain = struct.unpack_from("<I", data, gt)[0]

    def both(index: int, value: int) -> list[tuple[int, bytes]]:
        return [(gt + 4 * index, u32(value)), (rgt + 4 * index, u32(value))]

    cases = {
        "gt-past-eof": (both(30, len(data) // SECTOR + 100), "vmdk-table-entry-out-of-range"),
        "gt-into-header": (both(30, 2), "vmdk-grain-in-metadata"),
        "gt-twice": (both(30, grain), "vmdk-claimed-twice"),
        "zeroed-without-flag": (both(30, 1), "vmdk-grain-in-metadata"),
        "gd-past-eof": ([(h.gd * SECTOR + 4, u32(1 << 30))], "vmdk-table-entry-out-of-range"),
        "gd-on-gd": ([(h.gd * SECTOR + 4, u32(h.gd))], "vmdk-claimed-twice"),
        "gd-on-other-gt": ([(h.gd * SECTOR + 4, u32(gt // SECTOR + 2))], "vmdk-claimed-twice"),
        "rgd-differs": ([(rgt + 4 * 30, u32(grain))], "vmdk-redundant-gd-mismatch"),
        "rgd-past-eof": ([(rgt + 4 * 30, u32(1 << 28))], "vmdk-table-entry-out-of-range"),
        # overHead 1: only the claim map keeps a grain off the grain directory
        "gt-onto-gd": (
            [(64, struct.pack("<Q", 1)), *both(30, h.gd)],
            "vmdk-claimed-twice",
        ),
    }
    return cases[case]


def u32(value: int) -> bytes:
    return struct.pack("<I", value)


SPARSE_CASES = [
    "gt-past-eof",
    "gt-into-header",
    "gt-twice",
    "zeroed-without-flag",
    "gd-past-eof",
    "gd-on-gd",
    "gd-on-other-gt",
    "rgd-differs",
    "rgd-past-eof",
    "gt-onto-gd",
]


@pytest.mark.parametrize("case", SPARSE_CASES)
def test_hostile_sparse_tables(sparse: Path, case: str) -> None:
    edits, code = sparse_edits(sparse.read_bytes(), case)
    path = edited(sparse, edits, f"{case}.vmdk")
    md = deep(path)
    assert code in md.codes(), md.findings
    assert md.safe == (code == "vmdk-redundant-gd-mismatch"), md.findings
    if case == "gt-past-eof":
        assert not qemu_check_ok(path)  # qemu-img check sees it too
        assert qemu_check_ok(sparse)


@pytest.mark.parametrize("case", ["gt-past-eof", "gt-twice", "gd-past-eof"])
def test_hostile_qemu_stream_tables(qemu_stream: Path, case: str) -> None:
    edits, code = sparse_edits(qemu_stream.read_bytes(), case)
    md = deep(edited(qemu_stream, edits, f"{case}.vmdk"))
    assert code in md.codes() and not md.safe, md.findings


def test_huge_directory_claim_is_cheap(make_image: MakeImage) -> None:
    path = make_image("vmdk", "1M")
    patch(path, 12, struct.pack("<Q", 1 << 40))  # capacity: a 16 Mi-entry directory
    tracemalloc.start()
    md = introspect(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "truncated" in md.codes() and not md.safe
    assert peak < 8 * MIB


def test_too_many_tables_are_not_walked(tmp_path: Path) -> None:
    """A real 8 MiB directory of 2 Mi one-entry tables: over the walk's limit, said so."""
    entries = 2 * 1024 * 1024
    gd_sectors = entries * 4 // SECTOR
    head = vs.header_bytes(
        flags=vs.FLAG_NEWLINE_TEST,
        capacity=entries,
        grain_size=1,
        num_gtes_per_gt=1,
        descriptor_offset=0,
        descriptor_size=0,
        gd_offset=1,
        overhead=1 + gd_sectors,
        compress_algorithm=0,
    )
    path = write(tmp_path / "many.vmdk", head + bytes(gd_sectors * SECTOR))
    md = introspect(path)
    assert "vmdk-tables-unchecked" in md.codes()
    assert md.allocated_size is None


def test_claim_map_over_its_limit_says_so(make_image: MakeImage) -> None:
    path = make_image("vmdk", "1M")
    qemu_io(path, "vmdk", "write -P 1 0 64k")
    os.truncate(path, 200 * 1024**3)  # a sparse 200 GiB file: too big for a sector map
    tracemalloc.start()
    md = introspect(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "vmdk-overlap-unchecked" in md.codes()
    assert md.allocated_size == GRAIN
    assert peak < 16 * MIB


# --- hostile streams --------------------------------------------------------------------------


def grain_marker_edit(
    data: bytes, index: int, lba: int | None = None, size: int | None = None
) -> list[tuple[int, bytes]]:
    marker = grain_markers(data)[index]
    edits = []
    if lba is not None:
        edits.append((marker.offset, struct.pack("<Q", lba)))
    if size is not None:
        edits.append((marker.offset + 8, struct.pack("<I", size)))
    return edits


@pytest.mark.parametrize("layout", ["qemu", "vmware"])
@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("lba-beyond-capacity", "vmdk-stream-grain-out-of-range"),
        ("lba-misaligned", "vmdk-stream-grain-misaligned"),
        ("size-absurd", "vmdk-stream-bad-marker"),
        ("garbage-after-eos", "vmdk-stream-data-after-eos"),
    ],
)
def test_hostile_markers(
    qemu_stream: Path, vmware: tuple[Path, vs.StreamLayout], layout: str, case: str, code: str
) -> None:
    path = qemu_stream if layout == "qemu" else vmware[0]
    data = path.read_bytes()
    capacity = header(data).capacity
    if case == "garbage-after-eos":
        eos = next(m for m in markers(data, header(data).overhead * SECTOR) if m.kind == 0)
        target = data[: eos.offset + SECTOR] + b"\0" * SECTOR + b"MZ" + bytes(SECTOR - 2)
    else:
        change = {
            "lba-beyond-capacity": {"lba": capacity + 128},
            "lba-misaligned": {"lba": 128 * 3 + 8},
            "size-absurd": {"size": 1 << 30},
        }[case]
        target = bytes(edited(path, grain_marker_edit(data, 2, **change), "x.vmdk").read_bytes())
    md = deep(write(path.with_name(f"{case}.vmdk"), target))
    assert code in md.codes() and not md.safe, md.findings


def test_unknown_metadata_marker(vmware: tuple[Path, vs.StreamLayout]) -> None:
    path, layout = vmware
    marker = layout.gt_offsets[0] - SECTOR
    md = deep(edited(path, [(marker + 12, struct.pack("<I", 9))], "type9.vmdk"))
    assert "vmdk-stream-bad-marker" in md.codes() and not md.safe
    assert md.allocated_size is None  # the walk did not reach the end


@pytest.mark.parametrize("layout", ["qemu", "vmware"])
def test_streams_cut_short(
    qemu_stream: Path, vmware: tuple[Path, vs.StreamLayout], layout: str
) -> None:
    path = qemu_stream if layout == "qemu" else vmware[0]
    data = path.read_bytes()
    grains = grain_markers(data)
    cuts = [grains[1].offset + 100, grains[2].offset, grains[-1].offset + 12, grains[-1].offset]
    if layout == "vmware":
        cuts += [vmware[1].gd_offset + 8, vmware[1].footer_offset or 0]
    for cut in cuts:
        md = deep(write(path.with_name(f"cut{cut}.vmdk"), data[:cut]))
        assert not md.safe, (cut, md.findings)


def test_qemu_stream_cut_on_a_marker_boundary(qemu_stream: Path) -> None:
    """No marker is cut, but the grain tables at the front name grains that are gone."""
    data = qemu_stream.read_bytes()
    cut = grain_markers(data)[-1].offset
    md = deep(write(qemu_stream.with_name("boundary.vmdk"), data[:cut]))
    assert "vmdk-table-entry-out-of-range" in md.codes()


def test_vmware_footer_directory_past_eof(vmware: tuple[Path, vs.StreamLayout]) -> None:
    path, layout = vmware
    assert layout.footer_offset is not None
    gd = layout.footer_offset + vs.HEADER_OFFSETS["gd_offset"]
    md = deep(edited(path, [(gd, struct.pack("<Q", 1 << 40))], "gdfar.vmdk"))
    assert "truncated" in md.codes() and not md.safe


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("gt-forward", "vmdk-table-entry-out-of-range"),
        ("gt-twice", "vmdk-claimed-twice"),
        ("gt-onto-gt", "vmdk-claimed-twice"),
        ("gd-names-a-grain", "vmdk-gt-outside-marker"),
        ("gd-twice", "vmdk-claimed-twice"),
        ("gt-drops-a-grain", "vmdk-stream-grain-count-mismatch"),
    ],
)
def test_hostile_vmware_tables(vmware: tuple[Path, vs.StreamLayout], case: str, code: str) -> None:
    path, layout = vmware
    gt0, gt1 = layout.gt_offsets[0], layout.gt_offsets[1]
    edits = {
        "gt-forward": [(gt0 + 4, u32(gt1 // SECTOR + 8))],
        "gt-twice": [(gt0 + 4, u32(layout.grain_offsets[0] // SECTOR))],
        "gt-onto-gt": [(gt1 + 4 * 88, u32(gt0 // SECTOR))],
        "gd-names-a-grain": [(layout.gd_offset + 4, u32(layout.grain_offsets[600] // SECTOR))],
        "gd-twice": [(layout.gd_offset + 4, u32(gt0 // SECTOR))],
        "gt-drops-a-grain": [(gt0 + 4 * 7, u32(0))],
    }[case]
    md = deep(edited(path, edits, f"{case}.vmdk"))
    assert code in md.codes() and not md.safe, md.findings


# --- mutation ---------------------------------------------------------------------------------


def seeds(tmp: Path) -> dict[str, tuple[bytes, list[tuple[int, int]]]]:
    """Seed images and the byte ranges of their tables and markers, where mutations land."""
    out: dict[str, tuple[bytes, list[tuple[int, int]]]] = {}
    for subformat in ("monolithicSparse", "streamOptimized"):
        path = tmp / f"{subformat}.vmdk"
        qemu_img("create", "-q", "-f", "vmdk", "-o", f"subformat={subformat}", path, "8M")
        qemu_io(path, "vmdk", "write -P 0x5a 0 128k", "write -P 7 3M 64k")
        data = path.read_bytes()
        h = header(data)
        areas = [(h.rgd * SECTOR, h.overhead * SECTOR - h.rgd * SECTOR)]
        if subformat == "streamOptimized":
            areas += [(m.offset, 16) for m in markers(data, h.overhead * SECTOR)]
        out[subformat] = (data, areas)
    noise = random.Random(9).randbytes(900)
    layout = vs.build_stream(8192, {0: b"\x01" * 4096, 5: b"abc", 9: noise})
    vm_areas = [(m.offset, 16) for m in markers(layout.data, 128 * SECTOR)]
    vm_areas += [(o, 2048) for o in layout.gt_offsets.values()] + [(layout.gd_offset, 16)]
    out["vmware"] = (layout.data, vm_areas)
    return out


_SEEDS: dict[str, tuple[bytes, list[tuple[int, int]]]] = {}


def seed(
    name: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[bytes, list[tuple[int, int]]]:
    if not _SEEDS:
        _SEEDS.update(seeds(tmp_path_factory.mktemp("seeds")))
    return _SEEDS[name]


@settings(max_examples=150)
@given(
    name=st.sampled_from(["monolithicSparse", "streamOptimized", "vmware"]),
    edits=st.lists(
        st.tuples(st.integers(0, 1 << 20), st.integers(0, 3), st.binary(min_size=1, max_size=4)),
        min_size=1,
        max_size=6,
    ),
    cut=st.one_of(st.none(), st.integers(0, 1 << 20)),
)
def test_mutated_tables_and_markers(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    edits: list[tuple[int, int, bytes]],
    cut: int | None,
) -> None:
    data, areas = seed(name, tmp_path_factory)
    mutant = bytearray(data)
    for pick, lane, value in edits:
        start, length = areas[pick % len(areas)]
        at = start + (pick // len(areas)) % max(1, length - len(value)) // 4 * 4 + lane
        mutant[at : at + len(value)] = value
    if cut is not None:
        del mutant[cut % len(mutant) :]
    image = bytes(mutant)
    answers = []
    for source in (io.BytesIO(image), OnlyRead(image, 4096)):
        try:
            answers.append(introspect(source).to_dict())
        except InternalParserError:
            raise
        except ImageIntrospectError as exc:
            answers.append({"error": type(exc).__name__})
    assert answers[0] == answers[1]
