"""Partition tables and whole-disk boot sectors in an image's first sectors (GPT, MBR, FAT...).

A partition table is not a format: a GPT or MBR disk is ``raw`` (and a hybrid ISO is ``iso``),
so nothing here takes part in detection.  :func:`scan` tells what the first sectors hold, for
``Metadata.partition_table`` and for the ISO section's ``hybrid`` flag, and reports what is
wrong with the table as findings.

Layouts: the UEFI specification (GPT header at LBA 1, entry array, backup header in the last
LBA, protective MBR with one type-0xEE entry) and the classic PC MBR (four 16-byte entries at
byte 446, ``55 AA`` at 510).  A FAT, NTFS or exFAT boot sector also ends in ``55 AA`` and its
boot code overlaps where the MBR entries would be, so it is recognised first and never read as
an MBR: ``mkfs.vfat`` on a whole file makes a file system, not a partitioned disk.
"""

from __future__ import annotations

import uuid
import zlib
from typing import Any

from .. import _layouts
from .. import findings as F
from ..frozen import frozen
from ..source import StreamGap
from ..structs import EntryTable, parse_struct
from .base import Context, Section

MBR_SIZE = 512
BOOT_SIGNATURE = b"\x55\xaa"
MBR_ENTRIES_OFFSET = 446
GPT_SIGNATURE = b"EFI PART"
GPT_SECTOR_SIZES = (512, 4096)
PROTECTIVE_MBR_TYPE = 0xEE
GPT_ENTRY_MAX_SIZE = 4096
#: The most of a GPT partition entry array this library reads.  The UEFI minimum is 16 KiB;
#: xorriso writes 31 KiB.  Anything larger is reported, never read (it keeps header-only
#: introspection under its 1 MiB budget whatever the header claims).
GPT_ENTRY_ARRAY_LIMIT = 512 * 1024
#: Partitions listed in the answer (the entry array may hold thousands of empty slots).
GPT_PARTITIONS_LISTED = 128

# --- schemas -------------------------------------------------------------------------------

# The layouts, derived from the construct schemas in formats/schemas/partitions.py by
# scripts/gen_layouts.py (edit the schema, then run it): no construct on this path.
MBR_ENTRY = _layouts.PARTITIONS_MBR_ENTRY
GPT_HEADER = _layouts.PARTITIONS_GPT_HEADER
GPT_ENTRY = _layouts.PARTITIONS_GPT_ENTRY
FAT_BPB = _layouts.PARTITIONS_FAT_BPB
# Table entries repeat: decoded by struct, derived from the schemas (see structs.EntryTable).
MBR_ENTRY_TABLE = EntryTable(MBR_ENTRY, "MBR partition entries")

GPT_HEADER_CRC_OFFSET = 16

GPT_ENTRY_TABLE = EntryTable(GPT_ENTRY, "GPT partition entry")
#: The smallest header and entry the UEFI specification allows: the fields above.
GPT_HEADER_MIN_SIZE = GPT_HEADER.size
GPT_ENTRY_MIN_SIZE = GPT_ENTRY_TABLE.size
NO_GUID = bytes(16)

FAT_BPB_SIZE = FAT_BPB.size
FAT12_16_TYPE_OFFSET = 54
FAT32_TYPE_OFFSET = 82

# --- findings ------------------------------------------------------------------------------

SCOPE = "partition tables (raw, iso)"

GPT_CRC_MISMATCH = F.define(
    "gpt-crc-mismatch",
    "warning",
    SCOPE,
    "A GPT header's or entry array's CRC32 does not match; readers fall back to the other "
    "copy, or see no partitions at all.",
)
GPT_HEADER_INVALID = F.define(
    "gpt-header-invalid",
    "warning",
    SCOPE,
    "A GPT header field is impossible (header size, own LBA, usable range, entry size or "
    "count); firmware and kernels reject such a header.",
)
GPT_BACKUP_HEADER = F.define(
    "gpt-backup-header",
    "info",
    SCOPE,
    "The backup GPT header is missing, not in the last sector, or disagrees with the primary "
    "(typical of a disk image that was resized after partitioning).",
)
GPT_PARTITION_OUT_OF_RANGE = F.define(
    "gpt-partition-out-of-range",
    "warning",
    SCOPE,
    "A GPT partition ends before it starts, or lies outside the usable LBAs or the image.",
)
GPT_WITHOUT_PROTECTIVE_MBR = F.define(
    "gpt-without-protective-mbr",
    "info",
    SCOPE,
    "A valid GPT whose sector 0 has no type-0xEE entry: Linux then ignores the GPT and uses "
    "the MBR entries, UEFI firmware uses the GPT.",
)
MBR_BAD_PARTITION = F.define(
    "mbr-bad-partition",
    "warning",
    SCOPE,
    "An MBR partition entry lies beyond the end of the image or overlaps another one.",
)
WHOLE_DISK_FILESYSTEM = F.define(
    "whole-disk-filesystem",
    "info",
    SCOPE,
    "Sector 0 is a FAT, NTFS or exFAT boot sector: a file system on the whole disk, with no "
    "partition table (its 55 AA signature is not an MBR).",
)

# --- what a scan finds ---------------------------------------------------------------------


@frozen
class MbrPartition(Section):
    index: int
    bootable: bool
    type: int
    first_lba: int
    sectors: int


@frozen
class GptPartition(Section):
    index: int
    type_guid: str
    guid: str
    first_lba: int
    last_lba: int
    attributes: int
    name: str


@frozen
class GptHeader(Section):
    sector_size: int
    revision: str
    header_size: int
    current_lba: int
    backup_lba: int
    first_usable_lba: int
    last_usable_lba: int
    disk_guid: str
    entries_lba: int
    entry_count: int
    entry_size: int


@frozen
class DiskLayout(Section):
    """What the first sectors hold.  ``table`` is the public ``partition_table`` value."""

    table: str | None
    mbr_partitions: tuple[MbrPartition, ...]
    gpt: GptHeader | None
    gpt_partitions: tuple[GptPartition, ...]
    boot_sector: str | None

    def partitions(self) -> tuple[MbrPartition | GptPartition, ...]:
        """The table's partitions: GPT entries for a GPT disk, else the MBR's."""
        return self.gpt_partitions or self.mbr_partitions

    def covered_bytes(self, offset: int, end: int) -> int:
        """How many bytes of ``offset..end`` lie inside some partition (for appended data)."""
        sector = self.gpt.sector_size if self.gpt is not None else MBR_SIZE
        spans = [(p.first_lba, p.last_lba + 1) for p in self.gpt_partitions]
        spans += [(p.first_lba, p.first_lba + p.sectors) for p in self.mbr_partitions]
        covered = 0
        position = offset
        for first, last in sorted((a * sector, b * sector) for a, b in spans):
            first, last = max(first, position), min(last, end)
            if first < last:
                covered += last - first
                position = last
        return covered


NO_TABLE = DiskLayout(None, (), None, (), None)


def scan(ctx: Context, *, hybrid_iso: bool = False) -> DiskLayout:
    """Read the first sectors of the image; report the table's problems as findings.

    :param hybrid_iso: the sectors are an ISO's system area, where xorriso and isohybrid
        deliberately write a non-protective MBR beside a GPT, and nest boot partitions inside
        the ISO partition: neither is worth a finding there.
    """
    sector0 = ctx.source.read_at(0, MBR_SIZE)
    if len(sector0) < MBR_SIZE or sector0[510:512] != BOOT_SIGNATURE:
        mbr_entries: list[Any] = []
    else:
        mbr_entries = MBR_ENTRY_TABLE.decode_all(sector0[446:510])
    boot_sector = _boot_sector_kind(sector0) if mbr_entries else None
    gpt = _scan_gpt(ctx, mbr_entries, hybrid_iso)
    if gpt is not None:
        return DiskLayout("gpt", (), gpt[0], gpt[1], None)
    if boot_sector is not None:
        ctx.findings.add(
            WHOLE_DISK_FILESYSTEM,
            f"sector 0 is a {boot_sector} boot sector, not a partition table",
        )
        return DiskLayout(None, (), None, (), boot_sector)
    partitions = _mbr_partitions(mbr_entries)
    if partitions is None or _is_protective(partitions):
        return NO_TABLE
    _check_mbr(ctx, partitions, hybrid_iso)
    return DiskLayout("mbr", partitions, None, (), None)


# --- boot sectors --------------------------------------------------------------------------


def _boot_sector_kind(sector: bytes) -> str | None:
    """``fat12``/``fat16``/``fat32``/``ntfs``/``exfat`` when sector 0 is such a boot sector."""
    if sector[3:11] == b"NTFS    ":
        return "ntfs"
    if sector[3:11] == b"EXFAT   ":
        return "exfat"
    # The jump instruction first, on the bytes: most sectors fail it, without a parse.
    jumps = (sector[0] == 0xEB and sector[2] == 0x90) or sector[0] == 0xE9
    if not jumps:
        return None
    bpb = parse_struct(FAT_BPB, sector[:FAT_BPB_SIZE], "FAT boot sector")
    plausible = (
        bpb.bytes_per_sector in (512, 1024, 2048, 4096)
        and bpb.sectors_per_cluster in (1, 2, 4, 8, 16, 32, 64, 128)
        and bpb.reserved_sectors >= 1
        and 1 <= bpb.fat_count <= 4
        and (bpb.media == 0xF0 or bpb.media >= 0xF8)
    )
    if not plausible:
        return None
    if sector[FAT32_TYPE_OFFSET : FAT32_TYPE_OFFSET + 5] == b"FAT32":
        return "fat32"
    label = sector[FAT12_16_TYPE_OFFSET : FAT12_16_TYPE_OFFSET + 5]
    if label in (b"FAT12", b"FAT16"):
        return label.decode("ascii").lower()
    # Old DOS formatters wrote no type string; a BPB this plausible is still a file system.
    return "fat"


# --- MBR -----------------------------------------------------------------------------------


def _mbr_partitions(entries: list[Any]) -> tuple[MbrPartition, ...] | None:
    """The used entries, or None when the four entries do not look like a partition table.

    Like the Linux kernel, a status byte other than 0x00/0x80 rules a table out.  A table with
    no used entry (an empty label) is not reported: it describes nothing.
    """
    if not entries or any(entry.status not in (0x00, 0x80) for entry in entries):
        return None
    used = tuple(
        MbrPartition(index, entry.status == 0x80, entry.type, entry.first_lba, entry.sectors)
        for index, entry in enumerate(entries, start=1)
        if entry.type != 0 and entry.sectors != 0
    )
    return used or None


def _is_protective(partitions: tuple[MbrPartition, ...]) -> bool:
    return any(p.type == PROTECTIVE_MBR_TYPE for p in partitions)


def _check_mbr(ctx: Context, partitions: tuple[MbrPartition, ...], hybrid_iso: bool) -> None:
    disk_sectors = ctx.source.size // MBR_SIZE
    for part in partitions:
        end = part.first_lba + part.sectors
        if end > disk_sectors:
            ctx.findings.add(
                MBR_BAD_PARTITION,
                f"MBR partition {part.index} (sectors {part.first_lba}..{end - 1}) ends past "
                f"the image's {disk_sectors} sectors",
            )
    if hybrid_iso:  # hybrid ISOs nest their EFI partition inside the ISO partition by design
        return
    for i, first in enumerate(partitions):
        for second in partitions[i + 1 :]:
            if (
                first.first_lba < second.first_lba + second.sectors
                and second.first_lba < first.first_lba + first.sectors
            ):
                ctx.findings.add(
                    MBR_BAD_PARTITION,
                    f"MBR partitions {first.index} and {second.index} overlap",
                )


# --- GPT -----------------------------------------------------------------------------------


@frozen
class _Header:
    """A GPT header as read, with the verdict on it."""

    fields: Any
    sector_size: int
    problems: tuple[str, ...]
    crc_checked: bool
    crc_ok: bool


def _scan_gpt(
    ctx: Context, mbr_entries: list[Any], hybrid_iso: bool
) -> tuple[GptHeader, tuple[GptPartition, ...]] | None:
    """The GPT, when LBA 1 (of 512- or 4096-byte sectors) or the last LBA holds a valid one."""
    protective = any(e.type == PROTECTIVE_MBR_TYPE for e in mbr_entries)
    primary = _find_primary(ctx)
    if primary is None:
        if not protective:
            return None
        ctx.findings.add(
            GPT_HEADER_INVALID, "the protective MBR announces a GPT, but LBA 1 holds none"
        )
        header = _usable_backup(ctx, GPT_SECTOR_SIZES)
    elif primary.crc_ok and not primary.problems:
        header = primary
        if not hybrid_iso and not protective:
            ctx.findings.add(
                GPT_WITHOUT_PROTECTIVE_MBR, "the GPT is valid but sector 0 has no type-0xEE entry"
            )
    else:
        _report_bad_header(ctx, primary, "primary")
        header = _usable_backup(ctx, (primary.sector_size,))
    if header is None:
        return None
    partitions = _read_entries(ctx, header, hybrid_iso)
    if header is primary:
        _check_backup(ctx, header)
    return _public_header(header), partitions


def _find_primary(ctx: Context) -> _Header | None:
    for sector_size in GPT_SECTOR_SIZES:
        raw = ctx.source.read_at(sector_size, sector_size)
        if raw[:8] == GPT_SIGNATURE and len(raw) >= GPT_HEADER_MIN_SIZE:
            return _read_header(raw, sector_size, 1)
    return None


def _read_header(raw: bytes, sector_size: int, expected_lba: int) -> _Header:
    fields = parse_struct(GPT_HEADER, raw[:GPT_HEADER_MIN_SIZE], "GPT header")
    problems: list[str] = []
    size = fields.header_size
    if not GPT_HEADER_MIN_SIZE <= size <= sector_size:
        problems.append(f"header size {size} outside {GPT_HEADER_MIN_SIZE}..{sector_size}")
        crc_checked = crc_ok = False
    else:
        crc_checked = True
        zeroed = bytearray(raw[:size])
        zeroed[GPT_HEADER_CRC_OFFSET : GPT_HEADER_CRC_OFFSET + 4] = bytes(4)
        crc_ok = zlib.crc32(zeroed) == fields.header_crc32
    if fields.current_lba != expected_lba:
        problems.append(f"header says it is at LBA {fields.current_lba}, not {expected_lba}")
    if fields.first_usable_lba > fields.last_usable_lba:
        problems.append(
            f"first usable LBA {fields.first_usable_lba} > last {fields.last_usable_lba}"
        )
    entry_size = fields.entry_size
    if not GPT_ENTRY_MIN_SIZE <= entry_size <= GPT_ENTRY_MAX_SIZE or entry_size & (entry_size - 1):
        problems.append(f"partition entry size {entry_size} is not 128 × 2^n (≤ 4096)")
    return _Header(fields, sector_size, tuple(problems), crc_checked, crc_ok)


def _report_bad_header(ctx: Context, header: _Header, which: str) -> None:
    if header.problems:
        ctx.findings.add(GPT_HEADER_INVALID, f"{which} GPT header: " + "; ".join(header.problems))
    if header.crc_checked and not header.crc_ok:
        ctx.findings.add(
            GPT_CRC_MISMATCH,
            f"{which} GPT header CRC32 is 0x{header.fields.header_crc32:08x}, "
            "its bytes give another value",
        )


def _last_lba(ctx: Context, sector_size: int) -> int:
    return ctx.source.size // sector_size - 1


class _Unreadable(Exception):
    """The sector lies in a stream's unkept middle (already reported as stream-unchecked)."""


def _read_backup(ctx: Context, lba: int, sector_size: int) -> _Header | None:
    """The header at ``lba``, or None when no GPT header is there."""
    try:
        raw = ctx.source.read_at(lba * sector_size, sector_size)
    except StreamGap as gap:
        ctx.findings.add(F.STREAM_UNCHECKED, f"backup GPT header at LBA {lba} not checked")
        raise _Unreadable from gap
    if len(raw) < GPT_HEADER_MIN_SIZE or raw[:8] != GPT_SIGNATURE:
        return None
    return _read_header(raw, sector_size, lba)


def _usable_backup(ctx: Context, sector_sizes: tuple[int, ...]) -> _Header | None:
    """With the primary header broken, readers look for the backup in the last sector."""
    for sector_size in sector_sizes:
        last = _last_lba(ctx, sector_size)
        try:
            backup = _read_backup(ctx, last, sector_size) if last > 1 else None
        except _Unreadable:
            return None
        if backup is None:
            continue
        if not backup.crc_ok or backup.problems:
            _report_bad_header(ctx, backup, "backup")
            return None
        ctx.findings.add(
            GPT_BACKUP_HEADER,
            f"the primary GPT header is unusable; the backup at LBA {last} is valid",
        )
        return backup
    ctx.findings.add(GPT_BACKUP_HEADER, "no backup GPT header in the last sector either")
    return None


def _check_backup(ctx: Context, primary: _Header) -> None:
    """The backup header should sit in the last sector and agree with the primary."""
    fields = primary.fields
    last = _last_lba(ctx, primary.sector_size)
    if fields.backup_lba != last:
        where = "past the end of" if fields.backup_lba > last else "not at the end of"
        ctx.findings.add(
            GPT_BACKUP_HEADER,
            f"the backup GPT header's LBA {fields.backup_lba} is {where} the image "
            f"(last LBA {last})",
        )
        if fields.backup_lba > last:
            return
    try:
        backup = _read_backup(ctx, fields.backup_lba, primary.sector_size)
    except _Unreadable:
        return
    if backup is None:
        ctx.findings.add(GPT_BACKUP_HEADER, f"no backup GPT header at LBA {fields.backup_lba}")
        return
    other = backup.fields
    disagreements = [
        name
        for name, ok in (
            ("CRC32", backup.crc_ok and not backup.problems),
            ("alternate LBA", other.backup_lba == fields.current_lba),
            ("disk GUID", other.disk_guid == fields.disk_guid),
            ("entry count", other.entry_count == fields.entry_count),
            ("entry size", other.entry_size == fields.entry_size),
            ("entry array CRC32", other.entries_crc32 == fields.entries_crc32),
        )
        if not ok
    ]
    if disagreements:
        ctx.findings.add(
            GPT_BACKUP_HEADER,
            f"backup GPT header at LBA {fields.backup_lba} disagrees: " + ", ".join(disagreements),
        )


def _read_entries(ctx: Context, header: _Header, hybrid_iso: bool) -> tuple[GptPartition, ...]:
    """Check the entry array's place and CRC, and every used entry's range."""
    fields = header.fields
    sector = header.sector_size
    length = fields.entry_count * fields.entry_size
    start = fields.entries_lba * sector
    if start + length > ctx.source.size:
        ctx.findings.add(
            GPT_HEADER_INVALID,
            f"the partition entry array ({fields.entry_count} × {fields.entry_size} bytes at "
            f"LBA {fields.entries_lba}) extends past the end of the image",
        )
        return ()
    if length > GPT_ENTRY_ARRAY_LIMIT:
        ctx.findings.add(
            GPT_HEADER_INVALID,
            f"the partition entry array is {length} bytes ({fields.entry_count} entries); "
            f"only arrays up to {GPT_ENTRY_ARRAY_LIMIT} bytes are read",
        )
        return ()
    try:
        array = ctx.source.read_exact(start, length, "GPT partition entries")
    except StreamGap:
        ctx.findings.add(F.STREAM_UNCHECKED, "GPT partition entry array not checked")
        return ()
    if zlib.crc32(array) != fields.entries_crc32:
        ctx.findings.add(
            GPT_CRC_MISMATCH,
            f"the partition entry array's CRC32 is not the 0x{fields.entries_crc32:08x} "
            "its header records",
        )
    partitions = _gpt_partitions(array, fields.entry_size)
    _check_gpt_ranges(ctx, fields, partitions, ctx.source.size // sector, hybrid_iso)
    return partitions[:GPT_PARTITIONS_LISTED]


def _gpt_partitions(array: bytes, entry_size: int) -> tuple[GptPartition, ...]:
    partitions = []
    for index, offset in enumerate(range(0, len(array), entry_size), start=1):
        if array[offset : offset + 16] == NO_GUID:  # an unused slot: most of the array
            continue
        entry = GPT_ENTRY_TABLE.decode(array, offset)
        partitions.append(
            GptPartition(
                index=index,
                type_guid=str(uuid.UUID(bytes_le=entry.type_guid)),
                guid=str(uuid.UUID(bytes_le=entry.unique_guid)),
                first_lba=entry.first_lba,
                last_lba=entry.last_lba,
                attributes=entry.attributes,
                name=entry.name.decode("utf-16-le", errors="replace").split("\0", 1)[0],
            )
        )
    return tuple(partitions)


def _check_gpt_ranges(
    ctx: Context,
    fields: Any,
    partitions: tuple[GptPartition, ...],
    disk_sectors: int,
    hybrid_iso: bool,
) -> None:
    """Partitions must lie inside the image and (except in hybrid ISOs) the usable LBAs.

    xorriso's GPT maps the whole ISO from LBA 0, over the system area and the GPT itself, so
    that the ISO file system is a partition too: that is its design, not damage.
    """
    for part in partitions:
        where = f"GPT partition {part.index} (LBA {part.first_lba}..{part.last_lba})"
        if part.first_lba > part.last_lba:
            ctx.findings.add(GPT_PARTITION_OUT_OF_RANGE, f"{where} ends before it starts")
        elif part.last_lba >= disk_sectors:
            ctx.findings.add(
                GPT_PARTITION_OUT_OF_RANGE,
                f"{where} ends past the image's {disk_sectors} sectors",
            )
        elif not hybrid_iso and (
            part.first_lba < fields.first_usable_lba or part.last_lba > fields.last_usable_lba
        ):
            ctx.findings.add(
                GPT_PARTITION_OUT_OF_RANGE,
                f"{where} lies outside the usable LBAs "
                f"{fields.first_usable_lba}..{fields.last_usable_lba}",
            )


def _public_header(header: _Header) -> GptHeader:
    fields = header.fields
    return GptHeader(
        sector_size=header.sector_size,
        revision=f"{fields.revision >> 16}.{fields.revision & 0xFFFF}",
        header_size=fields.header_size,
        current_lba=fields.current_lba,
        backup_lba=fields.backup_lba,
        first_usable_lba=fields.first_usable_lba,
        last_usable_lba=fields.last_usable_lba,
        disk_guid=str(uuid.UUID(bytes_le=fields.disk_guid)),
        entries_lba=fields.entries_lba,
        entry_count=fields.entry_count,
        entry_size=fields.entry_size,
    )
