"""QCOW2: real images from qemu-img, compared with qemu-img's own view, and hostile edits."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imageintrospect import introspect
from imageintrospect.errors import FormatMismatch
from imageintrospect.qemu_json import qemu_info_dict
from tests.support import (
    CountingFile,
    assert_same_as_qemu,
    edit,
    forward_only,
    introspect_hostile,
    mutate_bytes,
    needs_qemu,
    patch,
    qemu_img,
    qemu_info,
    qemu_io,
    qemu_refuses,
)

pytestmark = needs_qemu

MakeImage = Callable[..., Path]


# --- every qemu-img option -------------------------------------------------------------------

OPTION_SETS = [
    ("compat=0.10",),
    ("compat=1.1",),
    ("cluster_size=512",),
    ("cluster_size=4096",),
    ("cluster_size=2M",),
    ("lazy_refcounts=on",),
    ("extended_l2=on",),
    ("extended_l2=on,cluster_size=16384",),
    ("compression_type=zstd",),
    ("refcount_bits=1",),
    ("refcount_bits=64",),
    ("preallocation=metadata",),
    ("preallocation=falloc",),
    ("preallocation=full",),
    ("extended_l2=on,compression_type=zstd,lazy_refcounts=on,cluster_size=1M",),
]


@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: o[0])
def test_qemu_img_options_match_qemu(make_image: MakeImage, options: tuple[str, ...]) -> None:
    path = make_image("qcow2", "32M", "-o", options[0])
    md = assert_same_as_qemu(path)
    assert md.format == "qcow2"
    assert md.safe, md.findings
    assert md.findings == ()
    assert md.virtual_size == 32 * 1024 * 1024
    assert md.image_size == path.stat().st_size
    assert md.glance_properties() == {
        "disk_format": "qcow2",
        "container_format": "bare",
        "virtual_size": 32 * 1024 * 1024,
    }


def test_section_reports_the_options(make_image: MakeImage) -> None:
    path = make_image(
        "qcow2",
        "1G",
        "-o",
        "extended_l2=on,compression_type=zstd,lazy_refcounts=on,cluster_size=128K,refcount_bits=8",
    )
    section = introspect(path).qcow2
    assert section is not None
    assert section.version == 3
    assert section.cluster_size == 128 * 1024
    assert section.extended_l2 and section.lazy_refcounts
    assert section.compression_type == "zstd"
    assert section.refcount_bits == 8
    assert set(section.incompatible_features) == {"compression-type", "extended-l2"}
    assert section.compatible_features == ("lazy-refcounts",)
    assert section.backing_file is None and section.data_file is None
    # qemu writes a feature-name table; its names are kept per (kind, bit).
    assert section.feature_names["incompatible:4"] == "extended L2 entries"


def test_written_and_compressed_data(make_image: MakeImage, tmp_path: Path) -> None:
    path = make_image("qcow2", "16M")
    qemu_io(path, "qcow2", "write -P 0x5a 1M 3M")
    assert_same_as_qemu(path)
    compressed = tmp_path / "c.qcow2"
    qemu_img("convert", "-c", "-O", "qcow2", path, compressed)
    md = assert_same_as_qemu(compressed)
    assert md.safe


def test_snapshots(make_image: MakeImage) -> None:
    path = make_image("qcow2", "16M")
    qemu_io(path, "qcow2", "write 0 64k")
    qemu_img("snapshot", "-c", "first", path)
    qemu_img("snapshot", "-c", "second snapshot with a long name", path)
    md = assert_same_as_qemu(path)
    section = md.qcow2
    assert section is not None
    assert [s.name for s in section.snapshots] == ["first", "second snapshot with a long name"]
    assert [s.id for s in section.snapshots] == ["1", "2"]
    assert "internal-snapshots" in md.codes()
    assert md.safe  # snapshots are data of the image itself
    assert md.to_dict()["qcow2"]["snapshots"][0]["date"].endswith("+00:00")


def test_bitmaps(make_image: MakeImage) -> None:
    path = make_image("qcow2", "16M")
    qemu_img("bitmap", "--add", path, "b0")
    qemu_img("bitmap", "--add", "-g", "1M", path, "b1")
    qemu_img("bitmap", "--add", "--disable", path, "b2")
    md = assert_same_as_qemu(path)
    section = md.qcow2
    assert section is not None
    assert [(b.name, b.granularity) for b in section.bitmaps] == [
        ("b0", 65536),
        ("b1", 1 << 20),
        ("b2", 65536),
    ]
    assert section.bitmaps[0].flags == ("auto",)
    assert section.bitmaps[2].flags == ()
    assert "bitmaps" in section.autoclear_features
    assert md.safe


# --- references to other files ----------------------------------------------------------------


@pytest.mark.parametrize("absolute", [False, True])
def test_backing_file_is_reported_and_unsafe(
    make_image: MakeImage, tmp_path: Path, absolute: bool
) -> None:
    base = make_image("raw", "16M", name="base.raw")
    backing = str(base) if absolute else base.name
    path = make_image("qcow2", "16M", "-b", backing, "-F", "raw")
    md = assert_same_as_qemu(path)
    assert md.qcow2 is not None
    assert md.qcow2.backing_file == backing
    assert md.qcow2.backing_format == "raw"
    assert not md.safe
    assert "backing-file" in md.codes()


def test_backing_file_etc_passwd(make_image: MakeImage) -> None:
    path = make_image("qcow2", "1G", "-u", "-b", "/etc/passwd", "-F", "raw")
    md = introspect(path)
    assert md.qcow2 is not None and md.qcow2.backing_file == "/etc/passwd"
    assert not md.safe
    finding = next(f for f in md.findings if f.code == "backing-file")
    assert "/etc/passwd" in finding.message and finding.severity == "unsafe"


def test_data_file(make_image: MakeImage, tmp_path: Path) -> None:
    data = tmp_path / "data.raw"
    path = make_image("qcow2", "16M", "-o", f"data_file={data},data_file_raw=on")
    md = assert_same_as_qemu(path)
    assert md.qcow2 is not None
    assert md.qcow2.data_file == str(data)
    assert md.qcow2.data_file_raw
    assert "external-data-file" in md.codes() and not md.safe


def test_data_file_renamed_to_a_host_file(make_image: MakeImage, tmp_path: Path) -> None:
    name = str(tmp_path / "d.raw").encode()
    path = make_image("qcow2", "16M", "-o", f"data_file={name.decode()}")
    blob = path.read_bytes()
    at = blob.index(name)
    hostile = b"/etc/shadow".ljust(len(name), b"\0")
    patch(path, at, hostile)
    md = introspect(path)
    assert md.qcow2 is not None and md.qcow2.data_file == "/etc/shadow"
    assert not md.safe
    assert "bad-header-extension" in md.codes()  # NUL padding inside the name


# --- encryption -------------------------------------------------------------------------------


def test_aes_encryption(make_image: MakeImage) -> None:
    path = make_image(
        "qcow2",
        "16M",
        "--object",
        "secret,id=s0,data=pw",
        "-o",
        "encrypt.format=aes,encrypt.key-secret=s0",
    )
    md = assert_same_as_qemu(path)
    assert md.qcow2 is not None and md.qcow2.encryption == "aes"
    assert {"encrypted", "legacy-aes-encryption"} <= md.codes()
    assert not md.safe


def test_luks_encryption(tmp_path: Path) -> None:
    path = tmp_path / "luks.qcow2"
    # qemu times PBKDF2 with getrusage(); on a busy machine a short iter-time can measure 0
    # and fail, so retry with a longer one before giving up.
    for iter_time in (200, 2000, 4000):
        try:
            qemu_img(
                "create", "-q", "-f", "qcow2", "--object", "secret,id=s0,data=pw", "-o",
                f"encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time={iter_time}",
                path, "16M",
            )  # fmt: skip
            break
        except AssertionError:
            continue
    else:
        pytest.skip("qemu-img could not time PBKDF2 on this machine")
    md = assert_same_as_qemu(path)
    assert md.qcow2 is not None and md.qcow2.encryption == "luks"
    assert md.qcow2.encryption_header is not None
    assert md.qcow2.luks is not None and md.qcow2.luks.version == 1
    assert "encrypted" in md.codes() and md.safe


# --- hostile edits ------------------------------------------------------------------------------


@pytest.fixture
def plain(make_image: MakeImage) -> Path:
    return make_image("qcow2", "64M")


# (offset, struct format, value, finding code, does qemu-img info refuse it too?)
@pytest.mark.parametrize(
    ("offset", "fmt", "value", "code", "qemu_refuses_too"),
    [
        (20, ">I", 8, "bad-geometry", True),  # cluster_bits below 9
        (20, ">I", 22, "bad-geometry", True),  # cluster_bits above 21
        (20, ">I", 0xFFFFFFFF, "bad-geometry", True),
        (24, ">Q", 1 << 63, "bad-geometry", True),  # size beyond 2^63 - 1
        (24, ">Q", 1 << 50, "bad-geometry", True),  # size beyond what l1 maps
        (36, ">I", 0, "bad-geometry", True),  # no L1 table for a 64 MiB disk
        (36, ">I", 0x10000000, "bad-geometry", True),  # L1 beyond qemu's limit
        (40, ">Q", 0x10001, "bad-geometry", True),  # misaligned L1
        (40, ">Q", 0, "bad-geometry", False),  # L1 over the header
        (48, ">Q", 0, "bad-geometry", False),  # refcount table over the header
        (56, ">I", 0, "bad-geometry", True),
        (72, ">Q", 1 << 7, "unknown-incompatible-feature", True),
        (72, ">Q", 1 << 1, "corrupt-flag", False),
        (72, ">Q", 1 << 2, "external-data-file", False),  # data file bit without a name
        (88, ">Q", 1 << 1, "bad-geometry", False),  # raw data file without a data file
        (96, ">I", 7, "bad-geometry", True),  # refcount_order
        (100, ">I", 100, "bad-geometry", True),  # header_length below 104
        (100, ">I", 109, "bad-geometry", True),  # not a multiple of 8
        (104, ">B", 7, "bad-geometry", True),  # unknown compression type
        (104, ">B", 1, "bad-geometry", True),  # zstd without the feature bit
        (4, ">I", 4, "unsupported-version", True),
        (4, ">I", 1, "unsupported-version", True),
        (32, ">I", 9, "bad-geometry", True),  # unknown encryption method
        (60, ">I", 1 << 20, "bad-snapshot-table", True),
        (60, ">I", 1, "bad-snapshot-table", False),  # a snapshot at offset 0
    ],
)
def test_hostile_header_fields(
    plain: Path, offset: int, fmt: str, value: int, code: str, qemu_refuses_too: bool
) -> None:
    edit(plain, offset, fmt, value)
    md = introspect(plain)
    assert md.format == "qcow2"
    assert code in md.codes(), md.findings
    assert not md.safe
    # Most of these qemu-img refuses as well; the others it opens, and would then follow
    # tables laid over the header or (for "corrupt") an image its writer gave up on.
    assert qemu_refuses(plain) == qemu_refuses_too


def test_dirty_bit_is_a_warning(plain: Path) -> None:
    edit(plain, 72, ">Q", 1)
    md = introspect(plain)
    assert "dirty-flag" in md.codes()
    assert md.safe
    assert md.qcow2 is not None and md.qcow2.dirty
    theirs = qemu_info(plain)
    assert theirs["dirty-flag"] is True
    assert qemu_info_dict(md, str(plain), None)["dirty-flag"] is True


def test_snapshot_table_past_end_of_file(plain: Path) -> None:
    edit(plain, 60, ">IQ", 2, 1 << 40)
    md = introspect(plain)
    assert "truncated" in md.codes() and not md.safe


def test_l1_table_past_end_of_file(plain: Path) -> None:
    edit(plain, 40, ">Q", 1 << 40)
    md = introspect(plain)
    assert "truncated" in md.codes()


def test_extension_overruns_the_header_cluster(plain: Path) -> None:
    header_length = struct.unpack(">I", plain.read_bytes()[100:104])[0]
    edit(plain, header_length, ">II", 0x12345678, 0x7FFFFFF0)
    md = introspect(plain)
    assert "bad-header-extension" in md.codes() and not md.safe


def test_unknown_extension_is_info(plain: Path) -> None:
    header_length = struct.unpack(">I", plain.read_bytes()[100:104])[0]
    blob = plain.read_bytes()
    patch(
        plain,
        header_length,
        struct.pack(">II", 0x0BADF00D, 8) + b"x" * 8 + blob[header_length:4000],
    )
    md = introspect(plain)
    assert "unknown-header-extension" in md.codes()
    assert md.safe
    assert qemu_info(plain)["format"] == "qcow2"  # qemu ignores it too


def test_backing_name_too_long(plain: Path) -> None:
    edit(plain, 8, ">QI", 0x200, 5000)
    md = introspect(plain)
    assert {"bad-geometry", "backing-file"} <= md.codes()


@pytest.mark.parametrize("length", [0, 4, 50, 71, 72, 80, 103])
def test_truncated_header(plain: Path, tmp_path: Path, length: int) -> None:
    cut = tmp_path / "cut.qcow2"
    cut.write_bytes(plain.read_bytes()[:length])
    if length < 4:
        assert introspect(cut).format == "raw"
        return
    md = introspect(cut)
    assert md.format == "qcow2"
    assert "truncated" in md.codes() and not md.safe


def test_expected_format_mismatch(plain: Path) -> None:
    with pytest.raises(FormatMismatch):
        introspect(plain, expected_format="raw")
    with pytest.raises(FormatMismatch):
        introspect(plain, expected_format="vmdk")
    assert introspect(plain, expected_format="qcow2").format == "qcow2"


# --- access patterns ----------------------------------------------------------------------------


def test_header_only_reads_little(make_image: MakeImage) -> None:
    path = make_image("qcow2", "1T", "-o", "preallocation=metadata,cluster_size=2M")
    with CountingFile(path) as f:
        md = introspect(f, deep=False)
        assert f.bytes_read <= 1024 * 1024
    assert md.virtual_size == 1 << 40 and md.safe


@pytest.mark.parametrize("chunk", [1, 17, 512, 65536])
def test_stream_and_seekable_agree(make_image: MakeImage, chunk: int) -> None:
    path = make_image("qcow2", "8M", "-o", "compression_type=zstd")
    qemu_img("snapshot", "-c", "s", path)
    assert introspect(forward_only(path, chunk)).to_dict() == introspect(path).to_dict()


def test_to_dict_is_json(make_image: MakeImage) -> None:
    path = make_image("qcow2", "8M")
    qemu_img("snapshot", "-c", "s", path)
    qemu_img("bitmap", "--add", path, "b")
    text = json.dumps(introspect(path).to_dict())
    assert json.loads(text)["qcow2"]["bitmaps"][0]["name"] == "b"


# --- mutation fuzzing ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed_images(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    directory = tmp_path_factory.mktemp("qcow2-seeds")
    seeds = []
    for index, options in enumerate(
        ["compat=0.10", "extended_l2=on,compression_type=zstd", "cluster_size=4096"]
    ):
        path = directory / f"s{index}.qcow2"
        qemu_img("create", "-q", "-f", "qcow2", "-o", options, path, "16M")
        qemu_img("snapshot", "-c", "snap", path)
        if "0.10" not in options:  # v2 images cannot hold bitmaps
            qemu_img("bitmap", "--add", path, "bm")
        seeds.append(path.read_bytes())
    return seeds


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_headers_never_escape(seed_images: list[bytes], data: st.DataObject) -> None:
    blob = mutate_bytes(data, data.draw(st.sampled_from(seed_images)), st.integers(0, 4095))
    md = introspect_hostile(io.BytesIO(bytes(blob)))
    if md is None:
        return
