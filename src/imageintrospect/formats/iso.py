"""ISO 9660 and UDF optical-disc images: volume descriptors, El Torito boot, hybrid system area.

Layouts: ECMA-119 (ISO 9660) volume descriptors from byte 0x8000 in 2048-byte sectors (boot
record, primary, supplementary, terminator); the El Torito boot catalog; ECMA-167/UDF volume
recognition sequence (``BEA01``, ``NSR02``/``NSR03``, ``TEA01``) and the UDF anchor at sector
256.  The first 32 KiB (the system area) are free for the producer: bootable ISOs made by
xorriso or isohybrid carry an MBR and/or a GPT there, so that the same file boots from a USB
stick.  Such a *hybrid* ISO is an ISO, not a polyglot: partition tables are not formats.

qemu-img has no ISO driver and reports these files as ``raw``; Glance calls them ``iso``.
"""

from __future__ import annotations

import binascii
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from .. import _layouts
from .. import findings as F
from ..frozen import frozen
from ..source import StreamGap
from ..structs import parse_struct
from . import partitions, raw
from .base import Context, FormatSpec, Parsed, Probe, Section

NAME = "iso"

SECTOR = 2048
DESCRIPTORS_START = 16 * SECTOR
#: The volume descriptor set (and a UDF recognition sequence after it) is walked no further.
MAX_DESCRIPTORS = 64
ISO_IDENTIFIER = b"CD001"
VRS_IDENTIFIERS = (b"BEA01", b"NSR02", b"NSR03", b"TEA01", b"BOOT2", b"CDW02")
UDF_NSR = (b"NSR02", b"NSR03")

TYPE_BOOT = 0
TYPE_PRIMARY = 1
TYPE_SUPPLEMENTARY = 2
TYPE_PARTITION = 3
TYPE_TERMINATOR = 255
DESCRIPTOR_NAMES = {
    TYPE_BOOT: "boot",
    TYPE_PRIMARY: "primary",
    TYPE_SUPPLEMENTARY: "supplementary",
    TYPE_PARTITION: "partition",
    TYPE_TERMINATOR: "terminator",
}

EL_TORITO_ID = b"EL TORITO SPECIFICATION"
#: Boot catalog entries read (32 bytes each): two sectors' worth.
MAX_CATALOG_ENTRIES = 128
CATALOG_ENTRY = 32
PLATFORMS = {0x00: "x86", 0x01: "powerpc", 0x02: "mac", 0xEF: "efi"}
MEDIA_TYPES = {
    0: "no-emulation",
    1: "floppy-1.2M",
    2: "floppy-1.44M",
    3: "floppy-2.88M",
    4: "hard-disk",
}

UDF_ANCHOR_SECTOR = 256
UDF_BLOCK_SIZES = (2048, 512, 4096, 1024)
#: How many descriptors of the UDF main volume descriptor sequence are looked at.
MAX_UDF_DESCRIPTORS = 32
UDF_TAG_PRIMARY = 1
UDF_TAG_ANCHOR = 2
UDF_TAG_PARTITION = 5
UDF_TAG_LOGICAL_VOLUME = 6
UDF_TAG_TERMINATING = 8

# --- schemas -------------------------------------------------------------------------------

# The layouts, derived from the construct schemas in formats/schemas/iso.py by
# scripts/gen_layouts.py (edit the schema, then run it): no construct on this path.
DESCRIPTOR_HEADER = _layouts.ISO_DESCRIPTOR_HEADER
VOLUME_DESCRIPTOR = _layouts.ISO_VOLUME_DESCRIPTOR
BOOT_RECORD = _layouts.ISO_BOOT_RECORD
VALIDATION_ENTRY = _layouts.ISO_VALIDATION_ENTRY
BOOT_ENTRY = _layouts.ISO_BOOT_ENTRY
SECTION_HEADER = _layouts.ISO_SECTION_HEADER
UDF_TAG = _layouts.ISO_UDF_TAG
UDF_ANCHOR = _layouts.ISO_UDF_ANCHOR

BOOT_RECORD_SIZE = BOOT_RECORD.size
BOOT_ENTRY_SIZE = BOOT_ENTRY.size
ENTRY_BOOTABLE = 0x88
ENTRY_NOT_BOOTABLE = 0x00
SECTION_MORE = 0x90
SECTION_LAST = 0x91
ENTRY_EXTENSION = 0x44

UDF_TAG_SIZE = UDF_TAG.size
UDF_VOLUME_ID = (24, 32)  # primary volume descriptor: offset, length of the dstring
UDF_LOGICAL_VOLUME_ID = (84, 128)
UDF_LOGICAL_BLOCK_SIZE = 212
UDF_PARTITION_EXTENT = 188  # partition descriptor: start u32, length u32

# --- findings ------------------------------------------------------------------------------

BAD_DESCRIPTOR = F.define(
    "iso-bad-descriptor",
    "warning",
    "iso",
    "A volume descriptor is malformed or inconsistent (both-endian fields disagree, impossible "
    "block size, no primary descriptor, no terminator).",
)
BAD_BOOT_CATALOG = F.define(
    "iso-bad-boot-catalog",
    "warning",
    "iso",
    "The El Torito boot catalog is out of range or fails its checksum, or a boot image lies "
    "outside the image.",
)
DATA_AFTER_VOLUME = F.define(
    "iso-data-after-volume",
    "info",
    "iso",
    "The file is longer than its ISO 9660 volume (appended partitions such as an EFI system "
    "partition, or padding).",
)
BAD_UDF = F.define(
    "udf-bad-descriptor",
    "warning",
    "iso",
    "A UDF anchor or volume descriptor is missing, fails its tag checksum/CRC, or points "
    "outside the image.",
)

# --- the section ---------------------------------------------------------------------------


@frozen
class BootEntry(Section):
    platform: str
    bootable: bool
    media: str
    load_rba: int
    sector_count: int


@frozen
class ElTorito(Section):
    catalog_sector: int
    entries: tuple[BootEntry, ...]


@frozen
class UdfInfo(Section):
    revision: str
    volume_id: str | None
    logical_volume_id: str | None
    block_size: int | None


@frozen
class IsoSection(Section):
    volume_id: str | None
    system_id: str | None
    block_size: int | None
    bootable: bool
    hybrid: bool
    volume_space_size: int | None
    volume_set_id: str | None
    publisher: str | None
    data_preparer: str | None
    application_id: str | None
    creation_date: str | None
    modification_date: str | None
    joliet: bool
    udf: UdfInfo | None
    el_torito: ElTorito | None
    partition_table: str | None
    descriptors: tuple[str, ...]


# --- probe ---------------------------------------------------------------------------------


def probe(probe: Probe) -> bool:
    """An ISO 9660 descriptor, or a UDF recognition sequence, at byte 0x8000."""
    head = probe.head
    first = head[DESCRIPTORS_START : DESCRIPTORS_START + 7]
    if len(first) < 7 or first[6] != 1:
        return False
    if first[1:6] == ISO_IDENTIFIER:
        return first[0] in DESCRIPTOR_NAMES
    if first[1:6] != b"BEA01":
        return False
    # UDF: an NSR descriptor in the next slot (2048-byte spacing, or 4096 for 4K blocks).
    return any(
        head[DESCRIPTORS_START + step + 1 : DESCRIPTORS_START + step + 6] in UDF_NSR
        for step in (SECTOR, 2 * SECTOR)
    )


# --- parse ---------------------------------------------------------------------------------


@dataclass
class _Walk:
    """What the walk over the descriptor area found."""

    names: list[str] = field(default_factory=list)
    primary: Any = None
    supplementary: list[Any] = field(default_factory=list)
    boot: Any = None
    iso_descriptors: int = 0
    terminated: bool = False
    nsr: str | None = None


def parse(ctx: Context) -> Parsed:
    walk = _walk_descriptors(ctx)
    layout = partitions.scan(ctx, hybrid_iso=True)
    udf = _read_udf(ctx, walk.nsr) if walk.nsr is not None else None
    el_torito = _read_el_torito(ctx, walk.boot) if walk.boot is not None else None
    pvd = walk.primary
    block_size = _block_size(ctx, pvd) if pvd is not None else None
    space = _volume_space_size(ctx, pvd) if pvd is not None else None
    if pvd is None and udf is None:
        ctx.findings.add(BAD_DESCRIPTOR, "no primary volume descriptor (and no UDF volume)")
    section = IsoSection(
        volume_id=_text(pvd.volume_id) if pvd is not None else _udf_volume_id(udf),
        system_id=_text(pvd.system_id) if pvd is not None else None,
        block_size=block_size if pvd is not None else (udf.block_size if udf else None),
        bootable=el_torito is not None and any(e.bootable for e in el_torito.entries),
        hybrid=layout.table is not None,
        volume_space_size=space,
        volume_set_id=_text(pvd.volume_set_id) if pvd is not None else None,
        publisher=_text(pvd.publisher_id) if pvd is not None else None,
        data_preparer=_text(pvd.data_preparer_id) if pvd is not None else None,
        application_id=_text(pvd.application_id) if pvd is not None else None,
        creation_date=_date(pvd.creation_date) if pvd is not None else None,
        modification_date=_date(pvd.modification_date) if pvd is not None else None,
        joliet=any(_is_joliet(svd) for svd in walk.supplementary),
        udf=udf,
        el_torito=el_torito,
        partition_table=layout.table,
        descriptors=tuple(walk.names),
    )
    volume_bytes = space * block_size if space and block_size else None
    return Parsed(
        virtual_size=_virtual_size(ctx, volume_bytes, layout),
        section=section,
        partition_table=layout.table,
        partitions=layout.partitions(),
    )


def _virtual_size(ctx: Context, volume_bytes: int | None, layout: partitions.DiskLayout) -> int:
    """The medium a guest sees: the whole file, or the volume when the file is cut short."""
    size = ctx.source.size
    if volume_bytes is None:
        return size
    if volume_bytes > size:
        ctx.findings.add(
            F.TRUNCATED,
            f"the ISO volume is {volume_bytes} bytes, the image only {size}",
        )
        return volume_bytes
    if volume_bytes < size:
        covered = layout.covered_bytes(volume_bytes, size)
        ctx.findings.add(
            DATA_AFTER_VOLUME,
            f"{size - volume_bytes} bytes follow the {volume_bytes}-byte ISO volume; "
            f"{covered} of them lie in partitions of its hybrid table",
        )
    return size


# --- the volume descriptor set -------------------------------------------------------------


def _walk_descriptors(ctx: Context) -> _Walk:
    """Walk the descriptors from 0x8000 until the set (and any UDF sequence after it) ends."""
    walk = _Walk()
    offset = DESCRIPTORS_START
    in_vrs = False
    for _ in range(MAX_DESCRIPTORS):
        raw = ctx.source.read_at(offset, SECTOR)
        if 0 < len(raw) < SECTOR:
            ctx.findings.add(F.TRUNCATED, f"the volume descriptor at 0x{offset:x} is cut short")
        kind = _descriptor_kind(raw)
        if kind is None and in_vrs:
            # With 4096-byte UDF blocks the recognition sequence is spaced 4096 bytes apart.
            raw = ctx.source.read_at(offset + SECTOR, SECTOR)
            kind = _descriptor_kind(raw)
            offset += SECTOR if kind is not None else 0
        if kind is None:
            break
        if kind == "CD001":
            _record_iso(ctx, walk, raw, offset)
        else:
            walk.names.append(kind)
            in_vrs = kind != "TEA01"
            if kind in ("NSR02", "NSR03"):
                walk.nsr = kind
            if kind == "TEA01":
                break
        offset += SECTOR
    else:
        ctx.findings.add(
            BAD_DESCRIPTOR, f"more than {MAX_DESCRIPTORS} volume descriptors; stopped reading"
        )
    if walk.iso_descriptors and not walk.terminated:
        ctx.findings.add(
            BAD_DESCRIPTOR, "the ISO 9660 volume descriptor set has no terminator descriptor"
        )
    return walk


def _descriptor_kind(raw: bytes) -> str | None:
    """``CD001`` or a recognition-sequence identifier when ``raw`` starts a descriptor."""
    if len(raw) < SECTOR:
        return None
    ident = bytes(raw[1:6])
    if ident == ISO_IDENTIFIER or ident in VRS_IDENTIFIERS:
        return ident.decode("ascii")
    return None


def _record_iso(ctx: Context, walk: _Walk, raw: bytes, offset: int) -> None:
    if walk.terminated:  # ISO 9660 descriptors after the terminator are not part of the set
        walk.names.append("after-terminator")
        return
    header = parse_struct(DESCRIPTOR_HEADER, raw[:7], "ISO volume descriptor")
    walk.iso_descriptors += 1
    name = DESCRIPTOR_NAMES.get(header.type, f"type-{header.type}")
    walk.names.append(name)
    if header.type == TYPE_TERMINATOR:
        walk.terminated = True
    elif header.type == TYPE_PRIMARY and walk.primary is None:
        if header.version != 1:
            ctx.findings.add(
                BAD_DESCRIPTOR,
                f"primary volume descriptor at 0x{offset:x} has version {header.version}",
            )
        walk.primary = parse_struct(VOLUME_DESCRIPTOR, raw, "ISO primary volume descriptor")
    elif header.type == TYPE_SUPPLEMENTARY:
        walk.supplementary.append(
            parse_struct(VOLUME_DESCRIPTOR, raw, "ISO supplementary volume descriptor")
        )
    elif header.type == TYPE_BOOT and walk.boot is None:
        record = parse_struct(BOOT_RECORD, raw[:BOOT_RECORD_SIZE], "ISO boot record")
        if record.boot_system_id.rstrip(b"\0 ") == EL_TORITO_ID:
            walk.boot = record


def _both_endian(ctx: Context, pvd: Any, name: str) -> int:
    little = int(getattr(pvd, f"{name}_le"))
    big = int(getattr(pvd, f"{name}_be"))
    if little != big:
        ctx.findings.add(
            BAD_DESCRIPTOR,
            f"{name.replace('_', ' ')} is {little} little-endian but {big} big-endian "
            "(the little-endian value is used, as Linux does)",
        )
    return little


def _block_size(ctx: Context, pvd: Any) -> int | None:
    size = _both_endian(ctx, pvd, "logical_block_size")
    if size not in (512, 1024, 2048):
        ctx.findings.add(BAD_DESCRIPTOR, f"logical block size {size} (must be 512, 1024 or 2048)")
        return None
    return size


def _volume_space_size(ctx: Context, pvd: Any) -> int:
    blocks = _both_endian(ctx, pvd, "volume_space_size")
    if blocks == 0:
        ctx.findings.add(BAD_DESCRIPTOR, "volume space size is 0")
    return blocks


def _is_joliet(svd: Any) -> bool:
    return bytes(svd.escape_sequences[:3]) in (b"%/@", b"%/C", b"%/E")


def _text(raw: bytes) -> str | None:
    """An a-/d-character field: ASCII, padded with spaces (or NULs)."""
    value = raw.decode("ascii", errors="replace").rstrip(" \0")
    return value or None


def _date(raw: bytes) -> str | None:
    """``YYYYMMDDHHMMSScc`` plus a GMT offset in 15-minute steps, as ISO 8601; None if unset."""
    digits = raw[:16]
    if not digits.isdigit() or int(digits[:4]) == 0:
        return None
    offset = raw[16] - 256 if raw[16] > 127 else raw[16]
    if not -48 <= offset <= 52:
        offset = 0
    try:
        stamp = dt.datetime(
            int(digits[0:4]),
            int(digits[4:6]),
            int(digits[6:8]),
            int(digits[8:10]),
            int(digits[10:12]),
            int(digits[12:14]),
            int(digits[14:16]) * 10_000,
            tzinfo=dt.timezone(dt.timedelta(minutes=15 * offset)),
        )
    except ValueError:
        return None
    return stamp.isoformat()


# --- El Torito -----------------------------------------------------------------------------


def _read_el_torito(ctx: Context, record: Any) -> ElTorito:
    sector = record.catalog_sector
    catalog = ElTorito(catalog_sector=sector, entries=())
    start = sector * SECTOR
    if start + CATALOG_ENTRY * 2 > ctx.source.size:
        ctx.findings.add(
            BAD_BOOT_CATALOG, f"boot catalog sector {sector} lies past the end of the image"
        )
        return catalog
    unkept = f"El Torito boot catalog at sector {sector}"
    raw = ctx.read_optional(start, CATALOG_ENTRY * MAX_CATALOG_ENTRIES, unkept)
    if raw is None:
        return catalog
    validation = parse_struct(VALIDATION_ENTRY, raw[:CATALOG_ENTRY], "El Torito validation")
    words = sum(int.from_bytes(raw[i : i + 2], "little") for i in range(0, CATALOG_ENTRY, 2))
    if validation.header_id != 1 or validation.key != b"\x55\xaa" or words & 0xFFFF:
        ctx.findings.add(
            BAD_BOOT_CATALOG,
            f"boot catalog at sector {sector} fails its validation entry "
            "(header id, 55 AA key or checksum)",
        )
        return catalog
    entries = _catalog_entries(raw, validation.platform)
    for entry in entries:
        if entry.load_rba * SECTOR >= ctx.source.size:
            ctx.findings.add(
                BAD_BOOT_CATALOG,
                f"{entry.platform} boot image at sector {entry.load_rba} lies past the end "
                "of the image",
            )
    return ElTorito(catalog_sector=sector, entries=entries)


def _catalog_entries(raw: bytes, default_platform: int) -> tuple[BootEntry, ...]:
    """The default entry, then every section's entries, until the catalog says it ends."""
    entries = [_boot_entry(raw[CATALOG_ENTRY : 2 * CATALOG_ENTRY], default_platform)]
    position = 2 * CATALOG_ENTRY
    while position + CATALOG_ENTRY <= len(raw):
        header = parse_struct(SECTION_HEADER, raw[position : position + 4], "El Torito section")
        if header.indicator not in (SECTION_MORE, SECTION_LAST):
            break
        position += CATALOG_ENTRY
        remaining = header.entries
        while remaining and position + CATALOG_ENTRY <= len(raw):
            entry = raw[position : position + CATALOG_ENTRY]
            position += CATALOG_ENTRY
            if entry[0] == ENTRY_EXTENSION:
                continue
            entries.append(_boot_entry(entry, header.platform))
            remaining -= 1
        if header.indicator == SECTION_LAST:
            break
    return tuple(entries)


def _boot_entry(raw: bytes, platform: int) -> BootEntry:
    entry = parse_struct(BOOT_ENTRY, raw[:BOOT_ENTRY_SIZE], "El Torito boot entry")
    return BootEntry(
        platform=PLATFORMS.get(platform, f"platform-0x{platform:02x}"),
        bootable=entry.indicator == ENTRY_BOOTABLE,
        media=MEDIA_TYPES.get(entry.media & 0x0F, f"media-{entry.media & 0x0F}"),
        load_rba=entry.load_rba,
        sector_count=entry.sector_count,
    )


# --- UDF -----------------------------------------------------------------------------------


def _read_udf(ctx: Context, revision: str) -> UdfInfo:
    """The anchor at sector 256, then the main volume descriptor sequence it points to."""
    info = UdfInfo(revision=revision, volume_id=None, logical_volume_id=None, block_size=None)
    anchor = _find_anchor(ctx)
    if anchor is None:
        ctx.findings.add(BAD_UDF, f"no valid UDF anchor at sector {UDF_ANCHOR_SECTOR}")
        return info
    block_size, extent = anchor
    start = extent.main_location * block_size
    length = min(extent.main_length, MAX_UDF_DESCRIPTORS * block_size)
    if start + length > ctx.source.size or length < block_size:
        ctx.findings.add(
            BAD_UDF,
            f"the UDF volume descriptor sequence ({extent.main_length} bytes at block "
            f"{extent.main_location}) lies outside the image",
        )
        return info
    sequence = ctx.read_optional(start, length, "UDF volume descriptor sequence not checked")
    if sequence is None:
        return info
    return _udf_descriptors(ctx, info, sequence, block_size, extent.main_location)


def _find_anchor(ctx: Context) -> tuple[int, Any] | None:
    for block_size in UDF_BLOCK_SIZES:
        try:
            raw = ctx.source.read_at(UDF_ANCHOR_SECTOR * block_size, block_size)
        except StreamGap:
            continue
        tag = _udf_tag(raw, UDF_ANCHOR_SECTOR)
        if tag is not None and tag.tag_id == UDF_TAG_ANCHOR:
            extent = parse_struct(UDF_ANCHOR, raw[16:32], "UDF anchor")
            return block_size, extent
    return None


def _udf_tag(raw: bytes, location: int) -> Any:
    """The descriptor tag when its checksum, CRC and recorded location are right, else None."""
    if len(raw) < UDF_TAG_SIZE:
        return None
    tag = parse_struct(UDF_TAG, raw[:UDF_TAG_SIZE], "UDF descriptor tag")
    if (sum(raw[0:4]) + sum(raw[5:16])) & 0xFF != tag.checksum or tag.location != location:
        return None
    body = raw[UDF_TAG_SIZE : UDF_TAG_SIZE + tag.crc_length]
    if len(body) != tag.crc_length or binascii.crc_hqx(body, 0) != tag.crc:
        return None
    return tag


def _udf_descriptors(
    ctx: Context, info: UdfInfo, sequence: bytes, block_size: int, first_block: int
) -> UdfInfo:
    volume_id = logical_volume_id = None
    logical_block_size = None
    for index in range(len(sequence) // block_size):
        raw = sequence[index * block_size : (index + 1) * block_size]
        tag = _udf_tag(raw, first_block + index)
        if tag is None:
            ctx.findings.add(
                BAD_UDF, f"UDF descriptor at block {first_block + index} fails its tag checks"
            )
            break
        if tag.tag_id == UDF_TAG_TERMINATING:
            break
        if tag.tag_id == UDF_TAG_PRIMARY and volume_id is None:
            volume_id = _dstring(raw, *UDF_VOLUME_ID)
        elif tag.tag_id == UDF_TAG_LOGICAL_VOLUME and logical_volume_id is None:
            logical_volume_id = _dstring(raw, *UDF_LOGICAL_VOLUME_ID)
            at = UDF_LOGICAL_BLOCK_SIZE
            logical_block_size = int.from_bytes(raw[at : at + 4], "little")
        elif tag.tag_id == UDF_TAG_PARTITION:
            _check_udf_partition(ctx, raw, block_size)
    return UdfInfo(info.revision, volume_id, logical_volume_id, logical_block_size)


def _check_udf_partition(ctx: Context, raw: bytes, block_size: int) -> None:
    at = UDF_PARTITION_EXTENT
    start = int.from_bytes(raw[at : at + 4], "little")
    length = int.from_bytes(raw[at + 4 : at + 8], "little")
    end = (start + length) * block_size
    if end > ctx.source.size:
        ctx.findings.add(
            F.TRUNCATED, f"the UDF partition ends at byte {end}, the image at {ctx.source.size}"
        )


def _dstring(raw: bytes, offset: int, length: int) -> str | None:
    """An OSTA CS0 ``dstring``: compression id (8 or 16), characters, used length last."""
    field_bytes = raw[offset : offset + length]
    used = field_bytes[-1]
    if used == 0 or used >= length:
        return None
    compression, chars = field_bytes[0], field_bytes[1:used]
    if compression == 8:
        return chars.decode("latin-1")
    if compression == 16:
        return chars[: len(chars) // 2 * 2].decode("utf-16-be", errors="replace")
    return None


def _udf_volume_id(udf: UdfInfo | None) -> str | None:
    if udf is None:
        return None
    return udf.logical_volume_id or udf.volume_id


# --- qemu-img's view -----------------------------------------------------------------------


def qemu_info(md: Any, filename: str | None = None) -> dict[str, Any]:
    """qemu-img has no ISO driver: it probes the file as raw, the whole file its disk."""
    return raw.qemu_info(md)


FORMAT = FormatSpec(NAME, probe, parse, qemu_info)
