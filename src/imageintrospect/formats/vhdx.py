"""VHDX (Hyper-V virtual hard disk v2): headers, region tables, metadata items, findings.

Layout: Microsoft's "VHDX Format Specification" v1.00 ([MS-VHDX]).  All integers are
little-endian; GUIDs are stored in Microsoft's mixed-endian form (``uuid.UUID(bytes_le=)``).

The first MiB is the header section: the file identifier (``vhdxfile`` and a UTF-16LE creator
string) at 0, two copies of the header at 64 KiB and 128 KiB (the valid one with the higher
sequence number is current) and two copies of the region table at 192 KiB and 256 KiB.  The
region table locates the block allocation table (BAT) and the metadata region; the metadata
region's table locates the items that say what the disk is (block size, size, sector sizes,
the has-parent bit and, for a differencing disk, where its parent lives).

Everything here is read from fixed offsets or through one level of indirection (region table
→ metadata table → item), so header-only introspection reads about 250 KiB whatever the
image claims.  With ``deep`` the BAT is walked as well (``_walk_bat``): every entry the disk
needs is checked and ``allocated_size`` counted.
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from dataclasses import dataclass
from typing import Any, NamedTuple

import construct as c

from .. import findings as F
from .. import scan
from ..errors import InvalidImage
from ..scan import crc32c  # C when built, else the shared pure-Python one
from ..source import StreamGap
from ..structs import EntryTable, parse_struct
from . import blocktables, vhdx_log
from .base import Context, FormatSpec, Parsed, Probe, QemuRefuses, Section
from .blocktables import TableSummary
from .vhdx_log import Replay, ReplayedSource

NAME = "vhdx"
SIGNATURE = b"vhdxfile"

KiB = 1024
MiB = 1024 * KiB
TiB = 1024 * 1024 * MiB

CREATOR_OFFSET = 8
CREATOR_SIZE = 512
HEADER_OFFSETS = (64 * KiB, 128 * KiB)
HEADER_SIZE = 4 * KiB
HEADER_SIGNATURE = b"head"
REGION_TABLE_OFFSETS = (192 * KiB, 256 * KiB)
REGION_TABLE_SIZE = 64 * KiB
REGION_TABLE_SIGNATURE = b"regi"
CHECKSUM_OFFSET = 4  # of the u32 checksum in a header and in a region table
HEADER_SECTION_SIZE = 1 * MiB
METADATA_TABLE_SIZE = 64 * KiB
METADATA_SIGNATURE = b"metadata"
MAX_TABLE_ENTRIES = 2047  # region table and metadata table alike
# Regions, the log and payload blocks are placed on 1 MiB boundaries.
ALIGNMENT = 1 * MiB
MIN_BLOCK_SIZE = 1 * MiB
MAX_BLOCK_SIZE = 256 * MiB
SECTOR_SIZES = (512, 4096)
QEMU_LOGICAL_SECTOR = 512  # the only logical sector size qemu 7.2 opens
MAX_VIRTUAL_SIZE = 64 * TiB
BAT_ENTRY_SIZE = 8
# chunk_ratio = 2^23 * logical_sector_size / block_size: one sector-bitmap block covers
# 2^23 sectors, and a sector-bitmap BAT entry follows every chunk_ratio payload entries.
SECTORS_PER_BITMAP_BLOCK = 1 << 23
# How much of a parent locator item we read (its key/value strings are paths).
PARENT_LOCATOR_LIMIT = 128 * KiB
# How much of the metadata region a stream is asked to keep in one go: its table.  The items
# (after the table: qemu makes the region 1 MiB and puts them right behind it) are asked for
# once the table has been read, while they are still ahead, so a stream never holds the
# whole region (the oslo.utils drop-in must stay under 512 KiB).
METADATA_WINDOW = 64 * KiB
# How many problems of one kind a finding's message spells out.
MESSAGES_PER_FINDING = 5

# --- GUIDs ---------------------------------------------------------------------------------

BAT_REGION = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA_REGION = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
REGION_NAMES = {BAT_REGION: "bat", METADATA_REGION: "metadata"}

FILE_PARAMETERS = "file_parameters"
VIRTUAL_DISK_SIZE = "virtual_disk_size"
PAGE_83_DATA = "page_83_data"
LOGICAL_SECTOR_SIZE = "logical_sector_size"
PHYSICAL_SECTOR_SIZE = "physical_sector_size"
PARENT_LOCATOR = "parent_locator"
METADATA_NAMES = {
    uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B"): FILE_PARAMETERS,
    uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8"): VIRTUAL_DISK_SIZE,
    uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746"): PAGE_83_DATA,
    uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F"): LOGICAL_SECTOR_SIZE,
    uuid.UUID("CDA348C7-445D-4471-9CC9-E9885251C556"): PHYSICAL_SECTOR_SIZE,
    uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C"): PARENT_LOCATOR,
}
# Every VHDX has these items; the parent locator only a differencing one.
REQUIRED_ITEMS = (
    FILE_PARAMETERS,
    VIRTUAL_DISK_SIZE,
    PAGE_83_DATA,
    LOGICAL_SECTOR_SIZE,
    PHYSICAL_SECTOR_SIZE,
)
# The parent locator type of a VHDX parent (the only type the specification defines).
VHDX_PARENT_LOCATOR_TYPE = uuid.UUID("B04AEFB7-D19E-4A81-B789-25B8E9445913")
ZERO_GUID = uuid.UUID(int=0)

FILE_PARAMETERS_LEAVE_BLOCKS_ALLOCATED = 1 << 0
FILE_PARAMETERS_HAS_PARENT = 1 << 1
REGION_REQUIRED = 1 << 0
METADATA_IS_USER = 1 << 0
METADATA_IS_VIRTUAL_DISK = 1 << 1
METADATA_IS_REQUIRED = 1 << 2

# --- schemas -------------------------------------------------------------------------------

HEADER = c.Struct(
    "signature" / c.Bytes(4),
    "checksum" / c.Int32ul,
    "sequence_number" / c.Int64ul,
    "file_write_guid" / c.Bytes(16),
    "data_write_guid" / c.Bytes(16),
    "log_guid" / c.Bytes(16),
    "log_version" / c.Int16ul,
    "version" / c.Int16ul,
    "log_length" / c.Int32ul,
    "log_offset" / c.Int64ul,
)
HEADER_FIELDS_SIZE = HEADER.sizeof()

REGION_TABLE_HEADER = c.Struct(
    "signature" / c.Bytes(4),
    "checksum" / c.Int32ul,
    "entry_count" / c.Int32ul,
    "reserved" / c.Int32ul,
)
REGION_TABLE_HEADER_SIZE = REGION_TABLE_HEADER.sizeof()
REGION_ENTRY = c.Struct(
    "guid" / c.Bytes(16),
    "file_offset" / c.Int64ul,
    "length" / c.Int32ul,
    "flags" / c.Int32ul,
)
REGION_ENTRY_SIZE = REGION_ENTRY.sizeof()

METADATA_TABLE_HEADER = c.Struct(
    "signature" / c.Bytes(8),
    "reserved" / c.Int16ul,
    "entry_count" / c.Int16ul,
    "reserved2" / c.Bytes(20),
)
METADATA_TABLE_HEADER_SIZE = METADATA_TABLE_HEADER.sizeof()
METADATA_ENTRY = c.Struct(
    "item_id" / c.Bytes(16),
    "offset" / c.Int32ul,
    "length" / c.Int32ul,
    "flags" / c.Int32ul,
    "reserved" / c.Int32ul,
)
METADATA_ENTRY_SIZE = METADATA_ENTRY.sizeof()
# A table's entries decoded by struct (construct costs about 10 µs an entry).
REGION_TABLE = EntryTable(REGION_ENTRY, "RegionEntry", "VHDX region table entry")
METADATA_TABLE = EntryTable(METADATA_ENTRY, "MetadataEntry", "VHDX metadata table entry")

FILE_PARAMETERS_ITEM = c.Struct("block_size" / c.Int32ul, "flags" / c.Int32ul)
PARENT_LOCATOR_HEADER = c.Struct(
    "locator_type" / c.Bytes(16),
    "reserved" / c.Int16ul,
    "key_value_count" / c.Int16ul,
)
PARENT_LOCATOR_HEADER_SIZE = PARENT_LOCATOR_HEADER.sizeof()
PARENT_LOCATOR_ENTRY = c.Struct(
    "key_offset" / c.Int32ul,
    "value_offset" / c.Int32ul,
    "key_length" / c.Int16ul,
    "value_length" / c.Int16ul,
)
PARENT_LOCATOR_ENTRY_SIZE = PARENT_LOCATOR_ENTRY.sizeof()

# Bytes each known item must hold (the parent locator is variable).
ITEM_SIZES = {
    FILE_PARAMETERS: 8,
    VIRTUAL_DISK_SIZE: 8,
    PAGE_83_DATA: 16,
    LOGICAL_SECTOR_SIZE: 4,
    PHYSICAL_SECTOR_SIZE: 4,
}

# --- findings ------------------------------------------------------------------------------

DIFFERENCING = F.define(
    "vhdx-differencing",
    "unsafe",
    "vhdx",
    "A differencing disk: the has-parent bit or a parent locator names another file "
    "(the paths are in the message).",
)
LOG_PENDING = F.define(
    "vhdx-log-pending",
    "warning",
    "vhdx",
    "The header's log GUID is set but the log holds no sequence of entries to replay "
    "(qemu opens such an image).",
)
LOG_REPLAYED = F.define(
    "vhdx-log-replayed",
    "warning",
    "vhdx",
    "The log held writes not yet applied: they were replayed in memory and the image is "
    "described as it reads after replay (qemu-img refuses to open it read-only).",
)
LOG_UNREPLAYABLE = F.define(
    "vhdx-log-unreplayable",
    "unsafe",
    "vhdx",
    "The log may hold writes not yet applied, and they could not be replayed: entries that "
    "break the specification, a log over 16 MiB, a truncated file, header-only mode or a "
    "stream that let the log go by. What the file says before replay cannot be trusted.",
)
HEADER_INVALID = F.define(
    "vhdx-header-invalid",
    "warning",
    "vhdx",
    "One of the two header copies is invalid (checksum, signature or version); "
    "the other one is used.",
)
NO_VALID_HEADER = F.define(
    "vhdx-no-valid-header",
    "unsafe",
    "vhdx",
    "Neither header copy is valid.",
)
HEADER_CONFLICT = F.define(
    "vhdx-header-conflict",
    "unsafe",
    "vhdx",
    "Both header copies are valid with the same sequence number but different contents.",
)
REGION_TABLE_INVALID = F.define(
    "vhdx-region-table-invalid",
    "warning",
    "vhdx",
    "The first region table copy is invalid (checksum or signature); the second is used.",
)
REGION_TABLES_DIFFER = F.define(
    "vhdx-region-tables-differ",
    "warning",
    "vhdx",
    "Both region table copies are valid but not identical; the first is used.",
)
NO_VALID_REGION_TABLE = F.define(
    "vhdx-no-valid-region-table",
    "unsafe",
    "vhdx",
    "Neither region table copy is valid, so the BAT and metadata cannot be located.",
)
BAD_REGION_TABLE = F.define(
    "vhdx-bad-region-table",
    "unsafe",
    "vhdx",
    "The region table has too many entries, or lacks or repeats the BAT or metadata region.",
)
UNKNOWN_REQUIRED_REGION = F.define(
    "vhdx-unknown-required-region",
    "unsafe",
    "vhdx",
    "A region this library does not know is marked required (readers must refuse the file).",
)
BAD_LAYOUT = F.define(
    "vhdx-bad-layout",
    "unsafe",
    "vhdx",
    "A region or the log is misaligned, empty, or overlaps the header section, "
    "another region or the log.",
)
BAD_LOG = F.define(
    "vhdx-bad-log",
    "unsafe",
    "vhdx",
    "The header's log fields are impossible (log version, offset or length).",
)
BAD_METADATA = F.define(
    "vhdx-bad-metadata",
    "unsafe",
    "vhdx",
    "The metadata table or an item is malformed: signature, entry count, an item outside "
    "the region or overlapping another, a missing, repeated or short item.",
)
UNKNOWN_REQUIRED_METADATA = F.define(
    "vhdx-unknown-required-metadata",
    "unsafe",
    "vhdx",
    "A metadata item this library does not know is marked required.",
)
METADATA_UNCHECKED = F.define(
    "vhdx-metadata-unchecked",
    "unsafe",
    "vhdx",
    "Read as a stream, the metadata region had gone by before it could be kept: the "
    "has-parent bit and the disk size could not be checked.",
)
BAD_BLOCK_SIZE = F.define(
    "vhdx-bad-block-size",
    "unsafe",
    "vhdx",
    "The block size is not a power of two between 1 MiB and 256 MiB.",
)
BAD_SECTOR_SIZE = F.define(
    "vhdx-bad-sector-size",
    "unsafe",
    "vhdx",
    "A logical or physical sector size is neither 512 nor 4096.",
)
BAD_VIRTUAL_SIZE = F.define(
    "vhdx-bad-virtual-size",
    "unsafe",
    "vhdx",
    "The virtual disk size is 0, above the 64 TiB maximum, or not a whole number of "
    "logical sectors.",
)
BAT_TOO_SMALL = F.define(
    "vhdx-bat-too-small",
    "unsafe",
    "vhdx",
    "The BAT region cannot hold the entries the virtual size and block size need.",
)

BAT_RESERVED_BITS = F.define(
    "vhdx-bat-reserved-bits",
    "unsafe",
    "vhdx",
    "A BAT entry has reserved bits (3-19) set: its offset is not a whole MiB, or the entry "
    "is garbage.",
)
BAT_BAD_STATE = F.define(
    "vhdx-bat-bad-state",
    "unsafe",
    "vhdx",
    "A BAT entry's state is undefined (payload 4 or 5, a sector bitmap other than 0 or 6), or "
    "partially present in a disk without a parent.",
)
BAT_OUT_OF_RANGE = F.define(
    "vhdx-bat-out-of-range",
    "unsafe",
    "vhdx",
    "A present payload block or sector bitmap block runs past the end of the file.",
)
BAT_IN_METADATA = F.define(
    "vhdx-bat-in-metadata",
    "unsafe",
    "vhdx",
    "A present block lies over the header section, the log, the BAT, the metadata region or "
    "another region: guest writes would overwrite the image's own structures.",
)
BAT_CLAIMED_TWICE = F.define(
    "vhdx-bat-claimed-twice",
    "unsafe",
    "vhdx",
    "Two present blocks overlap: the same file bytes serve two places of the disk.",
)

# --- the section ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TableCopy(Section):
    """One of the two copies of the region table: where, and why it is invalid if it is."""

    offset: int
    valid: bool
    problem: str | None


@dataclass(frozen=True)
class HeaderCopy(TableCopy):
    """One of the two header copies; the sequence number is as stored, valid or not."""

    sequence_number: int | None


@dataclass(frozen=True)
class RegionEntry(Section):
    guid: str
    name: str | None  # "bat", "metadata", or None for a region this library does not know
    file_offset: int
    length: int
    required: bool


@dataclass(frozen=True)
class MetadataItem(Section):
    item_id: str
    name: str | None  # e.g. "file_parameters"; None for an item this library does not know
    offset: int  # from the start of the metadata region
    length: int
    is_user: bool
    is_virtual_disk: bool
    is_required: bool


@dataclass(frozen=True)
class BatLayout(Section):
    """Where the BAT is and how many entries the disk needs: what a table scanner walks."""

    offset: int
    length: int
    chunk_ratio: int
    data_blocks: int
    entries: int  # payload entries plus the interleaved sector-bitmap entries


@dataclass(frozen=True)
class VhdxAllocation(TableSummary):
    """The BAT's counts: ``allocated`` is fully plus partially present payload blocks,
    ``unallocated`` not present, undefined and unmapped ones; ``entries`` includes the
    sector-bitmap entries."""

    partially_present: int
    sector_bitmaps_present: int


@dataclass(frozen=True)
class VhdxSection(Section):
    creator: str
    block_size: int | None
    logical_sector_size: int | None
    physical_sector_size: int | None
    fixed: bool | None  # File Parameters' LeaveBlocksAllocated bit
    has_parent: bool | None
    parent_locator: dict[str, str] | None  # its key/value entries as written
    parent_locator_type: str | None
    log_pending: bool | None
    virtual_disk_id: str | None  # the Page 83 Data GUID (the SCSI VPD page 83 identity)
    virtual_disk_size: int | None
    active_header: int | None  # 1 (at 64 KiB) or 2 (at 128 KiB)
    sequence_number: int | None
    file_write_guid: str | None
    data_write_guid: str | None
    log_guid: str | None
    log_version: int | None
    version: int | None
    log_offset: int | None
    log_length: int | None
    headers: tuple[HeaderCopy, ...]
    region_tables: tuple[TableCopy, ...]
    active_region_table: int | None  # 1 or 2
    regions: tuple[RegionEntry, ...]
    metadata_items: tuple[MetadataItem, ...]
    chunk_ratio: int | None
    bat: BatLayout | None
    #: What the deep walk of the BAT counted (None without ``deep`` or without a usable BAT).
    allocation: VhdxAllocation | None = None
    #: The log sequence replayed before the rest was read (None when there was nothing to
    #: replay): ``entries``, ``first_sequence``, ``last_sequence``, ``writes``.
    log_replay: dict[str, int] | None = None


# --- probe ---------------------------------------------------------------------------------


def probe(probe: Probe) -> bool:
    return probe.head[: len(SIGNATURE)] == SIGNATURE


# --- parse ---------------------------------------------------------------------------------


class _Problems:
    """Problems found, grouped by finding code; each code becomes one bounded finding."""

    def __init__(self) -> None:
        self._shown: dict[str, list[str]] = {}
        self._more: dict[str, int] = {}
        self._refusals: list[str] = []

    def refuse(self, code: str, message: str) -> None:
        """A problem that qemu's VHDX driver refuses to open the image for, too."""
        self.add(code, message)
        self._refusals.append(message)

    def add(self, code: str, message: str) -> None:
        shown = self._shown.setdefault(code, [])
        if message in shown:
            return
        if len(shown) < MESSAGES_PER_FINDING:
            shown.append(message)
        else:
            self._more[code] = self._more.get(code, 0) + 1

    def report(self, ctx: Context) -> None:
        for code, shown in self._shown.items():
            more = self._more.get(code, 0)
            ctx.findings.add(code, "; ".join(shown) + (f"; and {more} more" if more else ""))
        if self._refusals:
            shown = self._refusals[:MESSAGES_PER_FINDING]
            ctx.findings.add(F.QEMU_CANNOT_OPEN, "qemu refuses the VHDX: " + "; ".join(shown))


@dataclass
class _Metadata:
    """The metadata region's decoded content (None where an item was absent or unreadable)."""

    items: tuple[MetadataItem, ...] = ()
    block_size: int | None = None
    flags: int | None = None
    virtual_size: int | None = None
    page_83: uuid.UUID | None = None
    logical_sector_size: int | None = None
    physical_sector_size: int | None = None
    locator_type: uuid.UUID | None = None
    locator: dict[str, str] | None = None
    present: frozenset[str] = frozenset()  # the known items the table lists


def parse(ctx: Context) -> Parsed:
    return _parse(ctx, replayed=None)


def _parse(ctx: Context, replayed: dict[str, int] | None) -> Parsed:
    """Parse the image; ``replayed`` says the source is already the log-replayed view."""
    problems = _Problems()
    creator = _read_creator(ctx)
    header, active_header, header_copies = _read_headers(ctx, problems)
    if header is not None and replayed is None:
        replay = _check_log(ctx, problems, header)
        if replay is not None:
            # Judge the disk as it reads after the log is applied, never the stale file.
            view = ReplayedSource(ctx.source, replay)
            inner = Context(source=view, findings=ctx.findings, deep=ctx.deep)
            return _parse(inner, replay_summary(replay))
    regions, active_table, table_copies = _read_region_table(ctx, problems)
    bat_region, metadata_region = (
        _check_regions(ctx, problems, regions, header) if active_table else (None, None)
    )
    if ctx.deep and bat_region is not None:
        # qemu writes the BAT before the metadata that sizes it: a stream must keep it now.
        blocktables.hold_for_stream(
            ctx, _bat_key(bat_region), bat_region.file_offset, bat_region.length, BAT_ENTRY_SIZE
        )
    meta = _read_metadata(ctx, problems, metadata_region)
    bat = _bat_layout(problems, meta, bat_region)
    _judge(problems, meta)
    problems.report(ctx)
    flags = meta.flags
    section = VhdxSection(
        creator=creator,
        block_size=meta.block_size,
        logical_sector_size=meta.logical_sector_size,
        physical_sector_size=meta.physical_sector_size,
        fixed=bool(flags & FILE_PARAMETERS_LEAVE_BLOCKS_ALLOCATED) if flags is not None else None,
        has_parent=bool(flags & FILE_PARAMETERS_HAS_PARENT) if flags is not None else None,
        parent_locator=meta.locator,
        parent_locator_type=str(meta.locator_type) if meta.locator_type is not None else None,
        virtual_disk_id=str(meta.page_83) if meta.page_83 is not None else None,
        virtual_disk_size=meta.virtual_size,
        active_header=active_header,
        **_header_fields(header),
        headers=header_copies,
        region_tables=table_copies,
        active_region_table=active_table,
        regions=regions,
        metadata_items=meta.items,
        chunk_ratio=_chunk_ratio(meta),
        bat=bat,
        log_replay=replayed,
    )
    allocated_size = None
    if ctx.deep and bat is not None:
        spans = _metadata_spans(header, regions)
        allocated_size, summary = _walk_bat(ctx, section, bat, spans)
        section = dataclasses.replace(section, allocation=summary)
    virtual_size = meta.virtual_size
    if virtual_size is not None and virtual_size >= 1 << 63:
        virtual_size = None  # not representable where sizes are signed 64-bit (qemu, Glance)
    return Parsed(virtual_size=virtual_size, section=section, allocated_size=allocated_size)


def _header_fields(header: Any) -> dict[str, Any]:
    """The section's values from the current header (all None without a valid header)."""
    if header is None:
        return dict.fromkeys(_HEADER_KEYS)
    return {
        "log_pending": _guid(header.log_guid) != ZERO_GUID,
        "sequence_number": header.sequence_number,
        "file_write_guid": str(_guid(header.file_write_guid)),
        "data_write_guid": str(_guid(header.data_write_guid)),
        "log_guid": str(_guid(header.log_guid)),
        "log_version": header.log_version,
        "version": header.version,
        "log_offset": header.log_offset,
        "log_length": header.log_length,
    }


_HEADER_KEYS = (
    "log_pending",
    "sequence_number",
    "file_write_guid",
    "data_write_guid",
    "log_guid",
    "log_version",
    "version",
    "log_offset",
    "log_length",
)


def _guid(raw: bytes) -> uuid.UUID:
    return uuid.UUID(bytes_le=bytes(raw))


def _read_creator(ctx: Context) -> str:
    """The file identifier's creator: free UTF-16LE text, informational only."""
    raw = ctx.source.read_at(CREATOR_OFFSET, CREATOR_SIZE)
    raw = raw[: len(raw) // 2 * 2]
    return raw.decode("utf-16-le", errors="replace").split("\0", 1)[0]


# --- headers -------------------------------------------------------------------------------


def _read_headers(
    ctx: Context, problems: _Problems
) -> tuple[Any, int | None, tuple[HeaderCopy, ...]]:
    """Both header copies; returns the current one (or None), its number, and each's status."""
    parsed: list[Any] = []
    raws: list[bytes] = []
    copies: list[HeaderCopy] = []
    for offset in HEADER_OFFSETS:
        raw = ctx.source.read_at(offset, HEADER_SIZE)
        header, problem = _check_header(raw)
        if len(raw) < HEADER_SIZE:
            problems.add(F.TRUNCATED, f"the header at {offset:#x} is cut short at {len(raw)} bytes")
        parsed.append(header if problem is None else None)
        raws.append(raw)
        sequence = header.sequence_number if header is not None else None
        copies.append(HeaderCopy(offset, problem is None, problem, sequence))
    first, second = parsed
    if first is None and second is None:
        problems.refuse(
            NO_VALID_HEADER,
            f"header 1: {copies[0].problem}; header 2: {copies[1].problem}",
        )
        return None, None, tuple(copies)
    if first is None or second is None:
        bad = 0 if first is None else 1
        problems.add(
            HEADER_INVALID,
            f"header {bad + 1} at {HEADER_OFFSETS[bad]:#x}: {copies[bad].problem}; "
            f"header {2 - bad} is used",
        )
        return (second, 2, tuple(copies)) if first is None else (first, 1, tuple(copies))
    if first.sequence_number == second.sequence_number:
        # Identical twins are accepted (qemu notes Disk2VHD writes them); differing ones are not.
        if raws[0] != raws[1]:
            problems.refuse(
                HEADER_CONFLICT,
                f"both headers have sequence number {first.sequence_number} but differ",
            )
        return first, 1, tuple(copies)
    if second.sequence_number > first.sequence_number:
        return second, 2, tuple(copies)
    return first, 1, tuple(copies)


def _check_header(raw: bytes) -> tuple[Any, str | None]:
    """Decode one header copy; the problem that makes it invalid, or None."""
    if len(raw) < HEADER_SIZE:
        return None, f"only {len(raw)} of {HEADER_SIZE} bytes in the file"
    header = parse_struct(HEADER, raw[:HEADER_FIELDS_SIZE], "vhdx header")
    if header.signature != HEADER_SIGNATURE:
        return header, f"signature {bytes(header.signature)!r}, not {HEADER_SIGNATURE!r}"
    computed = _checksum(raw)
    if computed != header.checksum:
        return header, f"checksum {header.checksum:#010x}, computed {computed:#010x}"
    if header.version != 1:
        return header, f"version {header.version}, not 1"
    return header, None


def _checksum(block: bytes) -> int:
    """CRC-32C over ``block`` with its checksum field taken as zero."""
    return crc32c(block[:CHECKSUM_OFFSET] + b"\0\0\0\0" + block[CHECKSUM_OFFSET + 4 :])


def _check_log(ctx: Context, problems: _Problems, header: Any) -> Replay | None:
    """Check the log fields; search a log with a GUID for entries to replay (the sequence
    to replay, when there is one)."""
    log_guid = _guid(header.log_guid)
    sane = True
    if header.log_version != 0:
        problems.refuse(BAD_LOG, f"log version {header.log_version}, not 0")
        sane = False
    offset, length = header.log_offset, header.log_length
    if offset < HEADER_SECTION_SIZE or offset % ALIGNMENT:
        problems.refuse(BAD_LOG, f"log offset {offset:#x} is not a 1 MiB multiple past the headers")
        sane = False
    if length % ALIGNMENT:
        problems.add(BAD_LOG, f"log length {length:#x} is not a multiple of 1 MiB")
        sane = False
    if length and offset + length > ctx.source.size:
        problems.add(
            F.TRUNCATED,
            f"the log at {offset:#x} ({length} bytes) ends past the image's "
            f"{ctx.source.size} bytes",
        )
    if log_guid == ZERO_GUID:
        return None
    if length == 0:
        problems.add(BAD_LOG, f"log GUID {log_guid} is set but the log is empty")
        return None
    where = f"log GUID {log_guid}, {length}-byte log at {offset:#x}"
    if not sane:
        problems.add(LOG_UNREPLAYABLE, f"{where}: its fields are impossible (see vhdx-bad-log)")
        return None
    return _search_log(ctx, problems, header, where)


def _search_log(ctx: Context, problems: _Problems, header: Any, where: str) -> Replay | None:
    offset, length = header.log_offset, header.log_length
    if not ctx.deep:
        problems.add(LOG_UNREPLAYABLE, f"{where}: header-only introspection does not read it")
        return None
    if length > vhdx_log.MAX_LOG:
        problems.add(
            LOG_UNREPLAYABLE, f"{where}: larger than the {vhdx_log.MAX_LOG} bytes replayed"
        )
        return None
    ctx.source.prefetch([(offset, length)])
    try:
        log = ctx.source.read_at(offset, length)
        replay = vhdx_log.find_active(log, bytes(header.log_guid), ctx.source.size)
    except StreamGap:
        problems.add(F.STREAM_UNCHECKED, f"{where}: went by before it could be kept")
        problems.add(LOG_UNREPLAYABLE, f"{where}: not kept from the stream")
        return None
    except vhdx_log.Unreplayable as exc:
        problems.add(LOG_UNREPLAYABLE, f"{where}: {exc}")
        return None
    if replay is None:
        problems.add(LOG_PENDING, f"{where}: no sequence of entries to replay")
        return None
    summary = replay_summary(replay)
    # The other problems are found again in the replayed view (the log may have fixed them).
    ctx.findings.add(
        LOG_REPLAYED,
        f"{where}: {summary['entries']} entries (sequence {summary['first_sequence']} to "
        f"{summary['last_sequence']}, {summary['writes']} writes) were replayed in memory; "
        "the image is described as it reads after replay",
    )
    return replay


def replay_summary(replay: Replay) -> dict[str, int]:
    return {
        "entries": len(replay.entries),
        "first_sequence": replay.entries[0].sequence,
        "last_sequence": replay.entries[-1].sequence,
        "writes": len(replay.writes),
    }


# --- region table --------------------------------------------------------------------------


def _read_region_table(
    ctx: Context, problems: _Problems
) -> tuple[tuple[RegionEntry, ...], int | None, tuple[TableCopy, ...]]:
    """The region table in use (the first valid copy), its number, and each copy's status."""
    raws: list[bytes] = []
    copies: list[TableCopy] = []
    for offset in REGION_TABLE_OFFSETS:
        raw = ctx.source.read_at(offset, REGION_TABLE_SIZE)
        if len(raw) < REGION_TABLE_SIZE:
            problems.add(
                F.TRUNCATED, f"the region table at {offset:#x} is cut short at {len(raw)} bytes"
            )
        problem = _region_table_problem(raw)
        raws.append(raw)
        copies.append(TableCopy(offset, problem is None, problem))
    valid = [index for index, copy in enumerate(copies) if copy.valid]
    if not valid:
        problems.refuse(
            NO_VALID_REGION_TABLE,
            f"region table 1: {copies[0].problem}; region table 2: {copies[1].problem}",
        )
        return (), None, tuple(copies)
    chosen = valid[0]
    if chosen == 1:
        # qemu reads only the first copy: the specification's spare is no help to it.
        problems.refuse(
            REGION_TABLE_INVALID,
            f"region table 1 at {REGION_TABLE_OFFSETS[0]:#x}: {copies[0].problem}; "
            "region table 2 is used",
        )
    elif len(valid) == 2 and raws[0] != raws[1]:
        problems.add(REGION_TABLES_DIFFER, "both region tables are valid but not identical")
    return _region_entries(problems, raws[chosen]), chosen + 1, tuple(copies)


def _region_table_problem(raw: bytes) -> str | None:
    if len(raw) < REGION_TABLE_SIZE:
        return f"only {len(raw)} of {REGION_TABLE_SIZE} bytes in the file"
    table = parse_struct(
        REGION_TABLE_HEADER, raw[:REGION_TABLE_HEADER_SIZE], "vhdx region table header"
    )
    if table.signature != REGION_TABLE_SIGNATURE:
        return f"signature {bytes(table.signature)!r}, not {REGION_TABLE_SIGNATURE!r}"
    computed = _checksum(raw)
    if computed != table.checksum:
        return f"checksum {table.checksum:#010x}, computed {computed:#010x}"
    return None


def _region_entries(problems: _Problems, raw: bytes) -> tuple[RegionEntry, ...]:
    table = parse_struct(
        REGION_TABLE_HEADER, raw[:REGION_TABLE_HEADER_SIZE], "vhdx region table header"
    )
    count = table.entry_count
    if count > MAX_TABLE_ENTRIES:
        problems.refuse(BAD_REGION_TABLE, f"{count} region table entries (at most 2047)")
        return ()
    # a valid table is 64 KiB, which holds 2047 entries after its header
    end = REGION_TABLE_HEADER_SIZE + count * REGION_ENTRY_SIZE
    return tuple(
        RegionEntry(
            guid=str(_guid(guid)),
            name=REGION_NAMES.get(_guid(guid)),
            file_offset=file_offset,
            length=length,
            required=bool(flags & REGION_REQUIRED),
        )
        for guid, file_offset, length, flags in REGION_TABLE.decode_all(
            raw[REGION_TABLE_HEADER_SIZE:end]
        )
    )


def _check_regions(
    ctx: Context, problems: _Problems, regions: tuple[RegionEntry, ...], header: Any
) -> tuple[RegionEntry | None, RegionEntry | None]:
    """Check every region's placement; return the BAT and metadata regions (first of each)."""
    found: dict[str, RegionEntry] = {}
    spans = [(0, HEADER_SECTION_SIZE, "the header section")]
    if header is not None and header.log_length:
        spans.append((header.log_offset, header.log_length, "the log"))
    for region in regions:
        kind = f"{region.name} region" if region.name else f"region {region.guid}"
        label = f"{kind} at {region.file_offset:#x}"
        _check_region_placement(ctx, problems, region, label)
        spans.append((region.file_offset, region.length, label))
        if region.name is None:
            if region.required:
                problems.refuse(UNKNOWN_REQUIRED_REGION, f"unknown required region {region.guid}")
        elif region.name in found:
            problems.refuse(BAD_REGION_TABLE, f"a second {region.name} region ({label})")
        else:
            found[region.name] = region
    for name in ("bat", "metadata"):
        if name not in found:
            problems.refuse(BAD_REGION_TABLE, f"no {name} region")
    for later, earlier in _overlaps(spans):
        # qemu checks regions against each other and the log, not the header section.
        if "the header section" in (later, earlier):
            problems.add(BAD_LAYOUT, f"{later} overlaps {earlier}")
        else:
            problems.refuse(BAD_LAYOUT, f"{later} overlaps {earlier}")
    return found.get("bat"), found.get("metadata")


def _check_region_placement(
    ctx: Context, problems: _Problems, region: RegionEntry, label: str
) -> None:
    if region.length == 0:
        problems.add(BAD_LAYOUT, f"{label} is empty")
    if region.file_offset % ALIGNMENT or region.length % ALIGNMENT:
        problems.add(BAD_LAYOUT, f"{label} ({region.length} bytes) is not 1 MiB aligned")
    if region.file_offset + region.length > ctx.source.size:
        problems.add(
            F.TRUNCATED,
            f"{label} ({region.length} bytes) ends past the image's {ctx.source.size} bytes",
        )


def _overlaps(spans: list[tuple[int, int, str]]) -> list[tuple[str, str]]:
    """Pairs (span, an earlier span it overlaps), in O(n log n) for up to 2047 entries."""
    result: list[tuple[str, str]] = []
    reach: tuple[int, str] | None = None  # the furthest end seen so far, and whose it is
    for start, length, label in sorted(s for s in spans if s[1] > 0):
        if reach is not None and start < reach[0]:
            result.append((label, reach[1]))
        if reach is None or start + length > reach[0]:
            reach = (start + length, label)
    return result


# --- metadata ------------------------------------------------------------------------------


def _read_metadata(ctx: Context, problems: _Problems, region: RegionEntry | None) -> _Metadata:
    """The metadata table and the known items' values."""
    if region is None:
        return _Metadata()
    try:
        return _read_metadata_region(ctx, problems, region)
    except StreamGap:
        where = f"the metadata region at {region.file_offset:#x}"
        problems.add(F.STREAM_UNCHECKED, f"{where} lay outside the kept stream")
        problems.add(METADATA_UNCHECKED, f"{where} went by before it could be kept")
        return _Metadata()


def _read_metadata_region(ctx: Context, problems: _Problems, region: RegionEntry) -> _Metadata:
    window = max(METADATA_TABLE_SIZE, min(region.length, METADATA_WINDOW))
    ctx.source.prefetch([(region.file_offset, window)])  # a stream keeps table and items
    raw = ctx.source.read_at(region.file_offset, METADATA_TABLE_SIZE)
    if len(raw) < METADATA_TABLE_SIZE:
        problems.add(F.TRUNCATED, f"the metadata table is cut short at {len(raw)} bytes")
        return _Metadata()
    table = parse_struct(
        METADATA_TABLE_HEADER, raw[:METADATA_TABLE_HEADER_SIZE], "vhdx metadata table header"
    )
    if table.signature != METADATA_SIGNATURE:
        problems.refuse(BAD_METADATA, f"metadata table signature {bytes(table.signature)!r}")
        return _Metadata()
    if table.entry_count > MAX_TABLE_ENTRIES:
        problems.refuse(BAD_METADATA, f"{table.entry_count} metadata entries (at most 2047)")
        return _Metadata()
    # the 64 KiB table holds 2047 entries after its header
    end = METADATA_TABLE_HEADER_SIZE + table.entry_count * METADATA_ENTRY_SIZE
    entries = METADATA_TABLE.decode_all(raw[METADATA_TABLE_HEADER_SIZE:end])
    items = tuple(_metadata_item(*entry) for entry in entries)
    known = _check_items(problems, items, region)
    meta = _Metadata(items=items, present=frozenset(known))
    _read_item_values(ctx, problems, region, known, meta)
    return meta


def _metadata_item(raw_id: bytes, offset: int, length: int, flags: int, _: int) -> MetadataItem:
    """One METADATA_ENTRY, from its fields in order."""
    item_id = _guid(raw_id)
    return MetadataItem(
        item_id=str(item_id),
        name=METADATA_NAMES.get(item_id),
        offset=offset,
        length=length,
        is_user=bool(flags & METADATA_IS_USER),
        is_virtual_disk=bool(flags & METADATA_IS_VIRTUAL_DISK),
        is_required=bool(flags & METADATA_IS_REQUIRED),
    )


def _check_items(
    problems: _Problems, items: tuple[MetadataItem, ...], region: RegionEntry
) -> dict[str, MetadataItem]:
    """Check each item's place in the region; return the known items (first of each)."""
    known: dict[str, MetadataItem] = {}
    spans: list[tuple[int, int, str]] = []
    for item in items:
        label = f"{item.name or 'item ' + item.item_id} at +{item.offset:#x}"
        if item.length == 0 and item.offset != 0:
            problems.add(BAD_METADATA, f"{label} is empty but has an offset")
        if item.length and item.offset < METADATA_TABLE_SIZE:
            problems.add(BAD_METADATA, f"{label} lies inside the metadata table's 64 KiB")
        elif item.offset + item.length > region.length:
            problems.add(
                BAD_METADATA,
                f"{label} ({item.length} bytes) ends past the {region.length}-byte region",
            )
        else:
            spans.append((item.offset, item.length, label))
        if item.name is None:
            if item.is_required:
                problems.refuse(UNKNOWN_REQUIRED_METADATA, f"unknown required item {item.item_id}")
        elif item.name in known:
            problems.add(BAD_METADATA, f"a second {item.name} item ({label})")
        else:
            known[item.name] = item
    for later, earlier in _overlaps(spans):
        problems.add(BAD_METADATA, f"{later} overlaps {earlier}")
    for name in REQUIRED_ITEMS:
        if name not in known:
            problems.refuse(BAD_METADATA, f"no {name} item")
    return known


def _read_item_values(
    ctx: Context,
    problems: _Problems,
    region: RegionEntry,
    known: dict[str, MetadataItem],
    meta: _Metadata,
) -> None:
    locator = known.get(PARENT_LOCATOR)
    wanted = [(known[name], size) for name, size in ITEM_SIZES.items() if name in known]
    if locator is not None:
        wanted.append((locator, min(locator.length, PARENT_LOCATOR_LIMIT)))
    ctx.source.prefetch([(region.file_offset + item.offset, size) for item, size in wanted])
    values: dict[str, bytes] = {}
    for name, size in ITEM_SIZES.items():
        item = known.get(name)
        if item is None:
            continue
        if item.length < size:
            problems.add(BAD_METADATA, f"{name} item holds {item.length} bytes, needs {size}")
            continue
        data = ctx.source.read_at(region.file_offset + item.offset, size)
        if len(data) < size:
            problems.add(F.TRUNCATED, f"the {name} item ends past the end of the file")
            continue
        values[name] = data
    if FILE_PARAMETERS in values:
        params = parse_struct(FILE_PARAMETERS_ITEM, values[FILE_PARAMETERS], "vhdx file parameters")
        meta.block_size, meta.flags = params.block_size, params.flags
    if VIRTUAL_DISK_SIZE in values:
        meta.virtual_size = int.from_bytes(values[VIRTUAL_DISK_SIZE], "little")
    if PAGE_83_DATA in values:
        meta.page_83 = _guid(values[PAGE_83_DATA])
    if LOGICAL_SECTOR_SIZE in values:
        meta.logical_sector_size = int.from_bytes(values[LOGICAL_SECTOR_SIZE], "little")
    if PHYSICAL_SECTOR_SIZE in values:
        meta.physical_sector_size = int.from_bytes(values[PHYSICAL_SECTOR_SIZE], "little")
    if locator is not None:
        length = min(locator.length, PARENT_LOCATOR_LIMIT)
        data = ctx.source.read_at(region.file_offset + locator.offset, length)
        if len(data) < length:
            problems.add(F.TRUNCATED, "the parent locator item ends past the end of the file")
        meta.locator_type, meta.locator = _parse_parent_locator(problems, data)


def _parse_parent_locator(
    problems: _Problems, data: bytes
) -> tuple[uuid.UUID | None, dict[str, str] | None]:
    """The locator's type and its key/value entries (UTF-16LE strings, as written)."""
    if len(data) < PARENT_LOCATOR_HEADER_SIZE:
        problems.add(BAD_METADATA, f"parent locator of {len(data)} bytes has no header")
        return None, None
    header = parse_struct(
        PARENT_LOCATOR_HEADER, data[:PARENT_LOCATOR_HEADER_SIZE], "vhdx parent locator"
    )
    count = header.key_value_count
    room = (len(data) - PARENT_LOCATOR_HEADER_SIZE) // PARENT_LOCATOR_ENTRY_SIZE
    if count > room:
        problems.add(
            BAD_METADATA,
            f"parent locator claims {count} entries, its {len(data)} bytes hold {room}",
        )
        count = room
    end = PARENT_LOCATOR_HEADER_SIZE + count * PARENT_LOCATOR_ENTRY_SIZE
    entries = parse_struct(
        c.Array(count, PARENT_LOCATOR_ENTRY),
        data[PARENT_LOCATOR_HEADER_SIZE:end],
        "vhdx parent locator entries",
    )
    pairs: dict[str, str] = {}
    for index, entry in enumerate(entries):
        key = _locator_string(data, entry.key_offset, entry.key_length)
        value = _locator_string(data, entry.value_offset, entry.value_length)
        if key is None or value is None or not key:
            problems.add(BAD_METADATA, f"parent locator entry {index} lies outside the item")
        elif key in pairs:
            problems.add(BAD_METADATA, f"parent locator key {key!r} appears twice")
        else:
            pairs[key] = value
    locator_type = _guid(header.locator_type)
    if locator_type == VHDX_PARENT_LOCATOR_TYPE and "parent_linkage" not in pairs:
        problems.add(BAD_METADATA, "the parent locator has no parent_linkage entry")
    return locator_type, pairs


def _locator_string(data: bytes, offset: int, length: int) -> str | None:
    if offset < PARENT_LOCATOR_HEADER_SIZE or offset + length > len(data):
        return None
    return data[offset : offset + length].decode("utf-16-le", errors="replace")


# --- judging -------------------------------------------------------------------------------


def _bat_layout(
    problems: _Problems, meta: _Metadata, region: RegionEntry | None
) -> BatLayout | None:
    """How many BAT entries the disk needs, and whether its BAT region holds them."""
    block_size, size, chunk_ratio = meta.block_size, meta.virtual_size, _chunk_ratio(meta)
    if region is None or block_size is None or chunk_ratio is None or not size:
        return None
    data_blocks = -(-size // block_size)
    if meta.flags is not None and meta.flags & FILE_PARAMETERS_HAS_PARENT:
        # A differencing disk has a sector-bitmap entry for every chunk, even the last.
        entries = -(-data_blocks // chunk_ratio) * (chunk_ratio + 1)
    else:
        entries = data_blocks + (data_blocks - 1) // chunk_ratio
    if entries * BAT_ENTRY_SIZE > region.length:
        problems.refuse(
            BAT_TOO_SMALL,
            f"{entries} BAT entries ({entries * BAT_ENTRY_SIZE} bytes) needed for {size} bytes "
            f"in {block_size}-byte blocks; the BAT region holds {region.length} bytes",
        )
    return BatLayout(region.file_offset, region.length, chunk_ratio, data_blocks, entries)


def _chunk_ratio(meta: _Metadata) -> int | None:
    """Payload blocks per sector-bitmap block, when the block and sector sizes are sane."""
    block_size, sector_size = meta.block_size, meta.logical_sector_size
    if block_size is None or not _valid_block_size(block_size) or sector_size not in SECTOR_SIZES:
        return None
    return SECTORS_PER_BITMAP_BLOCK * sector_size // block_size


def _valid_block_size(block_size: int) -> bool:
    power_of_two = block_size & (block_size - 1) == 0
    return MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE and power_of_two


def _judge(problems: _Problems, meta: _Metadata) -> None:
    """The findings that follow from the metadata items' values."""
    if meta.block_size is not None and not _valid_block_size(meta.block_size):
        problems.refuse(BAD_BLOCK_SIZE, f"block size {meta.block_size}")
    for name, value in (
        ("logical", meta.logical_sector_size),
        ("physical", meta.physical_sector_size),
    ):
        if value is not None and value not in SECTOR_SIZES:
            problems.add(BAD_SECTOR_SIZE, f"{name} sector size {value}")
    if meta.logical_sector_size is not None and meta.logical_sector_size != QEMU_LOGICAL_SECTOR:
        # The specification allows 4096; qemu 7.2 does not (a consumer running it cannot).
        problems.refuse(F.QEMU_CANNOT_OPEN, f"logical sector size {meta.logical_sector_size}")
    size = meta.virtual_size
    if size is not None:
        if size == 0:
            problems.add(BAD_VIRTUAL_SIZE, "virtual size 0")
        elif size > MAX_VIRTUAL_SIZE:
            problems.add(BAD_VIRTUAL_SIZE, f"virtual size {size} exceeds 64 TiB")
        sector = meta.logical_sector_size
        if sector in SECTOR_SIZES and size % sector:
            problems.add(BAD_VIRTUAL_SIZE, f"virtual size {size} is not a multiple of {sector}")
    _judge_parent(problems, meta)


def _judge_parent(problems: _Problems, meta: _Metadata) -> None:
    has_parent = meta.flags is not None and bool(meta.flags & FILE_PARAMETERS_HAS_PARENT)
    if not has_parent and PARENT_LOCATOR not in meta.present:
        return
    if has_parent and PARENT_LOCATOR not in meta.present:
        problems.add(BAD_METADATA, "the has-parent bit is set but there is no parent locator")
        problems.refuse(
            DIFFERENCING, "the has-parent bit is set (no parent locator names the parent)"
        )
        return
    start = "the has-parent bit is set" if has_parent else "a parent locator is present"
    if meta.locator_type is not None and meta.locator_type != VHDX_PARENT_LOCATOR_TYPE:
        start += f"; locator type {meta.locator_type}"
    described = ", ".join(f"{k}={_shorten(v)!r}" for k, v in list((meta.locator or {}).items())[:8])
    problems.refuse(DIFFERENCING, f"{start}; parent: {described or '(no entries)'}")


def _shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# --- deep: the BAT ---------------------------------------------------------------------------

_BAT_CODES = {
    scan.Reason.RESERVED_BITS: BAT_RESERVED_BITS,
    scan.Reason.BAD_STATE: BAT_BAD_STATE,
    scan.Reason.OUT_OF_RANGE: BAT_OUT_OF_RANGE,
    scan.Reason.IN_METADATA: BAT_IN_METADATA,
    scan.Reason.DOUBLE_CLAIM: BAT_CLAIMED_TWICE,
}
_PAYLOAD_STATES = {
    0: "not present",
    1: "undefined",
    2: "zero",
    3: "unmapped",
    6: "fully present",
    7: "partially present",
}
_BITMAP_STATES = {0: "not present", 6: "present"}


def _metadata_spans(
    header: Any, regions: tuple[RegionEntry, ...]
) -> tuple[tuple[int, int, str], ...]:
    """What payload blocks must not overlap: the header section, the log and every region."""
    spans = [(0, HEADER_SECTION_SIZE, "the header section")]
    if header is not None and header.log_length:
        spans.append((header.log_offset, header.log_offset + header.log_length, "the log"))
    for region in regions:
        name = f"the {region.name} region" if region.name else f"region {region.guid}"
        spans.append((region.file_offset, region.file_offset + region.length, name))
    return tuple(spans)


def _walk_bat(
    ctx: Context,
    section: VhdxSection,
    bat: BatLayout,
    spans: tuple[tuple[int, int, str], ...],
) -> tuple[int | None, VhdxAllocation | None]:
    """Check every BAT entry the disk needs; the bytes of guest data stored (payload blocks
    fully or partially present, inside the virtual disk), and the BAT's counts."""
    block_size, sector_size = section.block_size, section.logical_sector_size
    virtual_size = section.virtual_disk_size
    if block_size is None or sector_size is None or not virtual_size:
        return None, None  # _bat_layout made a layout only when these are sane
    has_parent = bool(section.has_parent)
    claims = blocktables.Claims(ctx.source.size, MiB, spans)

    def check(entries: memoryview, first_index: int, claim: bool) -> scan.Verdict:
        return scan.vhdx_bat(
            entries,
            block_size=block_size,
            logical_sector_size=sector_size,
            file_size=ctx.source.size,
            has_parent=has_parent,
            claimed=claims.map() if claim else None,
            first_index=first_index,
        )

    # The last payload block may straddle the end of the disk: its entry is a segment alone.
    # Entries after it (a differencing disk's BAT runs to the end of its last chunk) map
    # nothing of the disk.
    last_block = bat.data_blocks - 1
    last_entry = last_block + last_block // bat.chunk_ratio
    boundaries = (last_entry, last_entry + 1)
    in_last_block = virtual_size - last_block * block_size
    wanted = min(bat.entries, bat.length // BAT_ENTRY_SIZE)
    walk = blocktables.walk_table(
        ctx,
        _bat_key(bat),
        bat.offset,
        wanted * BAT_ENTRY_SIZE,
        BAT_ENTRY_SIZE,
        blocktables.Rules(check, boundaries, functools.partial(_bad_kind, bat, block_size, spans)),
        what="the BAT",
    )
    if walk is None:
        return None, None
    _report_bat(ctx, bat, block_size, spans, walk)
    total = walk.total
    summary = VhdxAllocation(
        entries=walk.entries,
        allocated=_stored(total),
        zero=_count(total, "zero"),
        unallocated=sum(_count(total, name) for name in ("not_present", "undefined", "unmapped")),
        bad=walk.bad_count,
        partially_present=_count(total, "partially_present"),
        sector_bitmaps_present=_count(total, "bitmaps_present"),
    )
    if walk.entries < bat.entries:
        return None, summary  # the BAT region or the file ends first (reported already)
    allocated = _stored(walk.segments[0]) * block_size
    allocated += _stored(walk.segments[1]) * in_last_block
    return allocated, summary


def _bat_key(region: RegionEntry | BatLayout) -> tuple[str, int]:
    offset = region.file_offset if isinstance(region, RegionEntry) else region.offset
    return ("vhdx-bat", offset)


def _count(result: scan.Verdict | None, name: str) -> int:
    count: int = getattr(result, name, 0)
    return count


def _stored(result: scan.Verdict | None) -> int:
    """Payload blocks whose data is in this file (partially present ones in part)."""
    return _count(result, "fully_present") + _count(result, "partially_present")


def _entry_block(bat: BatLayout, block_size: int, bad: blocktables.BadEntry) -> _BatEntry:
    """What a BAT entry is: a payload or sector-bitmap entry, its state and its block."""
    group, position = divmod(bad.index, bat.chunk_ratio + 1)
    state, offset = bad.value & 7, bad.value >> 20 << 20
    if position == bat.chunk_ratio:
        name = _BITMAP_STATES.get(state, "undefined")
        return _BatEntry(f"sector bitmap of chunk {group}", True, state, name, offset, MiB)
    name = _PAYLOAD_STATES.get(state, "undefined")
    return _BatEntry(f"payload block {bad.index - group}", False, state, name, offset, block_size)


def _bad_kind(
    bat: BatLayout,
    block_size: int,
    spans: tuple[tuple[int, int, str], ...],
    bad: blocktables.BadEntry,
) -> str:
    """The finding code for a bad entry (an overlap may be with the image's metadata)."""
    if bad.reason == scan.Reason.DOUBLE_CLAIM:
        entry = _entry_block(bat, block_size, bad)
        if blocktables.overlaps(entry.offset, entry.offset + entry.length, spans):
            return BAT_IN_METADATA
    return _BAT_CODES.get(bad.reason, BAT_BAD_STATE)


def _report_bat(
    ctx: Context,
    bat: BatLayout,
    block_size: int,
    spans: tuple[tuple[int, int, str], ...],
    walk: blocktables.Walk,
) -> None:
    """One finding for the first bad entry of each kind."""
    in_all = blocktables.bad_entries(walk.bad_count, "BAT")
    for bad in walk.first_bad:
        entry = _entry_block(bat, block_size, bad)
        offset, end = entry.offset, entry.offset + entry.length
        if bad.reason == scan.Reason.RESERVED_BITS:
            why = f"reserved bits 3-19 are {bad.value >> 3 & 0x1FFFF:#x}"
        elif bad.reason == scan.Reason.BAD_STATE:
            why = (
                "partially present needs a parent (the has-parent bit is clear)"
                if entry.state == 7 and not entry.is_bitmap
                else "a state the specification does not allow here"
            )
        elif bad.reason == scan.Reason.OUT_OF_RANGE:
            size = ctx.source.size
            why = f"block at {offset:#x}..{end:#x} runs past the end of the {size}-byte file"
        elif bad.reason == scan.Reason.IN_METADATA:
            why = f"block at {offset:#x} lies in the header section"
        else:
            overlapped = blocktables.overlaps(offset, end, spans)
            why = f"block at {offset:#x} overlaps {overlapped or 'the block of an earlier entry'}"
        where = (
            f"BAT entry {bad.index} ({entry.kind}) = {bad.value:#018x}: "
            f"state {entry.state} ({entry.state_name})"
        )
        ctx.findings.add(_bad_kind(bat, block_size, spans, bad), f"{where}; {why} ({in_all})")


class _BatEntry(NamedTuple):
    kind: str
    is_bitmap: bool
    state: int
    state_name: str
    offset: int
    length: int


# --- qemu-img info view ---------------------------------------------------------------------


def qemu_info(md: Any, filename: str | None = None) -> dict[str, Any]:
    """The keys of ``qemu-img info --output=json`` that come from the VHDX metadata.

    qemu 7.2 prints no format-specific data for VHDX; its cluster size is the block size.
    """
    section = md.vhdx
    if not isinstance(section, VhdxSection):
        raise InvalidImage("VHDX metadata too damaged for a qemu-img view")
    if section.log_replay is not None:
        name = filename or "-"
        raise QemuRefuses(
            f"VHDX image file '{name}' opened read-only, but contains a log that needs to be "
            f"replayed.  To replay the log, execute:\n qemu-img check -r all '{name}'"
        )
    info: dict[str, Any] = {"format": NAME}
    if section.block_size is not None:
        info["cluster-size"] = section.block_size
    return info


FORMAT = FormatSpec(NAME, probe, parse, qemu_info)
