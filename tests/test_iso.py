"""ISO 9660 / UDF: real images from xorriso and mkudffs, checked against xorriso's and udfinfo's
own reports and against qemu-img (which sees raw), plus hostile struct edits."""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imageintrospect import ImageIntrospectError, InternalParserError, Metadata, introspect
from imageintrospect.errors import FormatMismatch
from imageintrospect.findings import Findings
from imageintrospect.formats import partitions
from imageintrospect.formats.base import Context
from imageintrospect.qemu_json import qemu_info_dict
from imageintrospect.source import open_source
from tests.support import CountingFile, OnlyRead, needs_qemu, patch, qemu_info, run

XORRISO = shutil.which("xorriso")
pytestmark = [
    needs_qemu,
    pytest.mark.skipif(XORRISO is None, reason="xorriso missing"),
]
needs_mkudffs = pytest.mark.skipif(shutil.which("mkudffs") is None, reason="udftools missing")

MiB = 1024 * 1024
SECTOR = 2048
PVD = 16 * SECTOR


# --- making images -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small file tree with a BIOS boot image and a FAT EFI image in it."""
    root = tmp_path_factory.mktemp("iso")
    files = root / "tree"
    files.mkdir()
    (files / "readme.txt").write_text("hello\n")
    (files / "boot.img").write_bytes(bytes(range(256)) * 16)
    efi = files / "efi.img"
    if shutil.which("mkfs.vfat") is None:
        pytest.skip("mkfs.vfat (dosfstools) missing")
    run("mkfs.vfat", "-C", efi, "1440")
    (root / "mbr.bin").write_bytes(b"\xfa\x31\xc0" + bytes(429))  # an isohybrid MBR template
    return files


MakeIso = Callable[..., Path]


@pytest.fixture(scope="module")
def make_iso(tree: Path) -> MakeIso:
    """``make_iso("name", *mkisofs_args)`` → an ISO made by ``xorriso -as mkisofs``."""
    out = tree.parent

    def _make(name: str, *args: str, content: Path = tree) -> Path:
        path = out / f"{name}.iso"
        if not path.exists():
            resolved = [a.replace("@MBR@", str(out / "mbr.bin")) for a in args]
            resolved = [a.replace("@EFI@", str(tree / "efi.img")) for a in resolved]
            run(str(XORRISO), "-as", "mkisofs", "-quiet", *resolved, "-o", path, content)
        return path

    return _make


BIOS = ("-b", "boot.img", "-no-emul-boot")
UEFI = ("-e", "efi.img", "-no-emul-boot")
HYBRID_MBR = ("-isohybrid-mbr", "@MBR@", "-partition_offset", "16")
VARIANTS: dict[str, tuple[str, ...]] = {
    "plain": (),
    "ids": ("-V", "MY_VOLUME", "-publisher", "ACME", "-A", "APP 1", "-sysid", "LINUX"),
    "volset-preparer": ("-volset", "SET", "-p", "PREP", "-V", "X"),
    "joliet-rockridge": ("-J", "-R", "-V", "JR"),
    "el-torito-bios": ("-V", "BOOT", *BIOS),
    "el-torito-uefi": ("-V", "UEFI", *UEFI),
    "el-torito-both": (*BIOS, "-eltorito-alt-boot", *UEFI),
    "isohybrid-mbr": (*BIOS, *HYBRID_MBR),
    "isohybrid-gpt": (*BIOS, *HYBRID_MBR, "-isohybrid-gpt-basdat"),
    "gpt-basdat-no-mbr": (*BIOS, "-isohybrid-gpt-basdat"),
    "appended-efi": (*BIOS, "-append_partition", "2", "0xef", "@EFI@"),
    "appended-efi-gpt": (
        *BIOS,
        "-eltorito-alt-boot",
        *UEFI,
        "-isohybrid-gpt-basdat",
        "-append_partition",
        "2",
        "0xef",
        "@EFI@",
        "-appended_part_as_gpt",
    ),
    "everything": (
        "-J",
        "-R",
        "-V",
        "ALL",
        *BIOS,
        *HYBRID_MBR,
        "-eltorito-alt-boot",
        *UEFI,
        "-isohybrid-gpt-basdat",
        "-append_partition",
        "2",
        "0xef",
        "@EFI@",
    ),
}


# --- independent readers -------------------------------------------------------------------


def xorriso_report(path: Path) -> dict[str, list[str]]:
    """xorriso's own view of the image: ``key : value`` lines, values per key in order."""
    out = run(
        str(XORRISO),
        "-abort_on",
        "FATAL",
        "-indev",
        path,
        "-pvd_info",
        "-toc",
        "-report_el_torito",
        "plain",
        "-report_system_area",
        "plain",
    )
    report: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            report.setdefault(key.strip(), []).append(value.strip())
    return report


def blank(value: str) -> str | None:
    return value or None


def assert_same_as_qemu(path: Path) -> Metadata:
    """qemu-img has no ISO driver: it says raw and the file's length; our qemu view agrees."""
    md = introspect(path)
    theirs = qemu_info(path)
    theirs.pop("actual-size", None)
    assert theirs["format"] == "raw"
    assert qemu_info_dict(md, str(path), None) == theirs
    return md


def layout_of(path: Path) -> partitions.DiskLayout:
    with open_source(path) as src:
        ctx = Context(source=src, findings=Findings(), deep=True)
        return partitions.scan(ctx, hybrid_iso=True)


# --- real images ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_xorriso_images(make_iso: MakeIso, variant: str) -> None:
    path = make_iso(variant, *VARIANTS[variant])
    md = assert_same_as_qemu(path)
    report = xorriso_report(path)
    assert md.format == "iso"
    assert md.safe, md.findings
    assert "format-ambiguous" not in md.codes()
    iso = md.iso
    assert iso is not None
    assert iso.volume_id == blank(report["Volume Id"][0])
    assert iso.system_id == blank(report["System Id"][0])
    assert iso.publisher == blank(report["Publisher Id"][0])
    assert iso.application_id == blank(report["App Id"][0])
    assert iso.volume_set_id == blank(report["Volume Set Id"][0])
    assert iso.data_preparer == blank(report["Preparer Id"][0])
    assert iso.creation_date is not None
    assert re.sub(r"\D", "", iso.creation_date)[:14] == report["Creation Time"][0][:14]
    assert iso.block_size == SECTOR
    session = report["ISO session"][0].split(",")
    assert f"{iso.volume_space_size}s" == session[2].strip()
    assert iso.joliet == ("-J" in VARIANTS[variant])
    assert md.virtual_size == md.image_size == path.stat().st_size
    assert iso.descriptors[0] == "primary" and iso.descriptors[-1] == "terminator"
    _check_el_torito(md, report)
    _check_system_area(md, report, path)
    assert md.glance_properties()["disk_format"] == "iso"


def _check_el_torito(md: Metadata, report: dict[str, list[str]]) -> None:
    iso = md.iso
    assert iso is not None
    if "El Torito catalog" not in report:
        assert iso.el_torito is None and not iso.bootable
        return
    assert iso.bootable and iso.el_torito is not None
    assert iso.el_torito.catalog_sector == int(report["El Torito catalog"][0].split()[0])
    theirs = []
    for row in report["El Torito boot img"]:
        _, platform, bootable, emulation, _, _, size, lba = row.split()
        theirs.append(
            (
                {"BIOS": "x86", "UEFI": "efi"}[platform],
                bootable == "y",
                emulation,
                int(size),
                int(lba),
            )
        )
    ours = [
        (
            e.platform,
            e.bootable,
            e.media.replace("no-emulation", "none"),
            e.sector_count,
            e.load_rba,
        )
        for e in iso.el_torito.entries
    ]
    assert ours == theirs


def _check_system_area(md: Metadata, report: dict[str, list[str]], path: Path) -> None:
    iso = md.iso
    assert iso is not None
    gpt_rows = report.get("GPT start and size", [])
    mbr_rows = [row.split() for row in report.get("MBR partition", [])]
    mbr_used = [(int(r[3]), int(r[4]), int(r[2], 16)) for r in mbr_rows if int(r[2], 16) != 0]
    expected = "gpt" if gpt_rows else "mbr" if mbr_used else None
    assert iso.partition_table == md.partition_table == expected
    assert iso.hybrid == (expected is not None)
    layout = layout_of(path)
    if expected == "gpt":
        theirs = [tuple(int(v) for v in row.split()[1:]) for row in gpt_rows]
        ours = [(p.first_lba, p.last_lba - p.first_lba + 1) for p in layout.gpt_partitions]
        assert ours == theirs
    elif expected == "mbr":
        ours_mbr = [(p.first_lba, p.sectors, p.type) for p in layout.mbr_partitions]
        assert ours_mbr == mbr_used


def test_odd_sized_iso(make_iso: MakeIso, tmp_path: Path) -> None:
    path = tmp_path / "odd.iso"
    path.write_bytes(make_iso("plain").read_bytes() + b"tail")
    md = assert_same_as_qemu(path)  # qemu rounds the file up to whole 512-byte sectors
    assert md.virtual_size == path.stat().st_size
    assert md.codes() == {"iso-data-after-volume"}


def test_appended_partition_lies_after_the_volume(make_iso: MakeIso) -> None:
    """xorriso's appended EFI partition: the file outgrows the ISO volume, and says why."""
    path = make_iso("appended-efi", *VARIANTS["appended-efi"])
    md = introspect(path)
    iso = md.iso
    assert iso is not None and iso.volume_space_size is not None
    assert iso.volume_space_size * SECTOR < path.stat().st_size
    assert md.codes() == {"iso-data-after-volume"}
    assert md.virtual_size == path.stat().st_size  # what a guest's CD drive or USB stick sees


@needs_mkudffs
@pytest.mark.parametrize(
    ("block_size", "revision", "nsr"),
    [
        (2048, "0x0201", "NSR03"),
        (512, "0x0201", "NSR03"),
        (4096, "0x0201", "NSR03"),
        (2048, "0x0150", "NSR02"),
    ],
)
def test_udf_images(tmp_path: Path, block_size: int, revision: str, nsr: str) -> None:
    path = tmp_path / "udf.img"
    with open(path, "wb") as f:
        f.truncate(8 * MiB)
    run(
        "mkudffs",
        "--media-type=hd",
        f"--blocksize={block_size}",
        f"--udfrev={revision}",
        f"--label=L{block_size}",
        path,
    )
    md = assert_same_as_qemu(path)
    theirs = dict(line.split("=", 1) for line in run("udfinfo", path).splitlines() if "=" in line)
    assert md.format == "iso" and md.safe
    iso = md.iso
    assert iso is not None and iso.udf is not None
    assert iso.udf.revision == nsr
    assert iso.udf.block_size == int(theirs["blocksize"]) == block_size
    assert iso.udf.logical_volume_id == theirs["lvid"]
    assert iso.udf.volume_id == theirs["vid"]
    assert iso.volume_id == theirs["label"]
    assert md.virtual_size == 8 * MiB


# --- hostile edits -------------------------------------------------------------------------


@pytest.fixture
def iso(make_iso: MakeIso, tmp_path: Path) -> Path:
    """A fresh copy of a BIOS-bootable xorriso ISO with an isohybrid MBR, to edit."""
    path = tmp_path / "edit.iso"
    shutil.copyfile(make_iso("el-torito-bios", *VARIANTS["el-torito-bios"]), path)
    return path


def pvd_field(path: Path, offset: int, fmt: str) -> int:
    with open(path, "rb") as f:
        f.seek(PVD + offset)
        value: int = struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
        return value


def both_endian32(value: int, big: int | None = None) -> bytes:
    return struct.pack("<I", value) + struct.pack(">I", value if big is None else big)


def test_volume_space_size_2_to_the_32(iso: Path) -> None:
    patch(iso, PVD + 80, both_endian32(0xFFFFFFFF))
    md = assert_same_as_qemu(iso)
    assert not md.safe
    assert "truncated" in md.codes()
    assert md.virtual_size == 0xFFFFFFFF * SECTOR


def test_truncated_iso(iso: Path) -> None:
    size = iso.stat().st_size
    with open(iso, "r+b") as f:
        f.truncate(size // 2)
    md = introspect(iso)
    assert md.format == "iso"
    assert md.codes() == {"truncated"}
    assert md.virtual_size == pvd_field(iso, 80, "<I") * SECTOR == size


def test_truncated_inside_the_descriptor(iso: Path) -> None:
    with open(iso, "r+b") as f:
        f.truncate(PVD + 100)
    md = introspect(iso)
    assert md.format == "iso"
    assert "truncated" in md.codes()
    assert "iso-bad-descriptor" in md.codes()  # no complete primary descriptor


def test_both_endian_mismatch(iso: Path) -> None:
    real = pvd_field(iso, 80, "<I")
    patch(iso, PVD + 80, both_endian32(real, big=real + 1000))
    md = introspect(iso)
    assert md.codes() == {"iso-bad-descriptor"}
    assert md.iso is not None and md.iso.volume_space_size == real  # little-endian, as Linux


@pytest.mark.parametrize("block_size", [0, 3, 4096, 0xFFFF])
def test_impossible_block_size(iso: Path, block_size: int) -> None:
    patch(iso, PVD + 128, struct.pack("<H", block_size) + struct.pack(">H", block_size))
    md = introspect(iso)
    assert md.codes() == {"iso-bad-descriptor"}
    assert md.virtual_size == iso.stat().st_size


def test_volume_space_size_zero(iso: Path) -> None:
    patch(iso, PVD + 80, both_endian32(0))
    md = introspect(iso)
    assert "iso-bad-descriptor" in md.codes()
    assert md.virtual_size == iso.stat().st_size


def descriptor_types(path: Path) -> list[int]:
    data = path.read_bytes()
    types = []
    for sector in range(16, 80):
        raw = data[sector * SECTOR : sector * SECTOR + 6]
        if raw[1:6] != b"CD001":
            break
        types.append(raw[0])
    return types


def test_descriptor_set_without_terminator(iso: Path) -> None:
    types = descriptor_types(iso)
    terminator = 16 + types.index(255)
    patch(iso, terminator * SECTOR, bytes(SECTOR))
    md = introspect(iso)
    assert md.format == "iso"
    assert md.codes() == {"iso-bad-descriptor"}
    assert "terminator" in md.findings[0].message


def test_endless_descriptor_set(iso: Path) -> None:
    """Every sector a copy of the PVD: the walk stops at 64 descriptors."""
    data = iso.read_bytes()
    pvd = data[PVD : PVD + SECTOR]
    with open(iso, "r+b") as f:
        f.seek(PVD)
        f.write(pvd * 100)
    md = introspect(iso)
    assert "iso-bad-descriptor" in md.codes()
    assert md.iso is not None and len(md.iso.descriptors) == 64


def test_no_primary_descriptor(iso: Path) -> None:
    patch(iso, PVD, b"\x03")  # a "volume partition" descriptor instead
    md = introspect(iso)
    assert md.format == "iso"
    assert "iso-bad-descriptor" in md.codes()
    assert md.iso is not None and md.iso.volume_id is None
    assert md.virtual_size == iso.stat().st_size


def boot_record_offset(path: Path) -> int:
    return (16 + descriptor_types(path).index(0)) * SECTOR


def test_boot_catalog_past_the_end(iso: Path) -> None:
    patch(iso, boot_record_offset(iso) + 71, struct.pack("<I", 0x7FFFFFFF))
    md = introspect(iso)
    assert md.codes() == {"iso-bad-boot-catalog"}
    assert md.iso is not None and not md.iso.bootable


def test_boot_catalog_bad_checksum(iso: Path) -> None:
    catalog = struct.unpack("<I", iso.read_bytes()[boot_record_offset(iso) + 71 :][:4])[0]
    patch(iso, catalog * SECTOR + 4, b"tampered")
    md = introspect(iso)
    assert md.codes() == {"iso-bad-boot-catalog"}


def test_boot_image_past_the_end(iso: Path) -> None:
    catalog = struct.unpack("<I", iso.read_bytes()[boot_record_offset(iso) + 71 :][:4])[0]
    patch(iso, catalog * SECTOR + 32 + 8, struct.pack("<I", 0xFFFFFFF0))
    md = introspect(iso)
    assert md.codes() == {"iso-bad-boot-catalog"}
    assert md.iso is not None and md.iso.bootable  # the catalog itself is sound


def test_boot_catalog_section_claims_many_entries(iso: Path) -> None:
    catalog = struct.unpack("<I", iso.read_bytes()[boot_record_offset(iso) + 71 :][:4])[0]
    patch(iso, catalog * SECTOR + 64, b"\x91\xef\xff\xff")
    md = introspect(iso)
    assert md.iso is not None and md.iso.el_torito is not None
    assert len(md.iso.el_torito.entries) <= 128


def test_hybrid_mbr_entry_past_the_end(make_iso: MakeIso, tmp_path: Path) -> None:
    path = tmp_path / "h.iso"
    shutil.copyfile(make_iso("isohybrid-mbr", *VARIANTS["isohybrid-mbr"]), path)
    patch(path, 446 + 12, struct.pack("<I", 0x7FFFFFFF))
    md = introspect(path)
    assert md.format == "iso"
    assert md.codes() == {"mbr-bad-partition"}
    assert md.safe


@needs_mkudffs
def test_udf_bad_anchor(tmp_path: Path) -> None:
    path = tmp_path / "udf.img"
    with open(path, "wb") as f:
        f.truncate(4 * MiB)
    run("mkudffs", "--media-type=hd", "--blocksize=2048", path)
    patch(path, 256 * 2048 + 16, b"\xff\xff\xff\xff")  # main sequence length, under the CRC
    md = introspect(path)
    assert md.format == "iso"
    assert "udf-bad-descriptor" in md.codes()


# --- API behaviour -------------------------------------------------------------------------


def test_expected_format(make_iso: MakeIso) -> None:
    path = make_iso("plain")
    assert introspect(path, expected_format="iso").format == "iso"
    assert introspect(path, expected_format="ISO").format == "iso"
    with pytest.raises(FormatMismatch):
        introspect(path, expected_format="raw")  # qemu says raw; Glance says iso (docs)
    with pytest.raises(FormatMismatch):
        introspect(path, expected_format="qcow2")


def test_to_dict_is_json(make_iso: MakeIso) -> None:
    as_dict = introspect(make_iso("everything", *VARIANTS["everything"])).to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["iso"]["el_torito"]["entries"][0]["platform"] == "x86"


@pytest.fixture(scope="module")
def big_hybrid(tree: Path, make_iso: MakeIso) -> Path:
    """A 12 MiB hybrid ISO: bigger than what a stream keeps (4 MiB head + 1 MiB tail)."""
    content = tree.parent / "big"
    content.mkdir()
    (content / "blob.bin").write_bytes(bytes(range(256)) * (12 * MiB // 256))
    shutil.copyfile(tree / "boot.img", content / "boot.img")
    return make_iso("big", *BIOS, *HYBRID_MBR, "-isohybrid-gpt-basdat", content=content)


@pytest.mark.parametrize("chunk", [4096, 65536, MiB])
def test_stream_and_seekable_agree(big_hybrid: Path, chunk: int) -> None:
    data = big_hybrid.read_bytes()
    assert introspect(OnlyRead(data, chunk)).to_dict() == introspect(big_hybrid).to_dict()


def test_stream_of_truncated_iso_agrees(big_hybrid: Path, tmp_path: Path) -> None:
    path = tmp_path / "cut.iso"
    path.write_bytes(big_hybrid.read_bytes()[: 9 * MiB])
    streamed = introspect(OnlyRead(path.read_bytes())).to_dict()
    assert streamed == introspect(path).to_dict()
    assert not streamed["safe"]


def test_header_only_reads_little(big_hybrid: Path) -> None:
    with CountingFile(big_hybrid) as f:
        md = introspect(f, deep=False)
        assert f.bytes_read <= MiB
    assert md.format == "iso"


# --- fuzzing -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed_images(make_iso: MakeIso, tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    seeds = [
        make_iso(name, *VARIANTS[name]).read_bytes() for name in ("everything", "appended-efi-gpt")
    ]
    if shutil.which("mkudffs"):
        path = tmp_path_factory.mktemp("udf") / "udf.img"
        with open(path, "wb") as f:
            f.truncate(2 * MiB)
        run("mkudffs", "--media-type=hd", "--blocksize=2048", path)
        seeds.append(path.read_bytes())
    return seeds


REGIONS: list[tuple[int, int]] = [
    (0, 1024),  # MBR and GPT header
    (1024, 32 * 1024),  # GPT entries, rest of the system area
    (PVD, PVD + 4 * SECTOR),  # volume descriptors
    (33 * SECTOR, 34 * SECTOR),  # the El Torito catalog of these xorriso images
    (256 * SECTOR, 257 * SECTOR),  # UDF anchor
]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_images_never_escape(seed_images: list[bytes], data: st.DataObject) -> None:
    image = bytearray(data.draw(st.sampled_from(seed_images)))
    for _ in range(data.draw(st.integers(1, 10))):
        start, end = data.draw(st.sampled_from(REGIONS))
        offset = data.draw(st.integers(start, min(end, len(image)) - 1))
        width = data.draw(st.sampled_from([1, 2, 4, 8]))
        value = data.draw(st.integers(0, 256**width - 1))
        image[offset : offset + width] = value.to_bytes(width, "little")[: len(image) - offset]
    if data.draw(st.booleans()):
        del image[data.draw(st.integers(PVD, len(image))) :]
    results: list[Any] = []
    for source in (io.BytesIO(bytes(image)), OnlyRead(bytes(image))):
        try:
            md = introspect(source)
        except InternalParserError:
            raise
        except ImageIntrospectError as exc:
            results.append(type(exc))
            continue
        assert isinstance(md, Metadata)
        assert md.image_size == len(image)
        results.append(md.to_dict())
    assert results[0] == results[1]  # every seed is under 5 MiB: the stream keeps it all
