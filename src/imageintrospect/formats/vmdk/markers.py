"""deep=True: the stream marker walk and the grain tables met in GT markers."""

from __future__ import annotations

import bisect
import collections
import functools
from array import array
from collections.abc import Sequence
from typing import NamedTuple

from ... import findings as F
from ... import scan
from ...source import SCAN_WINDOW, Range, Source, StreamGap
from ..base import Context
from ..blocktables import CLAIM_MAP_LIMIT
from .codes import (
    BAD_MARKER,
    CLAIMED_TWICE,
    DATA_AFTER_EOS,
    GRAIN_MISALIGNED,
    GRAIN_OUT_OF_RANGE,
    GT_OUTSIDE_MARKER,
    OVERLAP_UNCHECKED,
    TABLES_UNCHECKED,
)
from .header import TableLayout, gd_entry_count
from .layout import (
    FLAG_MARKERS,
    FLAG_ZEROED_GRAIN,
    MARKER_FIELDS,
    MARKER_FOOTER,
    MARKER_GD,
    MARKER_GT,
    MARKER_PROGRESS,
    MAX_GD_PAYLOAD,
    MAX_GRAIN_TABLES,
    METADATA_MARKER_SIZE,
    QEMU_MAX_GRAIN_SECTORS,
    QEMU_MAX_GTES_PER_GT,
    SECTOR,
)
from .section import GrainTables, MarkerWalk, SparseHeader, StreamInfo
from .tables import TableTotals, claim_bytes, gt_sector_count, report_directory, report_grain_table

# --- the marker walk ------------------------------------------------------------------------


def start_marker_walk(ctx: Context, header: SparseHeader) -> MarkerWalker | None:
    """Register the walk over a stream's markers (flag 0x20000), from overHead to the end.

    On a stream this must happen before anything further on is read, so that the scan is
    fed as the bytes pass; the final parse gets the same consumer back, fully fed.
    """
    if not ctx.deep or not header.flags & FLAG_MARKERS:
        return None
    grain = header.grain_size
    start = header.overhead * SECTOR
    size = ctx.source.size
    if not 1 <= grain <= QEMU_MAX_GRAIN_SECTORS or start >= size:
        return None
    gtes = header.num_gtes_per_gt
    gt_bytes = gtes * 4 if 1 <= gtes <= QEMU_MAX_GTES_PER_GT else 0
    # no more tables are kept than the directory can name
    limit = min(MAX_GRAIN_TABLES, gd_entry_count(header) or 0)
    zeroed = bool(header.flags & FLAG_ZEROED_GRAIN)
    tables = (gt_bytes, limit, header.overhead, zeroed)
    make = functools.partial(MarkerWalker, start, header.capacity, grain, tables)
    key = ("vmdk-markers", start, header.capacity, grain, tables)
    try:
        return ctx.source.scan(key, [(start, size - start)], make)
    except StreamGap:
        ctx.findings.add(
            F.STREAM_UNCHECKED, f"the stream markers from byte {start} went by unwalked"
        )
        return None


class _Payload:
    """The payload of a GT or GD marker, collected as the stream passes."""

    def __init__(self, kind: int, offset: int, wanted: int) -> None:
        self.kind = kind
        self.offset = offset
        self.wanted = wanted
        self.buffer = bytearray()


class _WalkEnd(NamedTuple):
    """How a marker walk ends: the walker's state, whether bytes were missing, and the
    first bytes of the marker it stopped on."""

    state: scan.StreamResult
    lost: bool
    stop_marker: bytes


#: On a seekable file the marker walk reads a marker's first sector where it lands ...
HOP_READ = SECTOR
#: ... a jump over this many bytes or more starts the reads small again ...
HOP_GAP = 32 * 1024
#: ... and a read that lands near the next marker doubles, up to this size.
HOP_READ_MAX = SCAN_WINDOW


class MarkerWalker:
    """Scan consumer: walks a stream's markers as its bytes pass, in pieces of any size.

    The walker (``scan.vmdk_stream_walker``) reads each piece where it lies, carrying a
    marker's first bytes across pieces and skipping grain data unread; it hands control
    back only after a GT or GD marker, whose payload is collected here.  VMware's layout
    keeps its grain tables in GT markers that pass long before the directory at the end
    names them, so each table is checked as it arrives (:class:`_MarkerTables`) and only
    its counts are kept.  Held between pieces: the payload being collected, nothing else.
    On a seekable source the scan lets the walk read for itself (:meth:`read_from`): it
    reads only where the markers are.
    """

    __slots__ = (
        "_payloads",
        "_resume",
        "_walker",
        "capacity",
        "grain_bytes",
        "grain_sectors",
        "start",
        "tables",
        "tap",
        "tap_run",
    )

    def __init__(
        self, start: int, capacity: int, grain_sectors: int, tables: tuple[int, int, int, bool]
    ) -> None:
        self.start = start
        self.capacity = capacity
        self.grain_bytes = grain_sectors * SECTOR
        self.grain_sectors = grain_sectors
        self._walker = scan.vmdk_stream_walker(
            start=start, capacity_sectors=capacity, grain_sectors=grain_sectors
        )
        # tap(offset, data, size) -> status, straight into the walker: a stream's collector
        # calls it for every chunk, with no Python frame of ours, and ``after`` on a status.
        self.tap = self._walker.feed
        self.tap_run = self._walker.run  # the same for a run of chunks of one size
        self._resume = self._walker.resume
        gt_bytes, limit, overhead_sectors, zeroed_ok = tables
        self.tables = _MarkerTables(gt_bytes, limit, grain_sectors, overhead_sectors, zeroed_ok)
        self._payloads: collections.deque[_Payload] = collections.deque()

    def feed(self, offset: int, data: bytes) -> None:
        tap = self.tap  # (a method-style call of a callable held in a slot is not specialised)
        status = tap(offset, data, len(data))
        if status:
            self.after(offset, data, status)

    def after(self, offset: int, data: bytes, status: int) -> None:
        """The walker wants Python for this piece: it paused after a GT or GD marker (1), or
        the piece began inside a table's payload (2).  Note the payload, collect what of it
        the piece holds, and walk on, until the piece is walked."""
        walker = self._walker
        while status:
            if status < 0:
                raise ValueError(f"the marker walk rejected the piece at byte {offset}")
            payload_at = walker.position
            if status == 1:
                value, _, kind = MARKER_FIELDS.unpack_from(walker.header)
                wanted = self.tables.wanted(kind, value * SECTOR)
                if wanted:
                    self._payloads.append(_Payload(kind, payload_at, wanted))
            self._collect(offset, data)
            if status == 2:
                return
            status = self._resume(offset, data, len(data), payload_at - offset)

    def read_from(self, source: Source, ranges: Sequence[Range]) -> None:
        """The walk on a seekable source (what its scan lets a consumer do): read where the
        markers are and jump the rest.

        Markers chain by their sizes, so once a marker is read the walk knows where the next
        one begins, and the grain data between (or a payload not collected) need not be read
        at all.  Random data (grains of about 64 KiB) costs one small read per marker;
        markers close together (compressible data) are read through in reads that double
        while no long jump comes.  The walker sees exactly the bytes it would be fed in a
        pass over the whole file (each marker's first sector, the payloads collected, every
        byte after the end-of-stream marker), so the answer is the same.
        """
        for start, length in ranges:  # one range: from the first marker to the end
            self._hop(source, start, start + length)

    def _hop(self, source: Source, start: int, size: int) -> None:
        walker = self._walker
        position = start
        read = HOP_READ
        while position < size:
            data = source.read_at(position, min(read, size - position))
            if not data:
                return  # the file shrank under us: result() reports the walk lost here
            self.feed(position, data)
            position += len(data)
            landing = position if self._payloads else walker.skip(size)
            if landing - position >= HOP_GAP:
                read = HOP_READ
            elif landing == position and walker.state().stopped:
                return  # nothing after a broken marker changes the answer
            else:
                read = min(2 * read, HOP_READ_MAX)
            position = landing

    def result(self, size: int) -> _WalkEnd:
        """The walk as it ends at ``size``, the end of the stream, judged on a copy of the
        state (on a stream inside an archive this also runs before the end, on what has
        arrived)."""
        walker = self._walker
        state = walker.finish(size)
        lost = walker.lost or (not state.stopped and walker.position != size)
        stop_marker = bytes(walker.header) if state.stopped and not lost else b""
        return _WalkEnd(state, lost, stop_marker)

    def _collect(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        while self._payloads:
            payload = self._payloads[0]
            have = payload.offset + len(payload.buffer)
            if have >= end:
                return  # it starts after these bytes
            if have < offset:  # its start went by unseen (cannot happen: it follows a marker)
                self._payloads.popleft()
                continue
            take = min(payload.offset + payload.wanted, end)
            payload.buffer += data[have - offset : take - offset]
            if len(payload.buffer) < payload.wanted:
                return
            self._payloads.popleft()
            self.tables.arrived(payload.kind, payload.offset, bytes(payload.buffer))


class _MarkerTables:
    """Grain tables met in GT markers, each checked on arrival; GD payloads kept (bounded).

    A streaming writer can only write a grain table once its grains are written, so each
    entry must name a grain before the table's own marker: that is the bound the entries
    are checked against, the file's end being unknown while a stream passes.  Tables are
    marked in the claim map, so a grain entry naming another table is claimed twice.
    """

    def __init__(
        self, gt_bytes: int, limit: int, grain_sectors: int, overhead_sectors: int, zeroed_ok: bool
    ) -> None:
        self.gt_bytes = gt_bytes
        self.limit = limit
        self._grain_sectors = grain_sectors
        self._overhead_sectors = overhead_sectors
        self._zeroed_ok = zeroed_ok
        self.offsets: array[int] = array("Q")  # payload offsets, ascending
        self.allocated: array[int] = array("L")
        self.zeroed: array[int] = array("L")
        self.bad_count = 0
        self.first_bad: tuple[int, scan.BlockTableResult] | None = None
        self.claims: bytearray | None = bytearray()
        self.overflow = False
        self.directories: dict[int, bytes] = {}
        self._directory_bytes = 0

    def wanted(self, kind: int, payload: int) -> int:
        """How much of a marker's payload to keep (0: nothing)."""
        if kind == MARKER_GT and self.gt_bytes and payload >= self.gt_bytes:
            if len(self.offsets) >= self.limit:
                self.overflow = True
                return 0
            return self.gt_bytes
        if kind == MARKER_GD and 0 < payload <= MAX_GD_PAYLOAD - self._directory_bytes:
            return payload
        return 0

    def arrived(self, kind: int, offset: int, payload: bytes) -> None:
        if kind == MARKER_GD:
            self.directories[offset] = payload
            self._directory_bytes += len(payload)
        elif len(self.offsets) >= self.limit:
            self.overflow = True
        else:
            self._check_table(offset, payload)

    def _check_table(self, offset: int, table: bytes) -> None:
        marker = offset - SECTOR
        claims = self._claims_up_to(offset + len(table))
        result = scan.vmdk_gt(
            table,
            grain_sectors=self._grain_sectors,
            overhead_sectors=self._overhead_sectors,
            file_size=marker,
            zeroed_grain_ok=self._zeroed_ok,
            compressed=True,
            claimed=claims,
        )
        if claims is not None:
            scan.mark_claimed(claims, marker, offset + len(table) - marker, SECTOR)
        self.offsets.append(offset)
        self.allocated.append(result.allocated)
        self.zeroed.append(result.zero)
        self.bad_count += result.bad_count
        if not result.ok and self.first_bad is None:
            self.first_bad = (offset, result)

    def _claims_up_to(self, end: int) -> bytearray | None:
        if self.claims is None:
            return None
        needed = claim_bytes(end)
        if needed > CLAIM_MAP_LIMIT:
            self.claims = None
            return None
        if needed > len(self.claims):
            self.claims.extend(bytes(needed - len(self.claims)))
        return self.claims


def finish_marker_walk(ctx: Context, walk: MarkerWalker, stream: StreamInfo | None) -> MarkerWalk:
    size = ctx.source.size
    end = walk.result(size)
    state = end.state
    structural = state.stopped or end.lost
    bad_grains = state.bad_count - (1 if state.stopped else 0)
    if bad_grains and state.bad_reason in (scan.Reason.OUT_OF_RANGE, scan.Reason.MISALIGNED):
        _report_grain_marker(ctx, walk, state, bad_grains)
    if structural:
        _report_stop(ctx, walk, end, size)
    elif state.eos_offset == scan.NOT_SEEN and _needs_eos(state, stream):
        ctx.findings.add(
            F.TRUNCATED,
            f"the stream ends at byte {size} after {state.count} markers without an "
            "end-of-stream marker",
        )
    return MarkerWalk(
        start=walk.start,
        markers=state.count,
        grains=state.grains,
        compressed_bytes=state.grain_bytes,
        gt_markers=state.gt_markers,
        gd_markers=state.gd_markers,
        footer_markers=state.footer_markers,
        other_markers=state.other_markers,
        bad_markers=state.bad_count,
        eos_offset=None if state.eos_offset == scan.NOT_SEEN else state.eos_offset,
        complete=not structural,
    )


def _needs_eos(state: scan.StreamResult, stream: StreamInfo | None) -> bool:
    """Only VMware's layout (metadata markers) must end with an end-of-stream marker: qemu
    writes none for an empty disk, nor after ``qemu-img convert -n`` into a stream, and a
    qemu stream cut on a marker boundary shows as grain table entries past the end.  When
    the footer search already judged the end (no footer, or a footer without EOS), that
    finding stands alone."""
    if not state.gt_markers + state.gd_markers + state.footer_markers:
        return False
    return stream is None or not (stream.gd_at_end or stream.footer_offset is not None)


def _report_grain_marker(
    ctx: Context, walk: MarkerWalker, state: scan.StreamResult, bad: int
) -> None:
    more = f"; {bad} bad grain markers in all" if bad > 1 else ""
    if state.bad_reason == scan.Reason.OUT_OF_RANGE:
        ctx.findings.add(
            GRAIN_OUT_OF_RANGE,
            f"the grain marker at byte {state.bad_index} is for LBA {state.bad_value}, beyond "
            f"the capacity of {walk.capacity} sectors{more}",
        )
    else:
        ctx.findings.add(
            GRAIN_MISALIGNED,
            f"the grain marker at byte {state.bad_index} is for LBA {state.bad_value}, not a "
            f"multiple of the grain ({walk.grain_sectors} sectors){more}",
        )


def _report_stop(ctx: Context, walk: MarkerWalker, end: _WalkEnd, size: int) -> None:
    """Say why the walk stopped; the walker keeps only the first bad marker's details, so
    the reason is read from where it stands (a bad LBA before may have taken that place)."""
    state = end.state
    at = state.next_offset
    if end.lost:
        ctx.findings.add(F.STREAM_UNCHECKED, f"the stream markers after byte {at} were not seen")
    elif state.eos_offset != scan.NOT_SEEN:
        ctx.findings.add(
            DATA_AFTER_EOS,
            f"non-zero bytes in the sector at byte {at}, after the end-of-stream marker at "
            f"byte {state.eos_offset}",
        )
    elif at > size:
        ctx.findings.add(
            F.TRUNCATED,
            f"the marker at byte {state.marker_offset} runs to byte {at}, past the end of "
            f"the stream ({size} bytes)",
        )
    elif size - at < SECTOR:
        ctx.findings.add(
            F.TRUNCATED,
            f"the stream ends {size - at} bytes into the sector at byte {at}, where a marker "
            "should begin",
        )
    else:
        _report_bad_marker(ctx, walk, end.stop_marker, at)


def _report_bad_marker(ctx: Context, walk: MarkerWalker, stop_marker: bytes, at: int) -> None:
    raw = stop_marker.ljust(METADATA_MARKER_SIZE, b"\0")
    value, size, kind = MARKER_FIELDS.unpack(raw)
    if size:
        message = (
            f"the grain marker at byte {at} claims {size} compressed bytes (a grain is "
            f"{walk.grain_bytes})"
        )
    elif kind in (MARKER_GT, MARKER_GD, MARKER_FOOTER, MARKER_PROGRESS):
        ctx.findings.add(
            F.TRUNCATED,
            f"the metadata marker at byte {at} claims {value} sectors of payload, more than "
            "any file holds",
        )
        return
    else:
        message = f"the metadata marker at byte {at} has the unknown type {kind}"
    ctx.findings.add(BAD_MARKER, message)


# --- grain tables met in GT markers ---------------------------------------------------------


def tables_from_markers(
    ctx: Context, layout: TableLayout, tables: _MarkerTables, complete: bool
) -> GrainTables | None:
    """VMware's layout: the directory (at the end) must name the tables met in GT markers,
    each once; their entries were checked as they passed.  When the walk stopped early the
    tables after that point were never met: only those met are judged."""
    if not complete:
        _report_marker_tables(ctx, layout, tables, None)
        return None
    if tables.overflow or layout.gd_entries > MAX_GRAIN_TABLES:
        if layout.gd_entries > MAX_GRAIN_TABLES:
            why = f"the grain directory has {layout.gd_entries} entries"
        else:
            why = f"the stream has more grain table markers than {tables.limit}"
        ctx.findings.add(TABLES_UNCHECKED, f"{why}: the tables were not matched with it")
        return None
    length = layout.gd_entries * 4
    payload = tables.directories.get(layout.gd_offset)
    try:
        table = payload[:length] if payload is not None and len(payload) >= length else None
        if table is None:
            table = ctx.source.read_exact(layout.gd_offset, length, "grain directory")
    except StreamGap:
        ctx.findings.add(
            F.STREAM_UNCHECKED,
            f"the grain directory at byte {layout.gd_offset} went by unkept",
        )
        return None
    size = ctx.source.size
    gd = scan.vmdk_gd(table, gt_sectors=gt_sector_count(layout), file_size=size)
    report_directory(ctx, gd, f"the grain directory at byte {layout.gd_offset}", size)
    totals = _match_marker_tables(ctx, layout, gd, tables)
    _report_marker_tables(ctx, layout, tables, gd)
    return GrainTables(
        source="markers",
        grain_tables=totals.tables,
        allocated_grains=totals.allocated,
        zeroed_grains=totals.zeroed,
        bad_entries=tables.bad_count + totals.bad,
        redundant_mismatches=None,
    )


def _report_marker_tables(
    ctx: Context,
    layout: TableLayout,
    tables: _MarkerTables,
    gd: scan.PointerTableResult | None,
) -> None:
    if tables.first_bad is not None:
        offset, result = tables.first_bad
        label = f"the grain table at byte {offset}"
        if gd is not None and offset in gd.offsets:
            label = f"grain table {gd.indexes[gd.offsets.index(offset)]} (byte {offset})"
        bound = f"not before its grain table marker at byte {offset - SECTOR}"
        report_grain_table(ctx, layout, label, result.bad_index, result, tables.bad_count, bound)
    if tables.claims is None and len(tables.offsets):
        ctx.findings.add(
            OVERLAP_UNCHECKED,
            f"the stream is over {CLAIM_MAP_LIMIT * 8 * SECTOR} bytes: grains were not "
            "checked for overlaps",
        )


def _match_marker_tables(
    ctx: Context, layout: TableLayout, gd: scan.PointerTableResult, tables: _MarkerTables
) -> TableTotals:
    totals = TableTotals()
    used = bytearray(-(-len(tables.offsets) // 8))
    outside = _Tally()
    twice = _Tally()
    for index, offset in zip(gd.indexes, gd.offsets, strict=True):
        k = bisect.bisect_left(tables.offsets, offset)
        if k == len(tables.offsets) or tables.offsets[k] != offset:
            outside.note(index)
        elif used[k >> 3] & (1 << (k & 7)):
            twice.note(index)
        else:
            used[k >> 3] |= 1 << (k & 7)
            totals.tables += 1
            totals.allocated += tables.allocated[k]
            totals.zeroed += tables.zeroed[k]
    if outside.count:
        ctx.findings.add(
            GT_OUTSIDE_MARKER,
            f"{outside.count} grain directory entries name no grain table marker's payload "
            f"(the first: entry {outside.first})",
        )
    if twice.count:
        ctx.findings.add(
            CLAIMED_TWICE,
            f"{twice.count} grain directory entries name a grain table another entry names "
            f"(the first: entry {twice.first})",
        )
    totals.bad = outside.count + twice.count
    return totals


class _Tally:
    """How many, and the first."""

    def __init__(self) -> None:
        self.count = 0
        self.first = -1

    def note(self, index: int) -> None:
        if not self.count:
            self.first = index
        self.count += 1
