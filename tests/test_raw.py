"""raw disks: GPT (sgdisk, and 4 KiB sectors by hand), MBR (sfdisk), whole-disk FAT (mkfs.vfat).

Every real image is compared with ``qemu-img info`` (raw, the file's length) and its partitions
with ``sfdisk --json``, an independent reader; hostile variants are struct edits of real tables.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import uuid
import zlib
from collections.abc import Iterator
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

pytestmark = needs_qemu

needs_sgdisk = pytest.mark.skipif(shutil.which("sgdisk") is None, reason="sgdisk (gdisk) missing")
needs_sfdisk = pytest.mark.skipif(shutil.which("sfdisk") is None, reason="sfdisk (fdisk) missing")
needs_mkfs_vfat = pytest.mark.skipif(
    shutil.which("mkfs.vfat") is None, reason="mkfs.vfat (dosfstools) missing"
)

MiB = 1024 * 1024
LINUX_FS = "0fc63daf-8483-4772-8e79-3d69d8477de4"
EFI_SYSTEM = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"


# --- helpers -------------------------------------------------------------------------------


def sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def sgdisk_disk(tmp_path: Path, *args: str, size: int = 8 * MiB, name: str = "gpt.img") -> Path:
    path = sparse(tmp_path / name, size)
    run("sgdisk", "-o", *args, path)
    return path


def sfdisk_disk(tmp_path: Path, script: str, size: int = 8 * MiB, name: str = "mbr.img") -> Path:
    path = sparse(tmp_path / name, size)
    proc = subprocess.run(
        ["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(path)],
        input=script,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return path


def sfdisk_json(path: Path) -> dict[str, Any]:
    table: dict[str, Any] = json.loads(run("sfdisk", "--json", path))["partitiontable"]
    return table


def layout_of(path: Path, *, hybrid_iso: bool = False) -> tuple[partitions.DiskLayout, Findings]:
    findings = Findings()
    with open_source(path) as src:
        layout = partitions.scan(
            Context(source=src, findings=findings, deep=True), hybrid_iso=hybrid_iso
        )
    return layout, findings


def assert_same_as_qemu(path: Path) -> Metadata:
    """qemu-img sees every raw disk as raw, its virtual size the file's length."""
    md = introspect(path)
    theirs = qemu_info(path)
    theirs.pop("actual-size", None)
    ours = qemu_info_dict(md, str(path), None)
    assert ours == theirs
    assert md.format == "raw"
    assert md.virtual_size == path.stat().st_size == md.image_size
    return md


def gpt_header(
    *,
    sector: int,
    current: int,
    backup: int,
    first_usable: int,
    last_usable: int,
    disk_guid: bytes,
    entries_lba: int,
    entry_count: int,
    entry_size: int,
    entries_crc: int,
    header_size: int = 92,
) -> bytes:
    body = struct.pack(
        "<8sIIIIQQQQ16sQIII",
        b"EFI PART",
        0x00010000,
        header_size,
        0,
        0,
        current,
        backup,
        first_usable,
        last_usable,
        disk_guid,
        entries_lba,
        entry_count,
        entry_size,
        entries_crc,
    )
    crc = zlib.crc32(body[:header_size].ljust(header_size, b"\0"))
    body = body[:16] + struct.pack("<I", crc) + body[20:]
    return body.ljust(sector, b"\0")


def gpt_entry(type_guid: str, first: int, last: int, name: str) -> bytes:
    return struct.pack(
        "<16s16sQQQ72s",
        uuid.UUID(type_guid).bytes_le,
        uuid.uuid4().bytes_le,
        first,
        last,
        0,
        name.encode("utf-16-le"),
    )


def protective_mbr(total_sectors: int) -> bytes:
    entry = struct.pack("<B3sB3sII", 0, b"\0\x02\0", 0xEE, b"\xff\xff\xff", 1, total_sectors - 1)
    return bytes(446) + entry + bytes(48) + b"\x55\xaa"


def hand_made_gpt(path: Path, *, sector: int, size: int, parts: list[tuple[str, int, int]]) -> Path:
    """A GPT disk written by the book (UEFI 2.x §5.3) for any logical sector size."""
    lbas = size // sector
    entry_count, entry_size = 128, 128
    array_sectors = entry_count * entry_size // sector
    array = b"".join(gpt_entry(t, a, b, f"part{i}") for i, (t, a, b) in enumerate(parts, 1))
    array = array.ljust(entry_count * entry_size, b"\0")
    entries_crc = zlib.crc32(array)
    guid = uuid.uuid4().bytes_le
    common = {
        "sector": sector,
        "first_usable": 2 + array_sectors,
        "last_usable": lbas - 2 - array_sectors,
        "disk_guid": guid,
        "entry_count": entry_count,
        "entry_size": entry_size,
        "entries_crc": entries_crc,
    }
    primary = gpt_header(current=1, backup=lbas - 1, entries_lba=2, **common)
    backup_array_lba = lbas - 1 - array_sectors
    backup = gpt_header(current=lbas - 1, backup=1, entries_lba=backup_array_lba, **common)
    sparse(path, size)
    patch(path, 0, protective_mbr(lbas * sector // 512))
    patch(path, sector, primary)
    patch(path, 2 * sector, array)
    patch(path, backup_array_lba * sector, array)
    patch(path, (lbas - 1) * sector, backup)
    return path


def read_header(path: Path, sector: int = 512, lba: int = 1) -> dict[str, Any]:
    with open(path, "rb") as f:
        f.seek(lba * sector)
        raw = f.read(92)
    names = [
        "signature",
        "revision",
        "header_size",
        "header_crc32",
        "reserved",
        "current_lba",
        "backup_lba",
        "first_usable_lba",
        "last_usable_lba",
        "disk_guid",
        "entries_lba",
        "entry_count",
        "entry_size",
        "entries_crc32",
    ]
    return dict(zip(names, struct.unpack("<8sIIIIQQQQ16sQIII", raw), strict=True))


def rewrite_header(
    path: Path, *, sector: int = 512, lba: int = 1, fix_crc: bool = True, **changes: int
) -> None:
    """Change GPT header fields in place, recomputing the header CRC unless told not to."""
    fields = read_header(path, sector, lba)
    fields.update(changes)
    raw = struct.pack("<8sIIIIQQQQ16sQIII", *fields.values())
    if fix_crc:
        size = min(max(fields["header_size"], 92), sector)
        with open(path, "rb") as f:
            f.seek(lba * sector)
            whole = bytearray(raw + f.read(sector)[92:])
        whole[16:20] = bytes(4)
        raw = raw[:16] + struct.pack("<I", zlib.crc32(bytes(whole[:size]))) + raw[20:]
    patch(path, lba * sector, raw)


def rewrite_entry(path: Path, index: int, *, first: int, last: int, sector: int = 512) -> None:
    """Move GPT partition ``index`` (1-based) and re-sign the entry array and both headers."""
    for lba in (1, read_header(path, sector)["backup_lba"]):
        header = read_header(path, sector, lba)
        offset = header["entries_lba"] * sector + (index - 1) * header["entry_size"] + 32
        patch(path, offset, struct.pack("<QQ", first, last))
        with open(path, "rb") as f:
            f.seek(header["entries_lba"] * sector)
            array = f.read(header["entry_count"] * header["entry_size"])
        rewrite_header(path, sector=sector, lba=lba, entries_crc32=zlib.crc32(array))


def mbr_entries(path: Path, entries: list[tuple[int, int, int, int]]) -> None:
    """Write (status, type, first_lba, sectors) entries and the 55 AA signature."""
    raw = b"".join(
        struct.pack("<B3sB3sII", s, b"\0\0\0", t, b"\0\0\0", a, n) for s, t, a, n in entries
    )
    patch(path, 446, raw.ljust(64, b"\0") + b"\x55\xaa")


# --- GPT from sgdisk -----------------------------------------------------------------------


@needs_sgdisk
@pytest.mark.parametrize(
    "args",
    [
        ("-n", "1:2048:+1M"),
        ("-n", "1:2048:+1M", "-n", "2:0:+2M", "-t", "2:ef00", "-c", "2:EFI system"),
        (
            "-n",
            "1:34:0",
        ),  # one partition over every usable sector
        ("-a", "1", "-n", "1:40:+3K", "-n", "2:0:+1K", "-n", "3:0:0"),
    ],
    ids=["one", "named-efi", "whole-disk", "unaligned"],
)
def test_sgdisk_gpt(tmp_path: Path, args: tuple[str, ...]) -> None:
    path = sgdisk_disk(tmp_path, *args)
    md = assert_same_as_qemu(path)
    assert md.partition_table == "gpt"
    assert md.findings == ()
    assert md.safe
    layout, _ = layout_of(path)
    theirs = sfdisk_json(path)
    assert theirs["label"] == "gpt"
    assert layout.gpt is not None
    assert layout.gpt.disk_guid == theirs["id"].lower()
    assert layout.gpt.first_usable_lba == theirs["firstlba"]
    assert layout.gpt.last_usable_lba == theirs["lastlba"]
    assert [
        (p.first_lba, p.last_lba - p.first_lba + 1, p.type_guid, p.guid)
        for p in layout.gpt_partitions
    ] == [
        (p["start"], p["size"], p["type"].lower(), p["uuid"].lower()) for p in theirs["partitions"]
    ]
    names = [p.get("name", "") for p in theirs["partitions"]]
    assert [p.name for p in layout.gpt_partitions] == names


@needs_sgdisk
def test_gpt_empty_table(tmp_path: Path) -> None:
    """``sgdisk -o`` alone: a valid GPT with no partition is still a GPT disk."""
    path = sgdisk_disk(tmp_path)
    md = assert_same_as_qemu(path)
    assert md.partition_table == "gpt"
    assert layout_of(path)[0].gpt_partitions == ()


@pytest.mark.parametrize("sector", [512, 4096])
def test_hand_made_gpt(tmp_path: Path, sector: int) -> None:
    size = 16 * MiB
    lbas = size // sector
    parts = [(LINUX_FS, 256, 511), (EFI_SYSTEM, 512, lbas - 64)]
    path = hand_made_gpt(tmp_path / f"gpt{sector}.img", sector=sector, size=size, parts=parts)
    md = assert_same_as_qemu(path)
    assert md.partition_table == "gpt"
    assert md.findings == ()
    layout, _ = layout_of(path)
    assert layout.gpt is not None and layout.gpt.sector_size == sector
    assert [(p.type_guid, p.first_lba, p.last_lba) for p in layout.gpt_partitions] == parts
    if shutil.which("fdisk"):  # the builder itself, checked by libfdisk at that sector size
        listing = run("fdisk", "-b", str(sector), "-l", path)
        assert "Disklabel type: gpt" in listing
        rows = [line.split() for line in listing.splitlines() if line.startswith(str(path))]
        assert [(int(row[1]), int(row[2])) for row in rows] == [(a, b) for _, a, b in parts]


# --- MBR from sfdisk -----------------------------------------------------------------------


@needs_sfdisk
@pytest.mark.parametrize(
    "script",
    [
        ",,83\n",
        "2048,4096,83,*\n,2048,82\n,,c\n",
        "label: dos\n,1M,83\n,,5\n,1M,83\n,,83\n",  # extended partition with logical ones
        "start=63,size=1000,type=7\n",
    ],
    ids=["one", "three-bootable", "extended", "old-style-63"],
)
def test_sfdisk_mbr(tmp_path: Path, script: str) -> None:
    path = sfdisk_disk(tmp_path, script)
    md = assert_same_as_qemu(path)
    assert md.partition_table == "mbr"
    assert md.findings == ()
    layout, _ = layout_of(path)
    primaries = [
        p for p in sfdisk_json(path)["partitions"] if int(p["node"][len(str(path)) :]) <= 4
    ]
    assert [(p.first_lba, p.sectors, f"{p.type:x}", p.bootable) for p in layout.mbr_partitions] == [
        (p["start"], p["size"], p["type"], p.get("bootable", False)) for p in primaries
    ]


@needs_sfdisk
@needs_mkfs_vfat
def test_fat_inside_an_mbr_partition_is_still_mbr(tmp_path: Path) -> None:
    path = sfdisk_disk(tmp_path, "2048,,c\n", size=40 * MiB)
    part = sparse(tmp_path / "part.img", 40 * MiB - MiB)
    run("mkfs.vfat", "-F", "32", part)
    with open(path, "r+b") as f:
        f.seek(MiB)
        f.write(part.read_bytes())
    md = assert_same_as_qemu(path)
    assert md.partition_table == "mbr"


# --- not partition tables ------------------------------------------------------------------


@needs_mkfs_vfat
@pytest.mark.parametrize(
    ("args", "size", "kind"),
    [
        ((), 1440 * 1024, "fat12"),
        (("-F", "16"), 32 * MiB, "fat16"),
        (("-F", "32"), 40 * MiB, "fat32"),
        (("-F", "32", "-S", "4096"), 64 * MiB, "fat32"),
    ],
    ids=["fat12", "fat16", "fat32", "fat32-4k"],
)
def test_mkfs_vfat_on_a_whole_file_is_not_an_mbr(
    tmp_path: Path, args: tuple[str, ...], size: int, kind: str
) -> None:
    path = sparse(tmp_path / "fat.img", size)
    run("mkfs.vfat", *args, path)
    assert path.read_bytes()[510:512] == b"\x55\xaa"  # what fools a naive MBR check
    md = assert_same_as_qemu(path)
    assert md.partition_table is None
    assert md.codes() == {"whole-disk-filesystem"}
    assert md.safe
    assert layout_of(path)[0].boot_sector == kind


def test_ntfs_and_exfat_boot_sectors_are_not_mbrs(tmp_path: Path) -> None:
    for oem in (b"NTFS    ", b"EXFAT   "):
        path = sparse(tmp_path / "fs.img", MiB)
        # The bytes where MBR entries would sit hold boot code that happens to parse.
        mbr_entries(path, [(0x80, 0x07, 1, 100)])
        patch(path, 0, b"\xeb\x52\x90" + oem)
        md = introspect(path)
        assert md.partition_table is None
        assert "whole-disk-filesystem" in md.codes()


def test_all_zero_file(tmp_path: Path) -> None:
    path = sparse(tmp_path / "zero.img", 4 * MiB)
    md = assert_same_as_qemu(path)
    assert md.partition_table is None
    assert md.findings == ()


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "random.img"
    path.write_bytes(bytes(range(256)) * 4096)
    md = assert_same_as_qemu(path)
    assert md.partition_table is None


@pytest.mark.parametrize("size", [1, 511, 513, 1000, 4 * MiB + 7])
def test_odd_sizes(tmp_path: Path, size: int) -> None:
    """qemu pads a partial last sector: its virtual-size is rounded up, ours is the length."""
    path = tmp_path / "odd.img"
    path.write_bytes(b"\1" * size)
    md = introspect(path)
    theirs = qemu_info(path)
    theirs.pop("actual-size", None)
    assert qemu_info_dict(md, str(path), None) == theirs
    assert md.virtual_size == size
    assert theirs["virtual-size"] == -(-size // 512) * 512


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.img"
    path.write_bytes(b"")
    md = introspect(path)
    assert (md.format, md.virtual_size, md.partition_table) == ("raw", 0, None)


def test_empty_mbr_label_is_no_table(tmp_path: Path) -> None:
    """An MBR with no used entry describes nothing (documented choice)."""
    path = sparse(tmp_path / "label.img", MiB)
    patch(path, 510, b"\x55\xaa")
    assert introspect(path).partition_table is None


def test_bad_status_byte_is_not_an_mbr(tmp_path: Path) -> None:
    path = sparse(tmp_path / "bad.img", MiB)
    mbr_entries(path, [(0x12, 0x83, 2048, 100)])
    assert introspect(path).partition_table is None


# --- hostile GPT ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("sgdisk") is None:
        pytest.skip("sgdisk (gdisk) missing")
    return sgdisk_disk(tmp_path_factory.mktemp("gpt"), "-n", "1:2048:+1M", "-n", "2:0:+1M")


@pytest.fixture
def gpt(gpt_template: Path, tmp_path: Path) -> Path:
    """A fresh copy of an sgdisk disk (8 MiB, partitions at 1-2 MiB and 2-3 MiB) to edit."""
    path = tmp_path / "gpt.img"
    shutil.copyfile(gpt_template, path)
    return path


def test_bad_primary_crc_falls_back_to_the_backup(gpt: Path) -> None:
    rewrite_header(gpt, fix_crc=False, header_crc32=0x12345678)
    md = introspect(gpt)
    assert md.format == "raw"
    assert md.partition_table == "gpt"  # the backup header is intact: readers use it
    assert {"gpt-crc-mismatch", "gpt-backup-header"} <= md.codes()
    assert md.safe  # a damaged table is the guest's problem, not the host's (docs)


def test_bad_crc_in_both_headers_is_no_table(gpt: Path) -> None:
    backup = read_header(gpt)["backup_lba"]
    rewrite_header(gpt, fix_crc=False, header_crc32=1)
    rewrite_header(gpt, lba=backup, fix_crc=False, header_crc32=1)
    md = introspect(gpt)
    assert md.partition_table is None
    assert "gpt-crc-mismatch" in md.codes()


def test_bad_entry_array_crc(gpt: Path) -> None:
    entries = read_header(gpt)["entries_lba"] * 512
    patch(gpt, entries + 56, "renamed".encode("utf-16-le"))
    md = introspect(gpt)
    assert md.partition_table == "gpt"
    assert "gpt-crc-mismatch" in md.codes()


@pytest.mark.parametrize("header_size", [0, 91, 513, 0xFFFFFFFF])
def test_impossible_header_size(gpt: Path, header_size: int) -> None:
    rewrite_header(gpt, header_size=header_size)
    md = introspect(gpt)
    assert "gpt-header-invalid" in md.codes()
    assert md.partition_table == "gpt"  # from the backup


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("entry_count", 0xFFFFFFFF),
        ("entry_count", 0x10000),  # 8 MiB of entries: inside the disk, over the read limit
        ("entry_size", 0xFFFFFFFF),
        ("entry_size", 100),
        ("entries_lba", 2**63),
        ("current_lba", 7),
        ("first_usable_lba", 2**64 - 1),
    ],
)
def test_impossible_header_fields(gpt: Path, field: str, value: int) -> None:
    rewrite_header(gpt, **{field: value})
    md = introspect(gpt, deep=False)
    assert "gpt-header-invalid" in md.codes()
    assert md.format == "raw"


def test_huge_entry_array_is_not_read(tmp_path: Path) -> None:
    """2^32 - 1 entries inside a disk big enough to hold them are still not read."""
    path = hand_made_gpt(tmp_path / "big.img", sector=512, size=8 * MiB, parts=[])
    rewrite_header(path, entry_count=0xFFFFFFFF)
    with open(path, "ab") as f:
        f.truncate(600 * 1024**3)  # sparse: 600 GiB claimed by the file system, 8 MiB on disk
    with CountingFile(path) as f:
        md = introspect(f, deep=False)
        assert f.bytes_read < MiB
    assert "gpt-header-invalid" in md.codes()


def test_partition_past_the_end(gpt: Path) -> None:
    rewrite_entry(gpt, 2, first=4096, last=10**9)
    md = introspect(gpt)
    assert md.partition_table == "gpt"
    assert "gpt-partition-out-of-range" in md.codes()
    assert not any("crc" in f.code for f in md.findings)


def test_partition_ending_before_it_starts(gpt: Path) -> None:
    rewrite_entry(gpt, 1, first=4000, last=3000)
    assert "gpt-partition-out-of-range" in introspect(gpt).codes()


def test_partition_over_the_gpt_itself(gpt: Path) -> None:
    rewrite_entry(gpt, 1, first=0, last=100)
    md = introspect(gpt)
    assert "gpt-partition-out-of-range" in md.codes()
    assert "usable" in " ".join(f.message for f in md.findings)


def test_truncated_gpt_disk(gpt: Path) -> None:
    with open(gpt, "r+b") as f:
        f.truncate(5 * MiB // 2)  # partition 2 (2..3 MiB) keeps its start, loses its end
    md = assert_same_as_qemu(gpt)
    assert md.partition_table == "gpt"
    assert {"gpt-backup-header", "gpt-partition-out-of-range"} <= md.codes()


def test_grown_gpt_disk(gpt: Path) -> None:
    """``qemu-img resize`` on a GPT disk leaves the backup header in the middle."""
    with open(gpt, "r+b") as f:
        f.truncate(16 * MiB)
    md = assert_same_as_qemu(gpt)
    assert md.partition_table == "gpt"
    assert md.codes() == {"gpt-backup-header"}
    assert md.safe


def test_backup_disagrees(gpt: Path) -> None:
    backup = read_header(gpt)["backup_lba"]
    rewrite_header(gpt, lba=backup, disk_guid=uuid.uuid4().bytes_le)
    md = introspect(gpt)
    assert md.codes() == {"gpt-backup-header"}
    assert "disk GUID" in md.findings[0].message


def test_gpt_without_protective_mbr(gpt: Path) -> None:
    mbr_entries(gpt, [(0x80, 0x83, 2048, 2048)])
    md = introspect(gpt)
    assert md.partition_table == "gpt"
    assert md.codes() == {"gpt-without-protective-mbr"}


def test_protective_mbr_without_gpt(gpt: Path) -> None:
    """LBA 1 wiped: like Linux, read the backup header from the last sector."""
    patch(gpt, 512, bytes(512))
    md = introspect(gpt)
    assert md.partition_table == "gpt"
    assert md.codes() == {"gpt-header-invalid", "gpt-backup-header"}


def test_protective_mbr_and_nothing_else(tmp_path: Path) -> None:
    path = sparse(tmp_path / "pmbr.img", MiB)
    patch(path, 0, protective_mbr(2048))
    md = introspect(path)
    assert md.partition_table is None
    assert "gpt-header-invalid" in md.codes()


# --- hostile MBR ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([(0x80, 0x83, 2048, 4096), (0, 0x83, 4000, 100)], "overlap"),
        ([(0, 0x83, 2048, 4096), (0, 0x07, 2048, 4096)], "overlap"),
        ([(0, 0x83, 2048, 0xFFFFFFFF)], "ends past"),
        ([(0, 0x83, 0xFFFFFFFF, 0xFFFFFFFF)], "ends past"),
    ],
    ids=["overlap", "same-range", "too-long", "start-past-end"],
)
def test_bad_mbr_entries(
    tmp_path: Path, entries: list[tuple[int, int, int, int]], expected: str
) -> None:
    path = sparse(tmp_path / "mbr.img", 8 * MiB)
    mbr_entries(path, entries)
    md = assert_same_as_qemu(path)
    assert md.partition_table == "mbr"
    assert md.codes() == {"mbr-bad-partition"}
    assert expected in md.findings[0].message
    assert md.safe


# --- API behaviour -------------------------------------------------------------------------


def test_expected_format(gpt: Path) -> None:
    assert introspect(gpt, expected_format="raw").partition_table == "gpt"
    with pytest.raises(FormatMismatch):
        introspect(gpt, expected_format="qcow2")
    assert introspect(gpt).glance_properties()["disk_format"] == "raw"


def test_to_dict_is_json(gpt: Path) -> None:
    as_dict = introspect(gpt).to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["partition_table"] == "gpt"


@pytest.mark.parametrize("chunk", [512, 65536, 1 << 20])
def test_stream_and_seekable_agree(tmp_path: Path, chunk: int) -> None:
    """A 24 MiB disk: the stream keeps the head and the tail (backup header), not the middle."""
    if shutil.which("sgdisk") is None:
        pytest.skip("sgdisk (gdisk) missing")
    path = sgdisk_disk(tmp_path, "-n", "1:2048:+4M", "-n", "2:0:0", size=24 * MiB)
    for variant in ("as-made", "bad-primary", "grown"):
        if variant == "bad-primary":
            rewrite_header(path, fix_crc=False, header_crc32=7)
        if variant == "grown":
            with open(path, "r+b") as f:
                f.truncate(40 * MiB)
        seekable = introspect(path).to_dict()
        streamed = introspect(OnlyRead(path.read_bytes(), chunk)).to_dict()
        assert streamed == seekable, variant


def test_header_only_reads_little(tmp_path: Path) -> None:
    path = hand_made_gpt(tmp_path / "g.img", sector=4096, size=64 * MiB, parts=[(LINUX_FS, 6, 100)])
    with CountingFile(path) as f:
        introspect(f, deep=False)
        assert f.bytes_read <= MiB


# --- fuzzing -------------------------------------------------------------------------------


def _seeds(tmp_path: Path) -> Iterator[bytes]:
    yield hand_made_gpt(
        tmp_path / "g512.img", sector=512, size=MiB, parts=[(LINUX_FS, 34, 100)]
    ).read_bytes()
    yield hand_made_gpt(
        tmp_path / "g4k.img", sector=4096, size=2 * MiB, parts=[(LINUX_FS, 6, 100)]
    ).read_bytes()
    mbr = sparse(tmp_path / "m.img", MiB)
    mbr_entries(mbr, [(0x80, 0x83, 63, 1000), (0, 0x05, 1063, 500)])
    yield mbr.read_bytes()
    fat = bytearray(MiB)
    fat[0:3] = b"\xeb\x3c\x90"
    fat[11:22] = struct.pack("<HBHBHHB", 512, 4, 1, 2, 512, 2048, 0xF8)
    fat[54:59] = b"FAT12"
    fat[510:512] = b"\x55\xaa"
    yield bytes(fat)


@pytest.fixture(scope="module")
def seed_images(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    return list(_seeds(tmp_path_factory.mktemp("seeds")))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_tables_never_escape(seed_images: list[bytes], data: st.DataObject) -> None:
    image = bytearray(data.draw(st.sampled_from(seed_images)))
    # Mutate where the tables live: sector 0, the header, the entry array, the last sectors.
    region = data.draw(
        st.sampled_from(
            [(0, 512), (512, 4096 + 92), (1024, 20480), (len(image) - 8192, len(image))]
        )
    )
    for _ in range(data.draw(st.integers(1, 8))):
        offset = data.draw(st.integers(*region).filter(lambda o: o < len(image)))
        width = data.draw(st.sampled_from([1, 4, 8]))
        value = data.draw(st.integers(0, 256**width - 1))
        image[offset : offset + width] = value.to_bytes(width, "little")[: len(image) - offset]
    if data.draw(st.booleans()):
        del image[data.draw(st.integers(0, len(image))) :]
    for source in (io.BytesIO(bytes(image)), OnlyRead(bytes(image))):
        try:
            md = introspect(source)
        except InternalParserError:
            raise
        except ImageIntrospectError:
            continue
        assert isinstance(md, Metadata)
        assert md.format == "raw"
        assert md.partition_table in (None, "gpt", "mbr")
        assert md.virtual_size == len(image)
