"""ISO 9660 volume descriptors, El Torito boot catalog entries, UDF descriptor tags.

The documented layout: scripts/gen_layouts.py derives ``imageintrospect._layouts`` from
the schemas here (run it after any change; docs/hacking.md).
"""

from __future__ import annotations

import construct as c

DESCRIPTOR_HEADER = c.Struct("type" / c.Int8ul, "identifier" / c.Bytes(5), "version" / c.Int8ul)

# Primary and supplementary descriptors share one layout; "both-endian" numbers are stored
# twice (little-endian, then big-endian) and should agree.
VOLUME_DESCRIPTOR = c.Struct(
    "type" / c.Int8ul,
    "identifier" / c.Bytes(5),
    "version" / c.Int8ul,
    "flags" / c.Int8ul,
    "system_id" / c.Bytes(32),
    "volume_id" / c.Bytes(32),
    c.Padding(8),
    "volume_space_size_le" / c.Int32ul,
    "volume_space_size_be" / c.Int32ub,
    "escape_sequences" / c.Bytes(32),
    "volume_set_size_le" / c.Int16ul,
    "volume_set_size_be" / c.Int16ub,
    "volume_sequence_number_le" / c.Int16ul,
    "volume_sequence_number_be" / c.Int16ub,
    "logical_block_size_le" / c.Int16ul,
    "logical_block_size_be" / c.Int16ub,
    "path_table_size_le" / c.Int32ul,
    "path_table_size_be" / c.Int32ub,
    "l_path_table" / c.Int32ul,
    "optional_l_path_table" / c.Int32ul,
    "m_path_table" / c.Int32ub,
    "optional_m_path_table" / c.Int32ub,
    "root_directory_record" / c.Bytes(34),
    "volume_set_id" / c.Bytes(128),
    "publisher_id" / c.Bytes(128),
    "data_preparer_id" / c.Bytes(128),
    "application_id" / c.Bytes(128),
    "copyright_file_id" / c.Bytes(37),
    "abstract_file_id" / c.Bytes(37),
    "bibliographic_file_id" / c.Bytes(37),
    "creation_date" / c.Bytes(17),
    "modification_date" / c.Bytes(17),
    "expiration_date" / c.Bytes(17),
    "effective_date" / c.Bytes(17),
    "file_structure_version" / c.Int8ul,
)

BOOT_RECORD = c.Struct(
    "type" / c.Int8ul,
    "identifier" / c.Bytes(5),
    "version" / c.Int8ul,
    "boot_system_id" / c.Bytes(32),
    "boot_id" / c.Bytes(32),
    "catalog_sector" / c.Int32ul,
)

VALIDATION_ENTRY = c.Struct(
    "header_id" / c.Int8ul,
    "platform" / c.Int8ul,
    c.Padding(2),
    "id_string" / c.Bytes(24),
    "checksum" / c.Int16ul,
    "key" / c.Bytes(2),
)

BOOT_ENTRY = c.Struct(
    "indicator" / c.Int8ul,
    "media" / c.Int8ul,
    "load_segment" / c.Int16ul,
    "system_type" / c.Int8ul,
    c.Padding(1),
    "sector_count" / c.Int16ul,
    "load_rba" / c.Int32ul,
)

SECTION_HEADER = c.Struct("indicator" / c.Int8ul, "platform" / c.Int8ul, "entries" / c.Int16ul)

UDF_TAG = c.Struct(
    "tag_id" / c.Int16ul,
    "version" / c.Int16ul,
    "checksum" / c.Int8ul,
    c.Padding(1),
    "serial" / c.Int16ul,
    "crc" / c.Int16ul,
    "crc_length" / c.Int16ul,
    "location" / c.Int32ul,
)

UDF_ANCHOR = c.Struct(
    "main_length" / c.Int32ul,
    "main_location" / c.Int32ul,
    "reserve_length" / c.Int32ul,
    "reserve_location" / c.Int32ul,
)
