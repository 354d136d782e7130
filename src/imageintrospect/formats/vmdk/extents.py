"""The other extent kinds: COWD, seSparse and text descriptor files."""

from __future__ import annotations

from ...errors import InvalidImage
from ...structs import cstring, parse_struct
from ..base import Context, Parsed
from .codes import (
    BAD_HEADER,
    COWD_EXTENT,
    DESCRIPTOR_LIMITS,
    DESCRIPTOR_TOO_LARGE,
    DESCRIPTOR_WITHOUT_HEADER,
    PARENT_FILE,
    SESPARSE_EXTENT,
    show,
    unkept,
)
from .descriptor import parse_descriptor
from .header import check_table, sectors_to_bytes
from .judge import build_section, judge_descriptor, judge_qemu_view
from .layout import (
    COWD_FLAG_ROOT,
    COWD_HEADER,
    COWD_HEADER_SIZE,
    COWD_ROOT_GEOMETRY,
    HEADER_ONLY_DESCRIPTOR_READ,
    MAX_DESCRIPTOR,
    QEMU_CID_WINDOW,
    QEMU_DESCRIPTOR_READ,
    QEMU_MAX_GD_ENTRIES,
    QEMU_MAX_GRAIN_SECTORS,
    SECTOR,
    SELF_CONTAINED,
    SESPARSE_HEADER,
    SESPARSE_VERSION,
)
from .qemu import QemuExtents, c_string, qemu_descriptor_view, qemu_view, read_cid_window
from .section import CowdInfo, Geometry, QemuExtent, QemuView, SeSparseInfo

# --- COWD and seSparse ---------------------------------------------------------------------


def parse_cowd(ctx: Context, head: bytes) -> Parsed:
    if len(head) < COWD_HEADER_SIZE:
        raise InvalidImage(f"COWD header needs {COWD_HEADER_SIZE} bytes, the file has {len(head)}")
    raw = parse_struct(COWD_HEADER, head, "COWD header")
    root = bool(raw.flags & COWD_FLAG_ROOT)
    parent = None if root else cstring(raw.parent_or_geometry)
    geometry = None
    if root:
        geo = parse_struct(COWD_ROOT_GEOMETRY, raw.parent_or_geometry[:12], "COWD geometry")
        geometry = Geometry(cylinders=geo.cylinders, heads=geo.heads, sectors=geo.sectors)
    ctx.findings.add(
        COWD_EXTENT,
        f"ESX COWD extent, version {raw.version}, {'root' if root else 'child'} disk",
    )
    if parent is not None:
        ctx.findings.add(PARENT_FILE, f"COWD child disk names its parent {show(parent)}")
    check_table(ctx, "COWD grain directory", raw.gd_offset, raw.num_gd_entries)
    grain = raw.grain_size
    if grain == 0 or grain & (grain - 1) or grain > QEMU_MAX_GRAIN_SECTORS:
        ctx.findings.add(BAD_HEADER, f"COWD grain size {grain} sectors")
    window = read_cid_window(ctx)
    error = None
    if grain > QEMU_MAX_GRAIN_SECTORS:
        error = "Invalid granularity"
    elif raw.num_gd_entries > QEMU_MAX_GD_ENTRIES:
        error = "L1 size too big"
    extent = QemuExtent(None, "", raw.num_sectors, False, False, grain * SECTOR)
    qemu = qemu_view("", QemuExtents([extent], 1, raw.num_sectors), window or b"", error)
    section = build_section(
        "cowd",
        None,
        grain_size=grain * SECTOR,
        compressed=False,
        capacity=raw.num_sectors * SECTOR,
        gd_offset=raw.gd_offset * SECTOR,
        parent_file=parent,
        geometry=geometry,
        cowd=CowdInfo(
            version=raw.version,
            flags=raw.flags,
            root=root,
            gd_offset=raw.gd_offset,
            num_gd_entries=raw.num_gd_entries,
            free_sector=raw.free_sector,
            generation=raw.generation,
            name=cstring(raw.name),
            description=cstring(raw.description),
        ),
        qemu=qemu,
    )
    return Parsed(virtual_size=raw.num_sectors * SECTOR, section=section)


def parse_sesparse(ctx: Context, head: bytes) -> Parsed:
    if len(head) < SECTOR:
        raise InvalidImage(f"seSparse header needs 512 bytes, the file has {len(head)}")
    raw = parse_struct(SESPARSE_HEADER, head[:SECTOR], "seSparse header")
    ctx.findings.add(
        SESPARSE_EXTENT,
        f"seSparse extent (version 0x{raw.version:016x}, {raw.capacity} sectors); its parent "
        "is named by a descriptor elsewhere",
    )
    if raw.version != SESPARSE_VERSION:
        ctx.findings.add(BAD_HEADER, f"seSparse version 0x{raw.version:016x}")
    capacity = sectors_to_bytes(raw.capacity)
    if capacity is None:
        ctx.findings.add(BAD_HEADER, f"seSparse capacity {raw.capacity} sectors (over 8 EiB)")
    qemu = QemuView(
        opens=False,
        error="qemu opens seSparse extents only through a descriptor",
        create_type="",
        cid=None,
        parent_cid=None,
        backing_file=None,
        extents=(),
        extent_count=0,
        virtual_size=None,
    )
    section = build_section(
        "sesparse",
        None,
        grain_size=raw.grain_size * SECTOR,
        compressed=False,
        capacity=capacity,
        gd_offset=raw.grain_dir_offset * SECTOR,
        sesparse=SeSparseInfo(
            version=raw.version,
            grain_table_size=raw.grain_table_size,
            flags=raw.flags,
            grain_dir_offset=raw.grain_dir_offset,
            grain_dir_size=raw.grain_dir_size,
            grains_offset=raw.grains_offset,
            grains_size=raw.grains_size,
        ),
        qemu=qemu,
    )
    return Parsed(virtual_size=capacity, section=section)


# --- text descriptor files -----------------------------------------------------------------


def parse_text(ctx: Context) -> Parsed:
    size = ctx.source.size
    limit = QEMU_DESCRIPTOR_READ if ctx.deep else HEADER_ONLY_DESCRIPTOR_READ
    buf = ctx.read_optional(0, min(size, limit), unkept("descriptor", 0)) or b""
    if not ctx.deep and len(buf) < min(size, QEMU_DESCRIPTOR_READ):
        ctx.findings.add(
            DESCRIPTOR_LIMITS,
            f"header-only mode: only the first {len(buf)} bytes of the descriptor were read",
        )
    if size > MAX_DESCRIPTOR:
        ctx.findings.add(
            DESCRIPTOR_TOO_LARGE,
            f"the descriptor file is {size} bytes; only its first {len(buf)} bytes were read",
        )
    desc = parse_descriptor(c_string(buf))
    qemu = qemu_descriptor_view(buf, buf[:QEMU_CID_WINDOW])
    section = build_section(
        "descriptor",
        desc,
        grain_size=None,
        compressed=False,
        capacity=None,
        descriptor_offset=0,
        descriptor_size=len(c_string(buf)),
        qemu=qemu,
    )
    create_type = desc.get("createType")
    if (create_type or "").lower() in SELF_CONTAINED:
        message = f"text descriptor claims createType {show(create_type)} but has no sparse header"
    else:
        message = (
            f"text descriptor (createType {show(create_type)}): the disk data is in the files it "
            "names, not in this file"
        )
    ctx.findings.add(DESCRIPTOR_WITHOUT_HEADER, message)
    judge_descriptor(ctx, desc, section, embedded=False)
    judge_qemu_view(ctx, qemu, desc)
    return Parsed(virtual_size=sectors_to_bytes(desc.extent_sectors), section=section)
