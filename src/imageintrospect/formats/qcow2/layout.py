"""qcow2 constants: the header, extension, snapshot and bitmap schemas, feature bits and limits."""

from __future__ import annotations

from typing import NamedTuple

import construct as c

from ...structs import EntryTable, Record

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
