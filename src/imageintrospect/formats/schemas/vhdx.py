"""VHDX structures (Microsoft's VHDX format specification); little-endian.

The documented layout: scripts/gen_layouts.py derives ``imageintrospect._layouts`` from
the schemas here (run it after any change; docs/hacking.md).
"""

from __future__ import annotations

import construct as c

HEADER = c.Struct(
    "signature" / c.Bytes(4),
    "checksum" / c.Int32ul,
    "sequence_number" / c.Int64ul,
    "file_write_guid" / c.Bytes(16),
    "data_write_guid" / c.Bytes(16),
    "log_guid" / c.Bytes(16),
    "log_version" / c.Int16ul,
    "version" / c.Int16ul,
    "log_length" / c.Int32ul,
    "log_offset" / c.Int64ul,
)

REGION_TABLE_HEADER = c.Struct(
    "signature" / c.Bytes(4),
    "checksum" / c.Int32ul,
    "entry_count" / c.Int32ul,
    "reserved" / c.Int32ul,
)

REGION_ENTRY = c.Struct(
    "guid" / c.Bytes(16),
    "file_offset" / c.Int64ul,
    "length" / c.Int32ul,
    "flags" / c.Int32ul,
)

METADATA_TABLE_HEADER = c.Struct(
    "signature" / c.Bytes(8),
    "reserved" / c.Int16ul,
    "entry_count" / c.Int16ul,
    "reserved2" / c.Bytes(20),
)

METADATA_ENTRY = c.Struct(
    "item_id" / c.Bytes(16),
    "offset" / c.Int32ul,
    "length" / c.Int32ul,
    "flags" / c.Int32ul,
    "reserved" / c.Int32ul,
)

FILE_PARAMETERS_ITEM = c.Struct("block_size" / c.Int32ul, "flags" / c.Int32ul)

PARENT_LOCATOR_HEADER = c.Struct(
    "locator_type" / c.Bytes(16),
    "reserved" / c.Int16ul,
    "key_value_count" / c.Int16ul,
)

PARENT_LOCATOR_ENTRY = c.Struct(
    "key_offset" / c.Int32ul,
    "value_offset" / c.Int32ul,
    "key_length" / c.Int16ul,
    "value_length" / c.Int16ul,
)
