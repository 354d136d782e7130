"""The sparse extent (``KDMV``) header: decoding it, checking it, and the table layout it names."""

from __future__ import annotations

from ... import findings as F
from ...frozen import frozen
from ...structs import parse_struct
from ..base import Context
from .codes import (
    BAD_HEADER,
    NEWLINE_CHECK_FAILED,
    UNCLEAN_SHUTDOWN,
    UNKNOWN_COMPRESSION,
    UNKNOWN_FLAGS,
)
from .layout import (
    COMPRESSION_DEFLATE,
    COMPRESSION_NONE,
    FLAG_COMPRESSED,
    FLAG_MARKERS,
    FLAG_NEWLINE_TEST,
    FLAG_REDUNDANT_GD,
    FLAG_ZEROED_GRAIN,
    GD_AT_END,
    KNOWN_FLAGS,
    MAX_VIRTUAL_SIZE,
    NEWLINE_CHECK,
    QEMU_MAX_GD_ENTRIES,
    QEMU_MAX_GRAIN_SECTORS,
    QEMU_MAX_GTES_PER_GT,
    SECTOR,
    SPARSE_HEADER,
    SPARSE_HEADER_SIZE,
)
from .section import SparseHeader

# --- sparse extents (KDMV) -----------------------------------------------------------------


def sparse_header(data: bytes, what: str) -> SparseHeader:
    raw = parse_struct(SPARSE_HEADER, data[:SPARSE_HEADER_SIZE], what)
    return SparseHeader(
        version=raw.version,
        flags=raw.flags,
        capacity=raw.capacity,
        grain_size=raw.grain_size,
        descriptor_offset=raw.descriptor_offset,
        descriptor_size=raw.descriptor_size,
        num_gtes_per_gt=raw.num_gtes_per_gt,
        rgd_offset=raw.rgd_offset,
        gd_offset=raw.gd_offset,
        overhead=raw.overhead,
        unclean_shutdown=raw.unclean_shutdown,
        newline_check_ok=raw.check_bytes == NEWLINE_CHECK,
        compress_algorithm=raw.compress_algorithm,
    )


def is_stream_header(header: SparseHeader) -> bool:
    return bool(
        header.flags & (FLAG_COMPRESSED | FLAG_MARKERS)
        or header.compress_algorithm != COMPRESSION_NONE
        or header.gd_offset == GD_AT_END
    )


def gd_entry_count(header: SparseHeader) -> int | None:
    """Entries of the grain directory; None when the header's geometry makes no sense."""
    span = header.num_gtes_per_gt * header.grain_size
    if span == 0:
        return None
    return -(-header.capacity // span)


@frozen
class TableLayout:
    """Where the grain directory and tables of a sparse extent are (bytes), for a table scan.

    Deep validation of every GT entry and stream marker builds on this record.
    """

    gd_offset: int
    rgd_offset: int | None
    gd_entries: int
    gtes_per_gt: int
    grain_bytes: int
    compressed: bool
    markers: bool
    overhead: int = 0
    zeroed_grain: bool = False
    descriptor: tuple[int, int] = (0, 0)  # offset, length


def is_compressed(header: SparseHeader) -> bool:
    return header.compress_algorithm == COMPRESSION_DEFLATE or bool(header.flags & FLAG_COMPRESSED)


def sectors_to_bytes(sectors: int) -> int | None:
    value = sectors * SECTOR
    return value if value <= MAX_VIRTUAL_SIZE else None


def sector_offset(sector: int) -> int | None:
    return None if sector == GD_AT_END else sector * SECTOR


def check_header(ctx: Context, header: SparseHeader) -> bool:
    """Findings for header values; False when the table geometry cannot be computed."""
    problems = []
    if header.version not in (1, 2, 3):
        problems.append(f"version {header.version} (1 to 3 exist)")
    grain = header.grain_size
    if grain == 0 or grain & (grain - 1) or grain > QEMU_MAX_GRAIN_SECTORS:
        problems.append(f"grain size {grain} sectors (a power of two up to 1 GiB)")
    gtes = header.num_gtes_per_gt
    if gtes == 0 or gtes > QEMU_MAX_GTES_PER_GT:
        problems.append(f"{gtes} entries per grain table (at most {QEMU_MAX_GTES_PER_GT})")
    if header.capacity * SECTOR > MAX_VIRTUAL_SIZE:
        problems.append(f"capacity {header.capacity} sectors (over 8 EiB)")
    entries = gd_entry_count(header)
    if not problems and entries is not None and entries > QEMU_MAX_GD_ENTRIES:
        problems.append(f"a grain directory of {entries} entries (qemu refuses over 32 Mi)")
    for problem in problems:
        ctx.findings.add(BAD_HEADER, f"VMDK header: {problem}")
    _check_compression(ctx, header)
    unknown = header.flags & ~KNOWN_FLAGS
    if unknown:
        ctx.findings.add(
            UNKNOWN_FLAGS, f"VMDK header flags 0x{header.flags:x} set unknown bits 0x{unknown:x}"
        )
    if header.flags & FLAG_NEWLINE_TEST and not header.newline_check_ok:
        ctx.findings.add(
            NEWLINE_CHECK_FAILED, "the header's newline-detection bytes are not '\\n \\r\\n'"
        )
    if header.unclean_shutdown:
        ctx.findings.add(UNCLEAN_SHUTDOWN, "the header's uncleanShutdown flag is set")
    return not problems


def _check_compression(ctx: Context, header: SparseHeader) -> None:
    algorithm = header.compress_algorithm
    if algorithm not in (COMPRESSION_NONE, COMPRESSION_DEFLATE):
        ctx.findings.add(
            UNKNOWN_COMPRESSION, f"compressAlgorithm {algorithm} (only 1, deflate, exists)"
        )
    elif bool(header.flags & FLAG_COMPRESSED) != (algorithm == COMPRESSION_DEFLATE):
        ctx.findings.add(
            UNKNOWN_COMPRESSION,
            f"the compressed-grains flag is {'set' if header.flags & FLAG_COMPRESSED else 'clear'}"
            f" but compressAlgorithm is {algorithm}",
        )


def check_layout(ctx: Context, header: SparseHeader) -> TableLayout | None:
    """Check that the tables the header points to lie inside the file."""
    size = ctx.source.size
    if header.overhead * SECTOR > size:
        ctx.findings.add(
            F.TRUNCATED,
            f"the header's overHead ({header.overhead} sectors) reaches past the end of the "
            f"file ({size} bytes)",
        )
    entries = gd_entry_count(header)
    if entries is None or header.gd_offset == GD_AT_END:
        return None
    gd_ok = check_table(ctx, "grain directory", header.gd_offset, entries)
    rgd: int | None = None
    if header.flags & FLAG_REDUNDANT_GD and check_table(
        ctx, "redundant grain directory", header.rgd_offset, entries
    ):
        rgd = header.rgd_offset * SECTOR
    if not gd_ok:
        return None
    return TableLayout(
        gd_offset=header.gd_offset * SECTOR,
        rgd_offset=rgd,
        gd_entries=entries,
        gtes_per_gt=header.num_gtes_per_gt,
        grain_bytes=header.grain_size * SECTOR,
        compressed=is_compressed(header),
        markers=bool(header.flags & FLAG_MARKERS),
        overhead=header.overhead * SECTOR,
        zeroed_grain=bool(header.flags & FLAG_ZEROED_GRAIN),
        descriptor=(header.descriptor_offset * SECTOR, header.descriptor_size * SECTOR),
    )


def check_table(ctx: Context, what: str, sector: int, entries: int) -> bool:
    size = ctx.source.size
    if sector == 0 and entries:
        ctx.findings.add(BAD_HEADER, f"the {what} is placed on the header (sector 0)")
        return False
    end = sector * SECTOR + entries * 4
    if end > size:
        ctx.findings.add(
            F.TRUNCATED,
            f"the {what} ({entries} entries at sector {sector}) ends at byte {end}, past the "
            f"end of the file ({size} bytes)",
        )
        return False
    return True
