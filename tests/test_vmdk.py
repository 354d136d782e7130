"""VMDK: real images from qemu-img, VMware-layout streams, hand-written descriptors, hostile edits.

Expected values come from what was asked of qemu-img (subformat, adapter type, options) or
from ``qemu-img info --output=json`` itself, never from our own earlier output.
"""

from __future__ import annotations

import io
import json
import random
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from imageintrospect import ImageIntrospectError, Metadata, introspect
from imageintrospect.errors import FormatMismatch
from imageintrospect.formats import vmdk
from tests.support import (
    CountingBytes,
    OnlyRead,
    forward_only,
    needs_qemu,
    patch,
    qemu_img,
    qemu_info,
    qemu_io,
    run,
)
from tests.support import vmware_stream as vs

pytestmark = needs_qemu

MakeImage = Callable[..., Path]
SECTOR = 512

SUBFORMATS = [
    "monolithicSparse",
    "monolithicFlat",
    "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
    "streamOptimized",
]
ADAPTERS = ["ide", "buslogic", "lsilogic", "legacyESX"]
GLANCE_ADAPTERS = {"ide": "ide", "buslogic": "busLogic", "lsilogic": "lsiLogic"}
GLANCE_DISKTYPES = {"monolithicSparse": "sparse", "streamOptimized": "streamOptimized"}
SELF_CONTAINED = {"monolithicSparse", "streamOptimized"}


# --- helpers -------------------------------------------------------------------------------


def ours_as_qemu(path: Path, md: Metadata | None = None) -> dict[str, Any]:
    """Our ``qemu-img info`` view: the module's keys plus the keys every image has."""
    md = md or introspect(path)
    ours: dict[str, Any] = {
        "filename": str(path),
        "virtual-size": md.virtual_size,
        "dirty-flag": False,
    }
    ours.update(vmdk.qemu_info(md, filename=str(path)))
    return ours


def theirs(path: Path) -> dict[str, Any]:
    info = qemu_info(path)
    info.pop("actual-size", None)
    return info


def drop_unknowable_cluster_sizes(info: dict[str, Any]) -> dict[str, Any]:
    """A descriptor's SPARSE extents keep their grain size in files we never open."""
    info.pop("cluster-size", None)
    for extent in info["format-specific"]["data"]["extents"]:
        if extent["format"] in ("SPARSE", "VMFSSPARSE", "SESPARSE"):
            extent.pop("cluster-size", None)
    return info


def assert_same_as_qemu(path: Path) -> Metadata:
    md = introspect(path)
    expected = theirs(path)
    ours = ours_as_qemu(path, md)
    assert md.vmdk is not None and md.vmdk.qemu is not None
    if md.vmdk.header_kind == "descriptor":
        drop_unknowable_cluster_sizes(expected)
        unknown = [e for e in md.vmdk.qemu.extents if not e.flat]
        assert all(e.cluster_size is None for e in unknown)
    assert ours == expected
    assert md.vmdk.qemu.opens
    return md


def descriptor_text(path: Path) -> str:
    """The descriptor exactly as qemu-img wrote it (text file, or sector 1 of a sparse file)."""
    data = path.read_bytes()
    if data[:4] == b"KDMV":
        offset, size = struct.unpack_from("<QQ", data, 28)
        data = data[offset * SECTOR : (offset + size) * SECTOR]
    return data.split(b"\0", 1)[0].decode()


def ddb(text: str, key: str) -> str:
    match = re.search(rf'^ddb\.{re.escape(key)} = "(.*)"$', text, re.M)
    assert match is not None, key
    return match[1]


def assert_stream_agrees(path: Path) -> None:
    seekable = introspect(path).to_dict()
    streamed = introspect(forward_only(path)).to_dict()
    assert streamed == seekable


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def header_field(path: Path, name: str) -> int:
    fmt = "<" + dict(vs.HEADER_FIELDS)[name]
    value: int = struct.unpack_from(fmt, path.read_bytes(), vs.HEADER_OFFSETS[name])[0]
    return value


def set_header_field(path: Path, name: str, value: int, base: int = 0) -> None:
    fmt = "<" + dict(vs.HEADER_FIELDS)[name]
    patch(path, base + vs.HEADER_OFFSETS[name], struct.pack(fmt, value))


def replace_in_file(path: Path, old: bytes, new: bytes) -> None:
    """Swap text in place, padding with spaces or NULs so no offset moves."""
    data = path.read_bytes()
    assert old in data
    if len(new) < len(old):
        new = new + b" " * (len(old) - len(new))
    elif len(new) > len(old):
        start = data.index(old)
        end = data.index(b"\0", start)
        grown = data[start:end].replace(old, new, 1)
        data = data[:start] + grown + data[start + len(grown) :]
        path.write_bytes(data)
        return
    path.write_bytes(data.replace(old, new, 1))


def codes(md: Metadata) -> set[str]:
    return md.codes()


# --- real images: every subformat × adapter ------------------------------------------------


@pytest.mark.parametrize("subformat", SUBFORMATS)
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_subformat_and_adapter_match_qemu(
    make_image: MakeImage, subformat: str, adapter: str
) -> None:
    path = make_image("vmdk", "3M", "-o", f"subformat={subformat},adapter_type={adapter}")
    md = assert_same_as_qemu(path)
    section = md.vmdk
    assert section is not None
    text = descriptor_text(path)
    assert section.create_type == subformat
    assert section.adapter_type == adapter  # exactly as written, case kept
    assert section.ddb["ddb.adapterType"] == adapter
    assert section.hw_version == ddb(text, "virtualHWVersion")
    assert section.tools_version == ddb(text, "toolsVersion")
    assert section.geometry is not None
    assert section.geometry.heads == int(ddb(text, "geometry.heads"))
    assert section.geometry.cylinders == int(ddb(text, "geometry.cylinders"))
    assert section.cid == re.search(r"^CID=(\w+)$", text, re.M)[1]  # type: ignore[index]
    assert section.parent_cid == "ffffffff"
    assert md.virtual_size == 3 * 1024 * 1024
    props = md.glance_properties()
    assert props.get("vmware_adaptertype") == GLANCE_ADAPTERS.get(adapter)
    assert props.get("vmware_disktype") == GLANCE_DISKTYPES.get(subformat)
    if subformat in SELF_CONTAINED:
        assert md.safe, md.findings
        assert section.header_kind == "sparse"
        assert section.compressed == (subformat == "streamOptimized")
        assert section.grain_size == 65536
    else:
        assert not md.safe
        assert section.header_kind == "descriptor"
        assert {"vmdk-not-self-contained", "vmdk-external-extent"} <= codes(md)
        names = [line.split('"')[1] for line in text.splitlines() if line.startswith("RW ")]
        assert [e.file for e in section.extents] == names
        for name in names:
            assert any(name in f.message for f in md.findings if f.code == "vmdk-external-extent")
    assert_stream_agrees(path)


@pytest.mark.parametrize(
    ("options", "check"),
    [
        ("hwversion=10", lambda s, h: s.hw_version == "10"),
        ("compat6=on", lambda s, h: s.hw_version == "6"),
        ("toolsversion=10346", lambda s, h: s.tools_version == "10346"),
        (
            "zeroed_grain=on",
            lambda s, h: h.version == 2 and h.flags & vmdk.FLAG_ZEROED_GRAIN,
        ),
        ("subformat=streamOptimized,zeroed_grain=on", lambda s, h: s.compressed),
        ("subformat=streamOptimized,hwversion=14", lambda s, h: s.hw_version == "14"),
    ],
)
def test_options_match_qemu(make_image: MakeImage, options: str, check: Any) -> None:
    path = make_image("vmdk", "64M", "-o", options)
    md = assert_same_as_qemu(path)
    assert md.vmdk is not None and md.vmdk.header is not None
    assert check(md.vmdk, md.vmdk.header)
    assert md.safe
    assert_stream_agrees(path)


@pytest.mark.parametrize("subformat", ["monolithicSparse", "streamOptimized"])
def test_written_data_matches_qemu(make_image: MakeImage, subformat: str) -> None:
    path = make_image("vmdk", "16M", "-o", f"subformat={subformat}")
    qemu_io(path, "vmdk", "write -P 0xab 0 1M", "write -P 0x11 9M 64k")
    md = assert_same_as_qemu(path)
    assert md.safe, md.findings
    assert md.vmdk is not None
    if subformat == "streamOptimized":
        assert md.vmdk.stream is not None and md.vmdk.stream.layout == "qemu"
    assert_stream_agrees(path)


def test_large_sparse_matches_qemu(make_image: MakeImage) -> None:
    path = make_image("vmdk", "3T")
    md = assert_same_as_qemu(path)
    assert md.virtual_size == 3 * 1024**4
    assert md.safe


def test_child_image_reports_parent(make_image: MakeImage, tmp_path: Path) -> None:
    make_image("vmdk", "16M", name="base.vmdk")
    child = tmp_path / "child.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", child)
    md = assert_same_as_qemu(child)
    assert not md.safe
    assert {"vmdk-parent-file", "vmdk-parent-cid"} <= codes(md)
    assert md.vmdk is not None and md.vmdk.parent_file == "base.vmdk"
    assert md.vmdk.parent_cid != "ffffffff"
    info = ours_as_qemu(child)
    assert info["backing-filename-format"] == "vmdk"


def test_split_extent_piece_alone(make_image: MakeImage, tmp_path: Path) -> None:
    make_image("vmdk", "3G", "-o", "subformat=twoGbMaxExtentSparse", name="split.vmdk")
    piece = tmp_path / "split-s001.vmdk"
    md = introspect(piece)
    assert md.format == "vmdk"
    assert "vmdk-descriptor-missing" in codes(md)
    assert md.virtual_size == 2 * 1024**3
    with pytest.raises(AssertionError):
        qemu_info(piece)  # qemu finds no CID in it either
    assert md.vmdk is not None and md.vmdk.qemu is not None and not md.vmdk.qemu.opens
    assert "qemu-cannot-open" in codes(md) and not md.safe


def test_zero_size_image(make_image: MakeImage) -> None:
    path = make_image("vmdk", "0")
    md = introspect(path)
    assert md.virtual_size == 0
    with pytest.raises(AssertionError, match="Unsupported image type"):
        qemu_info(path)  # qemu reads a capacity-0 sparse file as a descriptor file
    # qemu cannot use the image it made itself, so it does not pass the gate.
    assert md.codes() == {"qemu-cannot-open"} and not md.safe
    assert "Unsupported image type 'monolithicSparse'" in md.findings[0].message
    assert md.vmdk is not None and md.vmdk.qemu is not None and not md.vmdk.qemu.opens


def test_expected_format_mismatch(make_image: MakeImage) -> None:
    path = make_image("vmdk", "1M")
    with pytest.raises(FormatMismatch):
        introspect(path, expected_format="qcow2")
    assert introspect(path, expected_format="vmdk").format == "vmdk"


def test_relative_path_given_builds_extent_names_like_qemu(
    make_image: MakeImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    qemu_img("create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", sub / "f.vmdk", "1M")
    monkeypatch.chdir(tmp_path)
    given = Path("./sub/../sub/f.vmdk")
    assert ours_as_qemu(given) == theirs(given)


# --- VMware and VirtualBox stream layouts ----------------------------------------------------


def grains() -> dict[int, bytes]:
    return {0: b"\xab" * 65536, 3: b"hello" * 100, 700: bytes(range(256)) * 256}


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"gd_at_end": False},
        {"progress_markers": True},
        {"grain_size": 16},
        {"num_gtes_per_gt": 128},
    ],
)
def test_vmware_stream_matches_qemu(tmp_path: Path, options: dict[str, Any]) -> None:
    layout = vs.build_stream(8192 * 16, grains(), **options)
    path = write(tmp_path / "vmware.vmdk", layout.data)
    md = assert_same_as_qemu(path)
    assert md.safe, md.findings
    section = md.vmdk
    assert section is not None and section.stream is not None
    assert section.stream.layout == "vmware"
    assert section.stream.footer_offset == layout.footer_offset
    assert section.stream.eos_offset == layout.eos_offset
    assert section.gd_offset == layout.gd_offset
    assert section.extents[0].access == "RDONLY"
    assert section.create_type == "streamOptimized"
    assert section.adapter_type == "lsilogic"
    assert section.ddb["ddb.uuid"].startswith("60 00 C2")
    assert md.glance_properties()["vmware_disktype"] == "streamOptimized"
    assert md.glance_properties()["vmware_adaptertype"] == "lsiLogic"
    # qemu reads our grains back: the builder's layout is a real stream
    raw = tmp_path / "back.raw"
    qemu_img("convert", "-O", "raw", path, raw)
    grain_bytes = options.get("grain_size", 128) * SECTOR
    assert raw.read_bytes()[:grain_bytes] == grains()[0][:grain_bytes]
    assert_stream_agrees(path)


def test_virtualbox_stream(tmp_path: Path) -> None:
    capacity = 4096
    text = vs.virtualbox_descriptor(capacity=capacity, adapter_type="ide")
    path = write(tmp_path / "vbox.vmdk", vs.build_stream(capacity, {1: b"x"}, descriptor=text).data)
    md = assert_same_as_qemu(path)
    assert md.safe
    assert md.vmdk is not None
    assert md.vmdk.ddb["ddb.uuid.image"] == "2f8e2a4c-6b1d-4c3e-9f0a-1b2c3d4e5f60"
    assert md.vmdk.ddb["ddb.uuid.parent"] == "00000000-0000-0000-0000-000000000000"
    assert md.vmdk.adapter_type == "ide"
    assert md.vmdk.hw_version == "4"
    assert_stream_agrees(path)


def incompressible(count: int, seed: int = 7) -> dict[int, bytes]:
    rng = random.Random(seed)
    return {index * 3: rng.randbytes(65536) for index in range(count)}


def test_large_vmware_stream_read_as_a_stream(tmp_path: Path) -> None:
    """Larger than what a stream keeps of its head and tail: the footer is found all the same."""
    layout = vs.build_stream(8192 * 64, incompressible(64))
    assert layout.size > 4 * 1024 * 1024
    path = write(tmp_path / "big.vmdk", layout.data)
    md = assert_same_as_qemu(path)
    assert md.safe and md.vmdk is not None and md.vmdk.stream is not None
    assert md.vmdk.stream.footer_offset == layout.footer_offset
    assert_stream_agrees(path)


def test_large_qemu_stream_read_as_a_stream(make_image: MakeImage) -> None:
    path = make_image("vmdk", "64M", "-o", "subformat=streamOptimized")
    noise = path.with_suffix(".noise")
    noise.write_bytes(random.Random(3).randbytes(6 * 1024 * 1024))
    run("qemu-img", "convert", "-n", "-f", "raw", "-O", "vmdk", noise, path)
    assert path.stat().st_size > 6 * 1024 * 1024
    md = assert_same_as_qemu(path)
    assert md.safe
    assert_stream_agrees(path)


def test_empty_vmware_stream(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.vmdk", vs.build_stream(2048).data)
    md = assert_same_as_qemu(path)
    assert md.safe


def test_trailing_zeros_after_eos_are_tolerated(tmp_path: Path) -> None:
    layout = vs.build_stream(8192, {0: b"a"}, trailing_zeros=4096)
    path = write(tmp_path / "padded.vmdk", layout.data)
    md = introspect(path)
    assert "vmdk-stream-trailing-zeros" in codes(md)
    # The stream walk tolerates the padding, but qemu looks for the footer exactly 1536
    # bytes before the end and refuses the image: a consumer running qemu cannot use it.
    with pytest.raises(AssertionError, match="Invalid footer"):
        qemu_info(path)
    assert codes(md) == {"vmdk-stream-trailing-zeros", "qemu-cannot-open"} and not md.safe
    assert md.vmdk is not None and md.vmdk.stream is not None
    assert md.vmdk.stream.footer_offset == layout.footer_offset
    assert md.vmdk.stream.trailing_zero_bytes == 4096
    with pytest.raises(AssertionError, match="Invalid footer"):
        qemu_info(path)
    assert md.vmdk.qemu is not None and not md.vmdk.qemu.opens
    assert_stream_agrees(path)


def test_footer_disagreeing_with_header(tmp_path: Path) -> None:
    layout = vs.build_stream(8192, {0: b"a"}, footer_header={"capacity": 8192 * 64})
    path = write(tmp_path / "liar.vmdk", layout.data)
    md = introspect(path)
    assert "vmdk-footer-mismatch" in codes(md) and not md.safe
    # qemu believes the footer: so does virtual_size, and it is what qemu reports
    assert md.virtual_size == theirs(path)["virtual-size"] == 8192 * 64 * SECTOR
    assert_stream_agrees(path)


@pytest.mark.parametrize("field", ["grain_size", "num_gtes_per_gt", "compress_algorithm"])
def test_footer_field_mismatch(tmp_path: Path, field: str) -> None:
    value = {"grain_size": 64, "num_gtes_per_gt": 256, "compress_algorithm": 0}[field]
    layout = vs.build_stream(8192, {0: b"a"}, footer_header={field: value})
    md = introspect(write(tmp_path / "x.vmdk", layout.data))
    assert "vmdk-footer-mismatch" in codes(md)
    assert any(field in f.message for f in md.findings)


def test_footer_with_bad_magic(tmp_path: Path) -> None:
    layout = vs.build_stream(8192, {0: b"a"})
    path = write(tmp_path / "badfooter.vmdk", layout.data)
    assert layout.footer_offset is not None
    patch(path, layout.footer_offset, b"XXXX")
    md = introspect(path)
    assert "vmdk-stream-footer-invalid" in codes(md) and not md.safe
    with pytest.raises(AssertionError, match="Invalid footer"):
        qemu_info(path)


def test_footer_missing(tmp_path: Path) -> None:
    layout = vs.build_stream(8192, {0: b"a"}, footer=False, eos=False)
    md = introspect(write(tmp_path / "nofooter.vmdk", layout.data))
    assert "vmdk-stream-footer-missing" in codes(md) and not md.safe


def test_footer_without_eos(tmp_path: Path) -> None:
    layout = vs.build_stream(8192, {0: b"a"}, eos=False)
    md = introspect(write(tmp_path / "noeos.vmdk", layout.data))
    assert "truncated" in codes(md) and not md.safe


def test_stream_cut_at_several_points(tmp_path: Path) -> None:
    layout = vs.build_stream(8192 * 16, grains())
    size = layout.size
    assert layout.footer_offset is not None
    cuts = [600, 1000, 5000, 70000, size // 2, layout.gd_offset + 4, layout.footer_offset]
    cuts += [size - 512, size - 100, size - 1]
    expected = {
        "truncated",
        "vmdk-stream-footer-missing",
        "vmdk-stream-footer-invalid",
        "vmdk-descriptor-out-of-range",
    }
    for cut in cuts:
        path = write(tmp_path / f"cut{cut}.vmdk", layout.data[:cut])
        md = introspect(path)
        assert not md.safe, (cut, md.findings)
        assert codes(md) & expected, (cut, md.findings)
        assert introspect(OnlyRead(layout.data[:cut])).to_dict() == md.to_dict()


def test_qemu_stream_cut_before_tables(make_image: MakeImage) -> None:
    path = make_image("vmdk", "64M", "-o", "subformat=streamOptimized")
    gd = header_field(path, "gd_offset")
    data = path.read_bytes()
    path.write_bytes(data[: gd * SECTOR + 8])
    md = introspect(path)
    assert "truncated" in codes(md) and not md.safe


# --- hostile sparse headers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("grain_size", 0),
        ("grain_size", 3),
        ("grain_size", 1 << 40),
        ("num_gtes_per_gt", 0),
        ("num_gtes_per_gt", 0xFFFFFFFF),
        ("capacity", 1 << 63),
        ("version", 4),
    ],
)
def test_bad_header_values(make_image: MakeImage, name: str, value: int) -> None:
    path = make_image("vmdk", "1M")
    set_header_field(path, name, value)
    md = introspect(path)
    assert "vmdk-bad-header" in codes(md) and not md.safe
    assert md.vmdk is not None and md.vmdk.qemu is not None
    assert md.to_dict()
    if name == "grain_size" and value == 3:
        assert ours_as_qemu(path) == theirs(path)  # qemu does not insist on a power of two
    else:
        with pytest.raises(AssertionError):
            qemu_info(path)  # qemu refuses these too
    if name == "capacity":
        assert md.virtual_size is None


def test_capacity_whose_grain_directory_does_not_fit(make_image: MakeImage) -> None:
    path = make_image("vmdk", "1M")
    set_header_field(path, "capacity", 1 << 40)
    md = introspect(path)
    assert "truncated" in codes(md) and not md.safe


@pytest.mark.parametrize("algorithm", [2, 0xFFFF])
def test_unknown_compression(make_image: MakeImage, algorithm: int) -> None:
    path = make_image("vmdk", "1M", "-o", "subformat=streamOptimized")
    set_header_field(path, "compress_algorithm", algorithm)
    md = introspect(path)
    assert "vmdk-unknown-compression" in codes(md) and not md.safe


def test_gd_offset_past_end(make_image: MakeImage) -> None:
    path = make_image("vmdk", "1M")
    set_header_field(path, "gd_offset", 1 << 30)
    md = introspect(path)
    assert "truncated" in codes(md) and not md.safe


@pytest.mark.parametrize(
    ("offset", "size", "code"),
    [
        (1 << 40, 20, "vmdk-descriptor-out-of-range"),
        (1, (1 << 30) // SECTOR, "vmdk-descriptor-too-large"),
        (0, 20, "vmdk-descriptor-out-of-range"),
        (127, 20, "vmdk-descriptor-out-of-range"),
    ],
)
def test_descriptor_placement(make_image: MakeImage, offset: int, size: int, code: str) -> None:
    path = make_image("vmdk", "1M")
    set_header_field(path, "descriptor_offset", offset)
    set_header_field(path, "descriptor_size", size)
    md = introspect(path)
    assert code in codes(md) and not md.safe
    assert md.vmdk is not None and md.vmdk.create_type is None  # not read


def test_newline_check_damaged(make_image: MakeImage) -> None:
    path = make_image("vmdk", "1M")
    patch(path, vs.HEADER_OFFSETS["check_bytes"], b"\n \n\n")
    assert "vmdk-newline-check-failed" in codes(introspect(path))


# --- hostile embedded descriptors --------------------------------------------------------


@pytest.mark.parametrize(
    ("new_name", "code"),
    [
        ("/etc/passwd", "vmdk-extent-path-escape"),
        ("../x.vmdk", "vmdk-extent-path-escape"),
        ("sub/x.vmdk", "vmdk-external-extent"),
    ],
)
def test_sparse_descriptor_naming_other_files(
    make_image: MakeImage, new_name: str, code: str
) -> None:
    path = make_image("vmdk", "1M", name="disk.vmdk")
    replace_in_file(
        path,
        b'RW 2048 SPARSE "disk.vmdk"',
        f'RW 2048 SPARSE "disk.vmdk"\nRW 2048 FLAT "{new_name}" 0'.encode(),
    )
    md = introspect(path)
    assert code in codes(md) and not md.safe
    assert any(new_name in f.message for f in md.findings if f.code == code)


def test_sparse_descriptor_self_extent_with_path(make_image: MakeImage) -> None:
    path = make_image("vmdk", "1M", name="disk.vmdk")
    replace_in_file(path, b'"disk.vmdk"', b'"/etc/passwd"')
    md = introspect(path)
    assert "vmdk-extent-path-escape" in codes(md)


def test_parent_hint_and_cid_edits(make_image: MakeImage) -> None:
    path = make_image("vmdk", "1M")
    replace_in_file(path, b"parentCID=ffffffff", b"parentCID=12345678")
    md = introspect(path)
    assert "vmdk-parent-cid" in codes(md)
    assert "vmdk-parent-file" not in codes(md)
    replace_in_file(
        path,
        b'createType="monolithicSparse"',
        b'createType="monolithicSparse"\nparentFileNameHint="/srv/base.vmdk"',
    )
    md = introspect(path)
    assert md.vmdk is not None and md.vmdk.parent_file == "/srv/base.vmdk"
    assert ours_as_qemu(path) == theirs(path)  # qemu reports the same backing file
    assert "vmdk-parent-file" in codes(md)


def test_parent_hint_hidden_in_a_comment_is_what_qemu_reads(make_image: MakeImage) -> None:
    path = make_image("vmdk", "1M")
    replace_in_file(
        path, b"# Disk DescriptorFile", b'# Disk DescriptorFile parentFileNameHint="/etc/shadow"'
    )
    md = introspect(path)
    assert md.vmdk is not None and md.vmdk.parent_file is None  # not a descriptor line ...
    assert theirs(path)["backing-filename"] == "/etc/shadow"  # ... but qemu finds it
    assert any("/etc/shadow" in f.message for f in md.findings if f.code == "vmdk-parent-file")
    assert ours_as_qemu(path) == theirs(path)


def test_capacity_zero_sparse_file_is_a_descriptor_for_qemu(make_image: MakeImage) -> None:
    path = make_image("vmdk", "1M")
    set_header_field(path, "capacity", 0)
    replace_in_file(path, b'createType="monolithicSparse"', b'createType="monolithicFlat"')
    data = path.read_bytes()
    path.write_bytes(re.sub(rb'RW 2048 SPARSE "[^"]*"', b'RW 2048 FLAT "/etc/hostname" 0', data))
    md = introspect(path)
    assert md.vmdk is not None and md.vmdk.qemu is not None
    assert [e.file for e in md.vmdk.qemu.extents] == ["/etc/hostname"]
    assert "vmdk-extent-path-escape" in codes(md) and not md.safe
    if Path("/etc/hostname").exists():  # qemu really opens it
        extents = theirs(path)["format-specific"]["data"]["extents"]
        assert extents[0]["filename"] == "/etc/hostname"


def test_duplicate_create_type(make_image: MakeImage) -> None:
    path = make_image("vmdk", "1M")
    replace_in_file(
        path,
        b'createType="monolithicSparse"',
        b'createType="monolithicSparse"\ncreateType="vmfs"',
    )
    md = introspect(path)
    assert "vmdk-descriptor-duplicate-key" in codes(md) and not md.safe
    assert md.vmdk is not None and md.vmdk.create_type == "monolithicSparse"


def test_create_type_claims_stream_but_header_is_not(make_image: MakeImage) -> None:
    path = make_image("vmdk", "1M")
    replace_in_file(path, b'createType="monolithicSparse"', b'createType="streamOptimized"')
    md = introspect(path)
    assert "vmdk-create-type-mismatch" in codes(md)
    assert theirs(path)["format-specific"]["data"]["create-type"] == "monolithicSparse"
    assert ours_as_qemu(path) == theirs(path)


@pytest.mark.parametrize("create_type", ["vmfs", "twoGbMaxExtentFlat", "custom", "fullDevice"])
def test_sparse_file_with_foreign_create_type(make_image: MakeImage, create_type: str) -> None:
    path = make_image("vmdk", "1M")
    replace_in_file(path, b'createType="monolithicSparse"', f'createType="{create_type}"'.encode())
    md = introspect(path)
    assert "vmdk-not-self-contained" in codes(md) and not md.safe


def test_unknown_create_type_is_a_warning(make_image: MakeImage) -> None:
    path = make_image("vmdk", "1M")
    replace_in_file(path, b'createType="monolithicSparse"', b'createType="hyperSparse"')
    md = introspect(path)
    assert "vmdk-unknown-create-type" in codes(md)
    assert md.safe


# --- COWD and seSparse -------------------------------------------------------------------


def cowd(parent: str | None, sectors: int = 2048) -> bytes:
    flags = 0 if parent is not None else 1
    header = struct.pack("<4s7I", b"COWD", 1, flags, sectors, 1, 4, 1, 5)
    union = (
        (parent or "").encode().ljust(1024, b"\0")
        if parent is not None
        else (struct.pack("<3I", 2, 16, 63).ljust(1024, b"\0"))
    )
    header += union + struct.pack("<II", 0, 1) + b"disk".ljust(60, b"\0") + bytes(512)
    header = header.ljust(2048, b"\0")
    return header + bytes(4 * 4096) + bytes(SECTOR)


def test_cowd_root_and_child(tmp_path: Path) -> None:
    root = introspect(write(tmp_path / "root.vmdk", cowd(None)))
    assert root.format == "vmdk" and root.virtual_size == 2048 * SECTOR
    assert "vmdk-cowd-extent" in codes(root)
    assert root.vmdk is not None and root.vmdk.header_kind == "cowd"
    assert root.vmdk.geometry is not None and root.vmdk.geometry.heads == 16
    child = introspect(write(tmp_path / "child.vmdk", cowd("/vmfs/volumes/ds/base.vmdk")))
    assert "vmdk-parent-file" in codes(child) and not child.safe
    assert child.vmdk is not None and child.vmdk.parent_file == "/vmfs/volumes/ds/base.vmdk"


def sesparse(capacity: int) -> bytes:
    fields = [0xCAFEBABE, 0x200000001, capacity, 8, 64, 0, 0, 0, 0, 0]
    fields += [1, 1, 2, 1, 3, 100, 103, 1, 104, 64, 168, 8, 176, 8, 184, 1000]
    return struct.pack("<26Q", *fields).ljust(SECTOR, b"\0") + bytes(4 * SECTOR)


def test_sesparse_is_reported(tmp_path: Path) -> None:
    md = introspect(write(tmp_path / "se.vmdk", sesparse(4096)))
    assert md.format == "vmdk" and md.virtual_size == 4096 * SECTOR
    assert "vmdk-sesparse-extent" in codes(md) and not md.safe
    assert md.vmdk is not None and md.vmdk.header_kind == "sesparse"


# --- hand-written text descriptors ------------------------------------------------------


def descriptor(create_type: str, extents: str, newline: str = "\n", **ddb_values: str) -> str:
    lines = [
        "# Disk DescriptorFile",
        "version=1",
        "CID=fffffffe",
        "parentCID=ffffffff",
        f'createType="{create_type}"',
        "",
        "# Extent description",
        *extents.splitlines(),
        "",
        "# The Disk Data Base",
        "#DDB",
        "",
        *(f'ddb.{k} = "{v}"' for k, v in ddb_values.items()),
    ]
    return newline.join(lines) + newline


@pytest.mark.parametrize(
    ("create_type", "extents", "files"),
    [
        ("vmfs", 'RW 2048 VMFS "disk-flat.vmdk"', {"disk-flat.vmdk": 2048}),
        (
            "twoGbMaxExtentFlat",
            'RW 2048 FLAT "d-f001.vmdk" 0\nRW 1024 FLAT "d-f002.vmdk" 0',
            {"d-f001.vmdk": 2048, "d-f002.vmdk": 1024},
        ),
        ("monolithicFlat", 'RW 4096 FLAT "my disk-flat.vmdk" 2048', {"my disk-flat.vmdk": 6144}),
    ],
)
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_text_descriptor_matches_qemu(
    tmp_path: Path, create_type: str, extents: str, files: dict[str, int], newline: str
) -> None:
    for name, sectors in files.items():
        (tmp_path / name).write_bytes(bytes(sectors * SECTOR))
    text = descriptor(create_type, extents, newline, adapterType="lsilogic")
    path = write(tmp_path / "disk.vmdk", text)
    md = assert_same_as_qemu(path)
    assert md.vmdk is not None
    assert md.vmdk.create_type == create_type and md.vmdk.adapter_type == "lsilogic"
    assert [e.file for e in md.vmdk.extents] == list(files)
    assert {"vmdk-not-self-contained", "vmdk-descriptor-without-header"} <= codes(md)
    assert md.virtual_size == sum(e.sectors for e in md.vmdk.extents) * SECTOR
    assert_stream_agrees(path)


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("/etc/passwd", "vmdk-extent-path-escape"),
        ("../../etc/passwd", "vmdk-extent-path-escape"),
        ("..\\secret.vmdk", "vmdk-extent-path-escape"),
        ("C:\\disk.vmdk", "vmdk-extent-path-escape"),
        ("other.vmdk", "vmdk-external-extent"),
        ("dir/other.vmdk", "vmdk-external-extent"),
    ],
)
def test_text_descriptor_extent_names(tmp_path: Path, name: str, code: str) -> None:
    path = write(tmp_path / "d.vmdk", descriptor("monolithicFlat", f'RW 8 FLAT "{name}" 0'))
    md = introspect(path)
    assert code in codes(md) and not md.safe
    assert any(repr(name) in f.message for f in md.findings if f.code == code)


@pytest.mark.parametrize("create_type", ["monolithicSparse", "streamOptimized"])
def test_text_descriptor_claiming_sparse(tmp_path: Path, create_type: str) -> None:
    path = write(tmp_path / "d.vmdk", descriptor(create_type, 'RW 2048 SPARSE "d.vmdk"'))
    md = introspect(path)
    assert "vmdk-descriptor-without-header" in codes(md) and not md.safe
    assert any(create_type in f.message for f in md.findings)


def test_virtualbox_style_and_lenient_text(tmp_path: Path) -> None:
    raw = (
        b"\xef\xbb\xbf# Disk DescriptorFile\r\n"
        b"version = 1\r\n"
        b'encoding="windows-1252"\r\n'
        b"CID = 0000ABCD\r\n"
        b"parentCID=ffffffff\r\n"
        b"createType=vmfs\r\n"
        b"\r\n"
        b'RW 100 VMFS "caf\xe9 disk.vmdk"\r\n'
        b"RDONLY 50 ZERO\r\n"
        b'ddb.adapterType="BusLogic"\r\n'
        b'ddb.uuid.image="abc"\r\n'
        b"ddb.Custom.Key = unquoted value\r\n"
    )
    md = introspect(write(tmp_path / "d.vmdk", raw))
    section = md.vmdk
    assert section is not None
    assert section.create_type == "vmfs"
    assert section.adapter_type == "BusLogic"
    assert section.cid == "0000ABCD"
    assert section.version == 1
    assert section.encoding == "windows-1252"
    assert section.ddb == {
        "ddb.adapterType": "BusLogic",
        "ddb.uuid.image": "abc",
        "ddb.Custom.Key": "unquoted value",
    }
    assert [(e.access, e.sectors, e.type, e.file) for e in section.extents] == [
        ("RW", 100, "VMFS", "café disk.vmdk"),
        ("RDONLY", 50, "ZERO", None),
    ]
    assert md.virtual_size == 150 * SECTOR
    assert md.glance_properties()["vmware_adaptertype"] == "busLogic"


def test_probe_without_comment_and_not_binary(tmp_path: Path) -> None:
    plain = write(tmp_path / "a.vmdk", 'createType="vmfs"\nRW 8 VMFS "x.vmdk"\n')
    assert introspect(plain).format == "vmdk"
    notes = write(tmp_path / "b.txt", "just some notes\ncreateType is a word\n")
    assert introspect(notes).format == "raw"
    binary = write(tmp_path / "c.bin", b"# Disk DescriptorFile\n\x00\x01\x02binary" * 100)
    assert introspect(binary).format == "raw"
    qemu_style = write(tmp_path / "d.vmdk", b"# comment\nversion=1\n\x00\xff\xfe")
    assert introspect(qemu_style).format == "vmdk"  # what qemu's probe claims, we claim


def test_blank_line_before_extent_makes_qemu_count_it_twice(tmp_path: Path) -> None:
    (tmp_path / "f.vmdk").write_bytes(bytes(8 * SECTOR))
    text = descriptor("monolithicFlat", '\n  \nRW 8 FLAT "f.vmdk" 0')
    path = write(tmp_path / "d.vmdk", text)
    md = introspect(path)
    assert "vmdk-qemu-view-differs" in codes(md)
    assert md.virtual_size == 8 * SECTOR
    qemu = theirs(path)
    assert qemu["virtual-size"] == 3 * 8 * SECTOR  # qemu reads the extent three times
    assert ours_as_qemu(path) == qemu


def test_huge_descriptor_file_is_bounded(tmp_path: Path) -> None:
    lines = descriptor("monolithicFlat", 'RW 8 FLAT "f.vmdk" 0') + "\n" * (2 * 1024 * 1024)
    lines += 'RW 8 FLAT "/etc/late" 0\n' * 5000
    md = introspect(write(tmp_path / "big.vmdk", lines))
    assert "vmdk-descriptor-too-large" in codes(md)


def test_many_extents_are_capped(tmp_path: Path) -> None:
    extents = "\n".join(f'RW 8 FLAT "f{i}.vmdk" 0' for i in range(5000))
    md = introspect(write(tmp_path / "many.vmdk", descriptor("twoGbMaxExtentFlat", extents)))
    assert "vmdk-descriptor-limits" in codes(md)
    assert md.vmdk is not None and len(md.vmdk.extents) == vmdk.MAX_EXTENTS
    assert md.vmdk.extent_count == 5000
    assert md.virtual_size == 5000 * 8 * SECTOR
    assert len(md.findings) < 100
    json.dumps(md.to_dict())


def test_only_descriptor_errors_are_image_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageIntrospectError):
        introspect(write(tmp_path / "short.vmdk", b"KDMV\x01\x00"))


@pytest.mark.parametrize("capacity", [0, 128])
def test_header_only_reads_at_most_one_mib_of_a_huge_descriptor(capacity: int) -> None:
    header = bytearray(512)
    header[0:4] = b"KDMV"
    struct.pack_into("<IIQQQQI", header, 4, 1, 3, capacity, 128, 1, 2047, 512)
    header[73:77] = b"\n \r\n"
    text = b'# Disk DescriptorFile\nversion=1\nCID=fffffffe\ncreateType="monolithicSparse"\n'
    source = CountingBytes(bytes(header) + text + b" " * (2 << 20))
    md = introspect(source, deep=False)
    assert source.bytes_read <= 1 << 20
    assert "vmdk-descriptor-limits" in md.codes()


def test_header_only_reads_at_most_one_mib_of_a_text_descriptor() -> None:
    source = CountingBytes(b"# Disk DescriptorFile\nversion=1\n" + b"#" * (3 << 20))
    introspect(source, deep=False)
    assert source.bytes_read <= 1 << 20


def test_unicode_digits_in_the_descriptor_are_not_numbers() -> None:
    text = (
        "# Disk DescriptorFile\nversion=\u00b2\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="monolithicFlat"\nRW 100 FLAT "x" 0\nddb.geometry.heads = "\u00b9\u2076"\n'
    ).encode()
    md = introspect(io.BytesIO(text))
    assert md.vmdk is not None and md.vmdk.version is None
