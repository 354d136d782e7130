"""VMDK binary structures: sparse (KDMV), stream markers, COWD and seSparse headers.

The documented layout: scripts/gen_layouts.py derives ``imageintrospect._layouts`` from
the schemas here (run it after any change; docs/hacking.md).
"""

from __future__ import annotations

import construct as c

# Constants the format module also defines (tests/test_layouts.py checks they agree):
# these modules import nothing of the package, so they load even when the generated
# module is out of date.
SPARSE_MAGIC = b"KDMV"
COWD_MAGIC = b"COWD"

SPARSE_HEADER = c.Struct(
    "magic" / c.Const(SPARSE_MAGIC),
    "version" / c.Int32ul,
    "flags" / c.Int32ul,
    "capacity" / c.Int64ul,
    "grain_size" / c.Int64ul,
    "descriptor_offset" / c.Int64ul,
    "descriptor_size" / c.Int64ul,
    "num_gtes_per_gt" / c.Int32ul,
    "rgd_offset" / c.Int64ul,
    "gd_offset" / c.Int64ul,
    "overhead" / c.Int64ul,
    "unclean_shutdown" / c.Int8ul,
    "check_bytes" / c.Bytes(4),
    "compress_algorithm" / c.Int16ul,
)

#: A metadata marker sector: sectors that follow, size (0 for metadata), type.
METADATA_MARKER = c.Struct(
    "value" / c.Int64ul,
    "size" / c.Int32ul,
    "type" / c.Int32ul,
)

#: A grain marker: the guest sector of the grain and its compressed length, then the data.
GRAIN_MARKER = c.Struct("lba" / c.Int64ul, "size" / c.Int32ul)

COWD_HEADER = c.Struct(
    "magic" / c.Const(COWD_MAGIC),
    "version" / c.Int32ul,
    "flags" / c.Int32ul,
    "num_sectors" / c.Int32ul,
    "grain_size" / c.Int32ul,
    "gd_offset" / c.Int32ul,
    "num_gd_entries" / c.Int32ul,
    "free_sector" / c.Int32ul,
    # A union: a root disk keeps its geometry here, a child its parent's file name.
    "parent_or_geometry" / c.Bytes(1024),
    "parent_generation" / c.Int32ul,
    "generation" / c.Int32ul,
    "name" / c.Bytes(60),
    "description" / c.Bytes(512),
    "saved_generation" / c.Int32ul,
    "reserved" / c.Bytes(8),
    "unclean_shutdown" / c.Int32ul,
)

COWD_ROOT_GEOMETRY = c.Struct("cylinders" / c.Int32ul, "heads" / c.Int32ul, "sectors" / c.Int32ul)

SESPARSE_HEADER = c.Struct(
    "magic" / c.Int64ul,
    "version" / c.Int64ul,
    "capacity" / c.Int64ul,
    "grain_size" / c.Int64ul,
    "grain_table_size" / c.Int64ul,
    "flags" / c.Int64ul,
    "reserved" / c.Array(4, c.Int64ul),
    "volatile_header_offset" / c.Int64ul,
    "volatile_header_size" / c.Int64ul,
    "journal_header_offset" / c.Int64ul,
    "journal_header_size" / c.Int64ul,
    "journal_offset" / c.Int64ul,
    "journal_size" / c.Int64ul,
    "grain_dir_offset" / c.Int64ul,
    "grain_dir_size" / c.Int64ul,
    "grain_tables_offset" / c.Int64ul,
    "grain_tables_size" / c.Int64ul,
    "free_bitmap_offset" / c.Int64ul,
    "free_bitmap_size" / c.Int64ul,
    "backmap_offset" / c.Int64ul,
    "backmap_size" / c.Int64ul,
    "grains_offset" / c.Int64ul,
    "grains_size" / c.Int64ul,
)
