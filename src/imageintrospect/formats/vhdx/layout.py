"""VHDX constants: sizes and offsets, region and metadata GUIDs, the on-disk schemas."""

from __future__ import annotations

import uuid

from ... import _layouts
from ...structs import EntryTable

NAME = "vhdx"
SIGNATURE = b"vhdxfile"

KiB = 1024
MiB = 1024 * KiB
TiB = 1024 * 1024 * MiB

CREATOR_OFFSET = 8
CREATOR_SIZE = 512
HEADER_OFFSETS = (64 * KiB, 128 * KiB)
HEADER_SIZE = 4 * KiB
HEADER_SIGNATURE = b"head"
REGION_TABLE_OFFSETS = (192 * KiB, 256 * KiB)
REGION_TABLE_SIZE = 64 * KiB
REGION_TABLE_SIGNATURE = b"regi"
CHECKSUM_OFFSET = 4  # of the u32 checksum in a header and in a region table
HEADER_SECTION_SIZE = 1 * MiB
METADATA_TABLE_SIZE = 64 * KiB
METADATA_SIGNATURE = b"metadata"
MAX_TABLE_ENTRIES = 2047  # region table and metadata table alike
# Regions, the log and payload blocks are placed on 1 MiB boundaries.
ALIGNMENT = 1 * MiB
MIN_BLOCK_SIZE = 1 * MiB
MAX_BLOCK_SIZE = 256 * MiB
SECTOR_SIZES = (512, 4096)
QEMU_LOGICAL_SECTOR = 512  # the only logical sector size qemu 7.2 opens
MAX_VIRTUAL_SIZE = 64 * TiB
BAT_ENTRY_SIZE = 8
# chunk_ratio = 2^23 * logical_sector_size / block_size: one sector-bitmap block covers
# 2^23 sectors, and a sector-bitmap BAT entry follows every chunk_ratio payload entries.
SECTORS_PER_BITMAP_BLOCK = 1 << 23
# How much of a parent locator item we read (its key/value strings are paths).
PARENT_LOCATOR_LIMIT = 128 * KiB
# How much of the metadata region a stream is asked to keep in one go: its table.  The items
# (after the table: qemu makes the region 1 MiB and puts them right behind it) are asked for
# once the table has been read, while they are still ahead, so a stream never holds the
# whole region (the oslo.utils drop-in must stay under 512 KiB).
METADATA_WINDOW = 64 * KiB
# How many problems of one kind a finding's message spells out.
MESSAGES_PER_FINDING = 5

# --- GUIDs ---------------------------------------------------------------------------------

BAT_REGION = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA_REGION = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
REGION_NAMES = {BAT_REGION: "bat", METADATA_REGION: "metadata"}

FILE_PARAMETERS = "file_parameters"
VIRTUAL_DISK_SIZE = "virtual_disk_size"
PAGE_83_DATA = "page_83_data"
LOGICAL_SECTOR_SIZE = "logical_sector_size"
PHYSICAL_SECTOR_SIZE = "physical_sector_size"
PARENT_LOCATOR = "parent_locator"
METADATA_NAMES = {
    uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B"): FILE_PARAMETERS,
    uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8"): VIRTUAL_DISK_SIZE,
    uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746"): PAGE_83_DATA,
    uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F"): LOGICAL_SECTOR_SIZE,
    uuid.UUID("CDA348C7-445D-4471-9CC9-E9885251C556"): PHYSICAL_SECTOR_SIZE,
    uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C"): PARENT_LOCATOR,
}
# Every VHDX has these items; the parent locator only a differencing one.
REQUIRED_ITEMS = (
    FILE_PARAMETERS,
    VIRTUAL_DISK_SIZE,
    PAGE_83_DATA,
    LOGICAL_SECTOR_SIZE,
    PHYSICAL_SECTOR_SIZE,
)
# The parent locator type of a VHDX parent (the only type the specification defines).
VHDX_PARENT_LOCATOR_TYPE = uuid.UUID("B04AEFB7-D19E-4A81-B789-25B8E9445913")
ZERO_GUID = uuid.UUID(int=0)

FILE_PARAMETERS_LEAVE_BLOCKS_ALLOCATED = 1 << 0
FILE_PARAMETERS_HAS_PARENT = 1 << 1
REGION_REQUIRED = 1 << 0
METADATA_IS_USER = 1 << 0
METADATA_IS_VIRTUAL_DISK = 1 << 1
METADATA_IS_REQUIRED = 1 << 2

# --- schemas -------------------------------------------------------------------------------

# The layouts, derived from the construct schemas in formats/schemas/vhdx.py by
# scripts/gen_layouts.py (edit the schema, then run it): no construct on this path.
HEADER = _layouts.VHDX_HEADER
REGION_TABLE_HEADER = _layouts.VHDX_REGION_TABLE_HEADER
REGION_ENTRY = _layouts.VHDX_REGION_ENTRY
METADATA_TABLE_HEADER = _layouts.VHDX_METADATA_TABLE_HEADER
METADATA_ENTRY = _layouts.VHDX_METADATA_ENTRY
FILE_PARAMETERS_ITEM = _layouts.VHDX_FILE_PARAMETERS_ITEM
PARENT_LOCATOR_HEADER = _layouts.VHDX_PARENT_LOCATOR_HEADER
PARENT_LOCATOR_ENTRY = _layouts.VHDX_PARENT_LOCATOR_ENTRY
HEADER_FIELDS_SIZE = HEADER.size

REGION_TABLE_HEADER_SIZE = REGION_TABLE_HEADER.size
REGION_ENTRY_SIZE = REGION_ENTRY.size

METADATA_TABLE_HEADER_SIZE = METADATA_TABLE_HEADER.size
METADATA_ENTRY_SIZE = METADATA_ENTRY.size
# A table's entries decoded by struct (construct costs about 10 µs an entry).
REGION_TABLE = EntryTable(REGION_ENTRY, "VHDX region table entry")
METADATA_TABLE = EntryTable(METADATA_ENTRY, "VHDX metadata table entry")

PARENT_LOCATOR_HEADER_SIZE = PARENT_LOCATOR_HEADER.size
PARENT_LOCATOR_ENTRY_SIZE = PARENT_LOCATOR_ENTRY.size
PARENT_LOCATOR_ENTRIES = EntryTable(PARENT_LOCATOR_ENTRY, "vhdx parent locator entry")

# Bytes each known item must hold (the parent locator is variable).
ITEM_SIZES = {
    FILE_PARAMETERS: 8,
    VIRTUAL_DISK_SIZE: 8,
    PAGE_83_DATA: 16,
    LOGICAL_SECTOR_SIZE: 4,
    PHYSICAL_SECTOR_SIZE: 4,
}
