"""What a VHDX section reports: header and region-table copies, metadata items, the BAT."""

from __future__ import annotations

from ...frozen import frozen
from ..base import Section
from ..blocktables import TableSummary

# --- the section ---------------------------------------------------------------------------


@frozen
class TableCopy(Section):
    """One of the two copies of the region table: where, and why it is invalid if it is."""

    offset: int
    valid: bool
    problem: str | None


@frozen
class HeaderCopy(TableCopy):
    """One of the two header copies; the sequence number is as stored, valid or not."""

    sequence_number: int | None


@frozen
class RegionEntry(Section):
    guid: str
    name: str | None  # "bat", "metadata", or None for a region this library does not know
    file_offset: int
    length: int
    required: bool


@frozen
class MetadataItem(Section):
    item_id: str
    name: str | None  # e.g. "file_parameters"; None for an item this library does not know
    offset: int  # from the start of the metadata region
    length: int
    is_user: bool
    is_virtual_disk: bool
    is_required: bool


@frozen
class BatLayout(Section):
    """Where the BAT is and how many entries the disk needs: what a table scanner walks."""

    offset: int
    length: int
    chunk_ratio: int
    data_blocks: int
    entries: int  # payload entries plus the interleaved sector-bitmap entries


@frozen
class VhdxAllocation(TableSummary):
    """The BAT's counts: ``allocated`` is fully plus partially present payload blocks,
    ``unallocated`` not present, undefined and unmapped ones; ``entries`` includes the
    sector-bitmap entries."""

    partially_present: int
    sector_bitmaps_present: int


@frozen
class VhdxSection(Section):
    creator: str
    block_size: int | None
    logical_sector_size: int | None
    physical_sector_size: int | None
    fixed: bool | None  # File Parameters' LeaveBlocksAllocated bit
    has_parent: bool | None
    parent_locator: dict[str, str] | None  # its key/value entries as written
    parent_locator_type: str | None
    log_pending: bool | None
    virtual_disk_id: str | None  # the Page 83 Data GUID (the SCSI VPD page 83 identity)
    virtual_disk_size: int | None
    active_header: int | None  # 1 (at 64 KiB) or 2 (at 128 KiB)
    sequence_number: int | None
    file_write_guid: str | None
    data_write_guid: str | None
    log_guid: str | None
    log_version: int | None
    version: int | None
    log_offset: int | None
    log_length: int | None
    headers: tuple[HeaderCopy, ...]
    region_tables: tuple[TableCopy, ...]
    active_region_table: int | None  # 1 or 2
    regions: tuple[RegionEntry, ...]
    metadata_items: tuple[MetadataItem, ...]
    chunk_ratio: int | None
    bat: BatLayout | None
    #: What the deep walk of the BAT counted (None without ``deep`` or without a usable BAT).
    allocation: VhdxAllocation | None = None
    #: The log sequence replayed before the rest was read (None when there was nothing to
    #: replay): ``entries``, ``first_sequence``, ``last_sequence``, ``writes``.
    log_replay: dict[str, int] | None = None
