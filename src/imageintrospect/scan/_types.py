"""Result types and reason codes shared by the C and the pure-Python scanners.

Both backends build these same frozen dataclasses, so a result can be compared with ``==``
whichever backend made it. Counters never include a bad entry: ``bad_count`` does.
"""

from __future__ import annotations

import enum
from array import array
from typing import Protocol, TypeAlias

from ..frozen import frozen

#: What the scanners read: anything exposing the buffer protocol as bytes.
Buffer: TypeAlias = bytes | bytearray | memoryview

#: Limits shared with csrc/scan.c (the public wrappers raise ValueError beyond them).
OFFSET_LIMIT = (1 << 63) - 1  # file sizes and offsets
INDEX_LIMIT = 1 << 62  # first_index
SIZE32_LIMIT = 1 << 32  # grain, block and grain-table sizes
U64_MAX = (1 << 64) - 1

NOT_SEEN = -1  # bad_index / eos_offset when there is none
#: Chunks per StreamWalker.run call (the eight data parameters of ii_vmdk_stream_run).
STREAM_RUN = 8


class Reason(enum.IntEnum):
    """Why an entry is bad (same numbers as ``enum ii_reason`` in csrc/scan.h)."""

    OK = 0
    OUT_OF_RANGE = 1  # points past the end of the file (or of the disk)
    MISALIGNED = 2  # not aligned as the format demands
    IN_METADATA = 3  # points into the header / metadata area
    RESERVED_BITS = 4  # a reserved bit is set
    DOUBLE_CLAIM = 5  # overlaps something already claimed
    BAD_COMPRESSED = 6  # a compressed descriptor that cannot be valid
    BAD_SUBCLUSTER = 7  # an impossible extended-L2 subcluster bitmap
    BAD_MARKER = 8  # a stream marker that cannot be valid
    TRUNCATED = 9  # the data runs past the end of the stream
    TRAILING_DATA = 10  # non-zero bytes after the end-of-stream marker
    BAD_STATE = 11  # an undefined or forbidden block state


@frozen
class Verdict:
    """Entries examined and the first bad one (``bad_index`` -1 when all are good)."""

    count: int
    bad_count: int
    bad_index: int
    bad_value: int
    bad_reason: Reason

    @property
    def ok(self) -> bool:
        return self.bad_count == 0


@frozen
class PointerTableResult(Verdict):
    """qcow2 L1 / refcount table, VMDK grain directory.

    ``indexes[k]`` is the absolute table index of the k-th good allocated entry and
    ``offsets[k]`` the byte offset it points to (arrays of typecode ``Q``).
    """

    allocated: int
    unallocated: int
    indexes: array[int]
    offsets: array[int]


@frozen
class L2Result(Verdict):
    """qcow2 L2 table. ``count == allocated + compressed + zero + unallocated + bad_count``.

    allocated: standard clusters with a host cluster (preallocated zero clusters included);
    zero: reads as zeros without a host cluster; compressed_bytes: host bytes of the
    compressed data. qemu-img check's allocated-clusters is ``allocated + compressed``.
    """

    allocated: int
    compressed: int
    zero: int
    unallocated: int
    allocated_bytes: int
    compressed_bytes: int


@frozen
class BlockTableResult(Verdict):
    """VMDK grain table, VHD BAT, VDI block map.
    ``count == allocated + zero + unallocated + bad_count``."""

    allocated: int
    zero: int
    unallocated: int
    allocated_bytes: int


@frozen
class VhdxBatResult(Verdict):
    """VHDX BAT: payload entries by state, then sector-bitmap entries."""

    not_present: int
    undefined: int
    zero: int
    unmapped: int
    fully_present: int
    partially_present: int
    bitmaps_absent: int
    bitmaps_present: int
    allocated_bytes: int


@frozen
class StreamResult(Verdict):
    """Where a streamOptimized VMDK walk stands; pass it back as ``state`` to go on.

    count: markers read; bad_index: byte offset of the first bad marker (or of the first
    non-zero trailing byte); next_offset: where the next window must start (at the latest);
    marker_offset: the last marker read; eos_offset: -1 until an end-of-stream marker;
    stopped: a structural error (bad marker, truncation, trailing data) ended the walk.
    """

    next_offset: int
    marker_offset: int
    grains: int
    grain_bytes: int
    gt_markers: int
    gd_markers: int
    footer_markers: int
    other_markers: int
    eos_offset: int
    stopped: bool


def stream_start(offset: int) -> StreamResult:
    """The state of a walk about to read its first marker at ``offset``."""
    return StreamResult(
        count=0,
        bad_count=0,
        bad_index=NOT_SEEN,
        bad_value=0,
        bad_reason=Reason.OK,
        next_offset=offset,
        marker_offset=offset,
        grains=0,
        grain_bytes=0,
        gt_markers=0,
        gd_markers=0,
        footer_markers=0,
        other_markers=0,
        eos_offset=NOT_SEEN,
        stopped=False,
    )


class StreamWalker(Protocol):
    """A streamOptimized marker walk fed the stream chunk by chunk (both backends).

    ``feed(offset, data, n)`` walks ``data[:n]`` (``data`` is ``bytes``, the stream from
    ``offset`` on) and returns 0 once walked; 1 right after a GT or GD marker whose payload
    begins at :attr:`position` (collect what is wanted of it, then go on with
    ``resume(offset, data, n, position - offset)``); 2 once walked, if the chunk began inside
    the payload of the last GT or GD marker (a payload may still be being collected).
    """

    position: int  # the stream offset of the next byte expected
    lost: bool  # a chunk did not start where the previous one ended: the walk stopped there

    def feed(self, offset: int, data: bytes, n: int, /) -> int: ...

    def resume(self, offset: int, data: bytes, n: int, start: int, /) -> int: ...

    def run(self, offset: int, n: int, count: int, /, *chunks: bytes) -> int:
        """Walk the first ``count`` of :data:`STREAM_RUN` chunks (all are passed; those after
        ``count`` are not read) of ``n`` bytes each, one after another from ``offset`` on,
        in one call: 0 once all are walked, -1 on bad parameters, or ``4 * k + s`` when
        chunk ``k`` returned ``s`` (1 or 2) as ``feed`` would (go on with that chunk as
        after ``feed``; the chunks after it are left unwalked)."""

    @property
    def header(self) -> bytes | bytearray:
        """The first 16 bytes of the last marker read (the marker a stopped walk stopped on)."""

    def skip(self, limit: int, /) -> int:
        """On a seekable file: jump over the bytes the walk would skip unread (grain data, a
        payload not collected) up to the next marker or ``limit``, whichever is first, and
        return where the walk then expects its next chunk.  Unchanged when it cannot jump:
        stopped, lost, inside a marker's first sector, or past end-of-stream (trailing bytes
        must all be read)."""

    def state(self) -> StreamResult: ...

    def finish(self, size: int) -> StreamResult:
        """The state judged as if the stream ended at ``size`` (the walker is left as is)."""
