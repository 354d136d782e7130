"""The snapshot table and the bitmap directory, read through a bounded window."""

from __future__ import annotations

from typing import Any

from ... import findings as F
from ...frozen import frozen
from ...source import MAX_READ, StreamGap
from ..base import MAX_LISTED, Context
from .codes import BAD_BITMAPS, BAD_SNAPSHOTS, TABLE_NOT_READ
from .header import Extensions, _feature_names
from .layout import (
    BITMAP_DIRECTORY_ENTRY_SIZE,
    BITMAP_DIRECTORY_LIMIT,
    BITMAP_DIRECTORY_TABLE,
    BITMAP_FLAGS,
    MAX_BITMAPS,
    MAX_SNAPSHOT_EXTRA,
    MAX_SNAPSHOTS,
    SNAPSHOT_ENTRY_SIZE,
    SNAPSHOT_EXTRAS,
    SNAPSHOT_TABLE,
    SNAPSHOT_TABLE_LIMIT,
    TABLE_WINDOW,
    Header,
)
from .section import Bitmap, Snapshot


@frozen
class _Snapshots:
    """The snapshot table as read: the first :data:`MAX_LISTED` snapshots (what the answer
    holds), how many entries were read, and every distinct L1 table they name (for the
    double-use map; qemu's maximum of 65,536 snapshots would be 80 MiB as objects)."""

    listed: tuple[Snapshot, ...] = ()
    count: int = 0
    l1_tables: frozenset[tuple[int, int]] = frozenset()


def read_snapshots(ctx: Context, hdr: Header, cluster_size: int) -> _Snapshots:
    count = hdr.nb_snapshots
    if count == 0:
        return _Snapshots()
    if count > MAX_SNAPSHOTS:
        ctx.findings.add(BAD_SNAPSHOTS, f"{count} snapshots (qemu allows {MAX_SNAPSHOTS})")
        ctx.findings.add(F.QEMU_CANNOT_OPEN, f"Too many snapshots ({count})")
        return _Snapshots()
    if not cluster_size or hdr.snapshots_offset < cluster_size:
        ctx.findings.add(BAD_SNAPSHOTS, f"snapshot table at {hdr.snapshots_offset:#x}")
        return _Snapshots()
    limit = SNAPSHOT_TABLE_LIMIT[ctx.deep]
    over_limit = BAD_SNAPSHOTS if ctx.deep else TABLE_NOT_READ
    reader = WindowReader(ctx, hdr.snapshots_offset, limit, over_limit)
    # A rehearsal on a stream only has to learn which bytes to keep: no objects for it.
    listing = MAX_LISTED if not ctx.source.speculative else 0
    snapshots: list[Snapshot] = []
    l1_tables: set[tuple[int, int]] = set()
    read = 0
    try:
        for _ in range(count):
            fixed = reader.take(SNAPSHOT_ENTRY_SIZE)
            entry = SNAPSHOT_TABLE.decode(fixed)
            if entry.extra_size > MAX_SNAPSHOT_EXTRA:
                raise _TableEnds(f"extra data of {entry.extra_size} bytes", BAD_SNAPSHOTS)
            extra = reader.take(entry.extra_size)
            ident = reader.take(entry.id_len)
            name = reader.take(entry.name_len)
            reader.align(8)
            l1_tables.add((entry.l1_table_offset, entry.l1_size))
            if len(snapshots) < listing:
                snapshots.append(_snapshot(entry, extra, _utf8(ident), _utf8(name)))
            read += 1
    except _TableEnds as end:
        ctx.findings.add(end.code, f"snapshot table: {end}")
    except StreamGap:
        ctx.findings.add(F.STREAM_UNCHECKED, "the snapshot table lay outside the kept stream")
    if read > len(snapshots) and listing:
        ctx.findings.add(F.LIST_CAPPED, f"{read} snapshots: the first {len(snapshots)} are listed")
    return _Snapshots(tuple(snapshots), read, frozenset(l1_tables))


def _utf8(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _snapshot(entry: Any, extra: bytes, ident: str, name: str) -> Snapshot:
    # Three optional u64s, as far as extra_size reaches: plain struct, one call.
    state_size_large, disk_size, icount = SNAPSHOT_EXTRAS.layout.unpack(
        extra[: SNAPSHOT_EXTRAS.size].ljust(SNAPSHOT_EXTRAS.size, b"\0")
    )
    vm_state_size = state_size_large if len(extra) >= 8 else entry.vm_state_size
    return Snapshot(
        id=ident,
        name=name,
        vm_state_size=vm_state_size,
        date=_iso_date(entry.date_sec),
        date_sec=entry.date_sec,
        date_nsec=entry.date_nsec,
        vm_clock_nsec=entry.vm_clock_nsec,
        l1_table_offset=entry.l1_table_offset,
        l1_size=entry.l1_size,
        disk_size=disk_size if len(extra) >= 16 else None,
        icount=icount if len(extra) >= 24 and icount != (1 << 64) - 1 else None,
    )


def _iso_date(seconds: int) -> str:
    import datetime as dt  # only images with snapshots: most runs never load it

    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc).isoformat()


def read_bitmaps(
    ctx: Context, exts: Extensions, cluster_size: int, autoclear: int
) -> tuple[Bitmap, ...]:
    ext = exts.bitmaps
    if ext is None:
        return ()
    if not autoclear & 1:
        return ()  # qemu ignores (and drops) a bitmaps extension whose autoclear bit is off
    problems = []
    if ext.nb_bitmaps == 0 or ext.nb_bitmaps > MAX_BITMAPS:
        problems.append(f"{ext.nb_bitmaps} bitmaps")
    if ext.directory_size > BITMAP_DIRECTORY_LIMIT or ext.directory_size < 24:
        problems.append(f"bitmap directory of {ext.directory_size} bytes")
    if not cluster_size or ext.directory_offset % cluster_size or ext.directory_offset == 0:
        problems.append(f"bitmap directory at {ext.directory_offset:#x}")
    if problems:
        ctx.findings.add(BAD_BITMAPS, "; ".join(problems))
        return ()
    reader = WindowReader(ctx, ext.directory_offset, ext.directory_size, BAD_BITMAPS)
    bitmaps: list[Bitmap] = []
    read = 0
    try:
        for _ in range(ext.nb_bitmaps):
            fixed = reader.take(BITMAP_DIRECTORY_ENTRY_SIZE)
            entry = BITMAP_DIRECTORY_TABLE.decode(fixed)
            reader.take(entry.extra_data_size)
            name = reader.take(entry.name_size).decode("utf-8", errors="replace")
            reader.align(8)
            read += 1
            if len(bitmaps) == MAX_LISTED:
                continue
            bitmaps.append(
                Bitmap(
                    name=name,
                    granularity=1 << entry.granularity_bits if entry.granularity_bits < 64 else 0,
                    flags=_feature_names(entry.flags, BITMAP_FLAGS),
                    table_offset=entry.table_offset,
                    table_size=entry.table_size,
                )
            )
    except _TableEnds as end:
        ctx.findings.add(BAD_BITMAPS, f"bitmap directory: {end}")
    except StreamGap:
        ctx.findings.add(F.STREAM_UNCHECKED, "the bitmap directory lay outside the kept stream")
    if read > len(bitmaps):
        ctx.findings.add(F.LIST_CAPPED, f"{read} bitmaps: the first {len(bitmaps)} are listed")
    return tuple(bitmaps)


class _TableEnds(Exception):
    """A variable-length table ran out of bytes (file end or our read budget)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class WindowReader:
    """Sequential reads from a table at ``offset``, at most ``limit`` bytes in all.

    The table is read in windows of :data:`TABLE_WINDOW` (one read, not one per field; on a
    stream, one range to keep), and what a window holds is handed out piece by piece.
    """

    def __init__(self, ctx: Context, offset: int, limit: int, over_limit_code: str) -> None:
        self._src = ctx.source
        self._start = offset
        self._pos = offset
        self._limit = limit
        self._over_limit_code = over_limit_code
        self._window = b""
        self._window_at = offset
        # On a stream each new window is a range to keep and one more rehearsal of the
        # parse: windows double, so a table costs a few rehearsals, not one per 64 KiB.
        self._window_size = TABLE_WINDOW
        self._grows = ctx.source.is_stream

    def take(self, length: int) -> bytes:
        if self._pos + length - self._start > self._limit:
            raise _TableEnds(
                f"larger than the {self._limit} bytes read for it", self._over_limit_code
            )
        start = self._pos - self._window_at
        if start + length > len(self._window):
            budget = self._limit - (self._pos - self._start)
            size = min(max(length, self._window_size), budget, MAX_READ)
            self._window, self._window_at, start = self._src.read_at(self._pos, size), self._pos, 0
            if self._src.pending(self._pos, len(self._window)):
                raise StreamGap(self._pos, size)  # a rehearsal: the rest has not arrived
            if self._grows:
                self._window_size *= 2
        data = self._window[start : start + length]
        if len(data) < length:
            raise _TableEnds(f"ends past the end of the file at {self._pos:#x}", F.TRUNCATED)
        self._pos += length
        return data

    def align(self, boundary: int) -> None:
        self._pos = self._start + (-(-(self._pos - self._start) // boundary) * boundary)
