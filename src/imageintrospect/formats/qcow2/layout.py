"""qcow2 constants: the header, extension, snapshot and bitmap schemas, feature bits and limits."""

from __future__ import annotations

from typing import NamedTuple

from ... import _layouts
from ...structs import EntryTable, Record

NAME = "qcow2"
MAGIC = b"QFI\xfb"

# --- schemas -------------------------------------------------------------------------------

# The layouts, derived from the construct schemas in formats/schemas/qcow2.py by
# scripts/gen_layouts.py (edit the schema, then run it): no construct on this path.
HEADER_V2 = _layouts.QCOW2_HEADER_V2
HEADER_V3_TAIL = _layouts.QCOW2_HEADER_V3_TAIL
EXTENSION_HEADER = _layouts.QCOW2_EXTENSION_HEADER
FEATURE_NAME = _layouts.QCOW2_FEATURE_NAME
BITMAPS_EXTENSION = _layouts.QCOW2_BITMAPS_EXTENSION
ENCRYPTION_POINTER = _layouts.QCOW2_ENCRYPTION_POINTER
SNAPSHOT_ENTRY = _layouts.QCOW2_SNAPSHOT_ENTRY
SNAPSHOT_EXTRA = _layouts.QCOW2_SNAPSHOT_EXTRA
BITMAP_DIRECTORY_ENTRY = _layouts.QCOW2_BITMAP_DIRECTORY_ENTRY


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

V3_MIN_HEADER_LENGTH = V2_HEADER_LENGTH + HEADER_V3_TAIL.size

EXTENSION_HEADERS = EntryTable(EXTENSION_HEADER, "qcow2 extension")
FEATURE_NAMES = EntryTable(FEATURE_NAME, "qcow2 feature name")

# Snapshot entries repeat: decoded by struct, derived from the schema above.
SNAPSHOT_TABLE = EntryTable(SNAPSHOT_ENTRY, "qcow2 snapshot entry")
SNAPSHOT_ENTRY_SIZE = SNAPSHOT_TABLE.size
SNAPSHOT_EXTRAS = EntryTable(SNAPSHOT_EXTRA, "qcow2 snapshot extra")

BITMAP_DIRECTORY_TABLE = EntryTable(BITMAP_DIRECTORY_ENTRY, "qcow2 bitmap entry")
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
