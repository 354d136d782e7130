"""QED's header (qemu's QED specification, block/qed.h); little-endian.

The documented layout: scripts/gen_layouts.py derives ``imageintrospect._layouts`` from
the schemas here (run it after any change; docs/hacking.md).
"""

from __future__ import annotations

import construct as c

# Constants the format module also defines (tests/test_layouts.py checks they agree):
# these modules import nothing of the package, so they load even when the generated
# module is out of date.
MAGIC = b"QED\0"

HEADER = c.Struct(
    "magic" / c.Const(MAGIC),
    "cluster_size" / c.Int32ul,
    "table_size" / c.Int32ul,  # L1 and L2 tables, in clusters
    "header_size" / c.Int32ul,  # in clusters
    "features" / c.Int64ul,
    "compat_features" / c.Int64ul,
    "autoclear_features" / c.Int64ul,
    "l1_table_offset" / c.Int64ul,
    "image_size" / c.Int64ul,
    "backing_filename_offset" / c.Int32ul,
    "backing_filename_size" / c.Int32ul,
)
