"""What a qcow2 section reports: the header's fields, snapshots, bitmaps, allocation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...frozen import frozen
from ..base import Section

if TYPE_CHECKING:
    from ..luks import LuksSection


# --- the section ---------------------------------------------------------------------------


@frozen
class Snapshot(Section):
    id: str
    name: str
    vm_state_size: int
    date: str
    date_sec: int
    date_nsec: int
    vm_clock_nsec: int
    l1_table_offset: int
    l1_size: int
    disk_size: int | None
    icount: int | None


@frozen
class Bitmap(Section):
    name: str
    granularity: int
    flags: tuple[str, ...]
    table_offset: int
    table_size: int


@frozen
class Allocation(Section):
    """What the deep walk counted in the active L1/L2 tables."""

    l2_tables: int
    allocated_clusters: int
    compressed_clusters: int
    zero_clusters: int
    unallocated_clusters: int
    bad_entries: int
    refcount_blocks: int


@frozen
class Qcow2Section(Section):
    version: int
    cluster_size: int
    backing_file: str | None
    backing_format: str | None
    data_file: str | None
    data_file_raw: bool
    encryption: str | None
    compression_type: str
    extended_l2: bool
    lazy_refcounts: bool
    refcount_bits: int
    dirty: bool
    corrupt: bool
    snapshots: tuple[Snapshot, ...]
    bitmaps: tuple[Bitmap, ...]
    incompatible_features: tuple[str, ...]
    compatible_features: tuple[str, ...]
    autoclear_features: tuple[str, ...]
    header_length: int
    l1_size: int
    l1_table_offset: int
    refcount_table_offset: int
    refcount_table_clusters: int
    snapshots_offset: int
    encryption_header: dict[str, int] | None
    luks: LuksSection | None
    feature_names: dict[str, str]
    allocation: Allocation | None = None
