"""VDI's pre-header and header (VirtualBox's VDICore.h, version 1.1); little-endian.

The documented layout: scripts/gen_layouts.py derives ``imageintrospect._layouts`` from
the schemas here (run it after any change; docs/hacking.md).
"""

from __future__ import annotations

import construct as c

PREHEADER = c.Struct(
    "banner" / c.Bytes(64),
    "signature" / c.Int32ul,
    "version" / c.Int32ul,
)

GEOMETRY = c.Struct(
    "cylinders" / c.Int32ul,
    "heads" / c.Int32ul,
    "sectors" / c.Int32ul,
    "sector_size" / c.Int32ul,
)

# Version 1.x header, from 0x48.  The LCHS geometry at its end exists only when header_size
# says so (VirtualBox's "1.1 plus" header, 0x190 bytes); qemu writes the 0x180-byte header.
HEADER_V1 = c.Struct(
    "header_size" / c.Int32ul,  # 0x48
    "image_type" / c.Int32ul,  # 0x4C
    "image_flags" / c.Int32ul,  # 0x50
    "comment" / c.Bytes(256),  # 0x54
    "block_map_offset" / c.Int32ul,  # 0x154
    "data_offset" / c.Int32ul,  # 0x158
    "legacy_geometry" / GEOMETRY,  # 0x15C
    "unused" / c.Int32ul,  # 0x16C
    "disk_size" / c.Int64ul,  # 0x170
    "block_size" / c.Int32ul,  # 0x178
    "block_extra" / c.Int32ul,  # 0x17C
    "blocks" / c.Int32ul,  # 0x180
    "blocks_allocated" / c.Int32ul,  # 0x184
    "uuid" / c.Bytes(16),  # 0x188: this image's creation UUID
    "modify_uuid" / c.Bytes(16),  # 0x198: changes on every modification
    "parent_uuid" / c.Bytes(16),  # 0x1A8: "linkage", the parent's creation UUID
    "parent_modify_uuid" / c.Bytes(16),  # 0x1B8: the parent's modification UUID
    "lchs_geometry" / GEOMETRY,  # 0x1C8
)
