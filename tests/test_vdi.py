"""VDI: real images from qemu-img, compared with qemu-img's own view, and hostile edits."""

from __future__ import annotations

import io
import json
import math
import struct
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imageintrospect import introspect
from imageintrospect.errors import FormatMismatch
from tests.support import (
    CountingFile,
    OnlyRead,
    assert_same_as_qemu,
    edit,
    forward_only,
    introspect_hostile,
    mutate_bytes,
    needs_qemu,
    qemu_img,
    qemu_info,
    qemu_io,
    qemu_refuses,
)

pytestmark = needs_qemu

MakeImage = Callable[..., Path]
MiB = 1024 * 1024


def header_fields(path: Path) -> dict[str, int]:
    """The header numbers, read with struct here (not with the module under test)."""
    blob = path.read_bytes()[:0x200]
    (signature, version, header_size, image_type) = struct.unpack_from("<IIII", blob, 0x40)
    bmap, data = struct.unpack_from("<II", blob, 0x154)
    disk_size, block_size, _extra, blocks, allocated = struct.unpack_from("<QIIII", blob, 0x170)
    return {
        "signature": signature,
        "version": version,
        "header_size": header_size,
        "image_type": image_type,
        "block_map_offset": bmap,
        "data_offset": data,
        "disk_size": disk_size,
        "block_size": block_size,
        "blocks": blocks,
        "blocks_allocated": allocated,
    }


def data_blocks(path: Path) -> int:
    """How many 1 MiB blocks hold data, according to ``qemu-img map``."""
    extents = json.loads(qemu_img("map", "--output=json", path))
    touched = set()
    for extent in extents:
        if extent["data"]:
            first = extent["start"] // MiB
            last = (extent["start"] + extent["length"] - 1) // MiB
            touched.update(range(first, last + 1))
    return len(touched)


# --- real images --------------------------------------------------------------------------------

SIZES = ["1M", "3M", "1537K", "64M", "1G", "2T"]


@pytest.mark.parametrize("size", SIZES)
def test_dynamic_images_match_qemu(make_image: MakeImage, size: str) -> None:
    path = make_image("vdi", size)
    md = assert_same_as_qemu(path)
    virtual = qemu_info(path)["virtual-size"]
    assert md.format == "vdi" and md.safe and md.findings == ()
    assert md.virtual_size == virtual
    assert md.image_size == path.stat().st_size
    section = md.vdi
    assert section is not None
    assert section.image_type == "dynamic"
    assert section.version == "1.1"
    assert section.blocks == math.ceil(virtual / MiB)
    assert section.blocks_allocated == 0
    assert section.block_size == MiB
    assert section.parent_uuid is None
    assert md.glance_properties() == {
        "disk_format": "vdi",
        "container_format": "bare",
        "virtual_size": virtual,
    }


@pytest.mark.parametrize("size", ["1M", "1537K", "16M"])
def test_static_images_match_qemu(make_image: MakeImage, size: str) -> None:
    path = make_image("vdi", size, "-o", "static=on")
    md = assert_same_as_qemu(path)
    assert md.safe and md.findings == ()
    section = md.vdi
    assert section is not None
    assert section.image_type == "fixed"
    assert section.blocks_allocated == section.blocks == math.ceil(md.virtual_size / MiB)
    # A fixed image holds every block after the data offset.
    assert section.data_offset + section.blocks * MiB == path.stat().st_size


def test_section_fields_agree_with_the_raw_header(make_image: MakeImage) -> None:
    path = make_image("vdi", "100M")
    raw = header_fields(path)
    section = introspect(path).vdi
    assert section is not None
    for name in ("header_size", "block_map_offset", "data_offset", "disk_size", "blocks"):
        assert getattr(section, name) == raw[name], name
    # qemu writes RTUUIDs in VirtualBox's byte order: the version nibble lands in place.
    assert uuid.UUID(section.uuid).version == 4
    assert uuid.UUID(section.modify_uuid).version == 4
    assert section.uuid != section.modify_uuid
    assert section.banner.startswith("<<<") and section.comment == ""


def test_written_data_counts_blocks(make_image: MakeImage) -> None:
    path = make_image("vdi", "64M")
    qemu_io(path, "vdi", "write -P 0x11 0 1536K", "write 10M 4k")
    md = assert_same_as_qemu(path)
    assert md.vdi is not None
    assert md.vdi.blocks_allocated == data_blocks(path) == 3
    assert md.safe


def test_converted_image(tmp_path: Path) -> None:
    source = tmp_path / "src.raw"
    with open(source, "wb") as f:
        f.truncate(20 * MiB)
        for block in (0, 7, 19):
            f.seek(block * MiB + 4096)
            f.write(b"data" * 1024)
    target = tmp_path / "converted.vdi"
    qemu_img("convert", "-O", "vdi", source, target)
    md = assert_same_as_qemu(target)
    assert md.vdi is not None
    assert md.vdi.blocks_allocated == data_blocks(target) == 3
    assert md.virtual_size == 20 * MiB and md.safe


def virtualbox_layout(path: Path, disk_size: int, comment: bytes) -> tuple[uuid.UUID, uuid.UUID]:
    """A dynamic VDI laid out as VirtualBox 4+ writes it (built here, no VirtualBox needed).

    VirtualBox writes the 0x190-byte "1.1 plus" header with an LCHS geometry, aligns the block
    map and the data area to 1 MiB, and stores RTUUIDs with little-endian leading fields.
    """
    create, modify = uuid.uuid4(), uuid.uuid4()
    blocks = -(-disk_size // MiB)
    data_offset = -(-(MiB + blocks * 4) // MiB) * MiB
    header = bytearray(0x200)
    header[:64] = b"<<< Oracle VM VirtualBox Disk Image >>>\n".ljust(64, b"\0")
    struct.pack_into("<IIIII", header, 0x40, 0xBEDA107F, 0x00010001, 0x190, 1, 0)
    header[0x54 : 0x54 + len(comment)] = comment
    struct.pack_into("<II", header, 0x154, MiB, data_offset)
    struct.pack_into("<IIII", header, 0x15C, 0, 0, 0, 512)
    struct.pack_into("<QIIII", header, 0x170, disk_size, MiB, 0, blocks, 0)
    header[0x188:0x198] = create.bytes_le
    header[0x198:0x1A8] = modify.bytes_le
    struct.pack_into("<IIII", header, 0x1C8, 1024, 16, 63, 512)
    with open(path, "wb") as f:
        f.write(header)
        f.seek(MiB)
        f.write(b"\xff" * (blocks * 4))
        f.truncate(data_offset)
    return create, modify


def test_virtualbox_layout(tmp_path: Path) -> None:
    path = tmp_path / "vbox.vdi"
    create, modify = virtualbox_layout(path, 500 * MiB, "commentaire é".encode())
    md = assert_same_as_qemu(path)
    assert md.safe and md.findings == ()
    section = md.vdi
    assert section is not None
    assert section.uuid == str(create) and section.modify_uuid == str(modify)
    assert section.header_size == 0x190 and section.block_map_offset == MiB
    assert section.lchs_geometry is not None
    assert (section.lchs_geometry.cylinders, section.lchs_geometry.heads) == (1024, 16)
    assert section.comment == "commentaire é"
    assert section.banner == "<<< Oracle VM VirtualBox Disk Image >>>"


# --- hostile edits ------------------------------------------------------------------------------


@pytest.fixture
def plain(make_image: MakeImage) -> Path:
    return make_image("vdi", "64M")


# (offset, struct format, value, finding code, does qemu-img info refuse it too?)
@pytest.mark.parametrize(
    ("offset", "fmt", "value", "code", "qemu_refuses_too"),
    [
        (0x44, "<I", 0x00010000, "vdi-unsupported-version", True),
        (0x44, "<I", 0x00020001, "vdi-unsupported-version", True),
        (0x48, "<I", 0x100, "vdi-bad-header", False),  # VirtualBox refuses it
        (0x4C, "<I", 9, "vdi-bad-header", False),  # qemu ignores the type
        (0x4C, "<I", 3, "vdi-differencing", False),  # undo image
        (0x4C, "<I", 4, "vdi-differencing", False),  # differencing image
        (0x154, "<I", 0x201, "vdi-bad-header", True),  # unaligned block map
        (0x154, "<I", 0, "vdi-bad-header", False),  # block map over the header
        (0x154, "<I", 0x7FFF0000, "truncated", False),  # block map past the end
        (0x158, "<I", 0x401, "vdi-bad-header", True),  # unaligned data
        (0x158, "<I", 0x200, "vdi-bad-header", False),  # data over the block map
        (0x168, "<I", 4096, "vdi-bad-header", True),  # sector size
        (0x170, "<Q", 1 << 60, "vdi-bad-header", True),  # beyond qemu's maximum
        (0x170, "<Q", 65 * MiB, "vdi-bad-header", True),  # more than the blocks hold
        (0x178, "<I", 0, "vdi-bad-header", True),
        (0x178, "<I", 3000, "vdi-bad-header", True),  # not a power of two
        (0x17C, "<I", 512, "vdi-bad-header", False),  # block_extra: readers disagree
        (0x180, "<I", 0, "vdi-bad-header", True),
        (0x180, "<I", 0x40000000, "vdi-bad-header", True),  # beyond qemu's block limit
        (0x184, "<I", 65, "vdi-bad-header", False),  # more allocated than exist
        (0x184, "<I", 2, "truncated", False),  # allocated blocks missing from the file
        (0x1A8, "<16s", b"\x11" * 16, "vdi-differencing", True),  # parent (link) UUID
        (0x1B8, "<16s", b"\x22" * 16, "vdi-differencing", True),  # parent modification
    ],
)
def test_hostile_header_fields(
    plain: Path, offset: int, fmt: str, value: Any, code: str, qemu_refuses_too: bool
) -> None:
    edit(plain, offset, fmt, value)
    md = introspect(plain)
    assert md.format == "vdi"
    assert code in md.codes(), md.findings
    assert not md.safe
    assert qemu_refuses(plain) == qemu_refuses_too


def test_differencing_names_its_parent(plain: Path) -> None:
    parent = uuid.UUID("0f8fad5b-d9cb-469f-a165-70867728950e")
    edit(plain, 0x4C, "<I", 4)
    edit(plain, 0x1A8, "<16s", parent.bytes_le)
    md = introspect(plain)
    assert md.vdi is not None
    assert md.vdi.image_type == "differencing"
    assert md.vdi.parent_uuid == str(parent)
    finding = next(f for f in md.findings if f.code == "vdi-differencing")
    assert str(parent) in finding.message and finding.severity == "unsafe"


def test_block_size_other_than_1m_is_refused_like_qemu(plain: Path) -> None:
    # 2 MiB blocks, half as many: a valid VirtualBox layout that qemu will not open.
    edit(plain, 0x178, "<I", 2 * MiB)
    edit(plain, 0x180, "<I", 32)
    md = introspect(plain)
    # VirtualBox would open it, qemu does not: a consumer running qemu cannot use it.
    assert md.codes() == {"vdi-unsupported-block-size", "qemu-cannot-open"}
    assert not md.safe
    assert qemu_refuses(plain)


def test_odd_disk_size_is_rounded_like_qemu(plain: Path) -> None:
    edit(plain, 0x170, "<Q", 64 * MiB - 100)  # VBoxManage convertfromraw writes such sizes
    md = assert_same_as_qemu(plain)
    assert md.vdi is not None and md.vdi.disk_size == 64 * MiB - 100
    assert md.virtual_size == 64 * MiB and md.safe


def test_version_zero_is_not_parsed(plain: Path) -> None:
    edit(plain, 0x44, "<I", 0)
    md = introspect(plain)
    assert md.format == "vdi" and md.vdi is None and md.virtual_size is None
    assert md.codes() == {"vdi-unsupported-version", "qemu-cannot-open"}
    assert qemu_refuses(plain)


def test_truncated_static_image(make_image: MakeImage, tmp_path: Path) -> None:
    path = make_image("vdi", "8M", "-o", "static=on")
    cut = tmp_path / "cut.vdi"
    cut.write_bytes(path.read_bytes()[: 3 * MiB])
    md = introspect(cut)
    assert "truncated" in md.codes() and not md.safe


@pytest.mark.parametrize("length", [0x44, 0x100, 0x1C7, 0x1C8, 0x1FF])
def test_truncated_header(plain: Path, tmp_path: Path, length: int) -> None:
    cut = tmp_path / "cut.vdi"
    cut.write_bytes(plain.read_bytes()[:length])
    md = introspect(cut)
    assert md.format == "vdi"
    assert "truncated" in md.codes() and not md.safe


def test_signature_elsewhere_is_not_vdi(plain: Path) -> None:
    # qemu and VirtualBox look for the signature at 0x40 only; the banner text means nothing.
    blob = plain.read_bytes()
    moved = blob[:0x40] + b"\0\0\0\0" + blob[0x44:0x100] + blob[0x40:0x44] + blob[0x104:]
    plain.write_bytes(moved)
    assert introspect(plain).format == "raw"
    assert qemu_info(plain)["format"] == "raw"


def test_expected_format(plain: Path) -> None:
    assert introspect(plain, expected_format="vdi").format == "vdi"
    with pytest.raises(FormatMismatch):
        introspect(plain, expected_format="qcow2")
    with pytest.raises(FormatMismatch):
        introspect(plain, expected_format="raw")


# --- access patterns ----------------------------------------------------------------------------


def test_header_only_reads_little(make_image: MakeImage) -> None:
    path = make_image("vdi", "64M", "-o", "static=on")
    with CountingFile(path) as f:
        md = introspect(f, deep=False)
        assert f.bytes_read <= 1024 * 1024
    assert md.virtual_size == 64 * MiB and md.safe


@pytest.mark.parametrize("chunk", [1, 511, 65536])
@pytest.mark.parametrize("static", ["off", "on"])
def test_stream_and_seekable_agree(make_image: MakeImage, chunk: int, static: str) -> None:
    path = make_image("vdi", "3M", "-o", f"static={static}")
    qemu_io(path, "vdi", "write 1M 4k")
    assert introspect(forward_only(path, chunk)).to_dict() == introspect(path).to_dict()


def test_hostile_stream_agrees(plain: Path) -> None:
    edit(plain, 0x4C, "<I", 4)
    edit(plain, 0x184, "<I", 70)
    assert introspect(forward_only(plain)).to_dict() == introspect(plain).to_dict()


def test_to_dict_is_json(plain: Path) -> None:
    data = json.loads(json.dumps(introspect(plain).to_dict()))
    assert data["vdi"]["image_type"] == "dynamic"
    assert data["vdi"]["geometry"]["sector_size"] == 512


# --- mutation fuzzing ---------------------------------------------------------------------------


class Seeds(list[bytes]):
    """Seed images; a short repr keeps hypothesis' failure reports readable."""

    def __repr__(self) -> str:
        return f"<{len(self)} seed images>"


@pytest.fixture(scope="module")
def seed_images(tmp_path_factory: pytest.TempPathFactory) -> Seeds:
    directory = tmp_path_factory.mktemp("vdi-seeds")
    seeds = []
    for index, options in enumerate(["static=off", "static=on"]):
        path = directory / f"s{index}.vdi"
        qemu_img("create", "-q", "-f", "vdi", "-o", options, path, "4M")
        qemu_io(path, "vdi", "write 2M 4k")
        seeds.append(path.read_bytes())
    return Seeds(seeds)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_headers_never_escape(seed_images: Seeds, data: st.DataObject) -> None:
    blob = mutate_bytes(data, data.draw(st.sampled_from(seed_images)), st.integers(0x44, 0x1FF))
    for source in (io.BytesIO(bytes(blob)), OnlyRead(bytes(blob))):
        md = introspect_hostile(source)
        if md is None:
            continue
