"""VDI (VirtualBox Disk Image): the header, where its block map and data lie, findings.

Layout: VirtualBox's ``VDICore.h`` (header version 1.1) and qemu's ``block/vdi.c``.  All
integers are little-endian.  The file starts with a 64-byte text banner, the signature
``0xBEDA107F`` at 0x40 and the version at 0x44; the version-1 header follows at 0x48.  The
block map (one u32 per block: the index of the block in the data area, 0xFFFFFFFF free,
0xFFFFFFFE zero) starts at ``block_map_offset``; blocks start at ``data_offset``.

Header-only introspection reads the first 512 bytes.  With ``deep`` the block map is walked
(every entry checked, ``allocated_size`` counted): see :func:`_allocated_size`.
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from typing import Any, NamedTuple

from .. import _layouts, scan
from .. import findings as F
from ..errors import InvalidImage
from ..frozen import frozen
from ..structs import cstring, parse_struct
from . import blocktables
from .base import Context, FormatSpec, Parsed, Probe, Section
from .blocktables import TableSummary

NAME = "vdi"
SIGNATURE = 0xBEDA107F
SIGNATURE_OFFSET = 0x40
VERSION_1_1 = 0x00010001

# --- schemas -------------------------------------------------------------------------------

# The layouts, derived from the construct schemas in formats/schemas/vdi.py by
# scripts/gen_layouts.py (edit the schema, then run it): no construct on this path.
PREHEADER = _layouts.VDI_PREHEADER
GEOMETRY = _layouts.VDI_GEOMETRY
HEADER_V1 = _layouts.VDI_HEADER_V1
PREHEADER_SIZE = PREHEADER.size


HEADER_READ = 0x200  # one sector: what qemu reads and rewrites
MIN_HEADER_SIZE = 0x180  # sizeof(VDIHEADER1); VirtualBox refuses less
LCHS_HEADER_SIZE = HEADER_V1.size  # VDIHEADER1PLUS, with the LCHS geometry

IMAGE_TYPES = {1: "dynamic", 2: "fixed", 3: "undo", 4: "differencing"}
SECTOR_SIZE = 512
QEMU_BLOCK_SIZE = 1024 * 1024  # the only block size qemu opens
# qemu 7.2's VDI_BLOCKS_IN_IMAGE_MAX (its block map must fit INT_MAX bytes, sector-aligned)
# and VDI_DISK_SIZE_MAX; both taken from qemu-img's own error messages.
MAX_BLOCKS = (0x7FFFFFFF & ~511) // 4
MAX_DISK_SIZE = MAX_BLOCKS * QEMU_BLOCK_SIZE
BLOCK_MAP_ENTRY = 4

# --- findings ------------------------------------------------------------------------------

DIFFERENCING = F.define(
    "vdi-differencing",
    "unsafe",
    "vdi",
    "A differencing or undo VDI: its content depends on a parent image named by UUID.",
)
BAD_HEADER = F.define(
    "vdi-bad-header",
    "unsafe",
    "vdi",
    "A VDI header field is impossible or refused by qemu/VirtualBox (offsets, sizes, counts).",
)
BAD_VERSION = F.define(
    "vdi-unsupported-version",
    "unsafe",
    "vdi",
    "The VDI header version is not 1.1, the only one qemu opens.",
)
BLOCK_SIZE = F.define(
    "vdi-unsupported-block-size",
    "warning",
    "vdi",
    "The VDI block size is not 1 MiB: VirtualBox opens it, qemu-img refuses it.",
)

BLOCK_INDEX_OUT_OF_RANGE = F.define(
    "vdi-block-index-out-of-range",
    "unsafe",
    "vdi",
    "A block map entry names a data block at or beyond the header's blocks_allocated: the "
    "next block the image allocates would be shared with it.",
)
BLOCK_PAST_EOF = F.define(
    "vdi-block-past-eof",
    "unsafe",
    "vdi",
    "A block map entry names a data block that lies (partly) past the end of the file.",
)
BLOCK_USED_TWICE = F.define(
    "vdi-block-used-twice",
    "unsafe",
    "vdi",
    "Two block map entries name the same data block: the same file bytes serve two places "
    "of the disk.",
)
ALLOCATED_MISMATCH = F.define(
    "vdi-blocks-allocated-mismatch",
    "warning",
    "vdi",
    "The block map uses fewer data blocks than the header's blocks_allocated says (qemu-img "
    "check reports it as corruption; the unused blocks only waste space).",
)
BLOCKS_UNCHECKED = F.define(
    "vdi-blocks-unchecked",
    "info",
    "vdi",
    "The file holds too many data blocks for the map that finds blocks used twice (over 2^28): "
    "the block map was not walked.",
)

# --- the section ---------------------------------------------------------------------------


@frozen
class VdiGeometry(Section):
    cylinders: int
    heads: int
    sectors: int
    sector_size: int


@frozen
class VdiSection(Section):
    image_type: str
    version: str
    uuid: str
    parent_uuid: str | None
    block_size: int
    blocks_allocated: int
    blocks: int
    header_size: int
    block_map_offset: int
    data_offset: int
    disk_size: int
    block_extra: int
    image_flags: int
    geometry: VdiGeometry
    lchs_geometry: VdiGeometry | None
    comment: str
    modify_uuid: str
    parent_modify_uuid: str | None
    banner: str
    #: What the deep walk of the block map counted (None without ``deep``).
    allocation: TableSummary | None = None


class BlockMapLayout(NamedTuple):
    """Where a VDI keeps its block map and data: what the deep walk needs."""

    offset: int
    entries: int
    data_offset: int
    block_size: int
    block_extra: int
    blocks_allocated: int


# --- probe ---------------------------------------------------------------------------------


def probe(probe: Probe) -> bool:
    # Like qemu and VirtualBox: only the signature at 0x40 counts, not the banner text.
    field = probe.head[SIGNATURE_OFFSET : SIGNATURE_OFFSET + 4]
    return len(field) == 4 and int.from_bytes(field, "little") == SIGNATURE


# --- parse ---------------------------------------------------------------------------------


def parse(ctx: Context) -> Parsed:
    head = ctx.source.read_at(0, HEADER_READ)
    if len(head) < PREHEADER_SIZE + MIN_HEADER_SIZE:
        ctx.findings.add(F.TRUNCATED, f"VDI header cut short: {len(head)} of {HEADER_READ} bytes")
        return Parsed(virtual_size=None, section=None)
    pre = parse_struct(PREHEADER, head[:PREHEADER_SIZE], "VDI pre-header")
    version = f"{pre.version >> 16}.{pre.version & 0xFFFF}"
    if pre.version != VERSION_1_1:
        ctx.findings.add(BAD_VERSION, f"VDI header version {version}")
        if pre.version >> 16 != 1:  # another header layout altogether
            ctx.findings.add(F.QEMU_CANNOT_OPEN, f"unsupported VDI image (version {version})")
            return Parsed(virtual_size=None, section=None)
    hdr = parse_struct(
        HEADER_V1, head[PREHEADER_SIZE:].ljust(LCHS_HEADER_SIZE, b"\0"), "VDI header"
    )
    section = _section(pre, hdr, version)
    refusal = _qemu_refusal(pre.version, hdr)
    if refusal is not None:
        ctx.findings.add(F.QEMU_CANNOT_OPEN, refusal)
    _check_header(ctx, section)
    _check_in_file(ctx, section)
    _judge_parent(ctx, section)
    virtual_size = _qemu_virtual_size(section.disk_size)
    allocated_size = None
    if ctx.deep:
        allocated_size, summary = _allocated_size(ctx, block_map_layout(section), virtual_size)
        section = dataclasses.replace(section, allocation=summary)
    return Parsed(virtual_size=virtual_size, section=section, allocated_size=allocated_size)


def _qemu_refusal(version: int, hdr: Any) -> str | None:
    """qemu's ``vdi_open`` checks, in its order and words: the first it fails, or None."""
    if hdr.disk_size > MAX_DISK_SIZE:
        return (
            f"Unsupported VDI image size (size is {hdr.disk_size:#x}, max supported is "
            f"{MAX_DISK_SIZE:#x})"
        )
    checks = (
        (version != VERSION_1_1, f"version {version >> 16}.{version & 0xFFFF}"),
        (
            hdr.block_map_offset % SECTOR_SIZE,
            f"unaligned block map offset {hdr.block_map_offset:#x}",
        ),
        (hdr.data_offset % SECTOR_SIZE, f"unaligned data offset {hdr.data_offset:#x}"),
        (
            hdr.legacy_geometry.sector_size != SECTOR_SIZE,
            f"sector size {hdr.legacy_geometry.sector_size} is not {SECTOR_SIZE}",
        ),
        (
            hdr.block_size != QEMU_BLOCK_SIZE,
            f"block size {hdr.block_size} is not {QEMU_BLOCK_SIZE}",
        ),
        (
            hdr.disk_size > hdr.blocks * hdr.block_size,
            f"disk size {hdr.disk_size}, image bitmap has room for {hdr.blocks * hdr.block_size}",
        ),
        (any(hdr.parent_uuid), "non-NULL link UUID"),
        (any(hdr.parent_modify_uuid), "non-NULL parent UUID"),
        (hdr.blocks > MAX_BLOCKS, f"too many blocks {hdr.blocks}, max is {MAX_BLOCKS}"),
    )
    for failed, reason in checks:
        if failed:
            return f"unsupported VDI image ({reason})"
    return None


def _section(pre: Any, hdr: Any, version: str) -> VdiSection:
    has_lchs = hdr.header_size >= LCHS_HEADER_SIZE
    return VdiSection(
        image_type=IMAGE_TYPES.get(hdr.image_type, f"type-{hdr.image_type}"),
        version=version,
        uuid=_uuid(hdr.uuid) or str(uuid.UUID(int=0)),
        parent_uuid=_uuid(hdr.parent_uuid),
        block_size=hdr.block_size,
        blocks_allocated=hdr.blocks_allocated,
        blocks=hdr.blocks,
        header_size=hdr.header_size,
        block_map_offset=hdr.block_map_offset,
        data_offset=hdr.data_offset,
        disk_size=hdr.disk_size,
        block_extra=hdr.block_extra,
        image_flags=hdr.image_flags,
        geometry=_geometry(hdr.legacy_geometry),
        lchs_geometry=_geometry(hdr.lchs_geometry) if has_lchs else None,
        comment=cstring(hdr.comment),
        modify_uuid=_uuid(hdr.modify_uuid) or str(uuid.UUID(int=0)),
        parent_modify_uuid=_uuid(hdr.parent_modify_uuid),
        banner=cstring(pre.banner).strip(),
    )


def _uuid(raw: bytes) -> str | None:
    """VirtualBox stores an RTUUID with its first three fields little-endian; None if null."""
    if raw == bytes(16):
        return None
    return str(uuid.UUID(bytes_le=raw))


def _geometry(geo: Any) -> VdiGeometry:
    return VdiGeometry(geo.cylinders, geo.heads, geo.sectors, geo.sector_size)


def _check_header(ctx: Context, s: VdiSection) -> None:
    """Every header number that qemu or VirtualBox refuses, in one ``vdi-bad-header``."""
    bad: list[str] = []
    if s.header_size < MIN_HEADER_SIZE:
        bad.append(f"header size {s.header_size} below {MIN_HEADER_SIZE}")
    if s.image_type.startswith("type-"):
        bad.append(f"unknown image type {s.image_type[5:]}")
    if s.geometry.sector_size != SECTOR_SIZE:
        bad.append(f"sector size {s.geometry.sector_size}, not {SECTOR_SIZE}")
    bad += _block_size_problems(ctx, s.block_size)
    if s.block_extra:
        # qemu places block n at data_offset + n * block_size, VirtualBox at
        # n * (block_size + block_extra): two readers would see different disks.
        bad.append(f"block_extra {s.block_extra} (VirtualBox and qemu would disagree)")
    if s.blocks > MAX_BLOCKS:
        bad.append(f"{s.blocks} blocks (qemu allows {MAX_BLOCKS})")
    if s.disk_size > MAX_DISK_SIZE:
        bad.append(f"disk size {s.disk_size} exceeds qemu's {MAX_DISK_SIZE}")
    if s.disk_size > s.blocks * s.block_size:
        bad.append(
            f"disk size {s.disk_size} but {s.blocks} blocks of {s.block_size} bytes "
            f"hold only {s.blocks * s.block_size}"
        )
    if s.blocks_allocated > s.blocks:
        bad.append(f"{s.blocks_allocated} blocks allocated of {s.blocks}")
    bad += _offset_problems(s)
    if bad:
        ctx.findings.add(BAD_HEADER, "; ".join(bad))


def _block_size_problems(ctx: Context, block_size: int) -> list[str]:
    if block_size < SECTOR_SIZE or block_size & (block_size - 1):
        return [f"block size {block_size} is not a power of two of at least {SECTOR_SIZE}"]
    if block_size != QEMU_BLOCK_SIZE:
        ctx.findings.add(BLOCK_SIZE, f"block size {block_size} (qemu opens only 1 MiB blocks)")
    return []


def _offset_problems(s: VdiSection) -> list[str]:
    bad: list[str] = []
    header_end = PREHEADER_SIZE + max(s.header_size, MIN_HEADER_SIZE)
    map_end = s.block_map_offset + s.blocks * BLOCK_MAP_ENTRY
    for name, value in (("block map", s.block_map_offset), ("data", s.data_offset)):
        if value % SECTOR_SIZE:
            bad.append(f"{name} offset {value:#x} not aligned to {SECTOR_SIZE} bytes")
        if value < header_end:
            bad.append(f"{name} offset {value:#x} overlaps the header (ends at {header_end:#x})")
    if s.data_offset < map_end:
        bad.append(f"data offset {s.data_offset:#x} overlaps the block map (ends at {map_end:#x})")
    return bad


def _check_in_file(ctx: Context, s: VdiSection) -> None:
    """The block map and the allocated blocks must lie within the file."""
    size = ctx.source.size
    map_end = s.block_map_offset + s.blocks * BLOCK_MAP_ENTRY
    if map_end > size:
        ctx.findings.add(
            F.TRUNCATED,
            f"VDI block map at {s.block_map_offset:#x} ({s.blocks} entries) ends at "
            f"{map_end:#x}, past the image's {size} bytes",
        )
    data_end = s.data_offset + s.blocks_allocated * (s.block_size + s.block_extra)
    if s.blocks_allocated and data_end > size:
        ctx.findings.add(
            F.TRUNCATED,
            f"{s.blocks_allocated} allocated blocks from {s.data_offset:#x} end at "
            f"{data_end:#x}, past the image's {size} bytes",
        )


def _judge_parent(ctx: Context, s: VdiSection) -> None:
    dependent = s.image_type in ("differencing", "undo")
    if not dependent and s.parent_uuid is None and s.parent_modify_uuid is None:
        return
    parent = s.parent_uuid or "(null)"
    modified = f", parent modification {s.parent_modify_uuid}" if s.parent_modify_uuid else ""
    ctx.findings.add(DIFFERENCING, f"{s.image_type} VDI image with parent UUID {parent}{modified}")


def _qemu_virtual_size(disk_size: int) -> int:
    # qemu accepts odd sizes (VBoxManage convertfromraw writes them) rounded up to a sector.
    return -(-disk_size // SECTOR_SIZE) * SECTOR_SIZE


def block_map_layout(s: VdiSection) -> BlockMapLayout:
    return BlockMapLayout(
        s.block_map_offset,
        s.blocks,
        s.data_offset,
        s.block_size,
        s.block_extra,
        s.blocks_allocated,
    )


# --- deep: the block map --------------------------------------------------------------------


def _allocated_size(
    ctx: Context, layout: BlockMapLayout, virtual_size: int
) -> tuple[int | None, TableSummary | None]:
    """Bytes of guest data the image stores (allocated blocks inside the virtual disk, a block
    straddling its end counted up to the end), and the block map's counts.

    Every entry the file holds is checked: the index of a data block below
    ``blocks_allocated``, the block inside the file, no index used twice.
    """
    block_size = layout.block_size
    if block_size < SECTOR_SIZE or block_size & (block_size - 1):
        return None, None  # reported as a bad header; no block can be located
    size = ctx.source.size
    room = max(0, size - layout.data_offset) // block_size
    # The scanner finds an index used twice with one bit per data block the file can hold.
    index_bits = min(layout.blocks_allocated, room)
    walkable = index_bits // 8 <= blocktables.CLAIM_MAP_LIMIT
    claims = blocktables.Claims(index_bits, 1, ())

    def check(entries: memoryview, first_index: int, claim: bool) -> scan.Verdict:
        if not walkable:  # still read (a stream must hold it for the final parse), not judged
            return _unjudged(len(entries) // BLOCK_MAP_ENTRY)
        return scan.vdi_blockmap(
            entries,
            blocks_allocated=layout.blocks_allocated,
            block_size=block_size,
            data_offset=layout.data_offset,
            file_size=size,
            claimed=claims.map() if claim else None,
            first_index=first_index,
        )

    full_blocks, partial = divmod(virtual_size, block_size)
    boundaries = (full_blocks, full_blocks + 1) if partial else (full_blocks,)
    walk = blocktables.walk_table(
        ctx,
        ("vdi-block-map", layout.offset, block_size),
        layout.offset,
        layout.entries * BLOCK_MAP_ENTRY,
        BLOCK_MAP_ENTRY,
        blocktables.Rules(check, boundaries, functools.partial(_bad_kind, layout)),
        what="the block map",
    )
    if walk is None:
        return None, None
    if not walkable:
        ctx.findings.add(
            BLOCKS_UNCHECKED,
            f"{index_bits} data blocks need a map of more than "
            f"{blocktables.CLAIM_MAP_LIMIT} bytes: the block map was not walked",
        )
        return None, None
    _report(ctx, layout, walk)
    total = walk.total
    summary = blocktables.TableSummary(
        entries=walk.entries,
        allocated=_count(total, "allocated"),
        zero=_count(total, "zero"),
        unallocated=_count(total, "unallocated"),
        bad=walk.bad_count,
    )
    if walk.entries < layout.entries:
        return None, summary  # the file ends inside the block map (reported as truncated)
    if not walk.bad_count and summary.allocated != layout.blocks_allocated:
        ctx.findings.add(
            ALLOCATED_MISMATCH,
            f"the block map uses {summary.allocated} data blocks, the header says "
            f"{layout.blocks_allocated} are allocated",
        )
    allocated = _count(walk.segments[0], "allocated") * block_size
    if partial:
        allocated += _count(walk.segments[1], "allocated") * partial
    return allocated, summary


def _unjudged(count: int) -> scan.BlockTableResult:
    return scan.BlockTableResult(
        count=count,
        bad_count=0,
        bad_index=scan.NOT_SEEN,
        bad_value=0,
        bad_reason=scan.Reason.OK,
        allocated=0,
        zero=0,
        unallocated=0,
        allocated_bytes=0,
    )


def _count(result: scan.Verdict | None, name: str) -> int:
    count: int = getattr(result, name, 0)
    return count


def _bad_kind(layout: BlockMapLayout, bad: blocktables.BadEntry) -> str:
    """The finding code for a bad entry: the scanner's out-of-range is two kinds here."""
    if bad.reason == scan.Reason.DOUBLE_CLAIM:
        return BLOCK_USED_TWICE
    if bad.value >= layout.blocks_allocated:
        return BLOCK_INDEX_OUT_OF_RANGE
    return BLOCK_PAST_EOF


def _report(ctx: Context, layout: BlockMapLayout, walk: blocktables.Walk) -> None:
    """One finding for the first bad entry of each kind."""
    in_all = blocktables.bad_entries(walk.bad_count, "block map")
    for bad in walk.first_bad:
        code = _bad_kind(layout, bad)
        if code == BLOCK_USED_TWICE:
            why = f"names data block {bad.value}, which an earlier entry already uses"
        elif code == BLOCK_INDEX_OUT_OF_RANGE:
            why = f"names data block {bad.value}; the header allocates {layout.blocks_allocated}"
        else:
            start = layout.data_offset + bad.value * layout.block_size
            why = (
                f"names data block {bad.value} at {start:#x}..{start + layout.block_size:#x}, "
                f"past the end of the {ctx.source.size}-byte file"
            )
        ctx.findings.add(code, f"block map entry {bad.index} = {bad.value:#010x} {why} ({in_all})")


# --- qemu-img info view ---------------------------------------------------------------------


def qemu_info(md: Any, filename: str | None = None) -> dict[str, Any]:
    """The keys of ``qemu-img info --output=json`` that come from the VDI header."""
    section = md.vdi
    if not isinstance(section, VdiSection):
        raise InvalidImage("VDI header too damaged for a qemu-img view")
    return {"format": "vdi", "cluster-size": section.block_size}


FORMAT = FormatSpec(NAME, probe, parse, qemu_info)
