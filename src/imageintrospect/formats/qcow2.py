"""QCOW2 (qemu copy-on-write v2/v3): header, header extensions, snapshots, bitmaps, findings.

Layout: qemu's ``docs/interop/qcow2.txt``.  All integers are big-endian.  qemu refuses to
open most of what this module flags; the point of flagging it here is that a cloud must
refuse it *before* qemu, or anything else, reads further.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import construct as c

from .. import findings as F
from .. import scan
from ..errors import InvalidImage
from ..source import MAX_READ, Source, StreamGap
from ..structs import EntryTable, Record, cstring, parse_struct
from .base import MAX_LISTED, Context, FormatSpec, Parsed, Probe, Section
from .blocktables import CLAIM_MAP_LIMIT, merge_runs

if TYPE_CHECKING:
    from .luks import LuksSection

NAME = "qcow2"
MAGIC = b"QFI\xfb"

# --- schemas -------------------------------------------------------------------------------

HEADER_V2 = c.Struct(
    "magic" / c.Const(MAGIC),
    "version" / c.Int32ub,
    "backing_file_offset" / c.Int64ub,
    "backing_file_size" / c.Int32ub,
    "cluster_bits" / c.Int32ub,
    "size" / c.Int64ub,
    "crypt_method" / c.Int32ub,
    "l1_size" / c.Int32ub,
    "l1_table_offset" / c.Int64ub,
    "refcount_table_offset" / c.Int64ub,
    "refcount_table_clusters" / c.Int32ub,
    "nb_snapshots" / c.Int32ub,
    "snapshots_offset" / c.Int64ub,
)


class Header(NamedTuple):
    """The version 2 header fields (every qcow2 has them) as the parser uses them."""

    version: int
    backing_file_offset: int
    backing_file_size: int
    cluster_bits: int
    size: int
    crypt_method: int
    l1_size: int
    l1_table_offset: int
    refcount_table_offset: int
    refcount_table_clusters: int
    nb_snapshots: int
    snapshots_offset: int


HEADER_RECORD = Record(HEADER_V2, Header, "qcow2 header")
V2_HEADER_LENGTH = HEADER_RECORD.size

HEADER_V3_TAIL = c.Struct(
    "incompatible_features" / c.Int64ub,
    "compatible_features" / c.Int64ub,
    "autoclear_features" / c.Int64ub,
    "refcount_order" / c.Int32ub,
    "header_length" / c.Int32ub,
)
V3_MIN_HEADER_LENGTH = V2_HEADER_LENGTH + HEADER_V3_TAIL.sizeof()

# Type and length of each header extension: a two-field TLV.
EXTENSION_HEADER = c.Struct("type" / c.Int32ub, "length" / c.Int32ub)
EXTENSION_HEADERS = EntryTable(EXTENSION_HEADER, "ExtensionHeader", "qcow2 extension")
# The feature-name table is a table, not a header: its 48-byte entries are unpacked by the
# struct layout derived from the schema (one C call for the whole table, where construct
# would take ~10 µs per entry on every image).
FEATURE_NAME = c.Struct("type" / c.Int8ub, "bit" / c.Int8ub, "name" / c.Bytes(46))
FEATURE_NAMES = EntryTable(FEATURE_NAME, "FeatureName", "qcow2 feature name")
BITMAPS_EXTENSION = c.Struct(
    "nb_bitmaps" / c.Int32ub,
    "reserved" / c.Int32ub,
    "directory_size" / c.Int64ub,
    "directory_offset" / c.Int64ub,
)
ENCRYPTION_POINTER = c.Struct("offset" / c.Int64ub, "length" / c.Int64ub)

SNAPSHOT_ENTRY = c.Struct(
    "l1_table_offset" / c.Int64ub,
    "l1_size" / c.Int32ub,
    "id_len" / c.Int16ub,
    "name_len" / c.Int16ub,
    "date_sec" / c.Int32ub,
    "date_nsec" / c.Int32ub,
    "vm_clock_nsec" / c.Int64ub,
    "vm_state_size" / c.Int32ub,
    "extra_size" / c.Int32ub,
)
# Snapshot entries repeat: decoded by struct, derived from the schema above.
SNAPSHOT_TABLE = EntryTable(SNAPSHOT_ENTRY, "SnapshotEntry", "qcow2 snapshot entry")
SNAPSHOT_ENTRY_SIZE = SNAPSHOT_TABLE.size
# The optional extra data of a snapshot entry, as far as each field reaches.
SNAPSHOT_EXTRA = c.Struct(
    "vm_state_size_large" / c.Int64ub, "disk_size" / c.Int64ub, "icount" / c.Int64ub
)
SNAPSHOT_EXTRAS = EntryTable(SNAPSHOT_EXTRA, "SnapshotExtra", "qcow2 snapshot extra")

BITMAP_DIRECTORY_ENTRY = c.Struct(
    "table_offset" / c.Int64ub,
    "table_size" / c.Int32ub,
    "flags" / c.Int32ub,
    "type" / c.Int8ub,
    "granularity_bits" / c.Int8ub,
    "name_size" / c.Int16ub,
    "extra_data_size" / c.Int32ub,
)
BITMAP_DIRECTORY_TABLE = EntryTable(
    BITMAP_DIRECTORY_ENTRY, "BitmapDirectoryEntry", "qcow2 bitmap entry"
)
BITMAP_DIRECTORY_ENTRY_SIZE = BITMAP_DIRECTORY_TABLE.size

EXT_END = 0x00000000
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_TABLE = 0x6803F857
EXT_BITMAPS = 0x23852875
EXT_ENCRYPTION = 0x0537BE77
EXT_DATA_FILE = 0x44415441

# Feature bits: (bit, name).  Names are this library's stable spellings.
INCOMPATIBLE_FEATURES = {
    0: "dirty",
    1: "corrupt",
    2: "external-data-file",
    3: "compression-type",
    4: "extended-l2",
}
COMPATIBLE_FEATURES = {0: "lazy-refcounts"}
AUTOCLEAR_FEATURES = {0: "bitmaps", 1: "raw-external-data"}
FEATURE_TABLE_KINDS = {0: "incompatible", 1: "compatible", 2: "autoclear"}

CRYPT_METHODS = {0: None, 1: "aes", 2: "luks"}
COMPRESSION_TYPES = {0: "zlib", 1: "zstd"}
BITMAP_FLAGS = {0: "in-use", 1: "auto", 2: "extra-data-compatible"}

# qemu's own limits (block/qcow2.h), so that what qemu would refuse is flagged here too.
MIN_CLUSTER_BITS = 9
MAX_CLUSTER_BITS = 21
MIN_EXTENDED_L2_CLUSTER_BITS = 14
INT_MAX = (1 << 31) - 1  # qemu keeps the L1 index of the end of the disk in an int
MAX_L1_BYTES = 32 * 1024 * 1024
MAX_REFTABLE_BYTES = 8 * 1024 * 1024
MAX_SNAPSHOTS = 65536
MAX_SNAPSHOT_EXTRA = 1024
MAX_BACKING_FILE_NAME = 1023
MAX_BITMAPS = 65535
MAX_SIZE = (1 << 63) - 1

# What we are willing to read of the variable-length metadata.
EXTENSION_AREA_LIMIT = 256 * 1024
SNAPSHOT_TABLE_LIMIT = {True: 16 * 1024 * 1024, False: 256 * 1024}  # keyed by ``deep``
BITMAP_DIRECTORY_LIMIT = 1024 * 1024
TABLE_WINDOW = 64 * 1024
#: L2 entries gathered before one scanner call.
L2_BATCH = 1024 * 1024
#: L2 tables a stream holds until its size is known (a 256 GiB disk's, at 64 KiB clusters).
L2_STREAM_KEEP = 32 * 1024 * 1024

# --- findings ------------------------------------------------------------------------------

BACKING_FILE = F.define(
    "backing-file",
    "unsafe",
    "qcow2",
    "The image names a backing file; using it would make the host read that file.",
)
DATA_FILE = F.define(
    "external-data-file",
    "unsafe",
    "qcow2",
    "The image keeps its guest data in an external file that it names.",
)
UNKNOWN_INCOMPATIBLE = F.define(
    "unknown-incompatible-feature",
    "unsafe",
    "qcow2",
    "An incompatible feature bit this library (and qemu) does not know is set.",
)
CORRUPT = F.define("corrupt-flag", "unsafe", "qcow2", "The image's own header marks it as corrupt.")
DIRTY = F.define(
    "dirty-flag",
    "warning",
    "qcow2",
    "The image was not closed cleanly (refcounts may be stale; qemu repairs on open).",
)
ENCRYPTED = F.define(
    "encrypted",
    "warning",
    "qcow2",
    "The guest data is encrypted; its content cannot be inspected or converted without a key.",
)
LEGACY_AES = F.define(
    "legacy-aes-encryption",
    "unsafe",
    "qcow2",
    "Legacy qcow2 AES encryption: broken by design and refused by qemu's system emulators.",
)
BAD_GEOMETRY = F.define(
    "bad-geometry",
    "unsafe",
    "qcow2",
    "A header field is impossible: cluster size, L1 size, virtual size or a table offset.",
)
BAD_VERSION = F.define(
    "unsupported-version", "unsafe", "qcow2", "The header version is neither 2 nor 3."
)
BAD_EXTENSION = F.define(
    "bad-header-extension",
    "unsafe",
    "qcow2",
    "A header extension is malformed (overruns its area, bad length, or bad content).",
)
UNKNOWN_EXTENSION = F.define(
    "unknown-header-extension",
    "info",
    "qcow2",
    "A header extension of an unknown type is present (qemu ignores it).",
)
BAD_SNAPSHOTS = F.define(
    "bad-snapshot-table",
    "unsafe",
    "qcow2",
    "The snapshot table is out of range, misaligned, or has an impossible entry.",
)
BAD_BITMAPS = F.define(
    "bad-bitmap-directory",
    "unsafe",
    "qcow2",
    "The persistent-bitmap extension or directory is malformed.",
)
TABLE_NOT_READ = F.define(
    "table-not-read",
    "info",
    "qcow2",
    "Header-only mode: a metadata table larger than the header budget was not read.",
)
SNAPSHOTS_PRESENT = F.define(
    "internal-snapshots",
    "info",
    "qcow2",
    "The image holds internal snapshots (their data is part of the image).",
)

# Deep validation: one code per class of bad table entry (the message names the table, the
# entry index and its value, and how many entries of that table are bad).
ENTRY_OUT_OF_RANGE = F.define(
    "entry-out-of-range",
    "unsafe",
    "qcow2",
    "An L1, L2 or refcount table entry points past the end of the file.",
)
ENTRY_MISALIGNED = F.define(
    "entry-misaligned",
    "unsafe",
    "qcow2",
    "A table entry's offset is not aligned to the cluster size.",
)
ENTRY_IN_METADATA = F.define(
    "entry-in-metadata",
    "unsafe",
    "qcow2",
    "A table entry points into the header cluster (or other metadata).",
)
ENTRY_RESERVED_BITS = F.define(
    "entry-reserved-bits",
    "unsafe",
    "qcow2",
    "A table entry has reserved bits set.",
)
CLUSTER_CLAIMED_TWICE = F.define(
    "cluster-claimed-twice",
    "unsafe",
    "qcow2",
    "A host cluster is used twice (by two guest clusters, or by data and metadata).",
)
BAD_COMPRESSED = F.define(
    "bad-compressed-cluster",
    "unsafe",
    "qcow2",
    "A compressed-cluster descriptor that cannot be valid (runs past the end of the file).",
)
BAD_SUBCLUSTER = F.define(
    "bad-subcluster-bitmap",
    "unsafe",
    "qcow2",
    "An extended-L2 subcluster bitmap marks a subcluster both allocated and zero.",
)
OVERLAP_UNCHECKED = F.define(
    "overlap-check-skipped",
    "info",
    "qcow2",
    "The file has too many clusters for the double-use map; tables were checked without it.",
)

# --- the section ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot(Section):
    id: str
    name: str
    vm_state_size: int
    date: str
    date_sec: int
    date_nsec: int
    vm_clock_nsec: int
    l1_table_offset: int
    l1_size: int
    disk_size: int | None
    icount: int | None


@dataclass(frozen=True)
class Bitmap(Section):
    name: str
    granularity: int
    flags: tuple[str, ...]
    table_offset: int
    table_size: int


@dataclass(frozen=True)
class Allocation(Section):
    """What the deep walk counted in the active L1/L2 tables."""

    l2_tables: int
    allocated_clusters: int
    compressed_clusters: int
    zero_clusters: int
    unallocated_clusters: int
    bad_entries: int
    refcount_blocks: int


@dataclass(frozen=True)
class Qcow2Section(Section):
    version: int
    cluster_size: int
    backing_file: str | None
    backing_format: str | None
    data_file: str | None
    data_file_raw: bool
    encryption: str | None
    compression_type: str
    extended_l2: bool
    lazy_refcounts: bool
    refcount_bits: int
    dirty: bool
    corrupt: bool
    snapshots: tuple[Snapshot, ...]
    bitmaps: tuple[Bitmap, ...]
    incompatible_features: tuple[str, ...]
    compatible_features: tuple[str, ...]
    autoclear_features: tuple[str, ...]
    header_length: int
    l1_size: int
    l1_table_offset: int
    refcount_table_offset: int
    refcount_table_clusters: int
    snapshots_offset: int
    encryption_header: dict[str, int] | None
    luks: LuksSection | None
    feature_names: dict[str, str]
    allocation: Allocation | None = None


# --- probe ---------------------------------------------------------------------------------


def probe(probe: Probe) -> bool:
    return probe.head[:4] == MAGIC


# --- parse ---------------------------------------------------------------------------------


@dataclass
class _Extensions:
    backing_format: str | None = None
    data_file: str | None = None
    feature_names: dict[tuple[int, int], str] | None = None
    bitmaps: Any = None
    encryption: Any = None


def parse(ctx: Context) -> Parsed:
    src = ctx.source
    head = src.read_at(0, V3_MIN_HEADER_LENGTH + 8)
    if len(head) < V2_HEADER_LENGTH:
        ctx.findings.add(F.TRUNCATED, f"qcow2 header cut short: {len(head)} of 72 bytes")
        return Parsed(virtual_size=None, section=None)
    hdr = HEADER_RECORD.parse(head[:V2_HEADER_LENGTH])
    v3 = _v3_fields(ctx, hdr, head)
    if v3 is None:
        return Parsed(virtual_size=None, section=None)
    cluster_size = 1 << hdr.cluster_bits if MIN_CLUSTER_BITS <= hdr.cluster_bits <= 63 else 0
    extended_l2 = bool(v3.incompatible_features & (1 << 4))
    _check_geometry(ctx, hdr, v3, extended_l2)
    exts = _read_extensions(ctx, hdr, v3.header_length, cluster_size)
    backing_file = _read_backing_file(ctx, hdr, cluster_size)
    compression_type = _compression_type(ctx, hdr.version, v3, head)
    snapshots = _read_snapshots(ctx, hdr, cluster_size)
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
        bitmaps=_read_bitmaps(ctx, exts, cluster_size, v3.autoclear_features),
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
        luks=_read_luks_header(ctx, exts, hdr.crypt_method),
        feature_names={
            f"{FEATURE_TABLE_KINDS.get(kind, f'type-{kind}')}:{bit}": name
            for (kind, bit), name in (exts.feature_names or {}).items()
        },
    )
    _judge(ctx, section, exts)
    if snapshots.count:
        ctx.findings.add(SNAPSHOTS_PRESENT, f"{snapshots.count} internal snapshot(s)")
    allocated_size = None
    if ctx.deep and _walkable(hdr, v3, extended_l2):
        allocation = _walk_tables(ctx, hdr, section, snapshots.l1_tables)
        if allocation is not None:
            section = dataclasses.replace(section, allocation=allocation)
            used = allocation.allocated_clusters + allocation.compressed_clusters
            allocated_size = used * cluster_size
    virtual_size = hdr.size if hdr.size <= MAX_SIZE else None
    return Parsed(virtual_size=virtual_size, section=section, allocated_size=allocated_size)


@dataclass(frozen=True)
class _V3Fields:
    incompatible_features: int
    compatible_features: int
    autoclear_features: int
    refcount_order: int
    header_length: int


def _v3_fields(ctx: Context, hdr: Header, head: bytes) -> _V3Fields | None:
    """The version-3 header fields, or version 2's implied values; None if unusable."""
    if hdr.version == 2:
        return _V3Fields(0, 0, 0, 4, V2_HEADER_LENGTH)
    if hdr.version != 3:
        ctx.findings.add(BAD_VERSION, f"qcow2 version {hdr.version}")
        ctx.findings.add(F.QEMU_CANNOT_OPEN, f"Unsupported qcow2 version {hdr.version}")
        return None
    if len(head) < V3_MIN_HEADER_LENGTH:
        ctx.findings.add(F.TRUNCATED, f"qcow2 v3 header cut short: {len(head)} of 104 bytes")
        return None
    tail = parse_struct(
        HEADER_V3_TAIL, head[V2_HEADER_LENGTH:V3_MIN_HEADER_LENGTH], "qcow2 v3 header"
    )
    return _V3Fields(
        tail.incompatible_features,
        tail.compatible_features,
        tail.autoclear_features,
        tail.refcount_order,
        tail.header_length,
    )


def _check_geometry(ctx: Context, hdr: Header, v3: _V3Fields, extended_l2: bool) -> None:
    """Flag every header number qemu would refuse, and tables the file does not hold."""
    bad: list[str] = []
    bits = hdr.cluster_bits
    if not MIN_CLUSTER_BITS <= bits <= MAX_CLUSTER_BITS:
        bad.append(f"cluster_bits {bits} outside {MIN_CLUSTER_BITS}..{MAX_CLUSTER_BITS}")
    elif extended_l2 and bits < MIN_EXTENDED_L2_CLUSTER_BITS:
        bad.append(f"extended L2 entries need cluster_bits >= 14, not {bits}")
    if hdr.version == 3 and (v3.header_length < V3_MIN_HEADER_LENGTH or v3.header_length % 8):
        bad.append(f"header_length {v3.header_length} (must be >= 104 and a multiple of 8)")
    if v3.refcount_order > 6:
        bad.append(f"refcount_order {v3.refcount_order} > 6")
    if hdr.size > MAX_SIZE:
        bad.append(f"virtual size {hdr.size} exceeds 2^63 - 1")
    refusal = _qemu_refusal(hdr, extended_l2)
    if bad:  # the numbers below are meaningless without a sane cluster size
        ctx.findings.add(BAD_GEOMETRY, "; ".join(bad))
        _refuse(ctx, refusal, bad)
        return
    needed_l1 = _l1_entries_needed(hdr.size, bits, extended_l2)
    cluster_size = 1 << bits
    if hdr.l1_size < needed_l1:
        bad.append(f"l1_size {hdr.l1_size} cannot map {hdr.size} bytes (needs {needed_l1})")
    if hdr.l1_size * 8 > MAX_L1_BYTES:
        bad.append(f"l1_size {hdr.l1_size} exceeds qemu's {MAX_L1_BYTES // 8} entries")
    if hdr.refcount_table_clusters * cluster_size > MAX_REFTABLE_BYTES:
        bad.append(f"refcount table of {hdr.refcount_table_clusters} clusters is too large")
    if hdr.refcount_table_clusters == 0:
        bad.append("no refcount table")
    for name in ("l1_table_offset", "refcount_table_offset", "snapshots_offset"):
        value = getattr(hdr, name)
        if value % cluster_size:
            bad.append(f"{name} {value:#x} not aligned to the {cluster_size}-byte cluster")
    refused = list(bad)  # qemu refuses all of the above; it accepts the overlaps below
    if hdr.l1_size and hdr.l1_table_offset < cluster_size:
        bad.append(f"L1 table at {hdr.l1_table_offset:#x} overlaps the header cluster")
    if hdr.refcount_table_offset < cluster_size:
        bad.append(f"refcount table at {hdr.refcount_table_offset:#x} overlaps the header cluster")
    if bad:
        ctx.findings.add(BAD_GEOMETRY, "; ".join(bad))
    _refuse(ctx, refusal, refused)
    _check_in_file(ctx, "L1 table", hdr.l1_table_offset, hdr.l1_size * 8)
    _check_in_file(
        ctx,
        "refcount table",
        hdr.refcount_table_offset,
        hdr.refcount_table_clusters * cluster_size,
    )


def _refuse(ctx: Context, refusal: str | None, problems: list[str]) -> None:
    """``qemu-cannot-open``: qemu's own words where we have them, else the problems."""
    if refusal is None and problems:
        refusal = "qemu refuses the qcow2 header: " + "; ".join(problems)
    if refusal is not None:
        ctx.findings.add(F.QEMU_CANNOT_OPEN, refusal)


def _l1_entries_needed(size: int, cluster_bits: int, extended_l2: bool) -> int:
    """L1 entries that map ``size`` bytes (qemu's ``size_to_l1``)."""
    cluster_size = 1 << cluster_bits
    l2_entries = cluster_size // (16 if extended_l2 else 8)
    return -(-size // (cluster_size * l2_entries))


def _qemu_refusal(hdr: Any, extended_l2: bool) -> str | None:
    """qemu's reason to refuse the image for its cluster size, L1 size or virtual size (the
    first it checks, worded as qemu words it), or None."""
    bits = hdr.cluster_bits
    if not MIN_CLUSTER_BITS <= bits <= MAX_CLUSTER_BITS:
        return f"Unsupported cluster size: 2^{bits}"
    if hdr.l1_size * 8 > MAX_L1_BYTES:
        return f"Active L1 table too large ({hdr.l1_size} entries)"
    needed = _l1_entries_needed(hdr.size, bits, extended_l2)
    if needed > INT_MAX:
        return (
            f"Image is too big (a virtual size of {hdr.size} bytes needs {needed} L1 entries; "
            f"qemu takes at most {INT_MAX})"
        )
    if hdr.l1_size < needed:
        return f"L1 table is too small ({hdr.l1_size} entries, {needed} needed)"
    return None


def _check_in_file(ctx: Context, what: str, offset: int, length: int) -> None:
    if length and offset + length > ctx.source.size:
        ctx.findings.add(
            F.TRUNCATED,
            f"{what} at {offset:#x} ({length} bytes) ends past the image's {ctx.source.size} bytes",
        )


def _read_extensions(
    ctx: Context, hdr: Header, header_length: int, cluster_size: int
) -> _Extensions:
    """Walk the header extensions; they live between the header and the backing file name."""
    exts = _Extensions()
    if not cluster_size:
        return exts
    end = cluster_size
    if hdr.backing_file_offset and hdr.backing_file_offset < end:
        end = hdr.backing_file_offset
    end = min(end, header_length + EXTENSION_AREA_LIMIT)
    if end <= header_length:
        return exts
    # The first cluster is always within a stream's kept head, but be explicit.
    unkept = "qcow2 header extensions not kept from stream"
    area = ctx.read_optional(header_length, end - header_length, unkept)
    if area is None:
        return exts
    pos = 0
    while pos + 8 <= len(area):
        kind, length = EXTENSION_HEADERS.layout.unpack_from(area, pos)
        if kind == EXT_END:
            return exts
        data = area[pos + 8 : pos + 8 + length]
        if len(data) < length:
            ctx.findings.add(
                BAD_EXTENSION,
                f"extension {kind:#010x} at {header_length + pos:#x} claims "
                f"{length} bytes, past the end of the extension area",
            )
            return exts
        _store_extension(ctx, exts, kind, data)
        pos += 8 + ((length + 7) & ~7)
    if len(area) < end - header_length:
        ctx.findings.add(F.TRUNCATED, "qcow2 header extensions run past the end of the file")
    return exts


def _store_extension(ctx: Context, exts: _Extensions, kind: int, data: bytes) -> None:
    if kind == EXT_BACKING_FORMAT:
        exts.backing_format = _ext_string(ctx, data, "backing format")
    elif kind == EXT_DATA_FILE:
        exts.data_file = _ext_string(ctx, data, "external data file name")
    elif kind == EXT_FEATURE_TABLE:
        names = exts.feature_names if exts.feature_names is not None else {}
        usable = len(data) - len(data) % FEATURE_NAMES.size
        for kind, bit, name in FEATURE_NAMES.layout.iter_unpack(data[:usable]):
            names[(kind, bit)] = cstring(name)
        exts.feature_names = names
    elif kind == EXT_BITMAPS:
        if len(data) != BITMAPS_EXTENSION.sizeof():
            ctx.findings.add(BAD_BITMAPS, f"bitmaps extension of {len(data)} bytes, not 24")
        else:
            exts.bitmaps = parse_struct(BITMAPS_EXTENSION, data, "bitmaps extension")
    elif kind == EXT_ENCRYPTION:
        if len(data) != ENCRYPTION_POINTER.sizeof():
            ctx.findings.add(BAD_EXTENSION, f"encryption pointer of {len(data)} bytes, not 16")
        else:
            exts.encryption = parse_struct(ENCRYPTION_POINTER, data, "encryption pointer")
    else:
        ctx.findings.add(UNKNOWN_EXTENSION, f"unknown header extension {kind:#010x}")


def _ext_string(ctx: Context, data: bytes, what: str) -> str:
    if b"\0" in data:
        ctx.findings.add(BAD_EXTENSION, f"{what} contains a NUL byte")
    return data.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def _read_luks_header(ctx: Context, exts: _Extensions, crypt_method: int) -> LuksSection | None:
    """The LUKS header the encryption extension points at (qemu prints it in ``info``)."""
    from . import luks  # only encrypted images need the LUKS module

    if crypt_method != 2 or exts.encryption is None:
        return None
    pointer = exts.encryption
    if pointer.length < luks.HEADER_V1_SIZE:
        ctx.findings.add(BAD_EXTENSION, f"LUKS header area of {pointer.length} bytes")
        return None
    try:
        header = ctx.source.read_at(pointer.offset, luks.HEADER_V1_SIZE)
    except StreamGap:
        ctx.findings.add(F.STREAM_UNCHECKED, "the LUKS header lay outside the kept stream")
        return None
    if len(header) < luks.HEADER_V1_SIZE:
        ctx.findings.add(F.TRUNCATED, f"LUKS header at {pointer.offset:#x} is past the end")
        return None
    if header[:6] != luks.MAGIC:
        ctx.findings.add(BAD_EXTENSION, f"no LUKS header at {pointer.offset:#x}")
        return None
    section, problems = luks.read_luks1(header)
    if problems:
        ctx.findings.add(BAD_EXTENSION, "LUKS header: " + "; ".join(problems))
    return section


def _read_backing_file(ctx: Context, hdr: Header, cluster_size: int) -> str | None:
    if not hdr.backing_file_offset:
        return None
    size = hdr.backing_file_size
    problems = []
    if size > MAX_BACKING_FILE_NAME:
        problems.append(f"backing file name of {size} bytes (qemu allows 1023)")
    if cluster_size and hdr.backing_file_offset > cluster_size:
        problems.append(f"backing file name at {hdr.backing_file_offset:#x}, past cluster 0")
    if problems:
        ctx.findings.add(BAD_GEOMETRY, "; ".join(problems))
        size = min(size, MAX_BACKING_FILE_NAME)
    raw = ctx.source.read_at(hdr.backing_file_offset, size) if size else b""
    if len(raw) < size:
        ctx.findings.add(F.TRUNCATED, "the backing file name runs past the end of the file")
    # Reported as written; an empty name still makes qemu look for a backing file.
    return raw.decode("utf-8", errors="replace")


def _compression_type(ctx: Context, version: int, v3: _V3Fields, head: bytes) -> str:
    has_bit = bool(v3.incompatible_features & (1 << 3))
    # The compression type byte exists only when the header is longer than 104 bytes.
    has_field = version == 3 and v3.header_length > V3_MIN_HEADER_LENGTH
    code = head[V3_MIN_HEADER_LENGTH] if has_field and len(head) > V3_MIN_HEADER_LENGTH else 0
    name = COMPRESSION_TYPES.get(code)
    if name is None:
        ctx.findings.add(BAD_GEOMETRY, f"unknown compression type {code}")
        ctx.findings.add(F.QEMU_CANNOT_OPEN, f"qcow2: unknown compression type: {code}")
        return f"type-{code}"
    if (code != 0) != has_bit:
        problem = f"compression type {name} disagrees with the compression-type feature bit"
        ctx.findings.add(BAD_GEOMETRY, problem)
        ctx.findings.add(F.QEMU_CANNOT_OPEN, f"qcow2: {problem}")
    return name


@dataclass(frozen=True)
class _Snapshots:
    """The snapshot table as read: the first :data:`MAX_LISTED` snapshots (what the answer
    holds), how many entries were read, and every distinct L1 table they name (for the
    double-use map; qemu's maximum of 65,536 snapshots would be 80 MiB as objects)."""

    listed: tuple[Snapshot, ...] = ()
    count: int = 0
    l1_tables: frozenset[tuple[int, int]] = frozenset()


def _read_snapshots(ctx: Context, hdr: Header, cluster_size: int) -> _Snapshots:
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
    reader = _WindowReader(ctx, hdr.snapshots_offset, limit, over_limit)
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
    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc).isoformat()


def _read_bitmaps(
    ctx: Context, exts: _Extensions, cluster_size: int, autoclear: int
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
    reader = _WindowReader(ctx, ext.directory_offset, ext.directory_size, BAD_BITMAPS)
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


class _WindowReader:
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


def _feature_names(bits: int, names: dict[int, str]) -> tuple[str, ...]:
    found = []
    bits &= (1 << 64) - 1
    while bits:  # only the set bits, lowest first (most fields have none or one)
        bit = (bits & -bits).bit_length() - 1
        found.append(names.get(bit, f"bit-{bit}"))
        bits &= bits - 1
    return tuple(found)


def _judge(ctx: Context, section: Qcow2Section, exts: _Extensions) -> None:
    """The findings that follow from the decoded header."""
    add = ctx.findings.add
    if section.backing_file is not None:
        fmt = f" (format {section.backing_format})" if section.backing_format else ""
        add(BACKING_FILE, f"backing file {section.backing_file!r}{fmt}")
    has_data_file_bit = "external-data-file" in section.incompatible_features
    if section.data_file is not None or has_data_file_bit:
        name = repr(section.data_file) if section.data_file is not None else "(unnamed)"
        add(DATA_FILE, f"external data file {name}")
    if section.data_file_raw and not has_data_file_bit:
        add(BAD_GEOMETRY, "raw-external-data set without an external data file")
    unknown = [f for f in section.incompatible_features if f.startswith("bit-")]
    if unknown:
        labels = [_label(exts, 0, int(f[4:])) for f in unknown]
        add(UNKNOWN_INCOMPATIBLE, "unknown incompatible features: " + ", ".join(labels))
        add(F.QEMU_CANNOT_OPEN, "Unsupported qcow2 feature(s): " + ", ".join(labels))
    if section.corrupt:
        add(CORRUPT, "the corrupt bit is set")
    if section.dirty:
        add(DIRTY, "the dirty bit is set")
    if section.encryption is not None:
        add(ENCRYPTED, f"encrypted with {section.encryption}")
        if section.encryption == "aes":
            add(LEGACY_AES, "legacy AES-CBC encryption")
        elif section.encryption != "luks":
            add(BAD_GEOMETRY, f"unknown encryption {section.encryption}")
            add(F.QEMU_CANNOT_OPEN, f"Unsupported encryption method {section.encryption}")
    if section.encryption == "luks" and section.encryption_header is None:
        add(BAD_EXTENSION, "LUKS encryption without a LUKS header extension")


def _label(exts: _Extensions, kind: int, bit: int) -> str:
    name = (exts.feature_names or {}).get((kind, bit))
    return f"bit-{bit} ({name})" if name else f"bit-{bit}"


# --- deep: the refcount, L1 and L2 tables ---------------------------------------------------

_REASON_CODES = {
    scan.Reason.OUT_OF_RANGE: ENTRY_OUT_OF_RANGE,
    scan.Reason.TRUNCATED: ENTRY_OUT_OF_RANGE,
    scan.Reason.MISALIGNED: ENTRY_MISALIGNED,
    scan.Reason.IN_METADATA: ENTRY_IN_METADATA,
    scan.Reason.RESERVED_BITS: ENTRY_RESERVED_BITS,
    scan.Reason.DOUBLE_CLAIM: CLUSTER_CLAIMED_TWICE,
    scan.Reason.BAD_COMPRESSED: BAD_COMPRESSED,
    scan.Reason.BAD_SUBCLUSTER: BAD_SUBCLUSTER,
}


def _walkable(hdr: Header, v3: _V3Fields, extended_l2: bool) -> bool:
    """Whether the header's numbers are sane enough to walk its tables (else they were
    already reported as bad geometry, and a walk would only read nonsense)."""
    bits = hdr.cluster_bits
    if not MIN_CLUSTER_BITS <= bits <= MAX_CLUSTER_BITS or hdr.version not in (2, 3):
        return False
    if extended_l2 and bits < MIN_EXTENDED_L2_CLUSTER_BITS:
        return False
    cluster = 1 << bits
    return bool(
        hdr.l1_size * 8 <= MAX_L1_BYTES
        and 0 < hdr.refcount_table_clusters * cluster <= MAX_REFTABLE_BYTES
        and hdr.l1_table_offset % cluster == 0
        and hdr.refcount_table_offset % cluster == 0
    )


def _walk_tables(
    ctx: Context, hdr: Header, section: Qcow2Section, snapshot_l1s: frozenset[tuple[int, int]]
) -> Allocation | None:
    """Check every refcount table, L1 and L2 entry; count what the active tables map."""
    src = ctx.source
    rehearsal = src.memo(("qcow2-tables", hdr.l1_table_offset))
    if rehearsal:
        return None  # an earlier rehearsal started the L2 walk: nothing more to keep
    bits = hdr.cluster_bits
    cluster = 1 << bits
    claimed = _claim_map(ctx, src.size, cluster)
    if claimed is not None:
        _claim_metadata(claimed, hdr, section, cluster, snapshot_l1s)
    try:
        refcounts = _scan_pointer_table(
            ctx, "refcount table", hdr.refcount_table_offset,
            hdr.refcount_table_clusters * cluster, bits, claimed, scan.qcow2_refcount_table,
        )  # fmt: skip
        l1 = _scan_pointer_table(
            ctx, "L1 table", hdr.l1_table_offset, hdr.l1_size * 8, bits, claimed, scan.qcow2_l1
        )
    except StreamGap as gap:
        ctx.findings.add(F.STREAM_UNCHECKED, f"qcow2 tables at {gap.offset:#x} went by unkept")
        return None
    # A rehearsal starts the L2 walk once the L1 table has arrived, whether or not the
    # refcount table has (it may lie after the L2 tables, which would then go by).
    if l1 is None or (refcounts is None and not src.speculative):
        return None
    tables = sorted(set(l1.offsets))
    make_walker = functools.partial(_L2Walker, section, bits, src.size, claimed, src.is_stream)
    try:
        walker = src.scan(
            ("qcow2-l2", hdr.l1_table_offset, len(tables)), merge_runs(tables, cluster), make_walker
        )
    except StreamGap:
        ctx.findings.add(F.STREAM_UNCHECKED, "L2 tables went by before the L1 table named them")
        return None
    if src.speculative or refcounts is None:
        rehearsal["walk started"] = True  # (the final parse's memo is its own, unused)
        return None  # a stream still arriving: the walker is judged once, at the end
    walker.report(ctx, src.size, claimed)
    return Allocation(
        l2_tables=len(tables),
        allocated_clusters=walker.allocated,
        compressed_clusters=walker.compressed,
        zero_clusters=walker.zero,
        unallocated_clusters=walker.unallocated + (hdr.l1_size - l1.allocated) * walker.per_table,
        bad_entries=walker.bad_count + l1.bad_count + refcounts.bad_count,
        refcount_blocks=refcounts.allocated,
    )


def _claim_map(ctx: Context, file_size: int, cluster: int) -> bytearray | None:
    clusters = -(-file_size // cluster)
    if clusters // 8 > CLAIM_MAP_LIMIT:
        ctx.findings.add(
            OVERLAP_UNCHECKED, f"{clusters} host clusters: double use of clusters not checked"
        )
        return None
    return scan.claim_map(file_size, cluster)


def _claim_metadata(
    claimed: bytearray,
    hdr: Header,
    section: Qcow2Section,
    cluster: int,
    snapshot_l1s: frozenset[tuple[int, int]],
) -> None:
    """Mark the clusters the header's own structures occupy, before any table is scanned."""
    scan.mark_claimed(claimed, 0, cluster, cluster)
    scan.mark_claimed(claimed, hdr.l1_table_offset, hdr.l1_size * 8, cluster)
    scan.mark_claimed(
        claimed, hdr.refcount_table_offset, hdr.refcount_table_clusters * cluster, cluster
    )
    if section.encryption_header is not None:
        header = section.encryption_header
        scan.mark_claimed(claimed, header["offset"], header["length"], cluster)
    if snapshot_l1s:
        scan.mark_claimed(claimed, hdr.snapshots_offset, cluster, cluster)
    for l1_offset, l1_size in snapshot_l1s:  # their L2 tables and data may be shared: not marked
        scan.mark_claimed(claimed, l1_offset, l1_size * 8, cluster)


class _PointerScan(Protocol):
    def __call__(
        self,
        table: bytes,
        *,
        cluster_bits: int,
        file_size: int,
        claimed: bytearray | None = None,
        first_index: int = 0,
    ) -> scan.PointerTableResult: ...


def _scan_pointer_table(
    ctx: Context,
    what: str,
    offset: int,
    length: int,
    bits: int,
    claimed: bytearray | None,
    scanner: _PointerScan,
) -> scan.PointerTableResult | None:
    """Read a table of cluster pointers (L1 or refcount table) and check every entry."""
    if offset + length > ctx.source.size:
        return None  # already reported as truncated by the geometry check
    if ctx.source.pending(offset, length):
        ctx.source.prefetch([(offset, length)])
        return None  # a rehearsal: scanned once it has arrived, not once per run before
    # At most 32 MiB (qemu's L1 limit), read in windows below the per-read limit.
    table = b"".join(
        ctx.source.read_at(start, min(MAX_READ, offset + length - start))
        for start in range(offset, offset + length, MAX_READ)
    )
    result = scanner(table, cluster_bits=bits, file_size=ctx.source.size, claimed=claimed)
    _report(ctx, result, f"{what} at {offset:#x}")
    return result


def _report(ctx: Context, verdict: scan.Verdict, where: str) -> None:
    if verdict.ok:
        return
    reason = scan.Reason(verdict.bad_reason)
    code = _REASON_CODES.get(reason, ENTRY_OUT_OF_RANGE)
    ctx.findings.add(
        code,
        f"{where}: entry {verdict.bad_index} = {verdict.bad_value:#018x} "
        f"({reason.name.lower().replace('_', ' ')}); {verdict.bad_count} bad entr"
        f"{'y' if verdict.bad_count == 1 else 'ies'}",
    )


class _L2Walker:
    """Scan consumer: checks L2 entries in batches, whatever tables and pieces they come in.

    L2 entries are checked one by one, whatever table they sit in, so entries of many tables
    are gathered into one buffer and checked in one scanner call per :data:`L2_BATCH` bytes
    (a preallocated 1 TiB image has 16384 tables: one call each would cost more than the
    scan itself).  Each piece's file offset is remembered to name a bad entry's table.
    """

    def __init__(
        self,
        section: Qcow2Section,
        bits: int,
        file_size: int,
        claimed: bytearray | None,
        deferred: bool = False,
    ) -> None:
        # On a stream the walker is made before the image's size is known: its batches are
        # held (up to L2_STREAM_KEEP) and checked in ``report`` against the true size and
        # a claim map of the true file, so the answer is the seekable one.
        self._deferred = deferred
        self._held: list[tuple[bytes, list[tuple[int, int]]]] = []
        self._held_bytes = 0
        self.unchecked_entries = 0
        self._bits = bits
        self._cluster = 1 << bits
        self._file_size = file_size
        self._claimed = claimed
        self._version = section.version
        self._extended = section.extended_l2
        self._entry = 16 if self._extended else 8
        self._data_file = "external-data-file" in section.incompatible_features
        self.per_table = self._cluster // self._entry
        # One batch buffer, filled in place and checked whenever full.
        self._batch = memoryview(bytearray(L2_BATCH))
        self._filled = 0
        self._pieces: list[tuple[int, int]] = []  # (position in the batch, file offset)
        self.allocated = self.compressed = self.zero = self.unallocated = self.bad_count = 0
        self._first_bad: tuple[int, int] | None = None  # (file offset of the entry, value)
        self._first_reason = scan.Reason.OK

    def feed(self, offset: int, data: bytes) -> None:
        """Take a piece of the tables as a scan hands it over (a stream's path)."""
        piece = memoryview(data)
        while piece:
            space = self._space(offset)
            taken = min(len(space), len(piece))
            space[:taken] = piece[:taken]
            self._advance(taken)
            offset += taken
            piece = piece[taken:]

    def read_from(self, src: Source, runs: Sequence[tuple[int, int]]) -> None:
        """Read the tables of ``runs`` straight into the batch (what a seekable source's
        scan lets a consumer do): no bytes object, no copy per table."""
        for offset, length in runs:
            end = offset + length
            while offset < end:
                got = src.read_into(offset, self._space(offset)[: end - offset])
                if not got:
                    break
                self._advance(got)
                offset += got

    def _space(self, offset: int) -> memoryview:
        """The free part of the batch, for bytes from file ``offset`` on."""
        if not self._pieces or self._batch_end_offset() != offset:
            self._pieces.append((self._filled, offset))  # a new piece starts here
        return self._batch[self._filled :]

    def _advance(self, count: int) -> None:
        self._filled += count
        if self._filled == len(self._batch):
            self._flush()

    def _batch_end_offset(self) -> int:
        position, offset = self._pieces[-1]
        return offset + self._filled - position

    def _flush(self) -> None:
        whole = self._filled - self._filled % self._entry
        if whole and self._deferred and self._held_bytes + whole <= L2_STREAM_KEEP:
            self._held.append((bytes(self._batch[:whole]), list(self._pieces)))
            self._held_bytes += whole
        elif whole:
            if self._deferred:  # over the budget: checked now, without the true size
                self.unchecked_entries += whole // self._entry
            self._check(self._batch[:whole])
        rest = self._filled - whole  # part of an entry: kept for the next batch
        end = self._batch_end_offset() if self._pieces else 0
        self._batch[:rest] = self._batch[whole : self._filled]
        self._filled = rest
        self._pieces = [(0, end - rest)] if rest else []

    def _check(self, entries: bytes | memoryview) -> None:
        result = scan.qcow2_l2(
            entries,
            cluster_bits=self._bits,
            file_size=self._file_size,
            version=self._version,
            extended_l2=self._extended,
            has_data_file=self._data_file,
            claimed=self._claimed,
        )
        self.allocated += result.allocated
        self.compressed += result.compressed
        self.zero += result.zero
        self.unallocated += result.unallocated
        self.bad_count += result.bad_count
        if not result.ok and self._first_bad is None:
            self._first_bad = (self._file_offset(result.bad_index * self._entry), result.bad_value)
            self._first_reason = scan.Reason(result.bad_reason)

    def _file_offset(self, position: int) -> int:
        """The file offset of the byte at ``position`` in the current batch."""
        start, offset = 0, 0
        for piece_start, piece_offset in self._pieces:
            if piece_start > position:
                break
            start, offset = piece_start, piece_offset
        return offset + position - start

    def report(self, ctx: Context, file_size: int, claimed: bytearray | None) -> None:
        self._flush()
        self._file_size, self._claimed = file_size, claimed
        for entries, pieces in self._held:
            self._pieces = pieces
            self._check(entries)
        self._held = []
        if self.unchecked_entries:
            ctx.findings.add(
                F.STREAM_UNCHECKED,
                f"{self.unchecked_entries} L2 entries passed before the image's size was known "
                f"(over {L2_STREAM_KEEP} bytes of L2 tables): not checked against the file's "
                "end nor for clusters used twice",
            )
        if self._first_bad is None:
            return
        at, value = self._first_bad
        table = at - at % self._cluster
        reason = self._first_reason
        ctx.findings.add(
            _REASON_CODES.get(reason, ENTRY_OUT_OF_RANGE),
            f"L2 table at {table:#x}: entry {(at - table) // self._entry} = {value:#018x} "
            f"({reason.name.lower().replace('_', ' ')}); {self.bad_count} bad entr"
            f"{'y' if self.bad_count == 1 else 'ies'} in all L2 tables",
        )


# --- qemu-img info view ---------------------------------------------------------------------


def qemu_info(md: Any, filename: str | None = None) -> dict[str, Any]:
    """The keys of ``qemu-img info --output=json`` that come from the qcow2 header."""
    section: Qcow2Section | None = md.qcow2
    if section is None:
        raise InvalidImage("qcow2 header too damaged for a qemu-img view")
    data: dict[str, Any] = {
        "compat": "0.10" if section.version == 2 else "1.1",
        "compression-type": section.compression_type,
    }
    if section.version == 3:
        data["lazy-refcounts"] = section.lazy_refcounts
    if section.bitmaps:
        data["bitmaps"] = [
            {
                "flags": [f for f in b.flags if f in ("in-use", "auto")],
                "name": b.name,
                "granularity": b.granularity,
            }
            for b in section.bitmaps
        ]
    data["refcount-bits"] = section.refcount_bits
    if section.data_file is not None:
        data["data-file"] = section.data_file
    if "external-data-file" in section.incompatible_features:
        data["data-file-raw"] = section.data_file_raw
    if section.luks is not None:
        from . import luks  # imported already: it made section.luks

        data["encrypt"] = luks.qemu_luks_info(section.luks, with_format=True)
    elif section.encryption is not None:
        data["encrypt"] = {"format": section.encryption}
    if section.version == 3:
        data["corrupt"] = section.corrupt
        data["extended-l2"] = section.extended_l2
    info: dict[str, Any] = {
        "cluster-size": section.cluster_size,
        "format": "qcow2",
        "format-specific": {"type": "qcow2", "data": data},
        "dirty-flag": section.dirty,
    }
    if section.encryption is not None:
        info["encrypted"] = True
    if section.backing_file is not None:
        info["backing-filename"] = section.backing_file
        if section.backing_format:
            info["backing-filename-format"] = section.backing_format
    if section.snapshots:
        info["snapshots"] = [_qemu_snapshot(s) for s in section.snapshots]
    return info


def _qemu_snapshot(snap: Snapshot) -> dict[str, Any]:
    result: dict[str, Any] = {
        "vm-clock-nsec": snap.vm_clock_nsec % 1_000_000_000,
        "name": snap.name,
        "date-sec": snap.date_sec,
        "date-nsec": snap.date_nsec,
        "vm-clock-sec": snap.vm_clock_nsec // 1_000_000_000,
        "id": snap.id,
        "vm-state-size": snap.vm_state_size,
    }
    if snap.icount is not None:
        result["icount"] = snap.icount
    return result


FORMAT = FormatSpec(NAME, probe, parse, qemu_info)
