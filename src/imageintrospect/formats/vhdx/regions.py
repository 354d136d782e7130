"""The two region tables: checksums, entries, placement and overlaps."""

from __future__ import annotations

from typing import Any

from ... import findings as F
from ...structs import parse_struct
from ..base import Context
from .codes import (
    BAD_LAYOUT,
    BAD_REGION_TABLE,
    NO_VALID_REGION_TABLE,
    REGION_TABLE_INVALID,
    REGION_TABLES_DIFFER,
    UNKNOWN_REQUIRED_REGION,
)
from .headers import _checksum, _guid
from .layout import (
    ALIGNMENT,
    HEADER_SECTION_SIZE,
    MAX_TABLE_ENTRIES,
    REGION_ENTRY_SIZE,
    REGION_NAMES,
    REGION_REQUIRED,
    REGION_TABLE,
    REGION_TABLE_HEADER,
    REGION_TABLE_HEADER_SIZE,
    REGION_TABLE_OFFSETS,
    REGION_TABLE_SIGNATURE,
    REGION_TABLE_SIZE,
)
from .records import _Problems
from .section import RegionEntry, TableCopy

# --- region table --------------------------------------------------------------------------


def read_region_table(
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


def check_regions(
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
