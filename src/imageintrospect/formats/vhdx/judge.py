"""Judging the metadata: block and sector sizes, virtual size, the BAT's layout, the parent."""

from __future__ import annotations

from ... import findings as F
from .codes import (
    BAD_BLOCK_SIZE,
    BAD_METADATA,
    BAD_SECTOR_SIZE,
    BAD_VIRTUAL_SIZE,
    BAT_TOO_SMALL,
    DIFFERENCING,
)
from .layout import (
    BAT_ENTRY_SIZE,
    FILE_PARAMETERS_HAS_PARENT,
    MAX_BLOCK_SIZE,
    MAX_VIRTUAL_SIZE,
    MIN_BLOCK_SIZE,
    PARENT_LOCATOR,
    QEMU_LOGICAL_SECTOR,
    SECTOR_SIZES,
    SECTORS_PER_BITMAP_BLOCK,
    VHDX_PARENT_LOCATOR_TYPE,
)
from .records import _Metadata, _Problems
from .section import BatLayout, RegionEntry

# --- judging -------------------------------------------------------------------------------


def bat_layout(
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
