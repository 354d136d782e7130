"""QED: real images from qemu-img, compared with qemu-img's own view, and hostile edits."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imageintrospect import introspect
from imageintrospect.errors import FormatMismatch
from tests.support import (
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


# --- real images --------------------------------------------------------------------------------

OPTION_SETS = [
    (),
    ("-o", "cluster_size=4096"),
    ("-o", "cluster_size=1M"),
    ("-o", "table_size=16"),
    ("-o", "cluster_size=4096,table_size=2"),
    ("-o", "preallocation=falloc"),
]


@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: o[1] if o else "default")
@pytest.mark.parametrize("size", ["1M", "64M", "3G"])
def test_qed_is_described_and_refused(
    make_image: MakeImage, options: tuple[str, ...], size: str
) -> None:
    path = make_image("qed", size, *options)
    md = assert_same_as_qemu(path)
    theirs = qemu_info(path)
    assert md.format == "qed"
    assert md.virtual_size == theirs["virtual-size"]
    assert md.codes() == {"qed-image"}
    assert not md.safe
    section = md.qed
    assert section is not None
    assert section.cluster_size == theirs["cluster-size"]
    assert section.backing_file is None and not section.need_check
    assert md.glance_properties()["disk_format"] == "qed"


def test_written_data(make_image: MakeImage) -> None:
    path = make_image("qed", "64M")
    qemu_io(path, "qed", "write -P 0x33 0 3M", "write 40M 64k")
    md = assert_same_as_qemu(path)
    assert md.codes() == {"qed-image"}


@pytest.mark.parametrize("absolute", [False, True])
def test_backing_file_raw(make_image: MakeImage, absolute: bool) -> None:
    base = make_image("raw", "16M", name="base.raw")
    backing = str(base) if absolute else base.name
    path = make_image("qed", "16M", "-b", backing, "-F", "raw")
    md = assert_same_as_qemu(path)
    assert md.qed is not None
    assert md.qed.backing_file == backing
    assert md.qed.backing_format == "raw"  # the "no probe" feature bit
    assert md.codes() == {"qed-image", "backing-file"}
    finding = next(f for f in md.findings if f.code == "backing-file")
    assert backing in finding.message and finding.severity == "unsafe"


def test_backing_file_without_raw_format(make_image: MakeImage) -> None:
    # QED can record only "raw" as a backing format; any other is probed by qemu.
    path = make_image("qed", "16M", "-u", "-b", "/etc/passwd", "-F", "qcow2")
    md = assert_same_as_qemu(path)
    assert md.qed is not None
    assert md.qed.backing_file == "/etc/passwd" and md.qed.backing_format is None
    assert "backing-file" in md.codes()


def test_need_check_bit(make_image: MakeImage) -> None:
    path = make_image("qed", "16M")
    edit(path, 16, "<Q", 2)
    md = assert_same_as_qemu(path)  # qemu's dirty-flag stays false for QED
    assert md.qed is not None and md.qed.need_check
    assert "qed-needs-check" in md.codes()


# --- hostile edits ------------------------------------------------------------------------------


@pytest.fixture
def plain(make_image: MakeImage) -> Path:
    return make_image("qed", "64M")


# (offset, struct format, values, finding code, does qemu-img info refuse it too?)
@pytest.mark.parametrize(
    ("offset", "fmt", "values", "code", "qemu_refuses_too"),
    [
        (4, "<I", (2048,), "qed-bad-header", True),  # cluster size below 4 KiB
        (4, "<I", (12288,), "qed-bad-header", True),  # not a power of two
        (4, "<I", (128 * MiB,), "qed-bad-header", True),  # above 64 MiB
        (8, "<I", (0,), "qed-bad-header", True),  # table size
        (8, "<I", (3,), "qed-bad-header", True),
        (8, "<I", (32,), "qed-bad-header", True),
        (8, "<I", (1,), "qed-bad-header", True),  # qemu's overflow check refuses one cluster
        (12, "<I", (0,), "qed-bad-header", False),  # header of no cluster at all
        (12, "<I", (2,), "qed-bad-header", True),  # L1 table now inside the header
        (16, "<Q", (8,), "qed-bad-header", True),  # unknown feature
        (40, "<Q", (0,), "qed-bad-header", True),
        (40, "<Q", (0x10001,), "qed-bad-header", True),
        (40, "<Q", (0x100000,), "truncated", True),  # L1 past the end of the file
        (40, "<Q", (0x40000,), "truncated", True),  # L1's last cluster past the end
        (48, "<Q", (64 * MiB + 100,), "qed-bad-header", True),  # not a multiple of 512
        (48, "<Q", (1 << 62,), "qed-bad-header", True),  # more than the tables map
        (16, "<QQQQQII", (1, 0, 0, 0x10000, 64 * MiB, 0xFFF0, 0x20), "qed-bad-header", True),
        (16, "<QQQQQII", (1, 0, 0, 0x10000, 64 * MiB, 0x40, 4096), "qed-bad-header", True),
        (16, "<Q", (1,), "qed-bad-header", False),  # backing bit, empty name
    ],
)
def test_hostile_header_fields(
    plain: Path,
    offset: int,
    fmt: str,
    values: tuple[Any, ...],
    code: str,
    qemu_refuses_too: bool,
) -> None:
    edit(plain, offset, fmt, *values)
    md = introspect(plain)
    assert md.format == "qed"
    assert code in md.codes(), md.findings
    assert not md.safe
    assert qemu_refuses(plain) == qemu_refuses_too


def test_large_cluster_and_table_overflow_like_qemu(make_image: MakeImage) -> None:
    # 64 MiB clusters with 16-cluster tables: qemu's maximum size wraps to 0 in 64 bits.
    path = make_image("qed", "64M", "-o", "cluster_size=1M")
    edit(path, 4, "<II", 64 * MiB, 16)
    md = introspect(path)
    assert "qed-bad-header" in md.codes()
    assert qemu_refuses(path)


def test_empty_backing_name_matches_qemu(plain: Path) -> None:
    edit(plain, 16, "<Q", 1)  # backing feature, name offset and size 0
    md = assert_same_as_qemu(plain)  # qemu reports no backing file at all
    assert md.qed is not None and md.qed.backing_file == ""
    assert "backing-file" not in md.codes()


def test_unknown_compat_bits_are_named(plain: Path) -> None:
    edit(plain, 24, "<QQ", 1 << 5, 1 << 63)
    md = assert_same_as_qemu(plain)  # qemu accepts unknown compatible/autoclear bits
    assert md.qed is not None
    assert md.qed.compat_features == ("bit-5",)
    assert md.qed.autoclear_features == ("bit-63",)


def test_backing_name_far_into_a_stream(plain: Path, tmp_path: Path) -> None:
    # A header of 64 clusters lets the backing name sit 4 MiB in: still found when streamed.
    blob = bytearray(plain.read_bytes())
    blob[12:16] = struct.pack("<I", 80)
    name_at = 70 * 65536
    blob[16:24] = struct.pack("<Q", 1)
    blob[40:48] = struct.pack("<Q", 80 * 65536)
    blob[56:64] = struct.pack("<II", name_at, 11)
    blob = blob.ljust(90 * 65536, b"\0")
    blob[name_at : name_at + 11] = b"/etc/shadow"
    path = tmp_path / "far.qed"
    path.write_bytes(bytes(blob))
    md = assert_same_as_qemu(path)
    assert md.qed is not None and md.qed.backing_file == "/etc/shadow"
    assert introspect(forward_only(path)).to_dict() == md.to_dict()


@pytest.mark.parametrize("length", [4, 40, 63])
def test_truncated_header(plain: Path, tmp_path: Path, length: int) -> None:
    cut = tmp_path / "cut.qed"
    cut.write_bytes(plain.read_bytes()[:length])
    md = introspect(cut)
    assert md.format == "qed" and md.qed is None
    assert {"truncated", "qed-image"} <= md.codes()


def test_expected_format(plain: Path) -> None:
    assert introspect(plain, expected_format="qed").format == "qed"
    with pytest.raises(FormatMismatch):
        introspect(plain, expected_format="qcow2")


# --- access patterns ----------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 4096, 65536])
def test_stream_and_seekable_agree(make_image: MakeImage, chunk: int) -> None:
    base = make_image("raw", "4M", name="b.raw")
    path = make_image("qed", "4M", "-b", base.name, "-F", "raw")
    assert introspect(forward_only(path, chunk)).to_dict() == introspect(path).to_dict()


def test_to_dict_is_json(make_image: MakeImage) -> None:
    base = make_image("raw", "4M", name="b.raw")
    path = make_image("qed", "4M", "-b", base.name, "-F", "raw")
    data = json.loads(json.dumps(introspect(path).to_dict()))
    assert data["qed"]["backing_file"] == "b.raw"
    assert data["qed"]["features"] == ["backing-file", "backing-format-no-probe"]


# --- mutation fuzzing ---------------------------------------------------------------------------


class Seeds(list[bytes]):
    """Seed images; a short repr keeps hypothesis' failure reports readable."""

    def __repr__(self) -> str:
        return f"<{len(self)} seed images>"


@pytest.fixture(scope="module")
def seed_images(tmp_path_factory: pytest.TempPathFactory) -> Seeds:
    directory = tmp_path_factory.mktemp("qed-seeds")
    seeds = []
    for index, options in enumerate(["cluster_size=4096", "table_size=2"]):
        path = directory / f"s{index}.qed"
        qemu_img(
            "create", "-q", "-f", "qed", "-u", "-b", "base.raw", "-F", "raw", "-o", options,
            path, "4M",
        )  # fmt: skip
        seeds.append(path.read_bytes())
    return Seeds(seeds)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_headers_never_escape(seed_images: Seeds, data: st.DataObject) -> None:
    blob = mutate_bytes(data, data.draw(st.sampled_from(seed_images)), st.integers(4, 127))
    md = introspect_hostile(io.BytesIO(bytes(blob)))
    if md is None:
        return
    if md.format == "qed":
        assert not md.safe  # whatever else it is, a QED image is refused
