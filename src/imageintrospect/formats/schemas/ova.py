"""The ustar header of the tar archive an OVA is.

The documented layout: scripts/gen_layouts.py derives ``imageintrospect._layouts`` from
the schemas here (run it after any change; docs/hacking.md).
"""

from __future__ import annotations

import construct as c

# The ustar header: 512 bytes of fixed text fields.
TAR_HEADER = c.Struct(
    "name" / c.Bytes(100),
    "mode" / c.Bytes(8),
    "uid" / c.Bytes(8),
    "gid" / c.Bytes(8),
    "size" / c.Bytes(12),
    "mtime" / c.Bytes(12),
    "checksum" / c.Bytes(8),
    "typeflag" / c.Bytes(1),
    "linkname" / c.Bytes(100),
    "magic" / c.Bytes(6),
    "version" / c.Bytes(2),
    "uname" / c.Bytes(32),
    "gname" / c.Bytes(32),
    "devmajor" / c.Bytes(8),
    "devminor" / c.Bytes(8),
    "prefix" / c.Bytes(155),
    "padding" / c.Bytes(12),
)
