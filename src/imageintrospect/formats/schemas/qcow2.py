"""qcow2's on-disk structures (qemu's docs/interop/qcow2.txt); big-endian.

The documented layout: scripts/gen_layouts.py derives ``imageintrospect._layouts`` from
the schemas here (run it after any change; docs/hacking.md).
"""

from __future__ import annotations

import construct as c

# Constants the format module also defines (tests/test_layouts.py checks they agree):
# these modules import nothing of the package, so they load even when the generated
# module is out of date.
MAGIC = b"QFI\xfb"

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

HEADER_V3_TAIL = c.Struct(
    "incompatible_features" / c.Int64ub,
    "compatible_features" / c.Int64ub,
    "autoclear_features" / c.Int64ub,
    "refcount_order" / c.Int32ub,
    "header_length" / c.Int32ub,
)

# Type and length of each header extension: a two-field TLV.
EXTENSION_HEADER = c.Struct("type" / c.Int32ub, "length" / c.Int32ub)

# The feature-name table: its 48-byte entries are unpacked in one struct call.
FEATURE_NAME = c.Struct("type" / c.Int8ub, "bit" / c.Int8ub, "name" / c.Bytes(46))

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

# The optional extra data of a snapshot entry, as far as each field reaches.
SNAPSHOT_EXTRA = c.Struct(
    "vm_state_size_large" / c.Int64ub, "disk_size" / c.Int64ub, "icount" / c.Int64ub
)

BITMAP_DIRECTORY_ENTRY = c.Struct(
    "table_offset" / c.Int64ub,
    "table_size" / c.Int32ub,
    "flags" / c.Int32ub,
    "type" / c.Int8ub,
    "granularity_bits" / c.Int8ub,
    "name_size" / c.Int16ub,
    "extra_data_size" / c.Int32ub,
)
