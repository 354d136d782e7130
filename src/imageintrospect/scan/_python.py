"""Pure-Python twin of csrc/scan.c: same checks, in the same order, same results.

Used when the C extension is not built (or ``IMAGEINTROSPECT_BACKEND=python``), and as the
reference the C code is tested against. Arguments arrive validated by
``imageintrospect.scan``; each function here mirrors the C function of the same name, so
read the two side by side when changing either. Python integers cannot overflow, but the
C limits (documented in docs/backend.md) are applied identically so both agree on hostile
values.

CRC-32C is our own table-driven implementation (a VHDX module may bring another one; this
one has no dependency).
"""

from __future__ import annotations

import sys
from array import array

from ..crc32c import crc32c as _shared_crc32c
from ._types import (
    NOT_SEEN,
    OFFSET_LIMIT,
    STREAM_RUN,
    BlockTableResult,
    Buffer,
    L2Result,
    PointerTableResult,
    Reason,
    StreamResult,
    VhdxBatResult,
    stream_start,
)

SECTOR = 512
MIB = 1 << 20

_LITTLE_HOST = sys.byteorder == "little"
assert array("I").itemsize == 4 and array("Q").itemsize == 8


def _entries(table: Buffer, typecode: str, big_endian: bool) -> array[int]:
    """The table as unsigned integers in host order (one copy, no per-entry unpacking)."""
    values = array(typecode)
    values.frombytes(table)
    if big_endian == _LITTLE_HOST:
        values.byteswap()
    return values


def _round_up_sector(value: int) -> int:
    return (value + SECTOR - 1) & ~(SECTOR - 1)


def _fits(start: int, length: int, limit: int) -> bool:
    """[start, start + length) lies within [0, limit)."""
    return length <= limit and start <= limit - length


class _Bad:
    """The first bad entry and how many there were."""

    __slots__ = ("count", "index", "reason", "value")

    def __init__(self, count: int = 0, index: int = NOT_SEEN, value: int = 0, reason: int = 0):
        self.count = count
        self.index = index
        self.value = value
        self.reason = reason

    def note(self, index: int, value: int, reason: int) -> None:
        if self.count == 0:
            self.index = index
            self.value = value
            self.reason = reason
        self.count += 1


def _claim(bits: bytearray | None, nbits: int, first: int, n: int) -> Reason:
    """Mark units [first, first + n) in ``bits``: OK, or DOUBLE_CLAIM and nothing marked."""
    if bits is None or n == 0:
        return Reason.OK
    if not _fits(first, n, nbits):
        return Reason.OUT_OF_RANGE
    if n == 1:
        byte, mask = first >> 3, 1 << (first & 7)
        if bits[byte] & mask:
            return Reason.DOUBLE_CLAIM
        bits[byte] |= mask
        return Reason.OK
    end = first + n
    if not (first | n) & 7:  # whole bytes: the usual case for sector-granular maps
        lo_byte, hi_byte = first >> 3, end >> 3
        if bits.count(0, lo_byte, hi_byte) != hi_byte - lo_byte:
            return Reason.DOUBLE_CLAIM
        bits[lo_byte:hi_byte] = b"\xff" * (hi_byte - lo_byte)
        return Reason.OK
    # bits [first, end) as one integer, little-endian like the bitmap itself
    lo_byte, hi_byte = first >> 3, (end + 7) >> 3
    window = int.from_bytes(bits[lo_byte:hi_byte], "little")
    shift = first - (lo_byte << 3)
    mask = ((1 << n) - 1) << shift
    if window & mask:
        return Reason.DOUBLE_CLAIM
    bits[lo_byte:hi_byte] = (window | mask).to_bytes(hi_byte - lo_byte, "little")
    return Reason.OK


# ---------------------------------------------------------------------------------------
# Tables of pointers


def _qcow2_pointers(
    reserved_mask: int,
    offset_mask: int,
    table: Buffer,
    first_index: int,
    cluster_bits: int,
    file_size: int,
    claimed: bytearray | None,
) -> PointerTableResult:
    cluster = 1 << cluster_bits
    nbits = len(claimed) * 8 if claimed is not None else 0
    bad = _Bad()
    indexes, offsets = array("Q"), array("Q")
    unallocated = 0
    entries = _entries(table, "Q", big_endian=True)
    for i, e in enumerate(entries):
        offset = e & offset_mask
        if e & reserved_mask:
            reason = Reason.RESERVED_BITS
        elif offset == 0:
            unallocated += 1
            continue
        elif offset & (cluster - 1):
            reason = Reason.MISALIGNED
        elif not _fits(offset, cluster, file_size):
            reason = Reason.OUT_OF_RANGE
        else:
            reason = _claim(claimed, nbits, offset >> cluster_bits, 1)
        if reason:
            bad.note(first_index + i, e, reason)
            continue
        indexes.append(first_index + i)
        offsets.append(offset)
    return _pointer_result(len(entries), bad, unallocated, indexes, offsets)


def _pointer_result(
    count: int, bad: _Bad, unallocated: int, indexes: array[int], offsets: array[int]
) -> PointerTableResult:
    return PointerTableResult(
        count=count,
        bad_count=bad.count,
        bad_index=bad.index,
        bad_value=bad.value,
        bad_reason=Reason(bad.reason),
        allocated=len(indexes),
        unallocated=unallocated,
        indexes=indexes,
        offsets=offsets,
    )


def qcow2_l1(
    table: Buffer,
    first_index: int,
    cluster_bits: int,
    file_size: int,
    claimed: bytearray | None,
) -> PointerTableResult:
    # bits 0-8 and 56-62 reserved, 9-55 offset, 63 "copied" (not checked)
    return _qcow2_pointers(
        0x7F000000000001FF, 0x00FFFFFFFFFFFE00, table, first_index, cluster_bits, file_size, claimed
    )


def qcow2_refcount_table(
    table: Buffer,
    first_index: int,
    cluster_bits: int,
    file_size: int,
    claimed: bytearray | None,
) -> PointerTableResult:
    # bits 0-8 reserved, 9-63 offset
    return _qcow2_pointers(
        0x1FF, 0xFFFFFFFFFFFFFE00, table, first_index, cluster_bits, file_size, claimed
    )


def vmdk_gd(
    table: Buffer,
    first_index: int,
    gt_sectors: int,
    file_size: int,
    claimed: bytearray | None,
) -> PointerTableResult:
    nbits = len(claimed) * 8 if claimed is not None else 0
    bad = _Bad()
    indexes, offsets = array("Q"), array("Q")
    unallocated = 0
    entries = _entries(table, "I", big_endian=False)
    for i, sector in enumerate(entries):
        if sector == 0:
            unallocated += 1
            continue
        if not _fits(sector * SECTOR, gt_sectors * SECTOR, file_size):
            reason = Reason.OUT_OF_RANGE
        else:
            reason = _claim(claimed, nbits, sector, gt_sectors)
        if reason:
            bad.note(first_index + i, sector, reason)
            continue
        indexes.append(first_index + i)
        offsets.append(sector * SECTOR)
    return _pointer_result(len(entries), bad, unallocated, indexes, offsets)


# ---------------------------------------------------------------------------------------
# qcow2 L2

_COPIED = 1 << 63
_COMPRESSED = 1 << 62
_STD_RESERVED = 0x3F000000000001FE  # bits 1-8 and 56-61
_STD_OFFSET = 0x00FFFFFFFFFFFE00  # bits 9-55
_SUBCLUSTERS_ALL = 0xFFFFFFFF


class _L2Counts:
    __slots__ = ("allocated", "compressed", "compressed_bytes", "unallocated", "zero")

    def __init__(self) -> None:
        self.allocated = self.compressed = self.zero = self.unallocated = 0
        self.compressed_bytes = 0


class _L2Scan:
    """One L2 scan's parameters and counters (the C code's l2_params + ii_l2_result)."""

    def __init__(
        self,
        cluster_bits: int,
        extended: bool,
        version: int,
        file_size: int,
        has_data_file: bool,
        claimed: bytearray | None,
    ) -> None:
        self.cluster_bits = cluster_bits
        self.cluster = 1 << cluster_bits
        self.extended = extended
        self.file_size = file_size
        self.has_data_file = has_data_file
        self.claimed = claimed
        self.nbits = len(claimed) * 8 if claimed is not None else 0
        self.reserved = _STD_RESERVED | (1 if version < 3 or extended else 0)
        x = 62 - (cluster_bits - 8)
        self.c_shift = x
        self.c_offset_mask = (1 << x) - 1
        self.c_sectors_mask = (1 << (62 - x)) - 1
        self.counts = _L2Counts()

    def compressed(self, e: int, bitmap: int) -> Reason:
        coffset = e & self.c_offset_mask
        sectors = ((e >> self.c_shift) & self.c_sectors_mask) + 1
        if self.has_data_file or e & _COPIED:
            return Reason.BAD_COMPRESSED
        if coffset >> 56:
            return Reason.RESERVED_BITS
        if self.extended and bitmap:
            return Reason.BAD_SUBCLUSTER
        if coffset < self.cluster:
            return Reason.IN_METADATA
        # qemu does not pad the file after the last compressed cluster
        end = (coffset & ~(SECTOR - 1)) + sectors * SECTOR
        if coffset >= self.file_size or end > _round_up_sector(self.file_size):
            return Reason.OUT_OF_RANGE
        self.counts.compressed += 1
        self.counts.compressed_bytes += sectors * SECTOR - (coffset & (SECTOR - 1))
        return Reason.OK

    def standard(self, e: int, bitmap: int) -> Reason:
        offset = e & _STD_OFFSET
        copied = bool(e & _COPIED)
        alloc_bits = bitmap & _SUBCLUSTERS_ALL
        zero_bits = bitmap >> 32
        if e & self.reserved:
            return Reason.RESERVED_BITS
        if self.extended and alloc_bits & zero_bits:
            return Reason.BAD_SUBCLUSTER
        # offset 0 with "copied" names host offset 0: legal only in a data file
        if not (offset or (self.has_data_file and copied)):
            if copied:
                return Reason.IN_METADATA
            if self.extended and alloc_bits:
                return Reason.BAD_SUBCLUSTER
            reads_zero = zero_bits == _SUBCLUSTERS_ALL if self.extended else bool(e & 1)
            if reads_zero:
                self.counts.zero += 1
            else:
                self.counts.unallocated += 1
            return Reason.OK
        if offset & (self.cluster - 1):
            return Reason.MISALIGNED
        if not self.has_data_file:
            # the last data cluster may extend past the end of the file: its start is inside
            if offset >= self.file_size:
                return Reason.OUT_OF_RANGE
            reason = _claim(self.claimed, self.nbits, offset >> self.cluster_bits, 1)
            if reason:
                return reason
        self.counts.allocated += 1
        return Reason.OK


def qcow2_l2(
    table: Buffer,
    first_index: int,
    cluster_bits: int,
    extended_l2: bool,
    version: int,
    file_size: int,
    has_data_file: bool,
    claimed: bytearray | None,
) -> L2Result:
    scan = _L2Scan(cluster_bits, extended_l2, version, file_size, has_data_file, claimed)
    counts = scan.counts
    bad = _Bad()
    entries = _entries(table, "Q", big_endian=True)
    step = 2 if extended_l2 else 1
    for i in range(0, len(entries), step):
        e = entries[i]
        bitmap = entries[i + 1] if extended_l2 else 0
        if e == 0 and bitmap == 0:  # the common case in sparse images
            counts.unallocated += 1
            continue
        reason = scan.compressed(e, bitmap) if e & _COMPRESSED else scan.standard(e, bitmap)
        if reason:
            bad.note(first_index + i // step, e, reason)
    return L2Result(
        count=len(entries) // step,
        bad_count=bad.count,
        bad_index=bad.index,
        bad_value=bad.value,
        bad_reason=Reason(bad.reason),
        allocated=counts.allocated,
        compressed=counts.compressed,
        zero=counts.zero,
        unallocated=counts.unallocated,
        allocated_bytes=counts.allocated << cluster_bits,
        compressed_bytes=counts.compressed_bytes,
    )


# ---------------------------------------------------------------------------------------
# VMDK grain table


def _block_result(
    count: int, bad: _Bad, allocated: int, zero: int, unallocated: int, unit: int
) -> BlockTableResult:
    return BlockTableResult(
        count=count,
        bad_count=bad.count,
        bad_index=bad.index,
        bad_value=bad.value,
        bad_reason=Reason(bad.reason),
        allocated=allocated,
        zero=zero,
        unallocated=unallocated,
        allocated_bytes=allocated * unit,
    )


def vmdk_gt(
    table: Buffer,
    first_index: int,
    grain_sectors: int,
    overhead_sectors: int,
    file_size: int,
    zeroed_grain_ok: bool,
    compressed: bool,
    claimed: bytearray | None,
) -> BlockTableResult:
    nbits = len(claimed) * 8 if claimed is not None else 0
    # a compressed grain is a marker of unknown length: only its first sector is known
    footprint = 1 if compressed else grain_sectors
    bad = _Bad()
    allocated = zero = unallocated = 0
    entries = _entries(table, "I", big_endian=False)
    for i, sector in enumerate(entries):
        if sector == 0:
            unallocated += 1
            continue
        if sector == 1 and zeroed_grain_ok:
            zero += 1
            continue
        if sector < overhead_sectors:
            reason = Reason.IN_METADATA
        elif not _fits(sector * SECTOR, footprint * SECTOR, file_size):
            reason = Reason.OUT_OF_RANGE
        else:
            reason = _claim(claimed, nbits, sector, footprint)
        if reason:
            bad.note(first_index + i, sector, reason)
            continue
        allocated += 1
    return _block_result(len(entries), bad, allocated, zero, unallocated, grain_sectors * SECTOR)


# ---------------------------------------------------------------------------------------
# streamOptimized VMDK markers

_MARKER_COUNTERS = {1: "gt_markers", 2: "gd_markers", 3: "footer_markers", 4: "other_markers"}
_GRAIN_SLACK = 1024  # deflate may expand incompressible data a little


class _Walk:
    """Mutable copy of a StreamResult while a window is walked."""

    def __init__(self, state: StreamResult) -> None:
        self.bad = _Bad(state.bad_count, state.bad_index, state.bad_value, state.bad_reason)
        self.count = state.count
        self.next_offset = state.next_offset
        self.marker_offset = state.marker_offset
        self.grains = state.grains
        self.grain_bytes = state.grain_bytes
        self.gt_markers = state.gt_markers
        self.gd_markers = state.gd_markers
        self.footer_markers = state.footer_markers
        self.other_markers = state.other_markers
        self.eos_offset = state.eos_offset
        self.stopped = state.stopped

    def stop(self, offset: int, value: int, reason: int) -> None:
        self.bad.note(offset, value, reason)
        self.stopped = True

    def ends_at(self, end: int) -> None:
        """The stream ends at ``end`` with no end-of-stream marker seen: anything but a
        marker boundary exactly there is a truncation (C: stream_ends_at)."""
        pos = self.next_offset
        if pos > end:  # the last marker's data runs past the end
            self.stop(self.marker_offset, pos, Reason.TRUNCATED)
        elif pos < end:  # a partial sector where a marker should be
            self.stop(pos, end - pos, Reason.TRUNCATED)

    def result(self) -> StreamResult:
        return StreamResult(
            count=self.count,
            bad_count=self.bad.count,
            bad_index=self.bad.index,
            bad_value=self.bad.value,
            bad_reason=Reason(self.bad.reason),
            next_offset=self.next_offset,
            marker_offset=self.marker_offset,
            grains=self.grains,
            grain_bytes=self.grain_bytes,
            gt_markers=self.gt_markers,
            gd_markers=self.gd_markers,
            footer_markers=self.footer_markers,
            other_markers=self.other_markers,
            eos_offset=self.eos_offset,
            stopped=self.stopped,
        )

    def trailing(self, window: memoryview, base: int, start: int) -> None:
        """After end-of-stream only zero padding may follow: the bytes from ``start`` to the
        window's end are checked. next_offset stays sector-aligned (windows start on
        sectors): a few bytes may be checked twice."""
        end = base + len(window)
        rest = bytes(window[start - base :])
        nonzero = rest.lstrip(b"\0")
        if nonzero:
            offending = end - len(nonzero)
            self.next_offset = offending - offending % SECTOR
            self.stop(offending, nonzero[0], Reason.TRAILING_DATA)
            return
        self.next_offset = max(self.next_offset, end - end % SECTOR)

    def marker(self, window: memoryview, at: int, capacity: int, grain_sectors: int) -> None:
        pos = self.next_offset
        value = int.from_bytes(window[at : at + 8], "little")
        size = int.from_bytes(window[at + 8 : at + 12], "little")
        self.marker_offset = pos
        self.count += 1
        if size:
            self.grain(pos, value, size, capacity, grain_sectors)
            return
        kind = int.from_bytes(window[at + 12 : at + 16], "little")
        if kind == 0:
            self.eos_offset = pos
            self.next_offset = pos + SECTOR
            return
        counter = _MARKER_COUNTERS.get(kind)
        if counter is None:
            self.stop(pos, kind, Reason.BAD_MARKER)
            return
        setattr(self, counter, getattr(self, counter) + 1)
        if value > (OFFSET_LIMIT - SECTOR - pos) // SECTOR:
            self.stop(pos, value, Reason.TRUNCATED)
            return
        self.next_offset = pos + SECTOR + value * SECTOR

    def grain(self, pos: int, lba: int, size: int, capacity: int, grain_sectors: int) -> None:
        if size > grain_sectors * SECTOR + _GRAIN_SLACK:
            self.stop(pos, size, Reason.BAD_MARKER)
            return
        if lba >= capacity:
            self.bad.note(pos, lba, Reason.OUT_OF_RANGE)
        elif lba % grain_sectors:
            self.bad.note(pos, lba, Reason.MISALIGNED)
        else:
            self.grains += 1
            self.grain_bytes += size
        following = _round_up_sector(pos + 12 + size)
        if following > OFFSET_LIMIT:
            self.stop(pos, size, Reason.TRUNCATED)
            return
        self.next_offset = following


def vmdk_stream(
    window: Buffer,
    base_offset: int,
    capacity_sectors: int,
    grain_sectors: int,
    final: bool,
    state: StreamResult,
) -> StreamResult:
    view = memoryview(window).cast("B")
    end = base_offset + len(view)
    walk = _Walk(state)
    while not walk.stopped:
        if walk.eos_offset != NOT_SEEN:
            walk.trailing(view, base_offset, walk.next_offset)
            break
        pos = walk.next_offset
        if pos >= end or end - pos < SECTOR:
            if final:
                walk.ends_at(end)
            break
        walk.marker(view, pos - base_offset, capacity_sectors, grain_sectors)
    return walk.result()


_MARKER_HEADER = 16


class StreamWalker:
    """The same walk fed chunk by chunk (twin of ``ii_stream_walk``): a marker is read once
    its whole first sector has passed, from the 16 bytes carried in :attr:`header`."""

    def __init__(self, start: int, capacity_sectors: int, grain_sectors: int) -> None:
        self._walk = _Walk(stream_start(start))
        self._capacity = capacity_sectors
        self._grain_sectors = grain_sectors
        self.position = start
        self.header = bytearray(_MARKER_HEADER)
        self.lost = False
        self._table_end = 0  # end of the payload of the last GT or GD marker read

    def feed(self, offset: int, data: bytes, n: int) -> int:
        return self.resume(offset, data, n, 0)

    def resume(self, offset: int, data: bytes, n: int, start: int) -> int:
        """Walk ``data[start:n]``: 0 once walked, 1 right after a GT or GD marker, whose
        payload begins at :attr:`position`, 2 once walked if it began inside the payload of
        the last GT or GD marker."""
        if start > n or offset > OFFSET_LIMIT or n > OFFSET_LIMIT - offset:
            return -1
        walk = self._walk
        end = offset + n
        if offset + start != self.position:
            self.lost = True  # the walk cannot go on over a gap
        while not self.lost and not walk.stopped and self.position < end:
            pos = self.position
            if walk.eos_offset != NOT_SEEN:
                walk.trailing(memoryview(data)[:n], offset, pos)
                break
            if pos < walk.next_offset:  # grain data or a payload: skipped unread
                self.position = min(walk.next_offset, end)
                continue
            if self._sector(data, offset, pos, min(walk.next_offset + SECTOR, end)):
                return 1  # a table's payload begins at self.position
        self.position = end
        return 2 if offset + start < self._table_end else 0

    def run(self, offset: int, n: int, count: int, /, *chunks: bytes) -> int:
        """Walk the first ``count`` of ``chunks``, ``n`` bytes each, one after another from
        ``offset`` on: 0 once all are walked, -1 on bad parameters, or ``4 * k + s`` when
        chunk ``k`` returned ``s`` (1 or 2) from :meth:`feed` (the chunks after it are left
        unwalked)."""
        limit = OFFSET_LIMIT - STREAM_RUN * n
        if not 0 <= count <= min(STREAM_RUN, len(chunks)) or not 0 <= offset <= limit:
            return -1
        for k, data in enumerate(chunks[:count]):
            status = self.resume(offset + k * n, data, n, 0)
            if status < 0:
                return status
            if status:
                return 4 * k + status
        return 0

    def _sector(self, data: bytes, base: int, pos: int, stop: int) -> bool:
        """Take bytes [pos, stop) of the marker's first sector; read the marker once the
        sector is complete. True when that marker was a GT or GD marker."""
        walk = self._walk
        marker = walk.next_offset
        if pos < marker + _MARKER_HEADER:
            upto = min(stop, marker + _MARKER_HEADER)
            self.header[pos - marker : upto - marker] = data[pos - base : upto - base]
        self.position = stop
        if stop < marker + SECTOR:
            return False
        tables = walk.gt_markers + walk.gd_markers
        walk.marker(memoryview(self.header), 0, self._capacity, self._grain_sectors)
        if walk.stopped or walk.gt_markers + walk.gd_markers == tables:
            return False
        self._table_end = walk.next_offset
        return True

    def skip(self, limit: int) -> int:
        """Jump over bytes the walk would skip unread, up to the next marker or ``limit``;
        where the walk then expects its next chunk (unchanged when it cannot jump)."""
        walk = self._walk
        if self.lost or walk.stopped or walk.eos_offset != NOT_SEEN:
            return self.position
        self.position = max(self.position, min(walk.next_offset, limit))
        return self.position

    def state(self) -> StreamResult:
        return self._walk.result()

    def finish(self, size: int) -> StreamResult:
        """The state judged as if the stream ended at ``size``; the walker is left as is."""
        walk = _Walk(self._walk.result())
        if walk.stopped or self.lost or self.position != size or walk.eos_offset != NOT_SEEN:
            return walk.result()
        walk.ends_at(size)
        return walk.result()


# ---------------------------------------------------------------------------------------
# VHD, VHDX, VDI

_VHD_UNUSED = 0xFFFFFFFF


def vhd_bat(
    table: Buffer,
    first_index: int,
    block_size: int,
    data_start: int,
    file_size: int,
    claimed: bytearray | None,
) -> BlockTableResult:
    nbits = len(claimed) * 8 if claimed is not None else 0
    bitmap_bytes = _round_up_sector((block_size // SECTOR + 7) // 8)
    footprint = bitmap_bytes + block_size
    data_end = file_size - SECTOR if file_size >= SECTOR else 0  # the footer
    bad = _Bad()
    allocated = unallocated = 0
    entries = _entries(table, "I", big_endian=True)
    for i, sector in enumerate(entries):
        if sector == _VHD_UNUSED:
            unallocated += 1
            continue
        start = sector * SECTOR
        if start < data_start:
            reason = Reason.IN_METADATA
        elif not _fits(start, footprint, data_end):
            reason = Reason.OUT_OF_RANGE
        else:
            reason = _claim(claimed, nbits, sector, footprint // SECTOR)
        if reason:
            bad.note(first_index + i, sector, reason)
            continue
        allocated += 1
    return _block_result(len(entries), bad, allocated, 0, unallocated, block_size)


_VHDX_RESERVED = 0xFFFF8  # bits 3-19
_VHDX_PAYLOAD_COUNTERS = {0: "not_present", 1: "undefined", 2: "zero", 3: "unmapped"}
_VHDX_FULLY_PRESENT = 6
_VHDX_PARTIALLY_PRESENT = 7
_VHDX_BITMAP_PRESENT = 6


def vhdx_bat(
    table: Buffer,
    first_index: int,
    block_size: int,
    logical_sector_size: int,
    file_size: int,
    has_parent: bool,
    claimed: bytearray | None,
) -> VhdxBatResult:
    nbits = len(claimed) * 8 if claimed is not None else 0
    chunk_ratio = ((1 << 23) * logical_sector_size) // block_size

    def place(offset_mb: int, length: int) -> Reason:
        """A present block: outside the 1 MiB header section, inside the file."""
        if offset_mb == 0:
            return Reason.IN_METADATA
        if not _fits(offset_mb << 20, length, file_size):
            return Reason.OUT_OF_RANGE
        return _claim(claimed, nbits, offset_mb, length // MIB)

    counts = dict.fromkeys(
        (*_VHDX_PAYLOAD_COUNTERS.values(), "fully_present", "partially_present"), 0
    )
    bitmaps_absent = bitmaps_present = 0
    bad = _Bad()
    entries = _entries(table, "Q", big_endian=False)
    for i, e in enumerate(entries):
        state = e & 7
        reason: int = Reason.OK
        if e & _VHDX_RESERVED:
            reason = Reason.RESERVED_BITS
        elif (first_index + i) % (chunk_ratio + 1) == chunk_ratio:  # sector bitmap entry
            if state == 0:
                bitmaps_absent += 1
            elif state != _VHDX_BITMAP_PRESENT:
                reason = Reason.BAD_STATE
            else:
                reason = place(e >> 20, MIB)
                if not reason:
                    bitmaps_present += 1
        elif state in _VHDX_PAYLOAD_COUNTERS:
            counts[_VHDX_PAYLOAD_COUNTERS[state]] += 1
        elif state == _VHDX_FULLY_PRESENT or (state == _VHDX_PARTIALLY_PRESENT and has_parent):
            reason = place(e >> 20, block_size)
            if not reason:
                key = "fully_present" if state == _VHDX_FULLY_PRESENT else "partially_present"
                counts[key] += 1
        else:  # 4, 5, or partially present without a parent
            reason = Reason.BAD_STATE
        if reason:
            bad.note(first_index + i, e, reason)
    return VhdxBatResult(
        count=len(entries),
        bad_count=bad.count,
        bad_index=bad.index,
        bad_value=bad.value,
        bad_reason=Reason(bad.reason),
        bitmaps_absent=bitmaps_absent,
        bitmaps_present=bitmaps_present,
        allocated_bytes=(counts["fully_present"] + counts["partially_present"]) * block_size,
        **counts,
    )


_VDI_FREE = 0xFFFFFFFF
_VDI_ZERO = 0xFFFFFFFE


def vdi_blockmap(
    table: Buffer,
    first_index: int,
    blocks_allocated: int,
    block_size: int,
    data_offset: int,
    file_size: int,
    claimed: bytearray | None,
) -> BlockTableResult:
    nbits = len(claimed) * 8 if claimed is not None else 0
    data_room = file_size - data_offset if file_size > data_offset else 0
    bad = _Bad()
    allocated = zero = unallocated = 0
    entries = _entries(table, "I", big_endian=False)
    for i, block in enumerate(entries):
        if block == _VDI_FREE:
            unallocated += 1
            continue
        if block == _VDI_ZERO:
            zero += 1
            continue
        if block >= blocks_allocated or not _fits(block * block_size, block_size, data_room):
            reason = Reason.OUT_OF_RANGE
        else:
            reason = _claim(claimed, nbits, block, 1)
        if reason:
            bad.note(first_index + i, block, reason)
            continue
        allocated += 1
    return _block_result(len(entries), bad, allocated, zero, unallocated, block_size)


# ---------------------------------------------------------------------------------------
# CRC-32C


def crc32c(data: Buffer, crc: int) -> int:
    # One pure-Python CRC-32C in the package: imageintrospect.crc32c, which also skips the
    # zero padding that fills most of a VHDX header or region table.
    return _shared_crc32c(memoryview(data).cast("B"), crc)


__all__ = [
    "StreamWalker",
    "crc32c",
    "qcow2_l1",
    "qcow2_l2",
    "qcow2_refcount_table",
    "vdi_blockmap",
    "vhd_bat",
    "vhdx_bat",
    "vmdk_gd",
    "vmdk_gt",
    "vmdk_stream",
]
