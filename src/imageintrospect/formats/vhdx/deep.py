"""Deep: the BAT walked, its entries' states and claims reported."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

from ... import scan
from .. import blocktables
from ..base import Context
from .codes import (
    BAT_BAD_STATE,
    BAT_CLAIMED_TWICE,
    BAT_IN_METADATA,
    BAT_OUT_OF_RANGE,
    BAT_RESERVED_BITS,
)
from .layout import BAT_ENTRY_SIZE, HEADER_SECTION_SIZE, MiB
from .section import BatLayout, RegionEntry, VhdxAllocation, VhdxSection

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


def metadata_spans(
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


def walk_bat(
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
        return None, None  # bat_layout made a layout only when these are sane
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
        bat_key(bat),
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


def bat_key(region: RegionEntry | BatLayout) -> tuple[str, int]:
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
