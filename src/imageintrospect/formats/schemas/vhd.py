"""VHD footer and dynamic header (Microsoft's VHD Image Format Specification); big-endian.

The documented layout: scripts/gen_layouts.py derives ``imageintrospect._layouts`` from
the schemas here (run it after any change; docs/hacking.md).
"""

from __future__ import annotations

import construct as c

# Constants the format module also defines (tests/test_layouts.py checks they agree):
# these modules import nothing of the package, so they load even when the generated
# module is out of date.
LOCATOR_COUNT = 8

FOOTER = c.Struct(
    "cookie" / c.Bytes(8),
    "features" / c.Int32ub,
    "version" / c.Int32ub,
    "data_offset" / c.Int64ub,
    "timestamp" / c.Int32ub,
    "creator_app" / c.Bytes(4),
    "creator_version" / c.Int32ub,
    "creator_host_os" / c.Bytes(4),
    "original_size" / c.Int64ub,
    "current_size" / c.Int64ub,
    "cylinders" / c.Int16ub,
    "heads" / c.Int8ub,
    "sectors" / c.Int8ub,
    "disk_type" / c.Int32ub,
    "checksum" / c.Int32ub,
    "uuid" / c.Bytes(16),
    "saved_state" / c.Int8ub,
    "reserved" / c.Bytes(427),
)

PARENT_LOCATOR = c.Struct(
    "code" / c.Bytes(4),
    "data_space" / c.Int32ub,
    "data_length" / c.Int32ub,
    "reserved" / c.Int32ub,
    "data_offset" / c.Int64ub,
)

DYNAMIC_HEADER = c.Struct(
    "cookie" / c.Bytes(8),
    "data_offset" / c.Int64ub,
    "table_offset" / c.Int64ub,
    "header_version" / c.Int32ub,
    "max_table_entries" / c.Int32ub,
    "block_size" / c.Int32ub,
    "checksum" / c.Int32ub,
    "parent_uuid" / c.Bytes(16),
    "parent_timestamp" / c.Int32ub,
    "reserved1" / c.Int32ub,
    "parent_name" / c.Bytes(512),
    "locators" / c.Array(LOCATOR_COUNT, PARENT_LOCATOR),
    "reserved2" / c.Bytes(256),
)
