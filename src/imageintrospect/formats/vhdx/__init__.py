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
image claims.  With ``deep`` the BAT is walked as well (``walk_bat``): every entry the disk
needs is checked and ``allocated_size`` counted.
"""

from __future__ import annotations

import dataclasses

from .. import blocktables
from ..base import Context, FormatSpec, Parsed, Probe
from .deep import bat_key, metadata_spans, walk_bat
from .headers import check_log, header_fields, read_creator, read_headers, replay_summary
from .judge import _chunk_ratio, _judge, bat_layout
from .layout import (
    BAT_ENTRY_SIZE,
    BAT_REGION,
    FILE_PARAMETERS_HAS_PARENT,
    FILE_PARAMETERS_LEAVE_BLOCKS_ALLOCATED,
    HEADER,
    METADATA_ENTRY,
    METADATA_REGION,
    METADATA_TABLE,
    METADATA_TABLE_HEADER,
    NAME,
    REGION_ENTRY,
    REGION_TABLE,
    REGION_TABLE_HEADER,
    SIGNATURE,
)
from .log import ReplayedSource
from .metadata import read_metadata
from .qemu import qemu_info
from .records import _Problems
from .regions import check_regions, read_region_table
from .section import (
    BatLayout,
    HeaderCopy,
    MetadataItem,
    RegionEntry,
    TableCopy,
    VhdxAllocation,
    VhdxSection,
)

# --- probe ---------------------------------------------------------------------------------


def probe(probe: Probe) -> bool:
    return probe.head[: len(SIGNATURE)] == SIGNATURE


def parse(ctx: Context) -> Parsed:
    return _parse(ctx, replayed=None)


def _parse(ctx: Context, replayed: dict[str, int] | None) -> Parsed:
    """Parse the image; ``replayed`` says the source is already the log-replayed view."""
    problems = _Problems()
    creator = read_creator(ctx)
    header, active_header, header_copies = read_headers(ctx, problems)
    if header is not None and replayed is None:
        replay = check_log(ctx, problems, header)
        if replay is not None:
            # Judge the disk as it reads after the log is applied, never the stale file.
            view = ReplayedSource(ctx.source, replay)
            inner = Context(source=view, findings=ctx.findings, deep=ctx.deep)
            return _parse(inner, replay_summary(replay))
    regions, active_table, table_copies = read_region_table(ctx, problems)
    bat_region, metadata_region = (
        check_regions(ctx, problems, regions, header) if active_table else (None, None)
    )
    if ctx.deep and bat_region is not None:
        # qemu writes the BAT before the metadata that sizes it: a stream must keep it now.
        blocktables.hold_for_stream(
            ctx, bat_key(bat_region), bat_region.file_offset, bat_region.length, BAT_ENTRY_SIZE
        )
    meta = read_metadata(ctx, problems, metadata_region)
    bat = bat_layout(problems, meta, bat_region)
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
        **header_fields(header),
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
        spans = metadata_spans(header, regions)
        allocated_size, summary = walk_bat(ctx, section, bat, spans)
        section = dataclasses.replace(section, allocation=summary)
    virtual_size = meta.virtual_size
    if virtual_size is not None and virtual_size >= 1 << 63:
        virtual_size = None  # not representable where sizes are signed 64-bit (qemu, Glance)
    return Parsed(virtual_size=virtual_size, section=section, allocated_size=allocated_size)


FORMAT = FormatSpec(NAME, probe, parse, qemu_info)


# What other modules and the tests use, as ``vhdx.X``.
__all__ = [
    "BAT_REGION",
    "FORMAT",
    "HEADER",
    "METADATA_ENTRY",
    "METADATA_REGION",
    "METADATA_TABLE",
    "METADATA_TABLE_HEADER",
    "NAME",
    "REGION_ENTRY",
    "REGION_TABLE",
    "REGION_TABLE_HEADER",
    "BatLayout",
    "HeaderCopy",
    "MetadataItem",
    "RegionEntry",
    "TableCopy",
    "VhdxAllocation",
    "VhdxSection",
    "parse",
    "probe",
    "qemu_info",
]
