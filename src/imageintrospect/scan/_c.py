"""The C backend: thin calls into ``imageintrospect._scan_c`` (built by cffi from csrc/).

Importing this module raises ImportError when the extension was not built. Arguments arrive
validated by ``imageintrospect.scan``; a -1 from C therefore means the two disagree about a
limit, which is a bug, reported as ValueError. Buffers are passed without copying; cffi
releases the GIL during each call.
"""

from __future__ import annotations

import functools
import importlib
from array import array
from typing import Any

from ._types import (
    NOT_SEEN,
    U64_MAX,
    BlockTableResult,
    Buffer,
    L2Result,
    PointerTableResult,
    Reason,
    StreamResult,
    VhdxBatResult,
)

_ext: Any = importlib.import_module("imageintrospect._scan_c")
ffi: Any = _ext.ffi
lib: Any = _ext.lib
lib.ii_init()


def _table(data: Buffer) -> Any:
    return ffi.from_buffer("uint8_t[]", data)


def _claims(claimed: bytearray | None) -> tuple[Any, int]:
    if claimed is None:
        return ffi.NULL, 0
    return ffi.from_buffer("uint8_t[]", claimed, require_writable=True), len(claimed) * 8


def _check(status: int, name: str) -> None:
    if status != 0:
        raise ValueError(f"{name}: the C scanner rejected its parameters")


def _verdict(v: Any) -> dict[str, Any]:
    bad = v.bad_count != 0
    return {
        "count": v.count,
        "bad_count": v.bad_count,
        "bad_index": v.bad_index if bad else NOT_SEEN,
        "bad_value": v.bad_value,
        "bad_reason": Reason(v.bad_reason) if bad else Reason.OK,  # an enum call costs µs
    }


def _scan_call(
    name: str,
    out_type: str,
    table: Buffer,
    first_index: int,
    *params: Any,
    claimed: bytearray | None,
) -> Any:
    """Call scanner ``name`` on ``table`` with the arguments every scanner takes (the table,
    its length, first_index, ``params``, the claim map) and a fresh ``out_type`` result."""
    out = ffi.new(out_type)
    status = getattr(lib, name)(
        _table(table), len(table), first_index, *params, *_claims(claimed), out
    )
    _check(status, name)
    return out


def _pointer_call(name: str, table: Buffer, entry_size: int, *params: Any) -> PointerTableResult:
    count = len(table) // entry_size
    indexes = array("Q", [0]) * count
    offsets = array("Q", [0]) * count
    out = ffi.new("ii_pointer_result *")
    index_buf = ffi.from_buffer("uint64_t[]", indexes, require_writable=True)
    offset_buf = ffi.from_buffer("uint64_t[]", offsets, require_writable=True)
    try:
        status = getattr(lib, name)(_table(table), len(table), *params, index_buf, offset_buf, out)
    finally:
        # let go of the arrays' buffers so they can be shrunk
        ffi.release(index_buf)
        ffi.release(offset_buf)
    _check(status, name)
    del indexes[out.allocated :]
    del offsets[out.allocated :]
    return PointerTableResult(
        **_verdict(out.v),
        allocated=out.allocated,
        unallocated=out.unallocated,
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
    return _pointer_call(
        "ii_qcow2_l1", table, 8, first_index, cluster_bits, file_size, *_claims(claimed)
    )


def qcow2_refcount_table(
    table: Buffer,
    first_index: int,
    cluster_bits: int,
    file_size: int,
    claimed: bytearray | None,
) -> PointerTableResult:
    return _pointer_call(
        "ii_qcow2_refcount_table",
        table,
        8,
        first_index,
        cluster_bits,
        file_size,
        *_claims(claimed),
    )


def vmdk_gd(
    table: Buffer,
    first_index: int,
    gt_sectors: int,
    file_size: int,
    claimed: bytearray | None,
) -> PointerTableResult:
    return _pointer_call(
        "ii_vmdk_gd", table, 4, first_index, gt_sectors, file_size, *_claims(claimed)
    )


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
    out = _scan_call(
        "ii_qcow2_l2",
        "ii_l2_result *",
        table,
        first_index,
        cluster_bits,
        int(extended_l2),
        version,
        file_size,
        int(has_data_file),
        claimed=claimed,
    )
    return L2Result(
        **_verdict(out.v),
        allocated=out.allocated,
        compressed=out.compressed,
        zero=out.zero,
        unallocated=out.unallocated,
        allocated_bytes=out.allocated_bytes,
        compressed_bytes=out.compressed_bytes,
    )


def _block_call(
    name: str, table: Buffer, first_index: int, *params: Any, claimed: bytearray | None
) -> BlockTableResult:
    out = _scan_call(name, "ii_block_result *", table, first_index, *params, claimed=claimed)
    return BlockTableResult(
        **_verdict(out.v),
        allocated=out.allocated,
        zero=out.zero,
        unallocated=out.unallocated,
        allocated_bytes=out.allocated_bytes,
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
    return _block_call(
        "ii_vmdk_gt",
        table,
        first_index,
        grain_sectors,
        overhead_sectors,
        file_size,
        int(zeroed_grain_ok),
        int(compressed),
        claimed=claimed,
    )


def vhd_bat(
    table: Buffer,
    first_index: int,
    block_size: int,
    data_start: int,
    file_size: int,
    claimed: bytearray | None,
) -> BlockTableResult:
    return _block_call(
        "ii_vhd_bat", table, first_index, block_size, data_start, file_size, claimed=claimed
    )


def vdi_blockmap(
    table: Buffer,
    first_index: int,
    blocks_allocated: int,
    block_size: int,
    data_offset: int,
    file_size: int,
    claimed: bytearray | None,
) -> BlockTableResult:
    return _block_call(
        "ii_vdi_blockmap",
        table,
        first_index,
        blocks_allocated,
        block_size,
        data_offset,
        file_size,
        claimed=claimed,
    )


def vhdx_bat(
    table: Buffer,
    first_index: int,
    block_size: int,
    logical_sector_size: int,
    file_size: int,
    has_parent: bool,
    claimed: bytearray | None,
) -> VhdxBatResult:
    out = _scan_call(
        "ii_vhdx_bat",
        "ii_vhdx_result *",
        table,
        first_index,
        block_size,
        logical_sector_size,
        file_size,
        int(has_parent),
        claimed=claimed,
    )
    return VhdxBatResult(
        **_verdict(out.v),
        not_present=out.not_present,
        undefined=out.undefined,
        zero=out.zero,
        unmapped=out.unmapped,
        fully_present=out.fully_present,
        partially_present=out.partially_present,
        bitmaps_absent=out.bitmaps_absent,
        bitmaps_present=out.bitmaps_present,
        allocated_bytes=out.allocated_bytes,
    )


def vmdk_stream(
    window: Buffer,
    base_offset: int,
    capacity_sectors: int,
    grain_sectors: int,
    final: bool,
    state: StreamResult,
) -> StreamResult:
    s = ffi.new("ii_stream_state *")
    s.v.count = state.count
    s.v.bad_count = state.bad_count
    s.v.bad_index = state.bad_index if state.bad_count else 0
    s.v.bad_value = state.bad_value
    s.v.bad_reason = int(state.bad_reason)
    s.next_offset = state.next_offset
    s.marker_offset = state.marker_offset
    s.grains = state.grains
    s.grain_bytes = state.grain_bytes
    s.gt_markers = state.gt_markers
    s.gd_markers = state.gd_markers
    s.footer_markers = state.footer_markers
    s.other_markers = state.other_markers
    s.eos_offset = U64_MAX if state.eos_offset == NOT_SEEN else state.eos_offset
    s.stopped = int(state.stopped)
    status = lib.ii_vmdk_stream(
        _table(window), len(window), base_offset, capacity_sectors, grain_sectors, int(final), s
    )
    _check(status, "vmdk_stream")
    return _stream_result(s)


def _stream_result(s: Any) -> StreamResult:
    return StreamResult(
        **_verdict(s.v),
        next_offset=s.next_offset,
        marker_offset=s.marker_offset,
        grains=s.grains,
        grain_bytes=s.grain_bytes,
        gt_markers=s.gt_markers,
        gd_markers=s.gd_markers,
        footer_markers=s.footer_markers,
        other_markers=s.other_markers,
        eos_offset=NOT_SEEN if s.eos_offset == U64_MAX else s.eos_offset,
        stopped=bool(s.stopped),
    )


class StreamWalker:
    """The marker walk fed chunk by chunk, each chunk read in place (``ii_stream_walk``)."""

    def __init__(self, start: int, capacity_sectors: int, grain_sectors: int) -> None:
        self._w = ffi.new("ii_stream_walk *")
        _check(
            lib.ii_vmdk_stream_init(self._w, start, capacity_sectors, grain_sectors),
            "vmdk_stream_init",
        )
        # feed(offset, data, n) and resume(offset, data, n, start) -> status: the upload's
        # hot path, so C partials, no Python frame per chunk.  ``data`` must be bytes (cffi
        # hands a bytes object's buffer to C without a copy).
        self.feed = functools.partial(lib.ii_vmdk_stream_feed, self._w)
        self.resume = functools.partial(lib.ii_vmdk_stream_resume, self._w)
        # run(offset, n, d0, ..., d7) -> code: one call for up to RUN chunks of n bytes.
        self.run = functools.partial(lib.ii_vmdk_stream_run, self._w)
        # skip(limit) -> position: once per marker on a seekable file, a C partial too.
        self.skip = functools.partial(lib.ii_vmdk_stream_skip, self._w)

    @property
    def position(self) -> int:
        position: int = self._w.position
        return position

    @property
    def lost(self) -> bool:
        return bool(self._w.lost)

    @property
    def header(self) -> bytes:
        return bytes(ffi.buffer(self._w.header))

    def state(self) -> StreamResult:
        return _stream_result(self._w.s)

    def finish(self, size: int) -> StreamResult:
        out = ffi.new("ii_stream_state *")
        _check(lib.ii_vmdk_stream_end(self._w, size, out), "vmdk_stream_end")
        return _stream_result(out)


def crc32c(data: Buffer, crc: int) -> int:
    result: int = lib.ii_crc32c(crc, _table(data), len(data))
    return result


def crc32c_software(data: Buffer, crc: int) -> int:
    """The table-driven C path, whatever the CPU offers (for tests and benchmarks)."""
    result: int = lib.ii_crc32c_sw(crc, _table(data), len(data))
    return result


def crc32c_hardware() -> bool:
    """Whether ii_crc32c uses the SSE 4.2 instruction on this CPU."""
    return bool(lib.ii_crc32c_hw())
