"""Parsing a sparse extent (``KDMV``): the header path, the stream tail, the embedded descriptor."""

from __future__ import annotations

from ... import findings as F
from ...errors import InvalidImage
from ...frozen import frozen
from ...structs import parse_struct
from ..base import Context, Parsed
from .codes import (
    CREATE_TYPE_MISMATCH,
    DESCRIPTOR_LIMITS,
    DESCRIPTOR_MISSING,
    DESCRIPTOR_OUT_OF_RANGE,
    DESCRIPTOR_TOO_LARGE,
    EXTENT_SIZE_MISMATCH,
    FOOTER_INVALID,
    FOOTER_MISMATCH,
    FOOTER_MISSING,
    TRAILING_DATA,
    show,
    unkept,
)
from .deep import scan_tables
from .descriptor import Descriptor, parse_descriptor
from .header import (
    check_header,
    check_layout,
    is_compressed,
    is_stream_header,
    sector_offset,
    sectors_to_bytes,
    sparse_header,
)
from .judge import build_section, judge_descriptor, judge_qemu_view
from .layout import (
    COMPRESSION_DEFLATE,
    FLAG_MARKERS,
    FLAG_REDUNDANT_GD,
    FOOTER_SEARCH,
    GD_AT_END,
    HEADER_ONLY_DESCRIPTOR_READ,
    HEADER_ONLY_REREAD,
    MARKER_EOS,
    MARKER_FOOTER,
    MAX_DESCRIPTOR,
    METADATA_MARKER,
    METADATA_MARKER_SIZE,
    QEMU_DESCRIPTOR_READ,
    QEMU_MAX_GD_ENTRIES,
    QEMU_MAX_GRAIN_SECTORS,
    QEMU_MAX_GTES_PER_GT,
    QEMU_SPARSE_DESC_OFFSET,
    SECTOR,
    SELF_CONTAINED,
    SPARSE_HEADER_SIZE,
    SPARSE_MAGIC,
)
from .qemu import INT64_MAX, QemuExtents, c_string, qemu_descriptor_view, qemu_view, read_cid_window
from .section import QemuExtent, QemuView, SparseHeader, StreamInfo


def parse_sparse(ctx: Context, head: bytes) -> Parsed:
    if len(head) < SPARSE_HEADER_SIZE:
        raise InvalidImage(f"VMDK sparse header needs 512 bytes, the file has {len(head)}")
    header = sparse_header(head, "VMDK sparse extent header")
    # Before anything near the end is read: on a stream the markers are walked as they pass.
    walk = None
    if ctx.deep and header.flags & FLAG_MARKERS:  # the walker's module loads only for streams
        from .markers import start_marker_walk

        walk = start_marker_walk(ctx, header)
    stream: StreamInfo | None = None
    footer: SparseHeader | None = None
    tail = b""
    if is_stream_header(header):
        stream, footer, tail = _read_stream_tail(ctx, header)
    effective = footer if footer is not None and header.gd_offset == GD_AT_END else header
    header_ok = check_header(ctx, effective)
    if footer is not None:
        _compare_footer(ctx, header, footer)
    layout = check_layout(ctx, effective) if header_ok else None
    deep = scan_tables(ctx, layout, walk, stream)
    window = read_cid_window(ctx)
    desc = _read_embedded_descriptor(ctx, header, window)
    qemu = _qemu_sparse_view(ctx, header, effective, tail, window or b"")
    virtual_size = sectors_to_bytes(effective.capacity) if header_ok else None
    section = build_section(
        "sparse",
        desc,
        grain_size=effective.grain_size * SECTOR,
        compressed=is_compressed(effective),
        capacity=sectors_to_bytes(effective.capacity),
        gd_offset=sector_offset(effective.gd_offset),
        rgd_offset=(
            sector_offset(effective.rgd_offset) if effective.flags & FLAG_REDUNDANT_GD else None
        ),
        descriptor_offset=header.descriptor_offset * SECTOR,
        descriptor_size=header.descriptor_size * SECTOR,
        header=header,
        footer=footer,
        stream=stream,
        qemu=qemu,
        tables=deep.tables,
        markers=deep.markers,
    )
    if desc is not None:
        judge_descriptor(ctx, desc, section, embedded=True)
        _judge_sparse_descriptor(ctx, desc, effective)
    judge_qemu_view(ctx, qemu, desc)
    return Parsed(virtual_size=virtual_size, section=section, allocated_size=deep.allocated_size)


# --- stream tail ---------------------------------------------------------------------------


def _read_stream_tail(
    ctx: Context, header: SparseHeader
) -> tuple[StreamInfo, SparseHeader | None, bytes]:
    """Find VMware's footer marker, footer and end-of-stream marker at the end of a stream."""
    size = ctx.source.size
    start = max(0, size - FOOTER_SEARCH)
    tail = ctx.read_optional(start, size - start, unkept("stream footer", start)) or b""
    gd_at_end = header.gd_offset == GD_AT_END
    if size % SECTOR:
        ctx.findings.add(
            F.TRUNCATED, f"the stream ends inside a sector ({size} bytes is not a multiple of 512)"
        )
    found = _find_footer(tail, start, size)
    if found.footer_offset is None:
        if found.marker_offset is not None:
            ctx.findings.add(
                FOOTER_INVALID,
                f"the footer marker at byte {found.marker_offset} is not followed by a header copy",
            )
        elif gd_at_end and tail:
            ctx.findings.add(
                FOOTER_MISSING,
                "gdOffset says the grain directory is at the end, but the stream ends "
                f"without a footer (size {size} bytes)",
            )
        layout = "vmware" if gd_at_end else "qemu"
        info = StreamInfo(layout, gd_at_end, None, None, 0)
        return info, None, tail
    footer = sparse_header(tail[found.footer_offset - start :], "VMDK stream footer")
    usable: SparseHeader | None = footer
    if footer.gd_offset == GD_AT_END:
        ctx.findings.add(FOOTER_INVALID, "the stream footer also says gdOffset is at the end")
        usable = None
    eos = found.footer_offset + SECTOR if found.zero_sectors else None
    trailing = max(0, size - found.footer_offset - 2 * SECTOR) if eos is not None else 0
    if eos is None:
        ctx.findings.add(
            F.TRUNCATED,
            f"the stream ends right after its footer (byte {found.footer_offset}): no "
            "end-of-stream marker",
        )
    if trailing:
        ctx.findings.add(
            TRAILING_DATA, f"{trailing} zero bytes follow the end-of-stream marker at byte {eos}"
        )
    info = StreamInfo("vmware", gd_at_end, found.footer_offset, eos, trailing)
    return info, usable, tail


@frozen
class _FooterSearch:
    footer_offset: int | None
    marker_offset: int | None
    zero_sectors: int


def _find_footer(tail: bytes, start: int, size: int) -> _FooterSearch:
    """Walk back over zero sectors; the last non-zero sector should be the footer."""
    zero = bytes(SECTOR)
    pos = (size // SECTOR) * SECTOR - SECTOR
    zero_sectors = 0
    while pos >= start and tail[pos - start : pos - start + SECTOR] == zero:
        pos -= SECTOR
        zero_sectors += 1
    if pos < start:
        return _FooterSearch(None, None, zero_sectors)
    marker_at = pos - SECTOR
    is_marker = marker_at >= start and _is_footer_marker(tail[marker_at - start : pos - start])
    if tail[pos - start : pos - start + 4] == SPARSE_MAGIC and is_marker:
        return _FooterSearch(pos, marker_at, zero_sectors)
    return _FooterSearch(None, marker_at if is_marker else None, zero_sectors)


def _is_footer_marker(sector: bytes) -> bool:
    if len(sector) < METADATA_MARKER_SIZE:
        return False
    marker = parse_struct(METADATA_MARKER, sector[:METADATA_MARKER_SIZE], "metadata marker")
    return bool(marker.size == 0 and marker.type == MARKER_FOOTER)


_FOOTER_FIELDS = (
    "version",
    "flags",
    "capacity",
    "grain_size",
    "num_gtes_per_gt",
    "compress_algorithm",
    "descriptor_offset",
    "descriptor_size",
)


def _compare_footer(ctx: Context, header: SparseHeader, footer: SparseHeader) -> None:
    differences = [
        f"{name} {getattr(header, name)} vs {getattr(footer, name)}"
        for name in _FOOTER_FIELDS
        if getattr(header, name) != getattr(footer, name)
    ]
    if header.gd_offset != GD_AT_END and header.gd_offset != footer.gd_offset:
        differences.append(f"gd_offset {header.gd_offset} vs {footer.gd_offset}")
    if differences:
        ctx.findings.add(FOOTER_MISMATCH, "header vs footer: " + ", ".join(differences))


# --- the embedded descriptor ---------------------------------------------------------------


def _read_embedded_descriptor(
    ctx: Context, header: SparseHeader, window: bytes | None
) -> Descriptor | None:
    offset, length = header.descriptor_offset, header.descriptor_size
    size = ctx.source.size
    if offset == 0 and length == 0:
        ctx.findings.add(DESCRIPTOR_MISSING, "the sparse header has no embedded descriptor")
        return None
    if length * SECTOR > MAX_DESCRIPTOR:
        ctx.findings.add(
            DESCRIPTOR_TOO_LARGE,
            f"the header's descriptor size is {length} sectors ({length * SECTOR} bytes); not read",
        )
        return None
    if offset == 0 or (offset + length) * SECTOR > size:
        ctx.findings.add(
            DESCRIPTOR_OUT_OF_RANGE,
            f"the descriptor ({length} sectors at sector {offset}) is not inside the file "
            f"({size} bytes, header at sector 0)",
        )
        return None
    if not ctx.deep and length * SECTOR > HEADER_ONLY_DESCRIPTOR_READ:
        ctx.findings.add(
            DESCRIPTOR_LIMITS,
            f"header-only mode: the {length * SECTOR}-byte descriptor is over the "
            f"{HEADER_ONLY_DESCRIPTOR_READ}-byte budget and was not read",
        )
        return None
    start, end = offset * SECTOR - QEMU_SPARSE_DESC_OFFSET, (offset + length) * SECTOR
    if window is not None and start >= 0 and end - QEMU_SPARSE_DESC_OFFSET <= len(window):
        raw: bytes | None = window[start : end - QEMU_SPARSE_DESC_OFFSET]  # already read
    else:
        at = offset * SECTOR
        raw = ctx.read_optional(at, length * SECTOR, unkept("embedded descriptor", at))
    if raw is None:
        return None
    text = c_string(raw)
    if not text.strip():
        ctx.findings.add(DESCRIPTOR_MISSING, f"the descriptor area at sector {offset} is empty")
        return None
    return parse_descriptor(text)


def _judge_sparse_descriptor(ctx: Context, desc: Descriptor, header: SparseHeader) -> None:
    """A monolithic sparse file: one SPARSE extent naming the file itself, and nothing else."""
    create_type = desc.get("createType")
    lowered = (create_type or "").lower()
    if lowered in SELF_CONTAINED:
        streamed = lowered == "streamoptimized"
        if streamed != is_compressed(header):
            ctx.findings.add(
                CREATE_TYPE_MISMATCH,
                f"createType {show(create_type)} but the header "
                f"{'has no' if streamed else 'has'} compressed grains",
            )
    if desc.extent_count and desc.extent_sectors != header.capacity:
        ctx.findings.add(
            EXTENT_SIZE_MISMATCH,
            f"the extents add up to {desc.extent_sectors} sectors, the header says "
            f"{header.capacity}",
        )


def _qemu_sparse_view(
    ctx: Context,
    header: SparseHeader,
    effective: SparseHeader,
    tail: bytes,
    window: bytes,
) -> QemuView:
    """qemu's ``vmdk_open_vmdk4``: header checks, then CID and parent from offset 512."""
    size = ctx.source.size
    if header.capacity == 0 and header.descriptor_offset:
        # qemu reads the embedded descriptor as a descriptor file, extents and all.
        limit = QEMU_DESCRIPTOR_READ if ctx.deep else HEADER_ONLY_REREAD
        at = header.descriptor_offset * SECTOR
        buf = ctx.read_optional(at, min(size, limit), unkept("descriptor", at))
        return qemu_descriptor_view(buf or b"", window)
    create_type = (
        "streamOptimized"
        if effective.compress_algorithm == COMPRESSION_DEFLATE
        else "monolithicSparse"
    )
    error = _qemu_sparse_error(header, effective, tail, size)
    extent = QemuExtent(
        file=None,
        type="",
        sectors=effective.capacity,
        flat=False,
        compressed=effective.compress_algorithm == COMPRESSION_DEFLATE,
        cluster_size=effective.grain_size * SECTOR,
    )
    scanned = QemuExtents([extent], 1, effective.capacity)
    return qemu_view(create_type, scanned, window, error)


def _qemu_sparse_error(
    header: SparseHeader, effective: SparseHeader, tail: bytes, size: int
) -> str | None:
    if header.gd_offset == GD_AT_END and not _qemu_footer_ok(tail, size):
        return "Invalid footer (qemu reads it exactly 1536 bytes before the end)"
    h = effective
    entry_sectors = (h.num_gtes_per_gt * h.grain_size) & 0xFFFF_FFFF
    checks = (
        (h.version > 3, f"Unsupported VMDK version {h.version}"),
        (h.num_gtes_per_gt > QEMU_MAX_GTES_PER_GT, "L2 table size too big"),
        (entry_sectors == 0, "L1 entry size is invalid"),
        (-(-size // SECTOR) < h.overhead, "File truncated"),
        (h.grain_size > QEMU_MAX_GRAIN_SECTORS, "Invalid granularity"),
        (h.capacity > INT64_MAX // SECTOR, "capacity too large"),
    )
    for failed, message in checks:
        if failed:
            return message
    l1_size = ((h.capacity + entry_sectors - 1) % (1 << 64) // entry_sectors) & 0xFFFF_FFFF
    if l1_size > QEMU_MAX_GD_ENTRIES:
        return "L1 size too big"
    return None


def _qemu_footer_ok(tail: bytes, size: int) -> bool:
    """qemu's footer test: marker, ``KDMV`` and end-of-stream exactly at EOF − 1536."""
    at = -(-size // SECTOR) * SECTOR - 3 * SECTOR
    start = size - len(tail)
    if at < start:
        return False
    block = tail[at - start : at - start + 3 * SECTOR].ljust(3 * SECTOR, b"\0")
    marker = parse_struct(METADATA_MARKER, block[:16], "footer marker")
    eos = parse_struct(METADATA_MARKER, block[1024:1040], "end-of-stream marker")
    return bool(
        block[512:516] == SPARSE_MAGIC
        and marker.size == 0
        and marker.type == MARKER_FOOTER
        and eos.value == 0
        and eos.size == 0
        and eos.type == MARKER_EOS
    )
