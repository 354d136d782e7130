"""MBR, GPT and FAT boot-sector structures (the UEFI specification, the PC MBR).

The documented layout: scripts/gen_layouts.py derives ``imageintrospect._layouts`` from
the schemas here (run it after any change; docs/hacking.md).
"""

from __future__ import annotations

import construct as c

MBR_ENTRY = c.Struct(
    "status" / c.Int8ul,
    "chs_first" / c.Bytes(3),
    "type" / c.Int8ul,
    "chs_last" / c.Bytes(3),
    "first_lba" / c.Int32ul,
    "sectors" / c.Int32ul,
)

MBR_TABLE = c.Array(4, MBR_ENTRY)

GPT_HEADER = c.Struct(
    "signature" / c.Bytes(8),
    "revision" / c.Int32ul,
    "header_size" / c.Int32ul,
    "header_crc32" / c.Int32ul,
    "reserved" / c.Int32ul,
    "current_lba" / c.Int64ul,
    "backup_lba" / c.Int64ul,
    "first_usable_lba" / c.Int64ul,
    "last_usable_lba" / c.Int64ul,
    "disk_guid" / c.Bytes(16),
    "entries_lba" / c.Int64ul,
    "entry_count" / c.Int32ul,
    "entry_size" / c.Int32ul,
    "entries_crc32" / c.Int32ul,
)

GPT_ENTRY = c.Struct(
    "type_guid" / c.Bytes(16),
    "unique_guid" / c.Bytes(16),
    "first_lba" / c.Int64ul,
    "last_lba" / c.Int64ul,
    "attributes" / c.Int64ul,
    "name" / c.Bytes(72),
)

# The BIOS parameter block fields shared by every FAT variant (and, in part, NTFS).
FAT_BPB = c.Struct(
    "jump" / c.Bytes(3),
    "oem_name" / c.Bytes(8),
    "bytes_per_sector" / c.Int16ul,
    "sectors_per_cluster" / c.Int8ul,
    "reserved_sectors" / c.Int16ul,
    "fat_count" / c.Int8ul,
    "root_entries" / c.Int16ul,
    "total_sectors_16" / c.Int16ul,
    "media" / c.Int8ul,
)
