"""The records VMDK introspection reports (``Metadata.vmdk`` and what it holds)."""

from __future__ import annotations

from typing import Any

from ...frozen import frozen
from ...glance import vmware_properties
from ..base import Section

# --- the section ---------------------------------------------------------------------------


@frozen
class Geometry(Section):
    cylinders: int | None
    heads: int | None
    sectors: int | None


@frozen
class Extent(Section):
    """One extent line of the descriptor, values as written (sizes in 512-byte sectors)."""

    access: str
    sectors: int
    type: str
    file: str | None
    offset: int | None


@frozen
class SparseHeader(Section):
    """The raw fields of a sparse extent header (offsets and sizes in sectors)."""

    version: int
    flags: int
    capacity: int
    grain_size: int
    descriptor_offset: int
    descriptor_size: int
    num_gtes_per_gt: int
    rgd_offset: int
    gd_offset: int
    overhead: int
    unclean_shutdown: int
    newline_check_ok: bool
    compress_algorithm: int


@frozen
class StreamInfo(Section):
    """Where a streamOptimized disk keeps its tables (byte offsets)."""

    layout: str  # "qemu": real gdOffset, no footer; "vmware": footer at the end
    gd_at_end: bool
    footer_offset: int | None
    eos_offset: int | None
    trailing_zero_bytes: int


@frozen
class GrainTables(Section):
    """The deep walk of a sparse extent's grain directory and grain tables (entry counts).

    ``source``: ``"directory"`` when the tables were read where the directory points
    (monolithicSparse, qemu's streams), ``"markers"`` when they were taken from the GT markers
    of a stream as it passed (VMware's and VirtualBox's layout).
    """

    source: str
    grain_tables: int
    allocated_grains: int
    zeroed_grains: int
    bad_entries: int
    redundant_mismatches: int | None  # None: no redundant directory walked


@frozen
class MarkerWalk(Section):
    """The walk over every marker of a streamOptimized extent, from overHead to the end."""

    start: int
    markers: int
    grains: int
    compressed_bytes: int
    gt_markers: int
    gd_markers: int
    footer_markers: int
    other_markers: int
    bad_markers: int
    eos_offset: int | None
    complete: bool  # reached the end of the file without a structural error


@frozen
class CowdInfo(Section):
    version: int
    flags: int
    root: bool
    gd_offset: int
    num_gd_entries: int
    free_sector: int
    generation: int
    name: str
    description: str


@frozen
class SeSparseInfo(Section):
    version: int
    grain_table_size: int
    flags: int
    grain_dir_offset: int
    grain_dir_size: int
    grains_offset: int
    grains_size: int


@frozen
class QemuExtent(Section):
    """An extent as qemu would open it; ``file`` None is the image itself."""

    file: str | None
    type: str
    sectors: int
    flat: bool
    compressed: bool
    cluster_size: int | None  # None: flat, or inside a file that is not opened


@frozen
class QemuView(Section):
    """What qemu-img 7.2 would take from these bytes (``create-type`` etc. in its info)."""

    opens: bool
    error: str | None
    create_type: str
    cid: int | None
    parent_cid: int | None
    backing_file: str | None
    extents: tuple[QemuExtent, ...]
    extent_count: int
    virtual_size: int | None


@frozen
class VmdkSection(Section):
    header_kind: str  # "sparse", "cowd", "sesparse" or "descriptor"
    create_type: str | None
    adapter_type: str | None
    version: int | None
    cid: str | None
    parent_cid: str | None
    parent_file: str | None
    hw_version: str | None
    tools_version: str | None
    geometry: Geometry | None
    grain_size: int | None
    compressed: bool
    extents: tuple[Extent, ...]
    ddb: dict[str, str]
    encoding: str | None = None
    capacity: int | None = None
    gd_offset: int | None = None
    rgd_offset: int | None = None
    descriptor_offset: int | None = None
    descriptor_size: int | None = None
    header: SparseHeader | None = None
    footer: SparseHeader | None = None
    stream: StreamInfo | None = None
    cowd: CowdInfo | None = None
    sesparse: SeSparseInfo | None = None
    qemu: QemuView | None = None
    extent_count: int = 0
    tables: GrainTables | None = None
    markers: MarkerWalk | None = None

    def glance_properties(self, image: dict[str, Any]) -> dict[str, Any]:
        return {**image, **vmware_properties(self.create_type, self.adapter_type)}
