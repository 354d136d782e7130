"""Table scanners: check every entry of an image's allocation tables, fast.

Each scanner takes a table the caller has read (bytes, bytearray or memoryview) plus the
facts it is checked against, and returns a frozen result: counters, and the first bad entry
(``bad_index``, ``bad_value``, ``bad_reason``; ``bad_index == -1`` when all are good).
Where overlaps matter, ``claimed`` is a bitmap of the file (see :func:`claim_map`): the
caller marks its metadata first, the scanner marks what the table points to and reports
anything claimed twice. Rules and units per scanner: docs/backend.md.

Two backends give identical results: C (``imageintrospect._scan_c``, built by cffi when a
compiler is there) and a pure-Python twin. ``IMAGEINTROSPECT_BACKEND=c|python`` forces one;
by default C is used when it imports. :data:`backend` says which one is in use.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from types import ModuleType

from ._types import (
    INDEX_LIMIT,
    NOT_SEEN,
    OFFSET_LIMIT,
    SIZE32_LIMIT,
    STREAM_RUN,
    U64_MAX,
    BlockTableResult,
    Buffer,
    L2Result,
    PointerTableResult,
    Reason,
    StreamResult,
    StreamWalker,
    Verdict,
    VhdxBatResult,
    stream_start,
)

BACKEND_ENV = "IMAGEINTROSPECT_BACKEND"
SECTOR = 512
MIB = 1 << 20


class SlowBackendWarning(RuntimeWarning):
    """The C scanners could not be imported and nobody asked for the pure-Python twin: deep
    walks run on the twin, about 15 times slower. Issued once per process, on the first deep
    walk; ``IMAGEINTROSPECT_BACKEND=python`` (a deliberate choice) silences it."""


def _select_backend() -> tuple[str, ModuleType, str | None]:
    """The backend's name, its module, and why C is not live when nobody chose the twin."""
    wanted = os.environ.get(BACKEND_ENV, "").strip().lower()
    if wanted not in ("", "c", "python"):
        raise ImportError(f"{BACKEND_ENV}={wanted!r}: expected 'c' or 'python'")
    # the twin is imported only when it is the backend
    if wanted == "python":
        from . import _python

        return "python", _python, None
    try:
        from . import _c
    except ImportError as exc:
        if wanted == "c":
            raise ImportError(
                f"{BACKEND_ENV}=c but the C scanners (imageintrospect._scan_c) are not "
                f"available: {exc}. Reinstall with a C compiler and cffi present, "
                f"or unset {BACKEND_ENV} to use the pure-Python backend."
            ) from exc
        from . import _python

        return "python", _python, f"the C scanners did not import ({exc})"
    return "c", _c, None


#: "c" or "python": the backend every function below dispatches to.
#: ``fallback_reason`` says why C is not live when the twin runs by default (else None).
backend, _impl, fallback_reason = _select_backend()
_fallback_warned = False


def describe_backend() -> str:
    """One line for people: ``c``, ``python (chosen by IMAGEINTROSPECT_BACKEND)`` or
    ``python: the C scanners did not import (...)``."""
    if fallback_reason is not None:
        return f"python: {fallback_reason}"
    if backend == "python":
        return f"python (chosen by {BACKEND_ENV})"
    return backend


def warn_if_slow(stacklevel: int = 2) -> None:
    """Issue :class:`SlowBackendWarning` once, if the twin runs only because C is missing."""
    global _fallback_warned
    if fallback_reason is None or _fallback_warned:
        return
    _fallback_warned = True
    warnings.warn(
        f"imageintrospect runs its deep checks on the pure-Python backend, about 15x slower: "
        f"{fallback_reason}. Reinstall with a C compiler and Python's headers "
        f"(docs/backend.md), or set {BACKEND_ENV}=python to choose the twin and silence this.",
        SlowBackendWarning,
        stacklevel=stacklevel + 1,
    )


# ---------------------------------------------------------------------------------------
# argument checks (shared by both backends, so they see the same valid inputs)


def _view(data: Buffer, entry_size: int, what: str) -> memoryview:
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    if len(view) % entry_size:
        raise ValueError(f"{what}: {len(view)} bytes is not a multiple of {entry_size}")
    return view


def _in_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name}={value} outside {low}..{high}")


def _common(first_index: int, file_size: int) -> None:
    _in_range("first_index", first_index, 0, INDEX_LIMIT)
    _in_range("file_size", file_size, 0, OFFSET_LIMIT)


def _claims(claimed: bytearray | None, units_needed: int, unit: str) -> bytearray | None:
    if claimed is None:
        return None
    if not isinstance(claimed, bytearray):
        raise TypeError("claimed must be a bytearray (it is written to)")
    if len(claimed) * 8 < units_needed:
        raise ValueError(
            f"claimed has {len(claimed) * 8} bits, the file needs {units_needed} (one per {unit})"
        )
    return claimed


def _units(size: int, unit: int) -> int:
    return -(-size // unit)


def _table_args(
    table: Buffer,
    entry_size: int,
    what: str,
    first_index: int,
    file_size: int,
    claimed: bytearray | None,
    unit: int,
    unit_name: str,
) -> tuple[memoryview, bytearray | None]:
    """The checks every scanner whose ``claimed`` has one bit per ``unit`` bytes of the file
    shares, after its own: the table's view and the claim map, both checked."""
    _common(first_index, file_size)
    view = _view(table, entry_size, what)
    return view, _claims(claimed, _units(file_size, unit), unit_name)


def claim_map(file_size: int, unit: int) -> bytearray:
    """An empty claim bitmap for a file of ``file_size`` bytes, one bit per ``unit`` bytes
    (the cluster for qcow2, 512 for VMDK and VHD, 1 MiB for VHDX)."""
    return bytearray(_units(_units(file_size, unit), 8))


def mark_claimed(claimed: bytearray, offset: int, length: int, unit: int) -> bool:
    """Mark the units covering ``[offset, offset + length)`` (units past the end of the map
    are ignored); False if any was already marked (they are marked all the same). For the
    caller's metadata, before the scans."""
    first, end = offset // unit, min(_units(offset + length, unit), len(claimed) * 8)
    if end <= first:
        return True
    low, high = first >> 3, (end + 7) >> 3
    window = int.from_bytes(claimed[low:high], "little")
    mask = ((1 << (end - first)) - 1) << (first - (low << 3))
    claimed[low:high] = (window | mask).to_bytes(high - low, "little")
    return not window & mask


# ---------------------------------------------------------------------------------------
# qcow2


def _qcow2_args(
    table: Buffer,
    entry_size: int,
    what: str,
    cluster_bits: int,
    first_index: int,
    file_size: int,
    claimed: bytearray | None,
) -> tuple[memoryview, bytearray | None]:
    _in_range("cluster_bits", cluster_bits, 9, 21)
    return _table_args(
        table, entry_size, what, first_index, file_size, claimed, 1 << cluster_bits, "cluster"
    )


def qcow2_l1(
    table: Buffer,
    *,
    cluster_bits: int,
    file_size: int,
    claimed: bytearray | None = None,
    first_index: int = 0,
) -> PointerTableResult:
    """L1 entries (u64 BE) → the L2 tables they point to.

    Checks: reserved bits 0-8 and 56-62 clear, the offset (bits 9-55) cluster-aligned and the
    whole L2 table inside the file, and (with ``claimed``, one bit per cluster) not claimed
    before. Bit 63 is not checked. Offset 0 is an unallocated entry.
    """
    view, claims = _qcow2_args(table, 8, "L1 table", cluster_bits, first_index, file_size, claimed)
    result: PointerTableResult = _impl.qcow2_l1(view, first_index, cluster_bits, file_size, claims)
    return result


def qcow2_refcount_table(
    table: Buffer,
    *,
    cluster_bits: int,
    file_size: int,
    claimed: bytearray | None = None,
    first_index: int = 0,
) -> PointerTableResult:
    """Refcount table entries (u64 BE) → refcount blocks: reserved bits 0-8 clear, the
    offset (bits 9-63) cluster-aligned, the block inside the file, not claimed before."""
    view, claims = _qcow2_args(
        table, 8, "refcount table", cluster_bits, first_index, file_size, claimed
    )
    result: PointerTableResult = _impl.qcow2_refcount_table(
        view, first_index, cluster_bits, file_size, claims
    )
    return result


def qcow2_l2(
    table: Buffer,
    *,
    cluster_bits: int,
    file_size: int,
    version: int = 3,
    extended_l2: bool = False,
    has_data_file: bool = False,
    claimed: bytearray | None = None,
    first_index: int = 0,
) -> L2Result:
    """One L2 table (8-byte entries, or 16 with ``extended_l2``): classify every cluster and
    check its descriptor. With ``claimed`` (one bit per cluster) each data cluster is marked
    and a cluster claimed twice reported; compressed clusters share host clusters by design
    and are not marked. With ``has_data_file`` data clusters live in another file: their
    offsets are not checked against ``file_size`` nor claimed."""
    _in_range("version", version, 2, 3)
    entry_size = 16 if extended_l2 else 8
    view, claims = _qcow2_args(
        table, entry_size, "L2 table", cluster_bits, first_index, file_size, claimed
    )
    result: L2Result = _impl.qcow2_l2(
        view,
        first_index,
        cluster_bits,
        bool(extended_l2),
        version,
        file_size,
        bool(has_data_file),
        claims,
    )
    return result


# ---------------------------------------------------------------------------------------
# VMDK


def vmdk_gd(
    table: Buffer,
    *,
    gt_sectors: int,
    file_size: int,
    claimed: bytearray | None = None,
    first_index: int = 0,
) -> PointerTableResult:
    """Grain directory (u32 LE sector numbers) → grain tables of ``gt_sectors`` sectors
    (numGTEsPerGT * 4 / 512), each inside the file and (``claimed``: one bit per sector) not
    claimed before. 0 is an unallocated entry. ``offsets`` are in bytes."""
    _in_range("gt_sectors", gt_sectors, 1, SIZE32_LIMIT)
    view, claims = _table_args(
        table, 4, "grain directory", first_index, file_size, claimed, SECTOR, "sector"
    )
    result: PointerTableResult = _impl.vmdk_gd(view, first_index, gt_sectors, file_size, claims)
    return result


def vmdk_gt(
    table: Buffer,
    *,
    grain_sectors: int,
    overhead_sectors: int,
    file_size: int,
    zeroed_grain_ok: bool = False,
    compressed: bool = False,
    claimed: bytearray | None = None,
    first_index: int = 0,
) -> BlockTableResult:
    """Grain table (u32 LE sector numbers): 0 unallocated, 1 a zeroed grain when the
    header's zeroed-grain flag is set; any other grain starts at or after the metadata
    (``overhead_sectors``) and lies inside the file. With ``compressed`` (streamOptimized)
    an entry points to a grain marker whose length is unknown: only its first sector is
    checked and claimed. ``claimed``: one bit per sector."""
    _in_range("grain_sectors", grain_sectors, 1, SIZE32_LIMIT)
    _in_range("overhead_sectors", overhead_sectors, 0, U64_MAX)
    view, claims = _table_args(
        table, 4, "grain table", first_index, file_size, claimed, SECTOR, "sector"
    )
    result: BlockTableResult = _impl.vmdk_gt(
        view,
        first_index,
        grain_sectors,
        overhead_sectors,
        file_size,
        bool(zeroed_grain_ok),
        bool(compressed),
        claims,
    )
    return result


def _stream_args(where: str, offset: int, capacity_sectors: int, grain_sectors: int) -> None:
    """A walk's geometry and the sector-aligned stream offset it starts (or a window) at."""
    _in_range(where, offset, 0, OFFSET_LIMIT)
    _in_range("capacity_sectors", capacity_sectors, 0, U64_MAX)
    _in_range("grain_sectors", grain_sectors, 1, SIZE32_LIMIT)
    if offset % SECTOR:
        raise ValueError(f"{where}={offset} is not sector-aligned")


def vmdk_stream(
    window: Buffer,
    *,
    base_offset: int,
    capacity_sectors: int,
    grain_sectors: int,
    state: StreamResult | None = None,
    final: bool = False,
) -> StreamResult:
    """Walk the streamOptimized markers in ``window``, the bytes of the stream from
    ``base_offset`` (sector-aligned) on.

    Without ``state`` the first marker is read at ``base_offset`` (the overhead, after the
    header and descriptor). To walk a stream in bounded windows pass the previous result as
    ``state`` and start the next window at or before ``state.next_offset``; set ``final``
    on the window that ends the stream, so a marker running past its end is reported.
    """
    _stream_args("base_offset", base_offset, capacity_sectors, grain_sectors)
    view = _view(window, 1, "stream window")
    _in_range("window end", base_offset + len(view), 0, OFFSET_LIMIT)
    current = state if state is not None else stream_start(base_offset)
    if current.next_offset % SECTOR:
        raise ValueError(f"the walk stands at {current.next_offset}, not sector-aligned")
    if not base_offset <= current.next_offset <= OFFSET_LIMIT:
        raise ValueError(
            f"the window starts at {base_offset}, after where the walk stands "
            f"({current.next_offset})"
        )
    result: StreamResult = _impl.vmdk_stream(
        view, base_offset, capacity_sectors, grain_sectors, bool(final), current
    )
    return result


def vmdk_stream_walker(*, start: int, capacity_sectors: int, grain_sectors: int) -> StreamWalker:
    """The walk of :func:`vmdk_stream` fed chunk by chunk, each chunk read where it lies (no
    window to gather into): the upload path.  Feeding any split of the stream from
    ``start`` and then ``finish(size)`` gives what ``vmdk_stream`` gives on the whole with
    ``final=True``; see :class:`StreamWalker` for the calls."""
    _stream_args("start", start, capacity_sectors, grain_sectors)
    walker: StreamWalker = _impl.StreamWalker(start, capacity_sectors, grain_sectors)
    return walker


def walk_vmdk_stream(
    read: Callable[[int, int], bytes],
    *,
    start: int,
    stream_size: int,
    capacity_sectors: int,
    grain_sectors: int,
    window: int = 4 * MIB,
) -> StreamResult:
    """Walk a whole stream of ``stream_size`` bytes from ``start`` in windows of at most
    ``window`` bytes, ``read(offset, length)`` giving the bytes (a short read ends the
    stream there). Memory stays bounded by ``window`` whatever the stream holds."""
    _in_range("window", window, SECTOR, 1 << 30)
    _in_range("stream_size", stream_size, 0, OFFSET_LIMIT)
    state = stream_start(start)
    last_sector = stream_size - stream_size % SECTOR
    while True:
        # at or before where the walk stands, and sector-aligned even past the end
        base = min(state.next_offset, last_sector)
        length = min(window, stream_size - base)
        data = read(base, length)
        final = base + length == stream_size or len(data) < length
        state = vmdk_stream(
            data,
            base_offset=base,
            capacity_sectors=capacity_sectors,
            grain_sectors=grain_sectors,
            state=state,
            final=final,
        )
        if final or state.stopped:
            return state


# ---------------------------------------------------------------------------------------
# VHD, VHDX, VDI


def vhd_bat(
    table: Buffer,
    *,
    block_size: int,
    data_start: int,
    file_size: int,
    claimed: bytearray | None = None,
    first_index: int = 0,
) -> BlockTableResult:
    """Dynamic/differencing VHD BAT (u32 BE sector numbers, 0xFFFFFFFF unallocated). Each
    block (sector bitmap rounded up to 512 bytes, then ``block_size`` bytes of data) starts
    at or after ``data_start`` and ends before the footer (the last 512 bytes of the file).
    ``claimed``: one bit per sector."""
    _in_range("block_size", block_size, SECTOR, SIZE32_LIMIT)
    if block_size % SECTOR:
        raise ValueError(f"block_size={block_size} is not a multiple of {SECTOR}")
    _in_range("data_start", data_start, 0, OFFSET_LIMIT)
    view, claims = _table_args(table, 4, "BAT", first_index, file_size, claimed, SECTOR, "sector")
    result: BlockTableResult = _impl.vhd_bat(
        view, first_index, block_size, data_start, file_size, claims
    )
    return result


def vhdx_chunk_ratio(block_size: int, logical_sector_size: int) -> int:
    """Payload entries between two sector-bitmap entries of a VHDX BAT."""
    return ((1 << 23) * logical_sector_size) // block_size


def vhdx_bat(
    table: Buffer,
    *,
    block_size: int,
    logical_sector_size: int,
    file_size: int,
    has_parent: bool = False,
    claimed: bytearray | None = None,
    first_index: int = 0,
) -> VhdxBatResult:
    """VHDX BAT (u64 LE): every ``chunk_ratio + 1``-th entry (counting from the whole
    table's start, hence ``first_index`` when scanning a part) is a sector-bitmap entry.
    Bits 3-19 must be clear; payload states 4 and 5 are undefined, 7 (partially present)
    needs a parent; bitmap entries are 0 or 6. Present blocks (offset in MiB, bits 20-63)
    lie after the 1 MiB header section and inside the file. ``claimed``: one bit per MiB."""
    if block_size < MIB or block_size > 256 * MIB or block_size & (block_size - 1):
        raise ValueError(f"block_size={block_size} is not a power of two in 1..256 MiB")
    if logical_sector_size not in (512, 4096):
        raise ValueError(f"logical_sector_size={logical_sector_size} is not 512 or 4096")
    view, claims = _table_args(table, 8, "BAT", first_index, file_size, claimed, MIB, "MiB")
    result: VhdxBatResult = _impl.vhdx_bat(
        view, first_index, block_size, logical_sector_size, file_size, bool(has_parent), claims
    )
    return result


def vdi_blockmap(
    table: Buffer,
    *,
    blocks_allocated: int,
    block_size: int,
    data_offset: int,
    file_size: int,
    claimed: bytearray | None = None,
    first_index: int = 0,
) -> BlockTableResult:
    """VDI block map (u32 LE): 0xFFFFFFFF free, 0xFFFFFFFE zero, otherwise the index of a
    data block, below ``blocks_allocated``, its block inside the file, each index used once.
    ``claimed`` (one bit per block index) carries the indexes seen across calls; without it a
    fresh one is used, so duplicates are found within this table."""
    _in_range("blocks_allocated", blocks_allocated, 0, SIZE32_LIMIT)
    # at least a sector: the fresh map below is then at most file_size / 4096 bytes
    _in_range("block_size", block_size, SECTOR, SIZE32_LIMIT)
    _in_range("data_offset", data_offset, 0, OFFSET_LIMIT)
    _common(first_index, file_size)
    view = _view(table, 4, "block map")
    room = file_size - data_offset if file_size > data_offset else 0
    needed = min(blocks_allocated, room // block_size)
    claims = _claims(claimed, needed, "block") if claimed is not None else claim_map(needed, 1)
    result: BlockTableResult = _impl.vdi_blockmap(
        view, first_index, blocks_allocated, block_size, data_offset, file_size, claims
    )
    return result


# ---------------------------------------------------------------------------------------
# CRC-32C


def crc32c(data: Buffer, crc: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data``, chained like zlib.crc32:
    ``crc32c(b, crc32c(a)) == crc32c(a + b)``."""
    _in_range("crc", crc, 0, 0xFFFFFFFF)
    result: int = _impl.crc32c(_view(data, 1, "data"), crc)
    return result


__all__ = [
    "BACKEND_ENV",
    "NOT_SEEN",
    "STREAM_RUN",
    "BlockTableResult",
    "L2Result",
    "PointerTableResult",
    "Reason",
    "StreamResult",
    "StreamWalker",
    "Verdict",
    "VhdxBatResult",
    "backend",
    "claim_map",
    "crc32c",
    "mark_claimed",
    "qcow2_l1",
    "qcow2_l2",
    "qcow2_refcount_table",
    "stream_start",
    "vdi_blockmap",
    "vhd_bat",
    "vhdx_bat",
    "vhdx_chunk_ratio",
    "vmdk_gd",
    "vmdk_gt",
    "vmdk_stream",
    "vmdk_stream_walker",
    "walk_vmdk_stream",
]
