"""The metadata region: its table, the known items' values, the parent locator."""

from __future__ import annotations

import uuid

from ... import findings as F
from ...source import StreamGap
from ...structs import parse_struct
from ..base import Context
from .codes import BAD_METADATA, METADATA_UNCHECKED, UNKNOWN_REQUIRED_METADATA
from .headers import _guid
from .layout import (
    FILE_PARAMETERS,
    FILE_PARAMETERS_ITEM,
    ITEM_SIZES,
    LOGICAL_SECTOR_SIZE,
    MAX_TABLE_ENTRIES,
    METADATA_ENTRY_SIZE,
    METADATA_IS_REQUIRED,
    METADATA_IS_USER,
    METADATA_IS_VIRTUAL_DISK,
    METADATA_NAMES,
    METADATA_SIGNATURE,
    METADATA_TABLE,
    METADATA_TABLE_HEADER,
    METADATA_TABLE_HEADER_SIZE,
    METADATA_TABLE_SIZE,
    METADATA_WINDOW,
    PAGE_83_DATA,
    PARENT_LOCATOR,
    PARENT_LOCATOR_ENTRIES,
    PARENT_LOCATOR_ENTRY_SIZE,
    PARENT_LOCATOR_HEADER,
    PARENT_LOCATOR_HEADER_SIZE,
    PARENT_LOCATOR_LIMIT,
    PHYSICAL_SECTOR_SIZE,
    REQUIRED_ITEMS,
    VHDX_PARENT_LOCATOR_TYPE,
    VIRTUAL_DISK_SIZE,
)
from .records import _Metadata, _Problems
from .regions import _overlaps
from .section import MetadataItem, RegionEntry

# --- metadata ------------------------------------------------------------------------------


def read_metadata(ctx: Context, problems: _Problems, region: RegionEntry | None) -> _Metadata:
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
    entries = PARENT_LOCATOR_ENTRIES.decode_all(data[PARENT_LOCATOR_HEADER_SIZE:end])
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
