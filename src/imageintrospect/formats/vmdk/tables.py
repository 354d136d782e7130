"""deep=True: the grain directory and the grain tables it names."""

from __future__ import annotations

import bisect
import functools
from array import array

from ... import findings as F
from ... import scan
from ...source import StreamGap
from ..base import Context
from ..blocktables import Claims, merge_runs
from .codes import (
    CLAIMED_TWICE,
    GRAIN_IN_METADATA,
    OVERLAP_UNCHECKED,
    REDUNDANT_GD_MISMATCH,
    TABLE_OUT_OF_RANGE,
    TABLES_UNCHECKED,
)
from .header import TableLayout
from .layout import (
    GT_BATCH,
    MAX_DESCRIPTOR,
    MAX_GRAIN_TABLES,
    MAX_PREFETCH_RUNS,
    MAX_VIRTUAL_SIZE,
    SECTOR,
    TABLE_GAP,
    TABLE_WINDOW,
)
from .section import GrainTables

# --- grain tables named by the directory ----------------------------------------------------


def tables_from_directory(ctx: Context, layout: TableLayout) -> GrainTables | None:
    """Read the grain directory (and the redundant one) and every grain table it names,
    where it names them: monolithicSparse, and qemu's streams (tables at the front)."""
    if layout.gd_entries > MAX_GRAIN_TABLES:
        ctx.findings.add(
            TABLES_UNCHECKED,
            f"the grain directory has {layout.gd_entries} entries; the tables were not walked",
        )
        return None
    claimed = _directory_claims(ctx, layout)
    try:
        gd, rgd = _read_directories(ctx, layout, claimed)
        if gd is None:
            return None
        return _walk_grain_tables(ctx, layout, gd, rgd, claimed)
    except StreamGap as gap:
        ctx.findings.add(
            F.STREAM_UNCHECKED,
            f"grain tables at byte {gap.offset} went by before the grain directory named them",
        )
        return None
    except _OutOfOrder:
        ctx.findings.add(
            F.STREAM_UNCHECKED,
            "the grain tables are not in directory order: a stream cannot hold them all",
        )
        return None


def gt_sector_count(layout: TableLayout) -> int:
    return -(-layout.gtes_per_gt * 4 // SECTOR)


def _read_directories(
    ctx: Context, layout: TableLayout, claimed: bytearray | None
) -> tuple[scan.PointerTableResult | None, scan.PointerTableResult | None]:
    size = ctx.source.size
    length = layout.gd_entries * 4
    results: list[scan.PointerTableResult | None] = []
    for what, offset in (
        ("grain directory", layout.gd_offset),
        ("redundant grain directory", layout.rgd_offset),
    ):
        if offset is None or offset + length > size:  # reported by check_layout
            results.append(None)
            continue
        table = ctx.source.read_exact(offset, length, what)
        result = scan.vmdk_gd(
            table, gt_sectors=gt_sector_count(layout), file_size=size, claimed=claimed
        )
        report_directory(ctx, result, f"the {what} at byte {offset}", size)
        results.append(result)
    return results[0], results[1]


def report_directory(ctx: Context, result: scan.PointerTableResult, where: str, size: int) -> None:
    if result.ok:
        return
    more = f"; {result.bad_count} bad entries in all" if result.bad_count > 1 else ""
    what = f"{where}: entry {result.bad_index} names a grain table at sector {result.bad_value}"
    if result.bad_reason == scan.Reason.DOUBLE_CLAIM:
        ctx.findings.add(
            CLAIMED_TWICE,
            f"{what}, on the header, descriptor, a directory or another table{more}",
        )
    else:
        ctx.findings.add(
            TABLE_OUT_OF_RANGE, f"{what}, past the end of the file ({size} bytes){more}"
        )


def claim_bytes(size: int) -> int:
    """Bytes of a sector claim map covering ``size`` bytes of file."""
    sectors = -(-size // SECTOR)
    return -(-sectors // 8)


def _directory_claims(ctx: Context, layout: TableLayout) -> bytearray | None:
    """The sector claim map with the header, descriptor and directories marked."""
    size = ctx.source.size
    offset, length = layout.descriptor
    directory = layout.gd_entries * 4
    metadata = [
        (0, SECTOR, "header"),
        # no more than is read of it (a hostile size would make a map-sized mask)
        (offset, offset + min(length, MAX_DESCRIPTOR), "descriptor"),
        (layout.gd_offset, layout.gd_offset + directory, "grain directory"),
    ]
    if layout.rgd_offset is not None:
        metadata.append((layout.rgd_offset, layout.rgd_offset + directory, "redundant directory"))
    claims = Claims(size, SECTOR, tuple(metadata))
    if not claims.enabled:
        ctx.findings.add(
            OVERLAP_UNCHECKED,
            f"the file is {size} bytes: grains and tables were not checked for overlaps",
        )
    return claims.map()


class TableTotals:
    """Counts over the grain tables walked, and the first bad entry met."""

    def __init__(self) -> None:
        self.tables = 0
        self.allocated = 0
        self.zeroed = 0
        self.bad = 0
        self.mismatches = 0
        self.first_mismatch = -1
        self.first_bad: tuple[str, int, scan.BlockTableResult] | None = None


def _walk_grain_tables(
    ctx: Context,
    layout: TableLayout,
    gd: scan.PointerTableResult,
    rgd: scan.PointerTableResult | None,
    claimed: bytearray | None,
) -> GrainTables:
    """Every grain table, in directory order, a batch at a time; the redundant copy of each
    is compared with it, and checked on its own where it differs."""
    totals = TableTotals()
    totals.tables = len(gd.indexes)
    none: array[int] = array("Q")
    r_indexes, r_offsets = (rgd.indexes, rgd.offsets) if rgd is not None else (none, none)
    length = layout.gtes_per_gt * 4
    primary_tables = _TableReader(ctx, gd.offsets, length)
    redundant_tables = _TableReader(ctx, r_offsets, length)
    i = j = 0
    while i < len(gd.indexes) or j < len(r_indexes):
        low = min(
            gd.indexes[i] if i < len(gd.indexes) else MAX_VIRTUAL_SIZE,
            r_indexes[j] if j < len(r_indexes) else MAX_VIRTUAL_SIZE,
        )
        i_end = bisect.bisect_left(gd.indexes, low + GT_BATCH, i)
        j_end = bisect.bisect_left(r_indexes, low + GT_BATCH, j)
        primary = primary_tables.read_batch(gd.offsets[i:i_end])
        _check_batch(ctx, layout, gd.indexes[i:i_end], primary, claimed, totals)
        if rgd is not None:
            redundant = redundant_tables.read_batch(r_offsets[j:j_end])
            _compare_redundant(
                ctx, layout, (gd.indexes[i:i_end], primary), (r_indexes[j:j_end], redundant), totals
            )
        i, j = i_end, j_end
    _report_totals(ctx, layout, totals)
    return GrainTables(
        source="directory",
        grain_tables=totals.tables,
        allocated_grains=totals.allocated,
        zeroed_grains=totals.zeroed,
        bad_entries=totals.bad,
        redundant_mismatches=totals.mismatches if rgd is not None else None,
    )


def _gt_scan(
    layout: TableLayout, table: Tables, file_size: int, claimed: bytearray | None
) -> scan.BlockTableResult:
    return scan.vmdk_gt(
        table,
        grain_sectors=layout.grain_bytes // SECTOR,
        overhead_sectors=layout.overhead // SECTOR,
        file_size=file_size,
        zeroed_grain_ok=layout.zeroed_grain,
        compressed=layout.compressed,
        claimed=claimed,
    )


def _check_batch(
    ctx: Context,
    layout: TableLayout,
    indexes: array[int],
    joined: Tables,
    claimed: bytearray | None,
    totals: TableTotals,
) -> None:
    if joined != _zeros(len(joined)):  # an all-zero batch has nothing to check (memcmp)
        result = _gt_scan(layout, joined, ctx.source.size, claimed)
        if not result.ok and totals.first_bad is None:
            table = result.bad_index // layout.gtes_per_gt
            totals.first_bad = (f"grain table {indexes[table]}", table * layout.gtes_per_gt, result)
        totals.allocated += result.allocated
        totals.zeroed += result.zero
        totals.bad += result.bad_count


def _compare_redundant(
    ctx: Context,
    layout: TableLayout,
    primary: tuple[array[int], Tables],
    redundant: tuple[array[int], Tables],
    totals: TableTotals,
) -> None:
    """A table absent from one directory counts as all zeros (it maps nothing)."""
    if primary[0] == redundant[0] and primary[1] == redundant[1]:
        return  # the same tables, byte for byte: the usual case, one memcmp
    length = layout.gtes_per_gt * 4
    empty = _zeros(length)
    ours, theirs = (
        {index: data[k * length : (k + 1) * length] for k, index in enumerate(indexes)}
        for indexes, data in (primary, redundant)
    )
    for index in sorted(ours.keys() | theirs.keys()):
        copy = theirs.get(index, empty)
        if ours.get(index, empty) == copy:
            continue
        totals.mismatches += 1
        if totals.first_mismatch < 0:
            totals.first_mismatch = index
        # a reader may fall back on this copy: it must be as sound as the primary
        result = _gt_scan(layout, copy, ctx.source.size, None)
        if not result.ok and totals.first_bad is None:
            totals.first_bad = (f"redundant grain table {index}", 0, result)
        totals.bad += result.bad_count


def _report_totals(ctx: Context, layout: TableLayout, totals: TableTotals) -> None:
    if totals.first_bad is not None:
        label, first, result = totals.first_bad
        report_grain_table(ctx, layout, label, result.bad_index - first, result, totals.bad)
    if totals.mismatches:
        ctx.findings.add(
            REDUNDANT_GD_MISMATCH,
            f"{totals.mismatches} grain tables differ between the grain directory and the "
            f"redundant one (the first: table {totals.first_mismatch})",
        )


def report_grain_table(
    ctx: Context,
    layout: TableLayout,
    label: str,
    entry: int,
    result: scan.BlockTableResult,
    bad: int,
    bound: str | None = None,
) -> None:
    more = f"; {bad} bad entries in all" if bad > 1 else ""
    what = f"{label}, entry {entry}: grain at sector {result.bad_value}"
    if result.bad_reason == scan.Reason.IN_METADATA:
        ctx.findings.add(
            GRAIN_IN_METADATA,
            f"{what}, below overHead ({layout.overhead // SECTOR} sectors){more}",
        )
    elif result.bad_reason == scan.Reason.DOUBLE_CLAIM:
        ctx.findings.add(
            CLAIMED_TWICE,
            f"{what}, already used by another entry, a directory or a table{more}",
        )
    else:
        bound = bound or f"past the end of the file ({ctx.source.size} bytes)"
        ctx.findings.add(TABLE_OUT_OF_RANGE, f"{what}, {bound}{more}")


#: A batch of grain tables back to back: a buffer reused by the reader, or joined bytes.
Tables = bytes | bytearray


@functools.lru_cache(maxsize=4)
def _zeros(size: int) -> bytes:
    return bytes(size)


class _OutOfOrder(Exception):
    """A stream's grain tables do not come in directory order."""


class _TableReader:
    """Reads one directory's grain tables, a batch at a time, in directory order.

    A seekable file: each batch in merged reads.  A stream: the merged runs of the whole
    directory, exactly the ranges :func:`prefetch_directory` asked the stream to keep (so a
    parse that runs before the end asks for nothing else), one run held at a time; tables
    must then come in file order, as every producer writes them.
    """

    def __init__(self, ctx: Context, offsets: array[int], length: int) -> None:
        self._source = ctx.source
        self._length = length
        self._runs: list[tuple[int, int]] = []
        self._starts: list[int] = []
        if ctx.source.is_stream:
            self._runs = merge_runs(
                sorted(set(offsets)), length, gap=TABLE_GAP, window=TABLE_WINDOW
            )[:MAX_PREFETCH_RUNS]
            self._starts = [start for start, _ in self._runs]
        self._held: tuple[int, bytes] = (-1, b"")
        self._buffer = bytearray()

    def read_batch(self, offsets: array[int]) -> Tables:
        """The tables at ``offsets``, back to back.  Tables that lie back to back in a
        seekable file (as qemu and VMware write them) are read in one call into a buffer
        reused from batch to batch: no copy per table, no fresh pages per read."""
        length = self._length
        size = len(offsets) * length
        if offsets and not self._source.is_stream:
            first = offsets[0]
            back_to_back = array(offsets.typecode, range(first, first + size, length))
            if offsets.tobytes() == back_to_back.tobytes():  # memcmp, no int per entry
                if len(self._buffer) != size:
                    self._buffer = bytearray(size)
                if self._source.read_into(first, memoryview(self._buffer)) != size:
                    self._source.read_exact(first, size, "grain tables")  # raises: too short
                return self._buffer
        return b"".join(self.read(offsets))

    def read(self, offsets: array[int]) -> list[bytes]:
        if not self._source.is_stream:
            return self._read_merged(offsets)
        return [self._from_runs(offset) for offset in offsets]

    def _read_merged(self, offsets: array[int]) -> list[bytes]:
        length = self._length
        found: dict[int, bytes] = {}
        ordered = sorted(set(offsets))
        k = 0
        for start, run in merge_runs(ordered, length, gap=TABLE_GAP, window=TABLE_WINDOW):
            data = self._source.read_exact(start, run, "grain tables")
            while k < len(ordered) and ordered[k] + length <= start + run:
                found[ordered[k]] = data[ordered[k] - start : ordered[k] - start + length]
                k += 1
        return [found[offset] for offset in offsets]

    def _from_runs(self, offset: int) -> bytes:
        k = bisect.bisect_right(self._starts, offset) - 1
        start, run = self._runs[k] if k >= 0 else (0, 0)
        if k < 0 or offset + self._length > start + run:
            raise StreamGap(offset, self._length)  # beyond the runs a stream keeps
        if self._held[0] != k:
            if k < self._held[0]:
                raise _OutOfOrder
            self._held = (k, self._source.read_exact(start, run, "grain tables"))
        data = self._held[1]
        return data[offset - start : offset - start + self._length]


def prefetch_directory(ctx: Context, layout: TableLayout) -> None:
    """On a stream that has not ended: read the directories (so they are kept) and ask the
    stream to keep the grain tables they name, which the final parse then reads."""
    if layout.gd_entries > MAX_GRAIN_TABLES:
        return
    try:
        gd, rgd = _read_directories(ctx, layout, None)
    except StreamGap:
        return
    # One directory's runs at a time: a range asked for must not change once the stream
    # keeps it (merged with the other directory's tables, it would when that one arrives).
    for result in (rgd, gd):
        if result is not None:
            runs = merge_runs(
                sorted(set(result.offsets)),
                layout.gtes_per_gt * 4,
                gap=TABLE_GAP,
                window=TABLE_WINDOW,
            )
            ctx.source.prefetch(runs[:MAX_PREFETCH_RUNS])
