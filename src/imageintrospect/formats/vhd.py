"""VHD (Microsoft Virtual Hard Disk; qemu calls it ``vpc``): footer, dynamic header, parents.

Layout: Microsoft's "Virtual Hard Disk Image Format Specification" (v1.0).  All integers are
big-endian.  Every VHD ends in a 512-byte footer (cookie ``conectix``); fixed disks are the
guest's bytes followed by that footer, dynamic and differencing disks start with a copy of it,
then a 1024-byte dynamic header (``cxsparse``) that locates the block allocation table (BAT)
and, for a differencing disk, names its parent.

qemu reads the footer at offset 0 when it is there (falling back to the last 512 bytes only
for fixed disks), never looks at a differencing disk's parent, and derives the virtual size
from the CHS geometry for most producers.  This module describes what qemu would use, and
reports every place where the copies, sizes or parent fields disagree with that.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import uuid
from typing import Any

from .. import _layouts, scan
from .. import findings as F
from ..frozen import frozen
from ..source import StreamGap
from ..structs import TableHeader, parse_struct
from . import blocktables
from .base import Context, FormatSpec, Parsed, Probe, Section
from .blocktables import TableSummary

NAME = "vhd"
QEMU_NAME = "vpc"
FOOTER_MAGIC = b"conectix"
DYNAMIC_MAGIC = b"cxsparse"

# --- schemas -------------------------------------------------------------------------------

# The layouts, derived from the construct schemas in formats/schemas/vhd.py by
# scripts/gen_layouts.py (edit the schema, then run it): no construct on this path.
FOOTER = _layouts.VHD_FOOTER
PARENT_LOCATOR = _layouts.VHD_PARENT_LOCATOR
DYNAMIC_HEADER = _layouts.VHD_DYNAMIC_HEADER
FOOTER_SIZE = FOOTER.size
LEGACY_FOOTER_SIZE = 511  # some very old producers left out the last reserved byte
FOOTER_CHECKSUM_AT = 64

LOCATOR_COUNT = 8

DYNAMIC_HEADER_SIZE = DYNAMIC_HEADER.size
# The parent locators are a table inside the header (structs.TableHeader).
DYNAMIC_HEADER_PARSER = TableHeader(
    DYNAMIC_HEADER, "locators", "VHD dynamic header", "VHD parent locator"
)
LOCATOR_TABLE = DYNAMIC_HEADER_PARSER.table
DYNAMIC_CHECKSUM_AT = 36

DISK_TYPES = {2: "fixed", 3: "dynamic", 4: "differencing"}
FIXED, DYNAMIC, DIFFERENCING = 2, 3, 4
NO_OFFSET = 0xFFFFFFFFFFFFFFFF
UNALLOCATED = 0xFFFFFFFF
SECTOR = 512
VHD_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)

# qemu (block/vpc.c): the producers whose footer ``current_size`` is the disk size; for every
# other creator qemu trusts the CHS geometry, unless that is the largest one VHD can express.
CURRENT_SIZE_CREATORS = frozenset({b"win ", b"qem2", b"d2v ", b"CTXS", b"tap\0"})
MAX_CHS_SECTORS = 65535 * 16 * 255
# qemu refuses disks over 2040 GiB, the format's documented maximum.
MAX_SECTORS = 0xFF000000
# qemu refuses a BAT whose byte size would not fit an int.
MAX_TABLE_ENTRIES = 0x7FFFFFFF // 4

# Parent locator platform codes and how their data is encoded.
LOCATOR_ENCODINGS = {
    b"W2ku": "utf-16-le",  # absolute Windows path
    b"W2ru": "utf-16-le",  # relative Windows path
    b"Wi2k": "cp1252",  # deprecated absolute Windows path (ANSI)
    b"Wi2r": "cp1252",  # deprecated relative Windows path (ANSI)
    b"MacX": "utf-8",  # file:// URL
    b"Mac ": None,  # a Mac OS alias record: binary, names no path we can print
}
MAX_LOCATOR_DATA = 64 * 1024
# The largest offset the table scanners take (2^63 - 1).
MAX_OFFSET = (1 << 63) - 1

# --- findings ------------------------------------------------------------------------------

DIFFERENCING_DISK = F.define(
    "vhd-differencing",
    "unsafe",
    "vhd",
    "A differencing VHD: its content depends on a parent image it names "
    "(qemu-img ignores the parent and reports no backing file).",
)
STRAY_PARENT = F.define(
    "vhd-stray-parent",
    "warning",
    "vhd",
    "A disk that is not differencing still carries a parent name, UUID or locators.",
)
FOOTER_CHECKSUM = F.define(
    "vhd-footer-checksum",
    "unsafe",
    "vhd",
    "The footer's checksum does not match its bytes (qemu refuses the image).",
)
HEADER_CHECKSUM = F.define(
    "vhd-dynamic-header-checksum",
    "unsafe",
    "vhd",
    "The dynamic header's checksum does not match its bytes (qemu does not check it).",
)
FOOTER_MISMATCH = F.define(
    "vhd-footer-mismatch",
    "unsafe",
    "vhd",
    "The footer copy at offset 0 differs from the footer at the end, or is missing or "
    "misplaced for the disk type.",
)
SIZE_MISMATCH = F.define(
    "vhd-size-mismatch",
    "unsafe",
    "vhd",
    "The disk sizes disagree with each other or with the file (fixed-disk file length, "
    "CHS size beyond the current size, a BAT too small for the disk).",
)
TOO_LARGE = F.define(
    "vhd-too-large",
    "unsafe",
    "vhd",
    "The disk is larger than VHD's 2040 GiB maximum (qemu refuses it).",
)
UNKNOWN_DISK_TYPE = F.define(
    "vhd-unknown-disk-type",
    "unsafe",
    "vhd",
    "The footer's disk type is not fixed (2), dynamic (3) or differencing (4).",
)
BAD_BLOCK_SIZE = F.define(
    "vhd-bad-block-size",
    "unsafe",
    "vhd",
    "The dynamic header's block size is zero, not a power of two, or below 512 bytes.",
)
BAD_DYNAMIC_HEADER = F.define(
    "vhd-bad-dynamic-header",
    "unsafe",
    "vhd",
    "The dynamic header is not where the footer points, lacks its cxsparse cookie, or places "
    "the BAT over other metadata.",
)
LEGACY_FOOTER = F.define(
    "vhd-legacy-footer",
    "info",
    "vhd",
    "The footer is the 511-byte variant written by some very old producers.",
)
BAT_OUT_OF_RANGE = F.define(
    "vhd-bat-out-of-range",
    "unsafe",
    "vhd",
    "A BAT entry's block (sector bitmap and data) runs into the footer or past the end of the "
    "file.",
)
BAT_IN_METADATA = F.define(
    "vhd-bat-in-metadata",
    "unsafe",
    "vhd",
    "A BAT entry's block lies over the footer copy, the dynamic header, the BAT or a parent "
    "locator's data: guest writes would overwrite the image's own metadata.",
)
BAT_CLAIMED_TWICE = F.define(
    "vhd-bat-claimed-twice",
    "unsafe",
    "vhd",
    "Two BAT entries' blocks overlap: the same file bytes serve two places of the disk.",
)
OVERLAP_UNCHECKED = F.define(
    "vhd-overlap-unchecked",
    "info",
    "vhd",
    "The file is too large for the sector claim map (over 128 GiB): BAT blocks were checked "
    "for range but not for overlapping each other or the parent locators.",
)
SAVED_STATE = F.define(
    "vhd-saved-state",
    "warning",
    "vhd",
    "The footer's saved-state flag is set: the disk belongs to a suspended virtual machine.",
)

# --- the section ---------------------------------------------------------------------------


@frozen
class Geometry(Section):
    cylinders: int
    heads: int
    sectors: int


@frozen
class ParentLocator(Section):
    """One of the dynamic header's eight parent locators (unused slots are left out)."""

    platform: str
    path: str | None
    data_offset: int
    data_length: int
    data_space: int
    complete: bool  # False when the data lay outside the file or beyond what is read of it


@frozen
class VhdSection(Section):
    disk_type: str
    creator_application: str
    creator_version: str
    creator_host_os: str
    timestamp: str
    uuid: str
    current_size: int
    original_size: int
    geometry: Geometry
    block_size: int | None
    checksum_valid: bool
    parent_name: str | None
    parent_uuid: str | None
    parent_timestamp: str | None
    parent_locators: tuple[ParentLocator, ...]
    # Which footer was described ("head", "tail", or "tail-511" for the legacy footer) and
    # where footers were found at all.
    footer_location: str
    footer_copies: tuple[str, ...]
    legacy_footer: bool
    #: Where ``virtual_size`` comes from: "chs" (cylinders × heads × sectors) or "current_size".
    virtual_size_source: str
    chs_size: int
    features: int
    format_version: str
    checksum: int
    data_offset: int | None
    saved_state: bool
    header_checksum_valid: bool | None
    bat_offset: int | None
    max_table_entries: int | None
    #: What the deep walk of the BAT counted (None without ``deep`` or without a BAT).
    allocation: TableSummary | None = None


# --- probe ---------------------------------------------------------------------------------


def probe(probe: Probe) -> bool:
    """A footer at offset 0 (dynamic disks), in the last 512 bytes, or in the last 511."""
    if probe.head[:8] == FOOTER_MAGIC:
        return True
    tail = probe.tail
    for length in (FOOTER_SIZE, LEGACY_FOOTER_SIZE):
        if probe.size >= length and len(tail) >= length and tail[-length:][:8] == FOOTER_MAGIC:
            return True
    return False


# --- parse ---------------------------------------------------------------------------------


@frozen
class _Footer:
    """One footer as found in the file."""

    location: str
    offset: int
    raw: bytes  # always 512 bytes (the legacy footer is padded with a zero byte)
    fields: Any

    @property
    def checksum_valid(self) -> bool:
        stored: int = self.fields.checksum
        return _checksum(self.raw, FOOTER_CHECKSUM_AT) == stored


@frozen
class _Dynamic:
    """The dynamic header as found, with what was decoded from it."""

    fields: Any
    checksum_valid: bool
    parent_locators: tuple[ParentLocator, ...]


@frozen
class BatLayout:
    """Where the BAT and its blocks are: what the deep walk needs to check every entry."""

    offset: int
    entries: int  # max_table_entries as written
    block_size: int
    #: Bytes of the per-block sector bitmap that precedes each block's data.
    bitmap_size: int
    #: Entries the disk uses: the larger of qemu's and the footer's size, in blocks (at most
    #: ``entries``); qemu never reads further, nor does any other reader.
    needed: int
    #: Blocks start here at the earliest: after the footer copy, the dynamic header and the
    #: whole BAT (the specification's layout, and every producer's).
    data_start: int
    #: Where the footer at the end starts (the file's end when it is missing): blocks end
    #: before it.
    footer_at: int
    #: Other metadata blocks must not overlap: (start, end, name) of the parent locators' data.
    metadata: tuple[tuple[int, int, str], ...]


def parse(ctx: Context) -> Parsed:
    head, tail = _find_footers(ctx)
    footer = head or tail
    if footer is None:
        size = ctx.source.size
        ctx.findings.add(F.TRUNCATED, f"VHD footer cut short: the image is {size} bytes")
        return Parsed(virtual_size=None, section=None)
    fields = footer.fields
    virtual_size, size_source = qemu_virtual_size(fields)
    _judge_footers(ctx, footer, head, tail)
    dynamic = _read_dynamic(ctx, footer, tail)
    _judge_sizes(ctx, footer, virtual_size, dynamic)
    section = _section(footer, head, tail, size_source, dynamic)
    _judge_parent(ctx, section)
    refusal = _qemu_refusal(ctx, footer, virtual_size, dynamic)
    if refusal is not None:
        ctx.findings.add(F.QEMU_CANNOT_OPEN, refusal)
    allocated_size = None
    if ctx.deep:
        layout = _bat_layout(ctx, footer, tail, dynamic, virtual_size)
        allocated_size, summary = _allocated_size(ctx, footer, tail, layout, virtual_size)
        section = dataclasses.replace(section, allocation=summary)
    return Parsed(virtual_size=virtual_size, section=section, allocated_size=allocated_size)


def _find_footers(ctx: Context) -> tuple[_Footer | None, _Footer | None]:
    """The footer copy at offset 0 and the footer at the end (either may be missing).

    The end is looked at first: in an image of a single footer (an empty fixed disk) that
    footer is the one at the end, not a copy.
    """
    size = ctx.source.size
    tail = None
    for location, length in (("tail", FOOTER_SIZE), ("tail-511", LEGACY_FOOTER_SIZE)):
        if size >= length:
            tail = _read_footer(ctx, location, size - length, length)
            if tail is not None:
                break
    head = None
    if tail is None or tail.offset >= FOOTER_SIZE:
        head = _read_footer(ctx, "head", 0, FOOTER_SIZE, tail)
    return head, tail


def _read_footer(
    ctx: Context, location: str, offset: int, length: int, other: _Footer | None = None
) -> _Footer | None:
    """The footer at ``offset``; ``other``'s fields are reused when the bytes are the same
    (the copy at offset 0 normally is: one parse, not two)."""
    # A stream's head and tail windows always hold both ends; be explicit anyway.
    raw = ctx.read_optional(offset, length, f"VHD footer at {offset} not kept from the stream")
    if raw is None:
        return None
    if len(raw) != length or raw[:8] != FOOTER_MAGIC:
        return None
    raw = raw.ljust(FOOTER_SIZE, b"\0")
    if other is not None and other.raw == raw:
        return _Footer(location, offset, raw, other.fields)
    return _Footer(location, offset, raw, parse_struct(FOOTER, raw, "VHD footer"))


def _checksum(raw: bytes, at: int) -> int:
    """One's complement of the byte sum, the 4-byte checksum field at ``at`` counted as zero."""
    total = sum(raw) - sum(raw[at : at + 4])
    return ~total & 0xFFFFFFFF


def qemu_virtual_size(fields: Any) -> tuple[int, str]:
    """The size qemu-img 7.2 reports, and which footer value it came from.

    Virtual PC sizes a disk by its CHS geometry, Hyper-V and others by ``current_size``; qemu
    tells them apart by the creator application and by the maximum geometry (which cannot
    express larger disks, so the current size must be meant).
    """
    chs_sectors = fields.cylinders * fields.heads * fields.sectors
    if fields.creator_app in CURRENT_SIZE_CREATORS or chs_sectors == MAX_CHS_SECTORS:
        return fields.current_size // SECTOR * SECTOR, "current_size"
    return chs_sectors * SECTOR, "chs"


def _judge_footers(
    ctx: Context, footer: _Footer, head: _Footer | None, tail: _Footer | None
) -> None:
    add = ctx.findings.add
    fields = footer.fields
    if not footer.checksum_valid:
        computed = _checksum(footer.raw, FOOTER_CHECKSUM_AT)
        add(
            FOOTER_CHECKSUM,
            f"footer at {footer.location} has checksum {fields.checksum:#010x}, "
            f"its bytes give {computed:#010x}",
        )
    if tail is not None and tail.location == "tail-511":
        add(LEGACY_FOOTER, "the footer at the end is 511 bytes long")
    kind = DISK_TYPES.get(fields.disk_type)
    if kind is None:
        add(UNKNOWN_DISK_TYPE, f"disk type {fields.disk_type}")
    if fields.saved_state:
        add(SAVED_STATE, f"saved-state flag is {fields.saved_state}")
    if head is not None and tail is not None:
        differing = _differing_fields(head, tail)
        if differing:
            add(
                FOOTER_MISMATCH,
                "the footer copy at offset 0 differs from the footer at the end in "
                + ", ".join(differing)
                + " (qemu uses the copy at offset 0)",
            )
    if fields.disk_type == FIXED and head is not None:
        add(
            FOOTER_MISMATCH,
            "a fixed disk with a footer at offset 0, where its data begins "
            "(qemu then reads it as a dynamic disk)",
        )
    elif kind is not None and fields.disk_type != FIXED:
        if head is None:
            add(FOOTER_MISMATCH, f"{kind} disk without the footer copy at offset 0")
        if tail is None:
            add(
                F.TRUNCATED,
                f"{kind} disk without its footer in the last 512 bytes: the file was cut short",
            )


def _qemu_refusal(
    ctx: Context, footer: _Footer, virtual_size: int, dynamic: _Dynamic | None
) -> str | None:
    """Why qemu's ``vpc_open`` refuses the image (the first reason it meets), or None."""
    fields = footer.fields
    if footer.offset != 0 and fields.disk_type != FIXED:
        return "invalid VPC image: only a fixed disk may lack the footer copy at offset 0"
    if not footer.checksum_valid:
        return "Incorrect header checksum"
    if virtual_size > MAX_SECTORS * SECTOR:
        return f"Image too large: {virtual_size} bytes"
    if footer.offset != 0:
        return None  # read as a fixed disk: no more structure to refuse
    # A footer at offset 0 makes qemu read the dynamic header, whatever the disk type says.
    if dynamic is None:
        return "no dynamic (cxsparse) header qemu can read where the footer points"
    header = dynamic.fields
    if header.block_size < SECTOR or header.block_size & (header.block_size - 1):
        return f"Invalid block size {header.block_size}"
    if header.max_table_entries > MAX_TABLE_ENTRIES:
        return f"Too many blocks ({header.max_table_entries})"
    if header.max_table_entries * header.block_size < max(fields.current_size, virtual_size):
        return "Page table too small"
    if header.table_offset + header.max_table_entries * 4 > ctx.source.size:
        return "BAT truncated: it ends past the end of the file"
    return None


def _differing_fields(head: _Footer, tail: _Footer) -> list[str]:
    if head.raw == tail.raw:
        return []
    return [
        name for name in FOOTER.names if getattr(head.fields, name) != getattr(tail.fields, name)
    ]


def _read_dynamic(ctx: Context, footer: _Footer, tail: _Footer | None) -> _Dynamic | None:
    """The dynamic header where the footer points, for the disks qemu reads as sparse."""
    fields = footer.fields
    # qemu reads a dynamic header whenever the footer sits at offset 0, whatever its type; a
    # footer found only at the end is read as fixed.  Known sparse types are read either way.
    sparse = fields.disk_type in (DYNAMIC, DIFFERENCING) or (
        footer.location == "head" and fields.disk_type != FIXED
    )
    if not sparse:
        return None
    offset = fields.data_offset
    size = ctx.source.size
    if offset == NO_OFFSET or offset + DYNAMIC_HEADER_SIZE > size:
        where = "no offset" if offset == NO_OFFSET else f"{offset:#x}"
        ctx.findings.add(
            F.TRUNCATED,
            f"dynamic header at {where} ({DYNAMIC_HEADER_SIZE} bytes) is not inside the "
            f"image's {size} bytes",
        )
        return None
    try:
        raw = ctx.source.read_at(offset, DYNAMIC_HEADER_SIZE)
    except StreamGap:
        ctx.findings.add(F.STREAM_UNCHECKED, f"dynamic header at {offset:#x} not kept")
        return None
    header = DYNAMIC_HEADER_PARSER.parse(raw)
    if header.cookie != DYNAMIC_MAGIC:
        ctx.findings.add(
            BAD_DYNAMIC_HEADER, f"no cxsparse cookie at {offset:#x} (found {header.cookie!r})"
        )
        return None
    checksum_valid = _checksum(raw, DYNAMIC_CHECKSUM_AT) == header.checksum
    if not checksum_valid:
        ctx.findings.add(
            HEADER_CHECKSUM,
            f"dynamic header has checksum {header.checksum:#010x}, its bytes give "
            f"{_checksum(raw, DYNAMIC_CHECKSUM_AT):#010x}",
        )
    _judge_dynamic_layout(ctx, offset, header, tail)
    locators = tuple(
        _read_locator(ctx, index, loc)
        for index, loc in enumerate(header.locators)
        if loc.code != b"\0\0\0\0"
    )
    return _Dynamic(header, checksum_valid, locators)


def _judge_dynamic_layout(
    ctx: Context, header_offset: int, header: Any, tail: _Footer | None
) -> None:
    """Block size, BAT placement and BAT size against the file and the other metadata."""
    block_size = header.block_size
    if block_size < SECTOR or block_size & (block_size - 1):
        ctx.findings.add(BAD_BLOCK_SIZE, f"block size {block_size}")
    if header_offset < FOOTER_SIZE:
        ctx.findings.add(
            BAD_DYNAMIC_HEADER, f"dynamic header at {header_offset:#x} overlaps the footer copy"
        )
    entries = header.max_table_entries
    if entries > MAX_TABLE_ENTRIES:
        ctx.findings.add(BAD_DYNAMIC_HEADER, f"{entries} BAT entries (qemu allows 536870911)")
        return
    bat_start, bat_end = header.table_offset, header.table_offset + entries * 4
    size = ctx.source.size
    if bat_end > size:
        ctx.findings.add(
            F.TRUNCATED,
            f"BAT at {bat_start:#x} ({entries} entries) ends past the image's {size} bytes",
        )
        return
    regions = [
        ("the footer copy", 0, FOOTER_SIZE),
        ("the dynamic header", header_offset, header_offset + DYNAMIC_HEADER_SIZE),
    ]
    if tail is not None:
        regions.append(("the footer", tail.offset, size))
    overlaps = [
        name for name, start, end in regions if entries and bat_start < end and start < bat_end
    ]
    if overlaps:
        ctx.findings.add(
            BAD_DYNAMIC_HEADER,
            f"BAT at {bat_start:#x}..{bat_end:#x} overlaps " + " and ".join(overlaps),
        )


def _read_locator(ctx: Context, index: int, loc: Any) -> ParentLocator:
    platform = loc.code.decode("latin-1")
    offset, length = loc.data_offset, loc.data_length
    path: str | None = None
    complete = False
    if offset + length > ctx.source.size:
        ctx.findings.add(
            F.TRUNCATED,
            f"parent locator {index} ({platform!r}) data at {offset:#x} ({length} bytes) "
            f"lies outside the image",
        )
    else:
        try:
            data = ctx.source.read_at(offset, min(length, MAX_LOCATOR_DATA))
        except StreamGap:
            ctx.findings.add(
                F.STREAM_UNCHECKED, f"parent locator {index} data at {offset:#x} not kept"
            )
        else:
            complete = length <= MAX_LOCATOR_DATA
            path = _decode_locator(loc.code, data)
    return ParentLocator(
        platform=platform.rstrip("\0 "),
        path=path,
        data_offset=offset,
        data_length=length,
        data_space=loc.data_space,
        complete=complete,
    )


def _decode_locator(code: bytes, data: bytes) -> str | None:
    if code not in LOCATOR_ENCODINGS:
        return None  # unknown platform: nothing tells how its bytes name a file
    encoding = LOCATOR_ENCODINGS[code]
    if encoding is None:
        return None
    text = data.decode(encoding, errors="replace")
    return text.split("\0", 1)[0]


def _judge_sizes(
    ctx: Context, footer: _Footer, virtual_size: int, dynamic: _Dynamic | None
) -> None:
    add = ctx.findings.add
    fields = footer.fields
    current = fields.current_size
    if virtual_size > MAX_SECTORS * SECTOR:
        add(TOO_LARGE, f"virtual size {virtual_size} exceeds {MAX_SECTORS * SECTOR}")
    if virtual_size > current:
        add(
            SIZE_MISMATCH,
            f"the CHS geometry {fields.cylinders}/{fields.heads}/{fields.sectors} gives "
            f"{virtual_size} bytes, more than the current size {current}",
        )
    if fields.disk_type == FIXED and footer.location != "head":
        expected = current + (ctx.source.size - footer.offset)
        if ctx.source.size != expected:
            add(
                SIZE_MISMATCH,
                f"fixed disk of {current} bytes in a file of {ctx.source.size} bytes "
                f"(expected {expected})",
            )
    if dynamic is not None:
        header = dynamic.fields
        mapped = header.max_table_entries * header.block_size
        needed = max(current, virtual_size)
        if mapped < needed:
            add(
                SIZE_MISMATCH,
                f"BAT of {header.max_table_entries} entries × {header.block_size}-byte blocks "
                f"maps {mapped} bytes, less than the disk's {needed}",
            )


def _judge_parent(ctx: Context, section: VhdSection) -> None:
    has_parent = bool(section.parent_name or section.parent_uuid or section.parent_locators)
    if section.disk_type == "differencing":
        locators = ", ".join(f"{loc.platform} {loc.path!r}" for loc in section.parent_locators)
        ctx.findings.add(
            DIFFERENCING_DISK,
            f"differencing disk: parent name {section.parent_name!r}, "
            f"parent uuid {section.parent_uuid}, locators: {locators or 'none'}",
        )
    elif has_parent:
        names = [repr(section.parent_name)] if section.parent_name else []
        names += [f"{loc.platform} {loc.path!r}" for loc in section.parent_locators]
        detail = ", ".join(names) or f"uuid {section.parent_uuid}"
        ctx.findings.add(STRAY_PARENT, f"{section.disk_type} disk with parent fields: {detail}")


def _section(
    footer: _Footer,
    head: _Footer | None,
    tail: _Footer | None,
    size_source: str,
    dynamic: _Dynamic | None,
) -> VhdSection:
    fields = footer.fields
    header = dynamic.fields if dynamic is not None else None
    parent_uuid = header.parent_uuid if header is not None else None
    return VhdSection(
        disk_type=DISK_TYPES.get(fields.disk_type, f"type-{fields.disk_type}"),
        creator_application=_four_cc(fields.creator_app),
        creator_version=_version(fields.creator_version),
        creator_host_os=_four_cc(fields.creator_host_os),
        timestamp=_vhd_time(fields.timestamp),
        uuid=str(uuid.UUID(bytes=fields.uuid)),
        current_size=fields.current_size,
        original_size=fields.original_size,
        geometry=Geometry(fields.cylinders, fields.heads, fields.sectors),
        block_size=header.block_size if header is not None else None,
        checksum_valid=footer.checksum_valid,
        parent_name=_utf16be_name(header.parent_name) if header is not None else None,
        parent_uuid=(
            str(uuid.UUID(bytes=parent_uuid)) if parent_uuid and any(parent_uuid) else None
        ),
        parent_timestamp=(
            _vhd_time(header.parent_timestamp)
            if header is not None and header.parent_timestamp
            else None
        ),
        parent_locators=dynamic.parent_locators if dynamic is not None else (),
        footer_location=footer.location,
        footer_copies=tuple(f.location for f in (head, tail) if f is not None),
        legacy_footer=tail is not None and tail.location == "tail-511",
        virtual_size_source=size_source,
        chs_size=fields.cylinders * fields.heads * fields.sectors * SECTOR,
        features=fields.features,
        format_version=_version(fields.version),
        checksum=fields.checksum,
        data_offset=None if fields.data_offset == NO_OFFSET else fields.data_offset,
        saved_state=bool(fields.saved_state),
        header_checksum_valid=dynamic.checksum_valid if dynamic is not None else None,
        bat_offset=header.table_offset if header is not None else None,
        max_table_entries=header.max_table_entries if header is not None else None,
    )


def _four_cc(raw: bytes) -> str:
    """A four-character code as text: ``b'qemu'`` → ``qemu``, ``b'tap\\0'`` → ``tap``."""
    return raw.decode("latin-1").rstrip("\0 ")


def _version(value: int) -> str:
    return f"{value >> 16}.{value & 0xFFFF}"


def _vhd_time(seconds: int) -> str:
    return (VHD_EPOCH + dt.timedelta(seconds=seconds)).isoformat()


def _utf16be_name(raw: bytes) -> str | None:
    """The parent's Unicode name: UTF-16BE, ends at the first NUL code unit."""
    for at in range(0, len(raw), 2):
        if raw[at : at + 2] == b"\0\0":
            raw = raw[:at]
            break
    return raw.decode("utf-16-be", errors="replace") or None


# --- deep: the BAT ---------------------------------------------------------------------------


def _bat_layout(
    ctx: Context,
    footer: _Footer,
    tail: _Footer | None,
    dynamic: _Dynamic | None,
    virtual_size: int,
) -> BatLayout | None:
    """The BAT's geometry, when the block size allows a walk (else it was reported)."""
    if dynamic is None:
        return None
    header = dynamic.fields
    block_size = header.block_size
    if block_size < SECTOR or block_size & (block_size - 1):
        return None
    bitmap_bytes = -(-block_size // SECTOR // 8)
    disk_size = max(virtual_size, footer.fields.current_size)
    header_end = footer.fields.data_offset + DYNAMIC_HEADER_SIZE
    bat_end = header.table_offset + header.max_table_entries * 4
    metadata = tuple(
        (loc.data_offset, loc.data_offset + loc.data_length, f"parent locator {loc.platform!r}")
        for loc in dynamic.parent_locators
        if loc.data_length
    )
    return BatLayout(
        offset=header.table_offset,
        entries=header.max_table_entries,
        block_size=block_size,
        bitmap_size=-(-bitmap_bytes // SECTOR) * SECTOR,
        needed=min(header.max_table_entries, -(-disk_size // block_size)),
        data_start=min(max(FOOTER_SIZE, header_end, bat_end), MAX_OFFSET),
        footer_at=tail.offset if tail is not None else ctx.source.size,
        metadata=metadata,
    )


def _allocated_size(
    ctx: Context,
    footer: _Footer,
    tail: _Footer | None,
    layout: BatLayout | None,
    virtual_size: int,
) -> tuple[int | None, TableSummary | None]:
    """Bytes of guest data the image stores, and the BAT's counts (deep only).

    Dynamic and differencing disks: the allocated blocks' bytes inside the virtual disk (a
    block straddling its end counts up to the end), from a walk that checks every entry.
    Fixed disks store every byte before the footer: the virtual size, or less if the file is
    shorter.
    """
    if layout is not None:
        return _walk_bat(ctx, layout, virtual_size)
    if footer.fields.disk_type == FIXED and tail is not None:
        return min(virtual_size, tail.offset), None
    return None, None


def _walk_bat(
    ctx: Context, layout: BatLayout, virtual_size: int
) -> tuple[int | None, TableSummary | None]:
    # The scanner keeps blocks out of the last 512 bytes of what it is told is the file.
    file_size = layout.footer_at + FOOTER_SIZE
    claims = blocktables.Claims(file_size, SECTOR, layout.metadata)

    def check(entries: memoryview, first_index: int, claim: bool) -> scan.Verdict:
        return scan.vhd_bat(
            entries,
            block_size=layout.block_size,
            data_start=layout.data_start,
            file_size=file_size,
            claimed=claims.map() if claim else None,
            first_index=first_index,
        )

    full_blocks, partial = divmod(virtual_size, layout.block_size)
    boundaries = (full_blocks, full_blocks + 1) if partial else (full_blocks,)
    walk = blocktables.walk_table(
        ctx,
        ("vhd-bat", layout.offset, layout.block_size),
        layout.offset,
        layout.needed * 4,
        4,
        blocktables.Rules(check, boundaries, functools.partial(_bad_kind, layout)),
        what="the BAT",
    )
    if walk is None:
        return None, None
    if not claims.enabled and walk.entries:
        ctx.findings.add(
            OVERLAP_UNCHECKED,
            f"a {file_size}-byte file needs a claim map over "
            f"{blocktables.CLAIM_MAP_LIMIT} bytes: blocks were not checked for overlaps",
        )
    _report_bat(ctx, layout, walk)
    total = walk.total
    summary = blocktables.TableSummary(
        entries=walk.entries,
        allocated=_allocated(total),
        zero=0,
        unallocated=getattr(total, "unallocated", 0),
        bad=walk.bad_count,
    )
    if walk.entries < layout.needed:
        return None, summary  # the file ends inside the BAT (reported as truncated)
    allocated = _allocated(walk.segments[0]) * layout.block_size
    if partial:
        allocated += _allocated(walk.segments[1]) * partial
    return allocated, summary


def _allocated(result: scan.Verdict | None) -> int:
    count: int = getattr(result, "allocated", 0)
    return count


def _block_span(layout: BatLayout, sector: int) -> tuple[int, int]:
    start = sector * SECTOR
    return start, start + layout.bitmap_size + layout.block_size


def _bad_kind(layout: BatLayout, bad: blocktables.BadEntry) -> str:
    """The finding code for a bad entry (an overlap may be with a parent locator's data)."""
    if bad.reason == scan.Reason.OUT_OF_RANGE:
        return BAT_OUT_OF_RANGE
    if bad.reason == scan.Reason.DOUBLE_CLAIM:
        start, end = _block_span(layout, bad.value)
        overlapped = blocktables.overlaps(start, end, layout.metadata)
        return BAT_IN_METADATA if overlapped else BAT_CLAIMED_TWICE
    return BAT_IN_METADATA


def _report_bat(ctx: Context, layout: BatLayout, walk: blocktables.Walk) -> None:
    """One finding for the first bad entry of each kind."""
    in_all = blocktables.bad_entries(walk.bad_count, "BAT")
    for bad in walk.first_bad:
        start, end = _block_span(layout, bad.value)
        where = f"BAT entry {bad.index} = {bad.value:#010x} (block at {start:#x}..{end:#x})"
        if bad.reason == scan.Reason.OUT_OF_RANGE:
            why = f"runs past the data area, which ends at {layout.footer_at:#x} (the footer)"
        elif bad.reason == scan.Reason.IN_METADATA:
            why = (
                f"starts before {layout.data_start:#x}, inside the footer copy, the dynamic "
                "header or the BAT"
            )
        else:
            overlapped = blocktables.overlaps(start, end, layout.metadata)
            why = f"overlaps {overlapped or 'the block of an earlier BAT entry'}"
        ctx.findings.add(_bad_kind(layout, bad), f"{where} {why} ({in_all})")


# --- qemu-img info view ---------------------------------------------------------------------


def qemu_info(md: Any, filename: str | None = None) -> dict[str, Any]:
    """The keys of ``qemu-img info -f vpc --output=json`` that come from the VHD metadata.

    qemu prints ``cluster-size`` (the block size) for any footer whose type is not fixed, and
    nothing format-specific.  A differencing disk also gets ``backing-filename`` here, which
    qemu does not print (it ignores the parent): callers that refuse images with a backing
    file then refuse it too.
    """
    info: dict[str, Any] = {"format": QEMU_NAME, "dirty-flag": False}
    section: VhdSection | None = md.vhd
    if section is None:
        return info
    if section.disk_type != "fixed" and section.block_size:
        info["cluster-size"] = section.block_size
    if section.disk_type == "differencing":
        info["backing-filename"] = parent_reference(section)
    return info


def parent_reference(section: VhdSection) -> str:
    """The parent as one name: the Unicode parent name, else the first locator's path."""
    if section.parent_name:
        return section.parent_name
    for locator in section.parent_locators:
        if locator.path:
            return locator.path
    return ""


FORMAT = FormatSpec(NAME, probe, parse, qemu_info)
