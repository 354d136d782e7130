"""QCOW2 (qemu copy-on-write v2/v3): header, header extensions, snapshots, bitmaps, findings.

Layout: qemu's ``docs/interop/qcow2.txt``.  All integers are big-endian.  qemu refuses to
open most of what this module flags; the point of flagging it here is that a cloud must
refuse it *before* qemu, or anything else, reads further.
"""

from __future__ import annotations

import dataclasses

from ... import findings as F
from ..base import Context, FormatSpec, Parsed, Probe
from .codes import BACKING_FILE, SNAPSHOTS_PRESENT
from .deep import walk_tables, walkable
from .header import (
    _compression_type,
    _feature_names,
    check_geometry,
    judge,
    read_backing_file,
    read_extensions,
    read_luks_header,
    v3_fields,
)
from .layout import (
    AUTOCLEAR_FEATURES,
    BITMAP_DIRECTORY_ENTRY,
    BITMAP_DIRECTORY_TABLE,
    BITMAPS_EXTENSION,
    COMPATIBLE_FEATURES,
    CRYPT_METHODS,
    ENCRYPTION_POINTER,
    EXT_BITMAPS,
    EXT_ENCRYPTION,
    EXT_END,
    EXT_FEATURE_TABLE,
    EXTENSION_HEADER,
    EXTENSION_HEADERS,
    FEATURE_NAME,
    FEATURE_NAMES,
    FEATURE_TABLE_KINDS,
    HEADER_RECORD,
    HEADER_V2,
    HEADER_V3_TAIL,
    INCOMPATIBLE_FEATURES,
    MAGIC,
    MAX_SIZE,
    MIN_CLUSTER_BITS,
    NAME,
    SNAPSHOT_ENTRY,
    SNAPSHOT_ENTRY_SIZE,
    SNAPSHOT_TABLE,
    V2_HEADER_LENGTH,
    V3_MIN_HEADER_LENGTH,
)
from .qemu import qemu_info
from .section import Allocation, Bitmap, Qcow2Section, Snapshot
from .snapshots import WindowReader, read_bitmaps, read_snapshots

# --- probe ---------------------------------------------------------------------------------


def probe(probe: Probe) -> bool:
    return probe.head[:4] == MAGIC


# --- parse ---------------------------------------------------------------------------------


def parse(ctx: Context) -> Parsed:
    src = ctx.source
    head = src.read_at(0, V3_MIN_HEADER_LENGTH + 8)
    if len(head) < V2_HEADER_LENGTH:
        ctx.findings.add(F.TRUNCATED, f"qcow2 header cut short: {len(head)} of 72 bytes")
        return Parsed(virtual_size=None, section=None)
    hdr = HEADER_RECORD.parse(head[:V2_HEADER_LENGTH])
    v3 = v3_fields(ctx, hdr, head)
    if v3 is None:
        return Parsed(virtual_size=None, section=None)
    cluster_size = 1 << hdr.cluster_bits if MIN_CLUSTER_BITS <= hdr.cluster_bits <= 63 else 0
    extended_l2 = bool(v3.incompatible_features & (1 << 4))
    check_geometry(ctx, hdr, v3, extended_l2)
    exts = read_extensions(ctx, hdr, v3.header_length, cluster_size)
    backing_file = read_backing_file(ctx, hdr, cluster_size)
    compression_type = _compression_type(ctx, hdr.version, v3, head)
    snapshots = read_snapshots(ctx, hdr, cluster_size)
    section = Qcow2Section(
        version=hdr.version,
        cluster_size=cluster_size,
        backing_file=backing_file,
        backing_format=exts.backing_format if backing_file is not None else None,
        data_file=exts.data_file,
        data_file_raw=bool(v3.autoclear_features & (1 << 1)),
        encryption=CRYPT_METHODS.get(hdr.crypt_method, f"method-{hdr.crypt_method}"),
        compression_type=compression_type,
        extended_l2=extended_l2,
        lazy_refcounts=bool(v3.compatible_features & 1),
        refcount_bits=1 << v3.refcount_order if v3.refcount_order < 64 else 0,
        dirty=bool(v3.incompatible_features & 1),
        corrupt=bool(v3.incompatible_features & 2),
        snapshots=snapshots.listed,
        bitmaps=read_bitmaps(ctx, exts, cluster_size, v3.autoclear_features),
        incompatible_features=_feature_names(v3.incompatible_features, INCOMPATIBLE_FEATURES),
        compatible_features=_feature_names(v3.compatible_features, COMPATIBLE_FEATURES),
        autoclear_features=_feature_names(v3.autoclear_features, AUTOCLEAR_FEATURES),
        header_length=v3.header_length,
        l1_size=hdr.l1_size,
        l1_table_offset=hdr.l1_table_offset,
        refcount_table_offset=hdr.refcount_table_offset,
        refcount_table_clusters=hdr.refcount_table_clusters,
        snapshots_offset=hdr.snapshots_offset,
        encryption_header=(
            {"offset": exts.encryption.offset, "length": exts.encryption.length}
            if exts.encryption is not None
            else None
        ),
        luks=read_luks_header(ctx, exts, hdr.crypt_method),
        feature_names={
            f"{FEATURE_TABLE_KINDS.get(kind, f'type-{kind}')}:{bit}": name
            for (kind, bit), name in (exts.feature_names or {}).items()
        },
    )
    judge(ctx, section, exts)
    if snapshots.count:
        ctx.findings.add(SNAPSHOTS_PRESENT, f"{snapshots.count} internal snapshot(s)")
    allocated_size = None
    if ctx.deep and walkable(hdr, v3, extended_l2):
        allocation = walk_tables(ctx, hdr, section, snapshots.l1_tables)
        if allocation is not None:
            section = dataclasses.replace(section, allocation=allocation)
            used = allocation.allocated_clusters + allocation.compressed_clusters
            allocated_size = used * cluster_size
    virtual_size = hdr.size if hdr.size <= MAX_SIZE else None
    return Parsed(virtual_size=virtual_size, section=section, allocated_size=allocated_size)


FORMAT = FormatSpec(NAME, probe, parse, qemu_info)


# What other modules and the tests use, as ``qcow2.X``.
__all__ = [
    "BACKING_FILE",
    "BITMAPS_EXTENSION",
    "BITMAP_DIRECTORY_ENTRY",
    "BITMAP_DIRECTORY_TABLE",
    "ENCRYPTION_POINTER",
    "EXTENSION_HEADER",
    "EXTENSION_HEADERS",
    "EXT_BITMAPS",
    "EXT_ENCRYPTION",
    "EXT_END",
    "EXT_FEATURE_TABLE",
    "FEATURE_NAME",
    "FEATURE_NAMES",
    "FORMAT",
    "HEADER_V2",
    "HEADER_V3_TAIL",
    "NAME",
    "SNAPSHOT_ENTRY",
    "SNAPSHOT_ENTRY_SIZE",
    "SNAPSHOT_TABLE",
    "V2_HEADER_LENGTH",
    "Allocation",
    "Bitmap",
    "Qcow2Section",
    "Snapshot",
    "WindowReader",
    "parse",
    "probe",
    "qemu_info",
]
