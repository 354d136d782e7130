"""VMDK: sparse extent headers, text descriptors, streamOptimized layouts, and qemu's view.

A VMDK "image" is one of four things, told apart by its first bytes:

* a **sparse extent** (``KDMV``): header, embedded text descriptor, grain directory and grain
  tables; ``monolithicSparse`` and ``streamOptimized`` disks are one such file.  A stream
  either keeps qemu's layout (real ``gdOffset``, tables at the front) or VMware's
  (``gdOffset`` all ones in the head header, the real one in a footer near the end).
* a **COWD** extent (ESX 2 / ``vmfsSparse`` redo logs; a 2048-byte header naming its parent),
* a **seSparse** extent (ESX snapshot deltas; u64 magic ``0xCAFEBABE``),
* a **text descriptor** that only names other files holding the data.

Layouts: VMware's *Virtual Disk Format 5.0* and qemu's ``block/vmdk.c`` behaviour (qemu-img
7.2).  Everything that names another file is reported, never opened.

Besides what the descriptor says, :class:`QemuView` records what qemu itself would take from
the same bytes: qemu reads the CID, parent CID and parent hint with ``strstr`` in a fixed
window at offset 512 (not at the header's descriptor offset), takes the createType of a
sparse file from the header, and scans extent lines with ``sscanf`` across line breaks.
Where that differs from the descriptor, a finding says so; ``qemu_info`` is built from it.
"""

from __future__ import annotations

import bisect
import codecs
import collections
import functools
import re
import struct
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import construct as c

from .. import findings as F
from .. import scan
from ..errors import InvalidImage
from ..source import SCAN_WINDOW, Range, Source, StreamGap
from ..stream import UNKNOWN_SIZE
from ..structs import cstring, parse_struct
from .base import Context, FormatSpec, Parsed, Probe, Section

NAME = "vmdk"

SECTOR = 512
SPARSE_MAGIC = b"KDMV"
COWD_MAGIC = b"COWD"
SESPARSE_MAGIC = (0xCAFEBABE).to_bytes(8, "little")
#: gdOffset meaning "the grain directory is at the end of the stream; read the footer".
GD_AT_END = 0xFFFF_FFFF_FFFF_FFFF

FLAG_NEWLINE_TEST = 0x1
FLAG_REDUNDANT_GD = 0x2
FLAG_ZEROED_GRAIN = 0x4
FLAG_COMPRESSED = 0x10000
FLAG_MARKERS = 0x20000
KNOWN_FLAGS = (
    FLAG_NEWLINE_TEST | FLAG_REDUNDANT_GD | FLAG_ZEROED_GRAIN | FLAG_COMPRESSED | FLAG_MARKERS
)
COMPRESSION_NONE = 0
COMPRESSION_DEFLATE = 1
NEWLINE_CHECK = b"\n \r\n"

MARKER_EOS = 0
MARKER_GT = 1
MARKER_GD = 2
MARKER_FOOTER = 3
MARKER_PROGRESS = 4  # some vSphere output

COWD_HEADER_SIZE = 2048
COWD_FLAG_ROOT = 0x1
COWD_GTES_PER_GT = 4096
SESPARSE_VERSION = 0x0000_0002_0000_0001

#: A descriptor larger than this is not read (qemu reads at most 1 MiB - 1 bytes of it).
MAX_DESCRIPTOR = 1024 * 1024
#: How much of a text descriptor file qemu reads (``vmdk_read_desc``).
QEMU_DESCRIPTOR_READ = MAX_DESCRIPTOR - 1
# deep=False reads at most 1 MiB in all (contract §5): descriptors are read only this far then.
HEADER_ONLY_DESCRIPTOR_READ = 768 * 1024
HEADER_ONLY_REREAD = 128 * 1024
#: qemu reads CID, parentCID and parentFileNameHint from this many bytes (``DESC_SIZE``) ...
QEMU_CID_WINDOW = 20 * SECTOR
#: ... at this offset in a sparse file, whatever the header's descriptorOffset says.
QEMU_SPARSE_DESC_OFFSET = 0x200
#: qemu's limits for a sparse extent (``vmdk_open_vmdk4`` / ``vmdk_add_extent``).
QEMU_MAX_GTES_PER_GT = 512
QEMU_MAX_GRAIN_SECTORS = 0x200000
QEMU_MAX_GD_ENTRIES = 32 * 1024 * 1024
#: qemu's backing name buffer (``PATH_MAX``), minus the terminating NUL.
QEMU_MAX_BACKING = 4095
#: qemu probes with the first 2048 bytes.
QEMU_PROBE_BYTES = 2048
#: How far back from the end of a stream the footer is looked for (past zero padding).
FOOTER_SEARCH = 64 * 1024
#: Bounds on what is kept from a hostile descriptor (the counts are still reported).
MAX_EXTENTS = 1024
MAX_DDB_KEYS = 4096
#: Keys kept however many others come first (they decide the findings).
KEYS_ALWAYS_KEPT = {
    "version",
    "encoding",
    "cid",
    "parentcid",
    "createtype",
    "parentfilenamehint",
    "ddb.adaptertype",
    "ddb.virtualhwversion",
    "ddb.toolsversion",
    "ddb.geometry.cylinders",
    "ddb.geometry.heads",
    "ddb.geometry.sectors",
}
MAX_EXTENT_FINDINGS = 32
MAX_SHOWN = 160
MAX_VIRTUAL_SIZE = (1 << 63) - 1

#: createType values, lower-cased → as VMware spells them.
CREATE_TYPES = {
    name.lower(): name
    for name in [
        "monolithicSparse",
        "monolithicFlat",
        "twoGbMaxExtentSparse",
        "twoGbMaxExtentFlat",
        "streamOptimized",
        "vmfs",
        "vmfsSparse",
        "vmfsThin",
        "vmfsPreallocated",
        "vmfsEagerZeroedThick",
        "vmfsRaw",
        "vmfsRDM",
        "vmfsRDMP",
        "vmfsPassthroughRawDeviceMap",
        "vmfsRawDeviceMap",
        "fullDevice",
        "partitionedDevice",
        "custom",
        "seSparse",
    ]
}
#: The only createTypes whose data lives in the one file (a sparse extent header).
SELF_CONTAINED = {"monolithicsparse", "streamoptimized"}
EXTENT_TYPES = {"FLAT", "SPARSE", "ZERO", "VMFS", "VMFSSPARSE", "VMFSRDM", "VMFSRAW", "SESPARSE"}
ACCESS_MODES = {"RW", "RDONLY", "NOACCESS"}
#: createTypes qemu accepts in a text descriptor (``vmdk_open_desc_file``).
QEMU_DESCRIPTOR_TYPES = (
    "monolithicFlat",
    "vmfs",
    "vmfsSparse",
    "seSparse",
    "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
)
QEMU_EXTENT_TYPES = ("FLAT", "SPARSE", "VMFS", "VMFSSPARSE", "SESPARSE")
QEMU_FLAT_TYPES = ("FLAT", "VMFS")
#: Text encodings a descriptor may declare that keep ASCII as ASCII (so ``key=`` stays legible).
ASCII_COMPATIBLE = {
    "ascii",
    "utf-8",
    "latin-1",
    "cp1250",
    "cp1251",
    "cp1252",
    "cp1253",
    "cp1254",
    "cp1255",
    "cp1256",
    "cp1257",
    "cp1258",
    "cp932",
    "cp936",
    "cp949",
    "cp950",
    "shift_jis",
    "euc_jp",
    "euc_kr",
    "gbk",
    "gb2312",
    "gb18030",
    "big5",
    "koi8-r",
}

# --- schemas -------------------------------------------------------------------------------

SPARSE_HEADER = c.Struct(
    "magic" / c.Const(SPARSE_MAGIC),
    "version" / c.Int32ul,
    "flags" / c.Int32ul,
    "capacity" / c.Int64ul,
    "grain_size" / c.Int64ul,
    "descriptor_offset" / c.Int64ul,
    "descriptor_size" / c.Int64ul,
    "num_gtes_per_gt" / c.Int32ul,
    "rgd_offset" / c.Int64ul,
    "gd_offset" / c.Int64ul,
    "overhead" / c.Int64ul,
    "unclean_shutdown" / c.Int8ul,
    "check_bytes" / c.Bytes(4),
    "compress_algorithm" / c.Int16ul,
)
SPARSE_HEADER_SIZE = SECTOR

#: A metadata marker sector: sectors that follow, size (0 for metadata), type.
METADATA_MARKER = c.Struct(
    "value" / c.Int64ul,
    "size" / c.Int32ul,
    "type" / c.Int32ul,
)
METADATA_MARKER_SIZE = 16
#: A grain marker: the guest sector of the grain and its compressed length, then the data.
GRAIN_MARKER = c.Struct("lba" / c.Int64ul, "size" / c.Int32ul)

COWD_HEADER = c.Struct(
    "magic" / c.Const(COWD_MAGIC),
    "version" / c.Int32ul,
    "flags" / c.Int32ul,
    "num_sectors" / c.Int32ul,
    "grain_size" / c.Int32ul,
    "gd_offset" / c.Int32ul,
    "num_gd_entries" / c.Int32ul,
    "free_sector" / c.Int32ul,
    # A union: a root disk keeps its geometry here, a child its parent's file name.
    "parent_or_geometry" / c.Bytes(1024),
    "parent_generation" / c.Int32ul,
    "generation" / c.Int32ul,
    "name" / c.Bytes(60),
    "description" / c.Bytes(512),
    "saved_generation" / c.Int32ul,
    "reserved" / c.Bytes(8),
    "unclean_shutdown" / c.Int32ul,
)
COWD_ROOT_GEOMETRY = c.Struct("cylinders" / c.Int32ul, "heads" / c.Int32ul, "sectors" / c.Int32ul)

SESPARSE_HEADER = c.Struct(
    "magic" / c.Int64ul,
    "version" / c.Int64ul,
    "capacity" / c.Int64ul,
    "grain_size" / c.Int64ul,
    "grain_table_size" / c.Int64ul,
    "flags" / c.Int64ul,
    "reserved" / c.Array(4, c.Int64ul),
    "volatile_header_offset" / c.Int64ul,
    "volatile_header_size" / c.Int64ul,
    "journal_header_offset" / c.Int64ul,
    "journal_header_size" / c.Int64ul,
    "journal_offset" / c.Int64ul,
    "journal_size" / c.Int64ul,
    "grain_dir_offset" / c.Int64ul,
    "grain_dir_size" / c.Int64ul,
    "grain_tables_offset" / c.Int64ul,
    "grain_tables_size" / c.Int64ul,
    "free_bitmap_offset" / c.Int64ul,
    "free_bitmap_size" / c.Int64ul,
    "backmap_offset" / c.Int64ul,
    "backmap_size" / c.Int64ul,
    "grains_offset" / c.Int64ul,
    "grains_size" / c.Int64ul,
)

# --- findings ------------------------------------------------------------------------------

BAD_HEADER = F.define(
    "vmdk-bad-header",
    "unsafe",
    "vmdk",
    "A sparse extent header value no reader accepts (version, grain size, grain table size, "
    "capacity, grain directory size, or a table placed on the header).",
)
UNKNOWN_COMPRESSION = F.define(
    "vmdk-unknown-compression",
    "unsafe",
    "vmdk",
    "Grains are compressed with an algorithm other than deflate, or the compression flag and "
    "compressAlgorithm disagree (readers would decode the grains differently).",
)
UNKNOWN_FLAGS = F.define(
    "vmdk-unknown-flags",
    "warning",
    "vmdk",
    "The sparse header sets flag bits that no VMDK version defines.",
)
NEWLINE_CHECK_FAILED = F.define(
    "vmdk-newline-check-failed",
    "warning",
    "vmdk",
    "The header's newline-detection bytes are altered: the file went through a text-mode "
    "transfer and its data is likely corrupt.",
)
UNCLEAN_SHUTDOWN = F.define(
    "vmdk-unclean-shutdown",
    "info",
    "vmdk",
    "The sparse header records an unclean shutdown of the program that wrote it.",
)
DESCRIPTOR_OUT_OF_RANGE = F.define(
    "vmdk-descriptor-out-of-range",
    "unsafe",
    "vmdk",
    "The header places the embedded descriptor on the header or beyond the end of the file.",
)
DESCRIPTOR_TOO_LARGE = F.define(
    "vmdk-descriptor-too-large",
    "unsafe",
    "vmdk",
    "The descriptor is larger than 1 MiB; it was not read (or only its first 1 MiB, as qemu).",
)
DESCRIPTOR_MISSING = F.define(
    "vmdk-descriptor-missing",
    "warning",
    "vmdk",
    "A sparse extent without an embedded descriptor: one piece of a split disk, whose "
    "descriptor is elsewhere (qemu cannot open it on its own).",
)
DESCRIPTOR_WITHOUT_HEADER = F.define(
    "vmdk-descriptor-without-header",
    "unsafe",
    "vmdk",
    "A text descriptor with no sparse extent header: the disk data lives in the files it "
    "names (or it claims a sparse createType it does not have).",
)
NOT_SELF_CONTAINED = F.define(
    "vmdk-not-self-contained",
    "unsafe",
    "vmdk",
    "The createType keeps the disk in other files or devices; only monolithicSparse and "
    "streamOptimized are self-contained.",
)
UNKNOWN_CREATE_TYPE = F.define(
    "vmdk-unknown-create-type",
    "warning",
    "vmdk",
    "The descriptor's createType is not one VMware or qemu defines.",
)
CREATE_TYPE_MISSING = F.define(
    "vmdk-create-type-missing",
    "warning",
    "vmdk",
    "The descriptor has no createType.",
)
CREATE_TYPE_MISMATCH = F.define(
    "vmdk-create-type-mismatch",
    "warning",
    "vmdk",
    "The descriptor's createType disagrees with the sparse header (for example "
    "streamOptimized without compressed grains); qemu goes by the header.",
)
EXTERNAL_EXTENT = F.define(
    "vmdk-external-extent",
    "unsafe",
    "vmdk",
    "An extent names another file (relative to the descriptor); its data is not in this file.",
)
EXTENT_PATH_ESCAPE = F.define(
    "vmdk-extent-path-escape",
    "unsafe",
    "vmdk",
    "An extent names an absolute path or climbs out with '..' (for example /etc/passwd).",
)
BAD_EXTENT_LINE = F.define(
    "vmdk-bad-extent-line",
    "warning",
    "vmdk",
    "A descriptor line starts like an extent but does not parse as one.",
)
UNKNOWN_EXTENT_TYPE = F.define(
    "vmdk-unknown-extent-type",
    "warning",
    "vmdk",
    "An extent line has a type VMware does not define.",
)
EXTENT_SIZE_MISMATCH = F.define(
    "vmdk-extent-size-mismatch",
    "warning",
    "vmdk",
    "The descriptor's extent sizes do not add up to the sparse header's capacity.",
)
PARENT_FILE = F.define(
    "vmdk-parent-file",
    "unsafe",
    "vmdk",
    "The disk names a parent (parentFileNameHint, or a COWD child's parent): it is a delta "
    "whose reader would open that file.",
)
PARENT_CID = F.define(
    "vmdk-parent-cid",
    "unsafe",
    "vmdk",
    "parentCID is not ffffffff: the disk declares itself a child of another disk.",
)
DUPLICATE_KEY = F.define(
    "vmdk-descriptor-duplicate-key",
    "unsafe",
    "vmdk",
    "A descriptor key appears twice with different values; readers may take either.",
)
DESCRIPTOR_LIMITS = F.define(
    "vmdk-descriptor-limits",
    "warning",
    "vmdk",
    "The descriptor lists more extents or keys than are kept; the counts are in the message.",
)
QEMU_VIEW_DIFFERS = F.define(
    "vmdk-qemu-view-differs",
    "warning",
    "vmdk",
    "qemu reads these bytes differently from the descriptor (other extents, size, "
    "createType or CID); the qemu view is in the section's 'qemu' record.",
)
FOOTER_MISSING = F.define(
    "vmdk-stream-footer-missing",
    "unsafe",
    "vmdk",
    "The header says the grain directory is at the end (gdOffset all ones) but the stream "
    "has no footer (it may have been cut short).",
)
FOOTER_INVALID = F.define(
    "vmdk-stream-footer-invalid",
    "unsafe",
    "vmdk",
    "A footer marker is followed by something that is not a usable header copy.",
)
FOOTER_MISMATCH = F.define(
    "vmdk-footer-mismatch",
    "unsafe",
    "vmdk",
    "The stream footer's header copy disagrees with the head header (capacity, grain size, "
    "table geometry, compression, descriptor or grain directory).",
)
TRAILING_DATA = F.define(
    "vmdk-stream-trailing-zeros",
    "warning",
    "vmdk",
    "Zero padding follows the end-of-stream marker; VMware tolerates it, qemu-img does not "
    "find the footer and refuses the image.",
)
COWD_EXTENT = F.define(
    "vmdk-cowd-extent",
    "warning",
    "vmdk",
    "An ESX COWD (vmfsSparse) extent: part of an ESX snapshot chain, not a standalone disk.",
)
SESPARSE_EXTENT = F.define(
    "vmdk-sesparse-extent",
    "unsafe",
    "vmdk",
    "An ESX seSparse extent: a snapshot delta whose parent is named elsewhere; the disk "
    "is incomplete on its own and qemu reads it only through a descriptor.",
)

# deep=True: the grain directory, every grain table entry, every stream marker
TABLE_OUT_OF_RANGE = F.define(
    "vmdk-table-entry-out-of-range",
    "unsafe",
    "vmdk",
    "A grain directory entry names a grain table, or a grain table entry a grain, that "
    "lies past the end of the file (in a stream: past the grain table marker that lists it).",
)
GRAIN_IN_METADATA = F.define(
    "vmdk-grain-in-metadata",
    "unsafe",
    "vmdk",
    "A grain table entry points below overHead: into the header, descriptor or tables "
    "(or is 1, a zeroed grain, without the zeroed-grain flag).",
)
CLAIMED_TWICE = F.define(
    "vmdk-claimed-twice",
    "unsafe",
    "vmdk",
    "Two table entries name the same file sectors (two guest grains read the same bytes), "
    "or a grain table overlaps the header, descriptor, a directory or another table.",
)
REDUNDANT_GD_MISMATCH = F.define(
    "vmdk-redundant-gd-mismatch",
    "warning",
    "vmdk",
    "The redundant grain directory's tables map the disk differently from the primary ones "
    "(a reader falling back on them sees another disk).",
)
OVERLAP_UNCHECKED = F.define(
    "vmdk-overlap-unchecked",
    "info",
    "vmdk",
    "The file is too large for the sector claim map: grains and tables were checked for "
    "range, not for overlapping each other.",
)
TABLES_UNCHECKED = F.define(
    "vmdk-tables-unchecked",
    "info",
    "vmdk",
    "More grain tables than are walked (over 1 Mi), or a stream with more grain table markers "
    "than its directory has entries: the tables were not (all) checked.",
)
GT_OUTSIDE_MARKER = F.define(
    "vmdk-gt-outside-marker",
    "unsafe",
    "vmdk",
    "In a stream with the grain directory at the end, a directory entry names something "
    "other than the payload of a grain table marker: that table's entries are unchecked.",
)
BAD_MARKER = F.define(
    "vmdk-stream-bad-marker",
    "unsafe",
    "vmdk",
    "A stream marker that cannot be valid: an unknown metadata marker type, or a grain "
    "marker claiming more compressed bytes than a grain can need. The walk stops there.",
)
GRAIN_OUT_OF_RANGE = F.define(
    "vmdk-stream-grain-out-of-range",
    "unsafe",
    "vmdk",
    "A grain marker's LBA lies at or beyond the disk's capacity.",
)
GRAIN_MISALIGNED = F.define(
    "vmdk-stream-grain-misaligned",
    "unsafe",
    "vmdk",
    "A grain marker's LBA is not a multiple of the grain size (it would overlap its "
    "neighbours for a reader that follows the markers).",
)
DATA_AFTER_EOS = F.define(
    "vmdk-stream-data-after-eos",
    "unsafe",
    "vmdk",
    "Non-zero bytes follow the end-of-stream marker (another file appended, or a stream "
    "whose real end is elsewhere).",
)
GRAIN_COUNT_MISMATCH = F.define(
    "vmdk-stream-grain-count-mismatch",
    "unsafe",
    "vmdk",
    "The grain tables name a different number of grains than the stream holds grain "
    "markers: a reader following the tables and one following the markers see different disks.",
)

# --- the section ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Geometry(Section):
    cylinders: int | None
    heads: int | None
    sectors: int | None


@dataclass(frozen=True)
class Extent(Section):
    """One extent line of the descriptor, values as written (sizes in 512-byte sectors)."""

    access: str
    sectors: int
    type: str
    file: str | None
    offset: int | None


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class StreamInfo(Section):
    """Where a streamOptimized disk keeps its tables (byte offsets)."""

    layout: str  # "qemu": real gdOffset, no footer; "vmware": footer at the end
    gd_at_end: bool
    footer_offset: int | None
    eos_offset: int | None
    trailing_zero_bytes: int


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class SeSparseInfo(Section):
    version: int
    grain_table_size: int
    flags: int
    grain_dir_offset: int
    grain_dir_size: int
    grains_offset: int
    grains_size: int


@dataclass(frozen=True)
class QemuExtent(Section):
    """An extent as qemu would open it; ``file`` None is the image itself."""

    file: str | None
    type: str
    sectors: int
    flat: bool
    compressed: bool
    cluster_size: int | None  # None: flat, or inside a file that is not opened


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


# --- probe ---------------------------------------------------------------------------------

_TEXT_BYTES = re.compile(rb"[\x00-\x08\x0e-\x1f\x7f]")
_DESCRIPTOR_COMMENT = re.compile(rb"(?im)^(?:\xef\xbb\xbf)?[ \t]*#[ \t]*disk[ \t]*descriptorfile")
_CREATE_TYPE_LINE = re.compile(rb"(?im)^[ \t]*createType[ \t]*=")
_EXTENT_LINE_START = re.compile(rb"(?im)^[ \t]*(?:RW|RDONLY|NOACCESS)[ \t]+\d+[ \t]+[A-Z]+")
_NOT_NUL = re.compile(rb"[^\0]")
# The lines qemu's probe accepts first (built once: every image is probed).
_QEMU_VERSION_LINES = tuple(b"version=%d%s" % (v, nl) for v in (1, 2, 3) for nl in (b"\n", b"\r\n"))


def probe(probe: Probe) -> bool:
    head = probe.head
    if head[:4] in (SPARSE_MAGIC, COWD_MAGIC) or head[:8] == SESPARSE_MAGIC:
        return True
    return qemu_probes_descriptor(head[:QEMU_PROBE_BYTES]) or looks_like_descriptor(head)


def qemu_probes_descriptor(buf: bytes) -> bool:
    """qemu's own test for a text descriptor: comments or blank lines, then ``version=N``."""
    pos, end = 0, len(buf)
    while pos < end:
        char = buf[pos : pos + 1]
        if char == b"#":
            newline = buf.find(b"\n", pos)
            pos = end if newline < 0 else newline + 1
            continue
        if char == b" ":
            while pos < end and buf[pos : pos + 1] == b" ":
                pos += 1
            if buf[pos : pos + 1] == b"\r":
                pos += 1
            if pos >= end or buf[pos : pos + 1] != b"\n":
                return False
            pos += 1
            continue
        return buf.startswith(_QEMU_VERSION_LINES, pos)
    return False


def looks_like_descriptor(head: bytes) -> bool:
    """A text file (NUL padding allowed at its end) that reads as a VMDK descriptor.

    Decided from the given bytes alone (the first 64 KiB), so a descriptor is recognised the
    same way however the file was read.
    """
    nul = head.find(b"\0")
    text = head if nul < 0 else head[:nul]
    # Cheapest test first: every binary image is refused here without copying its head.
    if not text.strip() or _TEXT_BYTES.search(text):
        return False
    if nul >= 0 and _NOT_NUL.search(head, nul):  # only NUL padding may follow the text
        return False
    if _DESCRIPTOR_COMMENT.search(text[:4096]):
        return True
    return bool(_CREATE_TYPE_LINE.search(text) and _EXTENT_LINE_START.search(text))


# --- the descriptor ------------------------------------------------------------------------

_KEY_VALUE = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_.:\-]*)\s*=\s*(?P<value>.*)$")
_EXTENT = re.compile(
    r"""^(?P<access>[A-Za-z]+)\s+(?P<sectors>\d+)\s+(?P<type>[A-Za-z0-9_]+)
        (?:\s+(?:"(?P<quoted>[^"]*)"|(?P<bare>[^\s"]+))
           (?:\s+(?P<offset>\d+))?)?\s*$""",
    re.VERBOSE,
)


@dataclass
class Descriptor:
    """A parsed text descriptor; keys keep the case they were written in."""

    values: dict[str, tuple[str, str]] = field(default_factory=dict)  # lower → (key, value)
    ddb: dict[str, str] = field(default_factory=dict)
    extents: list[Extent] = field(default_factory=list)
    extent_count: int = 0
    extent_sectors: int = 0
    ddb_count: int = 0
    other_count: int = 0
    duplicates: list[tuple[str, str, str]] = field(default_factory=list)
    bad_lines: list[str] = field(default_factory=list)
    encoding: str | None = None

    def get(self, key: str) -> str | None:
        entry = self.values.get(key.lower())
        return entry[1] if entry is not None else None

    def ddb_value(self, key: str) -> str | None:
        return self.get("ddb." + key)


def parse_descriptor(raw: bytes) -> Descriptor:
    """Parse descriptor text leniently: spaces around ``=``, quoted or bare values, CRLF,
    comments, blank lines, utf-8 or windows-1252 (or the declared ``encoding``)."""
    desc = Descriptor()
    text, desc.encoding = _decode(raw)
    for line in _lines(text):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        first = stripped.split(None, 1)[0]
        if first.upper() in ACCESS_MODES:
            _add_extent(desc, stripped)
            continue
        match = _KEY_VALUE.match(stripped)
        if match is not None:
            _add_value(desc, match["key"], _unquote(match["value"]))
    return desc


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text`` one at a time (a hostile descriptor may hold a million)."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        if end < 0:
            end = len(text)
        yield text[start:end]
        start = end + 1


def _decode(raw: bytes) -> tuple[str, str | None]:
    raw = raw.removeprefix(codecs.BOM_UTF8)
    declared = None
    match = re.search(rb'(?im)^[ \t]*encoding[ \t]*=[ \t]*"?([A-Za-z0-9_.:\-]{1,40})', raw)
    if match is not None:
        declared = match[1].decode("ascii")
        codec = _ascii_compatible_codec(declared)
        if codec is not None:
            return raw.decode(codec, errors="replace"), declared
    try:
        return raw.decode("utf-8"), declared
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace"), declared


def _ascii_compatible_codec(name: str) -> str | None:
    try:
        canonical = codecs.lookup(name).name
    except LookupError:
        return None
    return canonical if canonical in ASCII_COMPATIBLE or canonical.startswith("iso8859") else None


def _unquote(value: str) -> str:
    value = value.strip()
    if value.startswith('"'):
        end = value.find('"', 1)
        return value[1:] if end < 0 else value[1:end]
    return value


def _add_value(desc: Descriptor, key: str, value: str) -> None:
    lower = key.lower()
    known = desc.values.get(lower)
    if known is not None:
        if known[1] != value and len(desc.duplicates) < MAX_EXTENT_FINDINGS:
            desc.duplicates.append((key, known[1], value))
        return  # the first one wins, as in qemu (strstr finds the first)
    if lower.startswith("ddb."):
        desc.ddb_count += 1
    else:
        desc.other_count += 1
    if lower not in KEYS_ALWAYS_KEPT and len(desc.values) >= MAX_DDB_KEYS:
        return
    desc.values[lower] = (key, value)
    if lower.startswith("ddb."):
        desc.ddb[key] = value


def _add_extent(desc: Descriptor, line: str) -> None:
    match = _EXTENT.match(line)
    if match is None or match["access"].upper() not in ACCESS_MODES:
        if len(desc.bad_lines) < MAX_EXTENT_FINDINGS:
            desc.bad_lines.append(line[:200])
        return
    sectors = int(match["sectors"])
    desc.extent_count += 1
    desc.extent_sectors += sectors
    if len(desc.extents) >= MAX_EXTENTS:
        return
    name = match["quoted"] if match["quoted"] is not None else match["bare"]
    offset = match["offset"]
    desc.extents.append(
        Extent(
            access=match["access"],
            sectors=sectors,
            type=match["type"],
            file=name,
            offset=int(offset) if offset is not None else None,
        )
    )


def _int_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    # isascii(): str.isdigit() also accepts digits int() refuses, such as "²".
    return int(value) if value.isascii() and value.isdigit() and len(value) < 20 else None


def _geometry(desc: Descriptor) -> Geometry | None:
    values = [desc.ddb_value(f"geometry.{part}") for part in ("cylinders", "heads", "sectors")]
    if all(v is None for v in values):
        return None
    cylinders, heads, sectors = (_int_or_none(v) for v in values)
    return Geometry(cylinders=cylinders, heads=heads, sectors=sectors)


# --- what qemu reads -----------------------------------------------------------------------

_C_SPACE = b" \t\n\v\f\r"
_C_SPACES = re.compile(rb"[ \t\n\v\f\r]*")
_NON_BLANK_LINE = re.compile(rb"(?m)^([ \t\v\f\r]*)[^ \t\n\v\f\r][^\n]*")
_SCANF_TOKEN = re.compile(rb"[^ \t\n\v\f\r]{1,10}")
_SCANF_INT = re.compile(rb"[+-]?[0-9]+")
_SCANF_NAME = re.compile(rb'[^\n\r"]{1,511}')
_SCANF_HEX = re.compile(rb"[ \t\n\v\f\r]*([+-]?)(?:0[xX](?=[0-9a-fA-F]))?([0-9a-fA-F]+)")
_INT64_MAX = (1 << 63) - 1


def c_string(data: bytes) -> bytes:
    """``data`` up to its first NUL, as C string functions see it."""
    return data.split(b"\0", 1)[0]


def qemu_find_cid(window: bytes, name: bytes) -> int | None:
    """qemu's ``vmdk_read_cid``: ``strstr`` for ``name``, skip ``name=``, ``sscanf("%x")``."""
    text = c_string(window[: QEMU_CID_WINDOW - 1])
    found = text.find(name)
    if found < 0:
        return None
    match = _SCANF_HEX.match(text, found + len(name) + 1)
    if match is None:
        return None
    value = int(match[2], 16)
    if value > 0xFFFF_FFFF_FFFF_FFFF:
        value = 0xFFFF_FFFF_FFFF_FFFF  # strtoul saturates
    elif match[1] == b"-":
        value = -value % (1 << 64)
    return value & 0xFFFF_FFFF


def qemu_find_parent(window: bytes) -> tuple[str | None, str | None]:
    """qemu's ``vmdk_parent_open``: the backing name, or an error that stops qemu opening."""
    text = c_string(window[:QEMU_CID_WINDOW])
    found = text.find(b"parentFileNameHint")
    if found < 0:
        return None, None
    start = found + len("parentFileNameHint") + 2  # skips '="' whatever they are
    end = text.find(b'"', start) if start <= len(text) else -1
    if end < 0:
        return None, "parentFileNameHint has no closing quote"
    if end - start > QEMU_MAX_BACKING:
        return None, "parentFileNameHint is too long"
    return text[start:end].decode("utf-8", errors="replace"), None


def qemu_find_option(buf: bytes, name: bytes, limit: int = 128) -> str | None:
    """qemu's ``vmdk_parse_description``: ``strstr``, skip ``name="``, read up to ``"``."""
    text = c_string(buf)
    found = text.find(name)
    if found < 0:
        return None
    start = found + len(name) + 2
    if start >= len(text):
        return None
    end = text.find(b'"', start)
    if end < 0 or end - start + 1 > limit:
        return None
    return text[start:end].decode("utf-8", errors="replace")


@dataclass(frozen=True)
class _ScannedLine:
    """What qemu's ``sscanf`` takes from an extent line."""

    matches: int
    access: bytes
    sectors: int
    type: bytes
    name: bytes
    offset: int


def _scanf_skip(text: bytes, at: int) -> int:
    """Past the whitespace at ``at`` (a blank in a scanf format matches any run of it)."""
    match = _C_SPACES.match(text, at)
    return match.end() if match is not None else at


def _scanf_integer(text: bytes, at: int) -> tuple[int, int] | None:
    """``%ld`` at ``at``: the value (saturated as strtol does) and where it ends."""
    match = _SCANF_INT.match(text, _scanf_skip(text, at))
    if match is None:
        return None
    return max(-(1 << 63), min(_INT64_MAX, int(match[0]))), match.end()


def _scan_extent(text: bytes, pos: int) -> _ScannedLine:
    """``sscanf(p, "%10s %ld %10s \\"%511[^\\n\\r\\"]\\" %ld", ...)`` on the rest of ``text``.

    Like the C call it reads across line breaks: whitespace directives and numbers skip them.
    """
    access = _SCANF_TOKEN.match(text, _scanf_skip(text, pos))
    if access is None:
        return _ScannedLine(0, b"", 0, b"", b"", -1)
    if access[0] != b"RW":  # qemu ignores every line whose access is not RW
        return _ScannedLine(1, access[0], 0, b"", b"", -1)
    sectors = _scanf_integer(text, access.end())
    if sectors is None:
        return _ScannedLine(1, access[0], 0, b"", b"", -1)
    kind = _SCANF_TOKEN.match(text, _scanf_skip(text, sectors[1]))
    if kind is None:
        return _ScannedLine(2, access[0], sectors[0], b"", b"", -1)
    at = _scanf_skip(text, kind.end())
    if text[at : at + 1] != b'"':
        return _ScannedLine(3, access[0], sectors[0], kind[0], b"", -1)
    name = _SCANF_NAME.match(text, at + 1)
    if name is None:
        return _ScannedLine(3, access[0], sectors[0], kind[0], b"", -1)
    if text[name.end() : name.end() + 1] != b'"':
        return _ScannedLine(4, access[0], sectors[0], kind[0], name[0], -1)
    offset = _scanf_integer(text, name.end() + 1)
    if offset is None:
        return _ScannedLine(4, access[0], sectors[0], kind[0], name[0], -1)
    return _ScannedLine(5, access[0], sectors[0], kind[0], name[0], offset[0])


@dataclass
class _QemuExtents:
    extents: list[QemuExtent] = field(default_factory=list)
    count: int = 0
    sectors: int = 0
    error: str | None = None


def qemu_extents(buf: bytes) -> _QemuExtents:
    """The extents qemu's ``vmdk_parse_extents`` adds for a descriptor (in order).

    qemu calls ``sscanf`` at every line start, and ``sscanf`` skips line breaks, so a blank
    line before an extent line adds that extent once more.  Each distinct place a scan lands
    on is scanned once and counted as many times as qemu would read it.
    """
    text = c_string(buf)
    result = _QemuExtents()
    previous_end = -1
    for line in _NON_BLANK_LINE.finditer(text):
        landing = line.start() + len(line[1])
        repeats = 1 + text.count(b"\n", previous_end + 1, landing)
        previous_end = line.end()
        if not text.startswith(b"RW", landing):
            continue  # the access token is not RW: qemu ignores the line (no sscanf needed)
        scanned = _scan_extent(text, landing)
        if scanned.matches < 4 or scanned.access != b"RW":
            continue
        error = _qemu_extent_error(scanned)
        if error is not None:
            result.error = error
            return result
        kind = scanned.type.decode("latin-1")
        if scanned.sectors <= 0 or kind not in QEMU_EXTENT_TYPES:
            continue
        extent = QemuExtent(
            file=scanned.name.decode("utf-8", errors="replace"),
            type=kind,
            sectors=scanned.sectors,
            flat=kind in QEMU_FLAT_TYPES,
            compressed=False,
            cluster_size=None,
        )
        result.count += repeats
        result.sectors += repeats * scanned.sectors
        room = MAX_EXTENTS - len(result.extents)
        result.extents.extend([extent] * min(repeats, room))
    return result


def _qemu_extent_error(line: _ScannedLine) -> str | None:
    if line.type == b"FLAT":
        bad = line.matches != 5 or line.offset < 0
    elif line.type == b"VMFS":
        bad = line.matches != 4
    else:
        bad = line.matches != 4
    if bad:
        return "invalid extent line for qemu"
    return None


def _qemu_descriptor_view(buf: bytes, cid_window: bytes) -> QemuView:
    """qemu's reading of a text descriptor (a descriptor file, or a capacity-0 sparse file)."""
    create_type = qemu_find_option(buf, b"createType")
    error = None
    scanned = _QemuExtents()
    if create_type is None:
        error = 'invalid VMDK image descriptor (no createType="...")'
    elif create_type not in QEMU_DESCRIPTOR_TYPES:
        error = f"Unsupported image type '{create_type}'"
    else:
        scanned = qemu_extents(buf)
        error = scanned.error
    return _qemu_view(create_type or "", scanned, cid_window, error)


def _qemu_view(
    create_type: str, scanned: _QemuExtents, window: bytes, error: str | None
) -> QemuView:
    backing, backing_error = qemu_find_parent(window)
    cid = qemu_find_cid(window, b"CID")
    parent_cid = qemu_find_cid(window, b"parentCID")
    if error is None:
        error = backing_error
    if error is None and (cid is None or parent_cid is None):
        error = "no CID/parentCID where qemu reads them"
    return QemuView(
        opens=error is None,
        error=error,
        create_type=create_type,
        cid=cid,
        parent_cid=parent_cid,
        backing_file=backing or None,
        extents=tuple(scanned.extents),
        extent_count=scanned.count,
        virtual_size=scanned.sectors * SECTOR if error is None else None,
    )


# --- parse ---------------------------------------------------------------------------------


def parse(ctx: Context) -> Parsed:
    head = ctx.source.read_at(0, COWD_HEADER_SIZE)
    if head[:4] == SPARSE_MAGIC:
        return _parse_sparse(ctx, head)
    if head[:4] == COWD_MAGIC:
        return _parse_cowd(ctx, head)
    if head[:8] == SESPARSE_MAGIC:
        return _parse_sesparse(ctx, head)
    return _parse_text(ctx)


def _show(value: object) -> str:
    """A value quoted for a finding message, cut short (a hostile name may be huge)."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 5] + "...'"


def _read_optional(ctx: Context, offset: int, length: int, what: str) -> bytes | None:
    """Bytes at ``offset``; None (and ``stream-unchecked``) when a stream did not keep them."""
    try:
        return ctx.source.read_at(offset, length)
    except StreamGap:
        ctx.findings.add(
            F.STREAM_UNCHECKED, f"{what} at offset {offset} lies in the unkept middle of the stream"
        )
        return None


# --- sparse extents (KDMV) -----------------------------------------------------------------


def _sparse_header(data: bytes, what: str) -> SparseHeader:
    raw = parse_struct(SPARSE_HEADER, data[:SPARSE_HEADER_SIZE], what)
    return SparseHeader(
        version=raw.version,
        flags=raw.flags,
        capacity=raw.capacity,
        grain_size=raw.grain_size,
        descriptor_offset=raw.descriptor_offset,
        descriptor_size=raw.descriptor_size,
        num_gtes_per_gt=raw.num_gtes_per_gt,
        rgd_offset=raw.rgd_offset,
        gd_offset=raw.gd_offset,
        overhead=raw.overhead,
        unclean_shutdown=raw.unclean_shutdown,
        newline_check_ok=raw.check_bytes == NEWLINE_CHECK,
        compress_algorithm=raw.compress_algorithm,
    )


def _is_stream(header: SparseHeader) -> bool:
    return bool(
        header.flags & (FLAG_COMPRESSED | FLAG_MARKERS)
        or header.compress_algorithm != COMPRESSION_NONE
        or header.gd_offset == GD_AT_END
    )


def _gd_entries(header: SparseHeader) -> int | None:
    """Entries of the grain directory; None when the header's geometry makes no sense."""
    span = header.num_gtes_per_gt * header.grain_size
    if span == 0:
        return None
    return -(-header.capacity // span)


@dataclass(frozen=True)
class TableLayout:
    """Where the grain directory and tables of a sparse extent are (bytes), for a table scan.

    Deep validation of every GT entry and stream marker builds on this record.
    """

    gd_offset: int
    rgd_offset: int | None
    gd_entries: int
    gtes_per_gt: int
    grain_bytes: int
    compressed: bool
    markers: bool
    overhead: int = 0
    zeroed_grain: bool = False
    descriptor: tuple[int, int] = (0, 0)  # offset, length


def _parse_sparse(ctx: Context, head: bytes) -> Parsed:
    if len(head) < SPARSE_HEADER_SIZE:
        raise InvalidImage(f"VMDK sparse header needs 512 bytes, the file has {len(head)}")
    header = _sparse_header(head, "VMDK sparse extent header")
    # Before anything near the end is read: on a stream the markers are walked as they pass.
    walk = _start_marker_walk(ctx, header)
    stream: StreamInfo | None = None
    footer: SparseHeader | None = None
    tail = b""
    if _is_stream(header):
        stream, footer, tail = _read_stream_tail(ctx, header)
    effective = footer if footer is not None and header.gd_offset == GD_AT_END else header
    header_ok = _check_header(ctx, effective)
    if footer is not None:
        _compare_footer(ctx, header, footer)
    layout = _check_layout(ctx, effective) if header_ok else None
    deep = _scan_tables(ctx, layout, walk, stream)
    window = _read_optional(ctx, QEMU_SPARSE_DESC_OFFSET, QEMU_CID_WINDOW, "descriptor window")
    desc = _read_embedded_descriptor(ctx, header, window)
    qemu = _qemu_sparse_view(ctx, header, effective, tail, window or b"")
    virtual_size = _sectors_to_bytes(effective.capacity) if header_ok else None
    section = _section(
        "sparse",
        desc,
        grain_size=effective.grain_size * SECTOR,
        compressed=_compressed(effective),
        capacity=_sectors_to_bytes(effective.capacity),
        gd_offset=_sector_offset(effective.gd_offset),
        rgd_offset=(
            _sector_offset(effective.rgd_offset) if effective.flags & FLAG_REDUNDANT_GD else None
        ),
        descriptor_offset=header.descriptor_offset * SECTOR,
        descriptor_size=header.descriptor_size * SECTOR,
        header=header,
        footer=footer,
        stream=stream,
        qemu=qemu,
        tables=deep.tables,
        markers=deep.markers,
    )
    if desc is not None:
        _judge_descriptor(ctx, desc, section, embedded=True)
        _judge_sparse_descriptor(ctx, desc, effective)
    _judge_qemu_view(ctx, qemu, desc)
    return Parsed(virtual_size=virtual_size, section=section, allocated_size=deep.allocated_size)


def _compressed(header: SparseHeader) -> bool:
    return header.compress_algorithm == COMPRESSION_DEFLATE or bool(header.flags & FLAG_COMPRESSED)


def _sectors_to_bytes(sectors: int) -> int | None:
    value = sectors * SECTOR
    return value if value <= MAX_VIRTUAL_SIZE else None


def _sector_offset(sector: int) -> int | None:
    return None if sector == GD_AT_END else sector * SECTOR


def _check_header(ctx: Context, header: SparseHeader) -> bool:
    """Findings for header values; False when the table geometry cannot be computed."""
    problems = []
    if header.version not in (1, 2, 3):
        problems.append(f"version {header.version} (1 to 3 exist)")
    grain = header.grain_size
    if grain == 0 or grain & (grain - 1) or grain > QEMU_MAX_GRAIN_SECTORS:
        problems.append(f"grain size {grain} sectors (a power of two up to 1 GiB)")
    gtes = header.num_gtes_per_gt
    if gtes == 0 or gtes > QEMU_MAX_GTES_PER_GT:
        problems.append(f"{gtes} entries per grain table (at most {QEMU_MAX_GTES_PER_GT})")
    if header.capacity * SECTOR > MAX_VIRTUAL_SIZE:
        problems.append(f"capacity {header.capacity} sectors (over 8 EiB)")
    entries = _gd_entries(header)
    if not problems and entries is not None and entries > QEMU_MAX_GD_ENTRIES:
        problems.append(f"a grain directory of {entries} entries (qemu refuses over 32 Mi)")
    for problem in problems:
        ctx.findings.add(BAD_HEADER, f"VMDK header: {problem}")
    _check_compression(ctx, header)
    unknown = header.flags & ~KNOWN_FLAGS
    if unknown:
        ctx.findings.add(
            UNKNOWN_FLAGS, f"VMDK header flags 0x{header.flags:x} set unknown bits 0x{unknown:x}"
        )
    if header.flags & FLAG_NEWLINE_TEST and not header.newline_check_ok:
        ctx.findings.add(
            NEWLINE_CHECK_FAILED, "the header's newline-detection bytes are not '\\n \\r\\n'"
        )
    if header.unclean_shutdown:
        ctx.findings.add(UNCLEAN_SHUTDOWN, "the header's uncleanShutdown flag is set")
    return not problems


def _check_compression(ctx: Context, header: SparseHeader) -> None:
    algorithm = header.compress_algorithm
    if algorithm not in (COMPRESSION_NONE, COMPRESSION_DEFLATE):
        ctx.findings.add(
            UNKNOWN_COMPRESSION, f"compressAlgorithm {algorithm} (only 1, deflate, exists)"
        )
    elif bool(header.flags & FLAG_COMPRESSED) != (algorithm == COMPRESSION_DEFLATE):
        ctx.findings.add(
            UNKNOWN_COMPRESSION,
            f"the compressed-grains flag is {'set' if header.flags & FLAG_COMPRESSED else 'clear'}"
            f" but compressAlgorithm is {algorithm}",
        )


def _check_layout(ctx: Context, header: SparseHeader) -> TableLayout | None:
    """Check that the tables the header points to lie inside the file."""
    size = ctx.source.size
    if header.overhead * SECTOR > size:
        ctx.findings.add(
            F.TRUNCATED,
            f"the header's overHead ({header.overhead} sectors) reaches past the end of the "
            f"file ({size} bytes)",
        )
    entries = _gd_entries(header)
    if entries is None or header.gd_offset == GD_AT_END:
        return None
    gd_ok = _check_table(ctx, "grain directory", header.gd_offset, entries)
    rgd: int | None = None
    if header.flags & FLAG_REDUNDANT_GD and _check_table(
        ctx, "redundant grain directory", header.rgd_offset, entries
    ):
        rgd = header.rgd_offset * SECTOR
    if not gd_ok:
        return None
    return TableLayout(
        gd_offset=header.gd_offset * SECTOR,
        rgd_offset=rgd,
        gd_entries=entries,
        gtes_per_gt=header.num_gtes_per_gt,
        grain_bytes=header.grain_size * SECTOR,
        compressed=_compressed(header),
        markers=bool(header.flags & FLAG_MARKERS),
        overhead=header.overhead * SECTOR,
        zeroed_grain=bool(header.flags & FLAG_ZEROED_GRAIN),
        descriptor=(header.descriptor_offset * SECTOR, header.descriptor_size * SECTOR),
    )


def _check_table(ctx: Context, what: str, sector: int, entries: int) -> bool:
    size = ctx.source.size
    if sector == 0 and entries:
        ctx.findings.add(BAD_HEADER, f"the {what} is placed on the header (sector 0)")
        return False
    end = sector * SECTOR + entries * 4
    if end > size:
        ctx.findings.add(
            F.TRUNCATED,
            f"the {what} ({entries} entries at sector {sector}) ends at byte {end}, past the "
            f"end of the file ({size} bytes)",
        )
        return False
    return True


# --- deep: grain directory, grain tables and stream markers ---------------------------------

#: The claim map holds one bit per file sector (the scanners' unit): 32 MiB covers 128 GiB.
CLAIM_MAP_LIMIT = 32 * 1024 * 1024
#: At most this many grain tables are walked (2 TiB of disk at 4 KiB grains, 32 TiB at 64 KiB).
MAX_GRAIN_TABLES = 1 << 20
#: Grain tables are read and scanned this many at a time (2 MiB of 512-entry tables).
GT_BATCH = 1024
#: Reads of a seekable file's grain tables are merged up to this size ...
TABLE_WINDOW = 4 * 1024 * 1024
#: ... across gaps of at most this many bytes.
TABLE_GAP = 64 * 1024
#: A stream keeps at most this many separate runs of grain tables for the final parse.
MAX_PREFETCH_RUNS = 256
#: A grain directory met in a GD marker is kept up to this size (MAX_GRAIN_TABLES entries).
MAX_GD_PAYLOAD = 4 * MAX_GRAIN_TABLES
_MARKER_FIELDS = struct.Struct("<QII")


class _Deep(NamedTuple):
    """What the deep walk adds to the section and to ``Parsed``."""

    tables: GrainTables | None = None
    markers: MarkerWalk | None = None
    allocated_size: int | None = None


def _scan_tables(
    ctx: Context,
    layout: TableLayout | None,
    walk: _MarkerWalk | None,
    stream: StreamInfo | None,
) -> _Deep:
    """deep=True: check every grain directory and grain table entry and every stream marker.

    ``allocated_size`` is the grains the file stores times the grain size: for a stream the
    grain markers walked (None if the walk could not reach the end), else the allocated
    grain table entries.
    """
    if not ctx.deep:
        return _Deep()
    in_markers = layout is not None and walk is not None and layout.gd_offset >= walk.start
    if _speculative(ctx):
        if layout is not None and not in_markers:
            _prefetch_directory(ctx, layout)  # so the final parse finds the tables kept
        return _Deep()
    markers = _finish_marker_walk(ctx, walk, stream) if walk is not None else None
    tables: GrainTables | None = None
    if layout is not None and walk is not None and in_markers:
        complete = markers is not None and markers.complete
        tables = _tables_from_markers(ctx, layout, walk.tables, complete)
    elif layout is not None:
        tables = _tables_from_directory(ctx, layout)
    if markers is not None and walk is not None:
        if tables is not None and markers.complete:
            _compare_grain_counts(ctx, tables, markers)
        allocated = markers.grains * walk.grain_bytes if markers.complete else None
        return _Deep(tables, markers, allocated)
    allocated = tables.allocated_grains * layout.grain_bytes if tables and layout else None
    return _Deep(tables, None, allocated)


def _speculative(ctx: Context) -> bool:
    """A parse of a stream that has not ended (its size unknown, its findings dropped)."""
    return ctx.source.is_stream and ctx.source.size >= UNKNOWN_SIZE


def _compare_grain_counts(ctx: Context, tables: GrainTables, markers: MarkerWalk) -> None:
    if tables.bad_entries or markers.bad_markers:
        return  # already unsafe; the counts cannot agree
    if tables.allocated_grains != markers.grains:
        ctx.findings.add(
            GRAIN_COUNT_MISMATCH,
            f"the grain tables name {tables.allocated_grains} grains, the stream holds "
            f"{markers.grains} grain markers",
        )


# --- the marker walk ------------------------------------------------------------------------


def _start_marker_walk(ctx: Context, header: SparseHeader) -> _MarkerWalk | None:
    """Register the walk over a stream's markers (flag 0x20000), from overHead to the end.

    On a stream this must happen before anything further on is read, so that the scan is
    fed as the bytes pass; the final parse gets the same consumer back, fully fed.
    """
    if not ctx.deep or not header.flags & FLAG_MARKERS:
        return None
    grain = header.grain_size
    start = header.overhead * SECTOR
    size = ctx.source.size
    if not 1 <= grain <= QEMU_MAX_GRAIN_SECTORS or start >= size:
        return None
    gtes = header.num_gtes_per_gt
    gt_bytes = gtes * 4 if 1 <= gtes <= QEMU_MAX_GTES_PER_GT else 0
    # no more tables are kept than the directory can name
    limit = min(MAX_GRAIN_TABLES, _gd_entries(header) or 0)
    zeroed = bool(header.flags & FLAG_ZEROED_GRAIN)
    tables = (gt_bytes, limit, header.overhead, zeroed)
    make = functools.partial(_MarkerWalk, start, header.capacity, grain, tables)
    key = ("vmdk-markers", start, header.capacity, grain, tables)
    try:
        return ctx.source.scan(key, [(start, size - start)], make)
    except StreamGap:
        ctx.findings.add(
            F.STREAM_UNCHECKED, f"the stream markers from byte {start} went by unwalked"
        )
        return None


class _Payload:
    """The payload of a GT or GD marker, collected as the stream passes."""

    def __init__(self, kind: int, offset: int, wanted: int) -> None:
        self.kind = kind
        self.offset = offset
        self.wanted = wanted
        self.buffer = bytearray()


class _WalkEnd(NamedTuple):
    """How a marker walk ends: the walker's state, whether bytes were missing, and the
    first bytes of the marker it stopped on."""

    state: scan.StreamResult
    lost: bool
    stop_marker: bytes


#: On a seekable file the marker walk reads a marker's first sector where it lands ...
HOP_READ = SECTOR
#: ... a jump over this many bytes or more starts the reads small again ...
HOP_GAP = 32 * 1024
#: ... and a read that lands near the next marker doubles, up to this size.
HOP_READ_MAX = SCAN_WINDOW


class _MarkerWalk:
    """Scan consumer: walks a stream's markers as its bytes pass, in pieces of any size.

    The walker (``scan.vmdk_stream_walker``) reads each piece where it lies, carrying a
    marker's first bytes across pieces and skipping grain data unread; it hands control
    back only after a GT or GD marker, whose payload is collected here.  VMware's layout
    keeps its grain tables in GT markers that pass long before the directory at the end
    names them, so each table is checked as it arrives (:class:`_MarkerTables`) and only
    its counts are kept.  Held between pieces: the payload being collected, nothing else.
    On a seekable source the scan lets the walk read for itself (:meth:`read_from`): it
    reads only where the markers are.
    """

    __slots__ = (
        "_payloads",
        "_resume",
        "_walker",
        "capacity",
        "grain_bytes",
        "grain_sectors",
        "start",
        "tables",
        "tap",
    )

    def __init__(
        self, start: int, capacity: int, grain_sectors: int, tables: tuple[int, int, int, bool]
    ) -> None:
        self.start = start
        self.capacity = capacity
        self.grain_bytes = grain_sectors * SECTOR
        self.grain_sectors = grain_sectors
        self._walker = scan.vmdk_stream_walker(
            start=start, capacity_sectors=capacity, grain_sectors=grain_sectors
        )
        # tap(offset, data, size) -> status, straight into the walker: a stream's collector
        # calls it for every chunk, with no Python frame of ours, and ``after`` on a status.
        self.tap = self._walker.feed
        self._resume = self._walker.resume
        gt_bytes, limit, overhead_sectors, zeroed_ok = tables
        self.tables = _MarkerTables(gt_bytes, limit, grain_sectors, overhead_sectors, zeroed_ok)
        self._payloads: collections.deque[_Payload] = collections.deque()

    def feed(self, offset: int, data: bytes) -> None:
        tap = self.tap  # (a method-style call of a callable held in a slot is not specialised)
        status = tap(offset, data, len(data))
        if status:
            self.after(offset, data, status)

    def after(self, offset: int, data: bytes, status: int) -> None:
        """The walker wants Python for this piece: it paused after a GT or GD marker (1), or
        the piece began inside a table's payload (2).  Note the payload, collect what of it
        the piece holds, and walk on, until the piece is walked."""
        walker = self._walker
        while status:
            if status < 0:
                raise ValueError(f"the marker walk rejected the piece at byte {offset}")
            payload_at = walker.position
            if status == 1:
                value, _, kind = _MARKER_FIELDS.unpack_from(walker.header)
                wanted = self.tables.wanted(kind, value * SECTOR)
                if wanted:
                    self._payloads.append(_Payload(kind, payload_at, wanted))
            self._collect(offset, data)
            if status == 2:
                return
            status = self._resume(offset, data, len(data), payload_at - offset)

    def read_from(self, source: Source, ranges: Sequence[Range]) -> None:
        """The walk on a seekable source (what its scan lets a consumer do): read where the
        markers are and jump the rest.

        Markers chain by their sizes, so once a marker is read the walk knows where the next
        one begins, and the grain data between (or a payload not collected) need not be read
        at all.  Random data (grains of about 64 KiB) costs one small read per marker;
        markers close together (compressible data) are read through in reads that double
        while no long jump comes.  The walker sees exactly the bytes it would be fed in a
        pass over the whole file (each marker's first sector, the payloads collected, every
        byte after the end-of-stream marker), so the answer is the same.
        """
        for start, length in ranges:  # one range: from the first marker to the end
            self._hop(source, start, start + length)

    def _hop(self, source: Source, start: int, size: int) -> None:
        walker = self._walker
        position = start
        read = HOP_READ
        while position < size:
            data = source.read_at(position, min(read, size - position))
            if not data:
                return  # the file shrank under us: result() reports the walk lost here
            self.feed(position, data)
            position += len(data)
            landing = position if self._payloads else walker.skip(size)
            if landing - position >= HOP_GAP:
                read = HOP_READ
            elif landing == position and walker.state().stopped:
                return  # nothing after a broken marker changes the answer
            else:
                read = min(2 * read, HOP_READ_MAX)
            position = landing

    def result(self, size: int) -> _WalkEnd:
        """The walk as it ends at ``size``, the end of the stream, judged on a copy of the
        state (on a stream inside an archive this also runs before the end, on what has
        arrived)."""
        walker = self._walker
        state = walker.finish(size)
        lost = walker.lost or (not state.stopped and walker.position != size)
        stop_marker = bytes(walker.header) if state.stopped and not lost else b""
        return _WalkEnd(state, lost, stop_marker)

    def _collect(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        while self._payloads:
            payload = self._payloads[0]
            have = payload.offset + len(payload.buffer)
            if have >= end:
                return  # it starts after these bytes
            if have < offset:  # its start went by unseen (cannot happen: it follows a marker)
                self._payloads.popleft()
                continue
            take = min(payload.offset + payload.wanted, end)
            payload.buffer += data[have - offset : take - offset]
            if len(payload.buffer) < payload.wanted:
                return
            self._payloads.popleft()
            self.tables.arrived(payload.kind, payload.offset, bytes(payload.buffer))


class _MarkerTables:
    """Grain tables met in GT markers, each checked on arrival; GD payloads kept (bounded).

    A streaming writer can only write a grain table once its grains are written, so each
    entry must name a grain before the table's own marker: that is the bound the entries
    are checked against, the file's end being unknown while a stream passes.  Tables are
    marked in the claim map, so a grain entry naming another table is claimed twice.
    """

    def __init__(
        self, gt_bytes: int, limit: int, grain_sectors: int, overhead_sectors: int, zeroed_ok: bool
    ) -> None:
        self.gt_bytes = gt_bytes
        self.limit = limit
        self._grain_sectors = grain_sectors
        self._overhead_sectors = overhead_sectors
        self._zeroed_ok = zeroed_ok
        self.offsets: array[int] = array("Q")  # payload offsets, ascending
        self.allocated: array[int] = array("L")
        self.zeroed: array[int] = array("L")
        self.bad_count = 0
        self.first_bad: tuple[int, scan.BlockTableResult] | None = None
        self.claims: bytearray | None = bytearray()
        self.overflow = False
        self.directories: dict[int, bytes] = {}
        self._directory_bytes = 0

    def wanted(self, kind: int, payload: int) -> int:
        """How much of a marker's payload to keep (0: nothing)."""
        if kind == MARKER_GT and self.gt_bytes and payload >= self.gt_bytes:
            if len(self.offsets) >= self.limit:
                self.overflow = True
                return 0
            return self.gt_bytes
        if kind == MARKER_GD and 0 < payload <= MAX_GD_PAYLOAD - self._directory_bytes:
            return payload
        return 0

    def arrived(self, kind: int, offset: int, payload: bytes) -> None:
        if kind == MARKER_GD:
            self.directories[offset] = payload
            self._directory_bytes += len(payload)
        elif len(self.offsets) >= self.limit:
            self.overflow = True
        else:
            self._check_table(offset, payload)

    def _check_table(self, offset: int, table: bytes) -> None:
        marker = offset - SECTOR
        claims = self._claims_up_to(offset + len(table))
        result = scan.vmdk_gt(
            table,
            grain_sectors=self._grain_sectors,
            overhead_sectors=self._overhead_sectors,
            file_size=marker,
            zeroed_grain_ok=self._zeroed_ok,
            compressed=True,
            claimed=claims,
        )
        if claims is not None:
            scan.mark_claimed(claims, marker, offset + len(table) - marker, SECTOR)
        self.offsets.append(offset)
        self.allocated.append(result.allocated)
        self.zeroed.append(result.zero)
        self.bad_count += result.bad_count
        if not result.ok and self.first_bad is None:
            self.first_bad = (offset, result)

    def _claims_up_to(self, end: int) -> bytearray | None:
        if self.claims is None:
            return None
        needed = _claim_bytes(end)
        if needed > CLAIM_MAP_LIMIT:
            self.claims = None
            return None
        if needed > len(self.claims):
            self.claims.extend(bytes(needed - len(self.claims)))
        return self.claims


def _finish_marker_walk(ctx: Context, walk: _MarkerWalk, stream: StreamInfo | None) -> MarkerWalk:
    size = ctx.source.size
    end = walk.result(size)
    state = end.state
    structural = state.stopped or end.lost
    bad_grains = state.bad_count - (1 if state.stopped else 0)
    if bad_grains and state.bad_reason in (scan.Reason.OUT_OF_RANGE, scan.Reason.MISALIGNED):
        _report_grain_marker(ctx, walk, state, bad_grains)
    if structural:
        _report_stop(ctx, walk, end, size)
    elif state.eos_offset == scan.NOT_SEEN and _needs_eos(state, stream):
        ctx.findings.add(
            F.TRUNCATED,
            f"the stream ends at byte {size} after {state.count} markers without an "
            "end-of-stream marker",
        )
    return MarkerWalk(
        start=walk.start,
        markers=state.count,
        grains=state.grains,
        compressed_bytes=state.grain_bytes,
        gt_markers=state.gt_markers,
        gd_markers=state.gd_markers,
        footer_markers=state.footer_markers,
        other_markers=state.other_markers,
        bad_markers=state.bad_count,
        eos_offset=None if state.eos_offset == scan.NOT_SEEN else state.eos_offset,
        complete=not structural,
    )


def _needs_eos(state: scan.StreamResult, stream: StreamInfo | None) -> bool:
    """Only VMware's layout (metadata markers) must end with an end-of-stream marker: qemu
    writes none for an empty disk, nor after ``qemu-img convert -n`` into a stream, and a
    qemu stream cut on a marker boundary shows as grain table entries past the end.  When
    the footer search already judged the end (no footer, or a footer without EOS), that
    finding stands alone."""
    if not state.gt_markers + state.gd_markers + state.footer_markers:
        return False
    return stream is None or not (stream.gd_at_end or stream.footer_offset is not None)


def _report_grain_marker(
    ctx: Context, walk: _MarkerWalk, state: scan.StreamResult, bad: int
) -> None:
    more = f"; {bad} bad grain markers in all" if bad > 1 else ""
    if state.bad_reason == scan.Reason.OUT_OF_RANGE:
        ctx.findings.add(
            GRAIN_OUT_OF_RANGE,
            f"the grain marker at byte {state.bad_index} is for LBA {state.bad_value}, beyond "
            f"the capacity of {walk.capacity} sectors{more}",
        )
    else:
        ctx.findings.add(
            GRAIN_MISALIGNED,
            f"the grain marker at byte {state.bad_index} is for LBA {state.bad_value}, not a "
            f"multiple of the grain ({walk.grain_sectors} sectors){more}",
        )


def _report_stop(ctx: Context, walk: _MarkerWalk, end: _WalkEnd, size: int) -> None:
    """Say why the walk stopped; the walker keeps only the first bad marker's details, so
    the reason is read from where it stands (a bad LBA before may have taken that place)."""
    state = end.state
    at = state.next_offset
    if end.lost:
        ctx.findings.add(F.STREAM_UNCHECKED, f"the stream markers after byte {at} were not seen")
    elif state.eos_offset != scan.NOT_SEEN:
        ctx.findings.add(
            DATA_AFTER_EOS,
            f"non-zero bytes in the sector at byte {at}, after the end-of-stream marker at "
            f"byte {state.eos_offset}",
        )
    elif at > size:
        ctx.findings.add(
            F.TRUNCATED,
            f"the marker at byte {state.marker_offset} runs to byte {at}, past the end of "
            f"the stream ({size} bytes)",
        )
    elif size - at < SECTOR:
        ctx.findings.add(
            F.TRUNCATED,
            f"the stream ends {size - at} bytes into the sector at byte {at}, where a marker "
            "should begin",
        )
    else:
        _report_bad_marker(ctx, walk, end.stop_marker, at)


def _report_bad_marker(ctx: Context, walk: _MarkerWalk, stop_marker: bytes, at: int) -> None:
    raw = stop_marker.ljust(METADATA_MARKER_SIZE, b"\0")
    value, size, kind = _MARKER_FIELDS.unpack(raw)
    if size:
        message = (
            f"the grain marker at byte {at} claims {size} compressed bytes (a grain is "
            f"{walk.grain_bytes})"
        )
    elif kind in (MARKER_GT, MARKER_GD, MARKER_FOOTER, MARKER_PROGRESS):
        ctx.findings.add(
            F.TRUNCATED,
            f"the metadata marker at byte {at} claims {value} sectors of payload, more than "
            "any file holds",
        )
        return
    else:
        message = f"the metadata marker at byte {at} has the unknown type {kind}"
    ctx.findings.add(BAD_MARKER, message)


# --- grain tables named by the directory ----------------------------------------------------


def _tables_from_directory(ctx: Context, layout: TableLayout) -> GrainTables | None:
    """Read the grain directory (and the redundant one) and every grain table it names,
    where it names them: monolithicSparse, and qemu's streams (tables at the front)."""
    if layout.gd_entries > MAX_GRAIN_TABLES:
        ctx.findings.add(
            TABLES_UNCHECKED,
            f"the grain directory has {layout.gd_entries} entries; the tables were not walked",
        )
        return None
    claimed = _directory_claims(ctx, layout)
    try:
        gd, rgd = _read_directories(ctx, layout, claimed)
        if gd is None:
            return None
        return _walk_grain_tables(ctx, layout, gd, rgd, claimed)
    except StreamGap as gap:
        ctx.findings.add(
            F.STREAM_UNCHECKED,
            f"grain tables at byte {gap.offset} went by before the grain directory named them",
        )
        return None
    except _OutOfOrder:
        ctx.findings.add(
            F.STREAM_UNCHECKED,
            "the grain tables are not in directory order: a stream cannot hold them all",
        )
        return None


def _gt_sectors(layout: TableLayout) -> int:
    return -(-layout.gtes_per_gt * 4 // SECTOR)


def _read_directories(
    ctx: Context, layout: TableLayout, claimed: bytearray | None
) -> tuple[scan.PointerTableResult | None, scan.PointerTableResult | None]:
    size = ctx.source.size
    length = layout.gd_entries * 4
    results: list[scan.PointerTableResult | None] = []
    for what, offset in (
        ("grain directory", layout.gd_offset),
        ("redundant grain directory", layout.rgd_offset),
    ):
        if offset is None or offset + length > size:  # reported by _check_layout
            results.append(None)
            continue
        table = ctx.source.read_exact(offset, length, what)
        result = scan.vmdk_gd(
            table, gt_sectors=_gt_sectors(layout), file_size=size, claimed=claimed
        )
        _report_directory(ctx, result, f"the {what} at byte {offset}", size)
        results.append(result)
    return results[0], results[1]


def _report_directory(ctx: Context, result: scan.PointerTableResult, where: str, size: int) -> None:
    if result.ok:
        return
    more = f"; {result.bad_count} bad entries in all" if result.bad_count > 1 else ""
    what = f"{where}: entry {result.bad_index} names a grain table at sector {result.bad_value}"
    if result.bad_reason == scan.Reason.DOUBLE_CLAIM:
        ctx.findings.add(
            CLAIMED_TWICE,
            f"{what}, on the header, descriptor, a directory or another table{more}",
        )
    else:
        ctx.findings.add(
            TABLE_OUT_OF_RANGE, f"{what}, past the end of the file ({size} bytes){more}"
        )


def _claim_bytes(size: int) -> int:
    """Bytes of a sector claim map covering ``size`` bytes of file."""
    sectors = -(-size // SECTOR)
    return -(-sectors // 8)


def _directory_claims(ctx: Context, layout: TableLayout) -> bytearray | None:
    """The sector claim map with the header, descriptor and directories marked."""
    size = ctx.source.size
    if _claim_bytes(size) > CLAIM_MAP_LIMIT:
        ctx.findings.add(
            OVERLAP_UNCHECKED,
            f"the file is {size} bytes: grains and tables were not checked for overlaps",
        )
        return None
    claimed = scan.claim_map(size, SECTOR)
    scan.mark_claimed(claimed, 0, SECTOR, SECTOR)
    offset, length = layout.descriptor
    # no more than is read of it (a hostile size would make a map-sized mask)
    scan.mark_claimed(claimed, offset, min(length, MAX_DESCRIPTOR), SECTOR)
    scan.mark_claimed(claimed, layout.gd_offset, layout.gd_entries * 4, SECTOR)
    if layout.rgd_offset is not None:
        scan.mark_claimed(claimed, layout.rgd_offset, layout.gd_entries * 4, SECTOR)
    return claimed


class _TableTotals:
    """Counts over the grain tables walked, and the first bad entry met."""

    def __init__(self) -> None:
        self.tables = 0
        self.allocated = 0
        self.zeroed = 0
        self.bad = 0
        self.mismatches = 0
        self.first_mismatch = -1
        self.first_bad: tuple[str, int, scan.BlockTableResult] | None = None


def _walk_grain_tables(
    ctx: Context,
    layout: TableLayout,
    gd: scan.PointerTableResult,
    rgd: scan.PointerTableResult | None,
    claimed: bytearray | None,
) -> GrainTables:
    """Every grain table, in directory order, a batch at a time; the redundant copy of each
    is compared with it, and checked on its own where it differs."""
    totals = _TableTotals()
    totals.tables = len(gd.indexes)
    none: array[int] = array("Q")
    r_indexes, r_offsets = (rgd.indexes, rgd.offsets) if rgd is not None else (none, none)
    length = layout.gtes_per_gt * 4
    primary_tables = _TableReader(ctx, gd.offsets, length)
    redundant_tables = _TableReader(ctx, r_offsets, length)
    i = j = 0
    while i < len(gd.indexes) or j < len(r_indexes):
        low = min(
            gd.indexes[i] if i < len(gd.indexes) else MAX_VIRTUAL_SIZE,
            r_indexes[j] if j < len(r_indexes) else MAX_VIRTUAL_SIZE,
        )
        i_end = bisect.bisect_left(gd.indexes, low + GT_BATCH, i)
        j_end = bisect.bisect_left(r_indexes, low + GT_BATCH, j)
        primary = primary_tables.read(gd.offsets[i:i_end])
        _check_batch(ctx, layout, gd.indexes[i:i_end], primary, claimed, totals)
        if rgd is not None:
            redundant = redundant_tables.read(r_offsets[j:j_end])
            _compare_redundant(
                ctx, layout, (gd.indexes[i:i_end], primary), (r_indexes[j:j_end], redundant), totals
            )
        i, j = i_end, j_end
    _report_totals(ctx, layout, totals)
    return GrainTables(
        source="directory",
        grain_tables=totals.tables,
        allocated_grains=totals.allocated,
        zeroed_grains=totals.zeroed,
        bad_entries=totals.bad,
        redundant_mismatches=totals.mismatches if rgd is not None else None,
    )


def _gt_scan(
    layout: TableLayout, table: bytes, file_size: int, claimed: bytearray | None
) -> scan.BlockTableResult:
    return scan.vmdk_gt(
        table,
        grain_sectors=layout.grain_bytes // SECTOR,
        overhead_sectors=layout.overhead // SECTOR,
        file_size=file_size,
        zeroed_grain_ok=layout.zeroed_grain,
        compressed=layout.compressed,
        claimed=claimed,
    )


def _check_batch(
    ctx: Context,
    layout: TableLayout,
    indexes: array[int],
    tables: list[bytes],
    claimed: bytearray | None,
    totals: _TableTotals,
) -> None:
    joined = b"".join(tables)
    if joined.count(0) != len(joined):  # an all-zero batch has nothing to check
        result = _gt_scan(layout, joined, ctx.source.size, claimed)
        if not result.ok and totals.first_bad is None:
            table = result.bad_index // layout.gtes_per_gt
            totals.first_bad = (f"grain table {indexes[table]}", table * layout.gtes_per_gt, result)
        totals.allocated += result.allocated
        totals.zeroed += result.zero
        totals.bad += result.bad_count


def _compare_redundant(
    ctx: Context,
    layout: TableLayout,
    primary: tuple[array[int], list[bytes]],
    redundant: tuple[array[int], list[bytes]],
    totals: _TableTotals,
) -> None:
    """A table absent from one directory counts as all zeros (it maps nothing)."""
    empty = bytes(layout.gtes_per_gt * 4)
    ours = dict(zip(*primary, strict=True))
    theirs = dict(zip(*redundant, strict=True))
    for index in sorted(ours.keys() | theirs.keys()):
        copy = theirs.get(index, empty)
        if ours.get(index, empty) == copy:
            continue
        totals.mismatches += 1
        if totals.first_mismatch < 0:
            totals.first_mismatch = index
        # a reader may fall back on this copy: it must be as sound as the primary
        result = _gt_scan(layout, copy, ctx.source.size, None)
        if not result.ok and totals.first_bad is None:
            totals.first_bad = (f"redundant grain table {index}", 0, result)
        totals.bad += result.bad_count


def _report_totals(ctx: Context, layout: TableLayout, totals: _TableTotals) -> None:
    if totals.first_bad is not None:
        label, first, result = totals.first_bad
        _report_grain_table(ctx, layout, label, result.bad_index - first, result, totals.bad)
    if totals.mismatches:
        ctx.findings.add(
            REDUNDANT_GD_MISMATCH,
            f"{totals.mismatches} grain tables differ between the grain directory and the "
            f"redundant one (the first: table {totals.first_mismatch})",
        )


def _report_grain_table(
    ctx: Context,
    layout: TableLayout,
    label: str,
    entry: int,
    result: scan.BlockTableResult,
    bad: int,
    bound: str | None = None,
) -> None:
    more = f"; {bad} bad entries in all" if bad > 1 else ""
    what = f"{label}, entry {entry}: grain at sector {result.bad_value}"
    if result.bad_reason == scan.Reason.IN_METADATA:
        ctx.findings.add(
            GRAIN_IN_METADATA,
            f"{what}, below overHead ({layout.overhead // SECTOR} sectors){more}",
        )
    elif result.bad_reason == scan.Reason.DOUBLE_CLAIM:
        ctx.findings.add(
            CLAIMED_TWICE,
            f"{what}, already used by another entry, a directory or a table{more}",
        )
    else:
        bound = bound or f"past the end of the file ({ctx.source.size} bytes)"
        ctx.findings.add(TABLE_OUT_OF_RANGE, f"{what}, {bound}{more}")


class _OutOfOrder(Exception):
    """A stream's grain tables do not come in directory order."""


class _TableReader:
    """Reads one directory's grain tables, a batch at a time, in directory order.

    A seekable file: each batch in merged reads.  A stream: the merged runs of the whole
    directory, exactly the ranges :func:`_prefetch_directory` asked the stream to keep (so a
    parse that runs before the end asks for nothing else), one run held at a time; tables
    must then come in file order, as every producer writes them.
    """

    def __init__(self, ctx: Context, offsets: array[int], length: int) -> None:
        self._source = ctx.source
        self._length = length
        self._runs: list[tuple[int, int]] = []
        self._starts: list[int] = []
        if ctx.source.is_stream:
            self._runs = _table_runs(sorted(set(offsets)), length)[:MAX_PREFETCH_RUNS]
            self._starts = [start for start, _ in self._runs]
        self._held: tuple[int, bytes] = (-1, b"")

    def read(self, offsets: array[int]) -> list[bytes]:
        if not self._source.is_stream:
            return self._read_merged(offsets)
        return [self._from_runs(offset) for offset in offsets]

    def _read_merged(self, offsets: array[int]) -> list[bytes]:
        length = self._length
        found: dict[int, bytes] = {}
        ordered = sorted(set(offsets))
        k = 0
        for start, run in _table_runs(ordered, length):
            data = self._source.read_exact(start, run, "grain tables")
            while k < len(ordered) and ordered[k] + length <= start + run:
                found[ordered[k]] = data[ordered[k] - start : ordered[k] - start + length]
                k += 1
        return [found[offset] for offset in offsets]

    def _from_runs(self, offset: int) -> bytes:
        k = bisect.bisect_right(self._starts, offset) - 1
        start, run = self._runs[k] if k >= 0 else (0, 0)
        if k < 0 or offset + self._length > start + run:
            raise StreamGap(offset, self._length)  # beyond the runs a stream keeps
        if self._held[0] != k:
            if k < self._held[0]:
                raise _OutOfOrder
            self._held = (k, self._source.read_exact(start, run, "grain tables"))
        data = self._held[1]
        return data[offset - start : offset - start + self._length]


def _table_runs(offsets: list[int], length: int) -> list[tuple[int, int]]:
    """Sorted table offsets merged into reads of at most TABLE_WINDOW bytes."""
    runs: list[tuple[int, int]] = []
    for offset in offsets:
        if runs:
            start, run = runs[-1]
            end = max(start + run, offset + length)
            if offset <= start + run + TABLE_GAP and end - start <= TABLE_WINDOW:
                runs[-1] = (start, end - start)
                continue
        runs.append((offset, length))
    return runs


def _prefetch_directory(ctx: Context, layout: TableLayout) -> None:
    """On a stream that has not ended: read the directories (so they are kept) and ask the
    stream to keep the grain tables they name, which the final parse then reads."""
    if layout.gd_entries > MAX_GRAIN_TABLES:
        return
    try:
        gd, rgd = _read_directories(ctx, layout, None)
    except StreamGap:
        return
    # One directory's runs at a time: a range asked for must not change once the stream
    # keeps it (merged with the other directory's tables, it would when that one arrives).
    for result in (rgd, gd):
        if result is not None:
            runs = _table_runs(sorted(set(result.offsets)), layout.gtes_per_gt * 4)
            ctx.source.prefetch(runs[:MAX_PREFETCH_RUNS])


# --- grain tables met in GT markers ---------------------------------------------------------


def _tables_from_markers(
    ctx: Context, layout: TableLayout, tables: _MarkerTables, complete: bool
) -> GrainTables | None:
    """VMware's layout: the directory (at the end) must name the tables met in GT markers,
    each once; their entries were checked as they passed.  When the walk stopped early the
    tables after that point were never met: only those met are judged."""
    if not complete:
        _report_marker_tables(ctx, layout, tables, None)
        return None
    if tables.overflow or layout.gd_entries > MAX_GRAIN_TABLES:
        if layout.gd_entries > MAX_GRAIN_TABLES:
            why = f"the grain directory has {layout.gd_entries} entries"
        else:
            why = f"the stream has more grain table markers than {tables.limit}"
        ctx.findings.add(TABLES_UNCHECKED, f"{why}: the tables were not matched with it")
        return None
    length = layout.gd_entries * 4
    payload = tables.directories.get(layout.gd_offset)
    try:
        table = payload[:length] if payload is not None and len(payload) >= length else None
        if table is None:
            table = ctx.source.read_exact(layout.gd_offset, length, "grain directory")
    except StreamGap:
        ctx.findings.add(
            F.STREAM_UNCHECKED,
            f"the grain directory at byte {layout.gd_offset} went by unkept",
        )
        return None
    size = ctx.source.size
    gd = scan.vmdk_gd(table, gt_sectors=_gt_sectors(layout), file_size=size)
    _report_directory(ctx, gd, f"the grain directory at byte {layout.gd_offset}", size)
    totals = _match_marker_tables(ctx, layout, gd, tables)
    _report_marker_tables(ctx, layout, tables, gd)
    return GrainTables(
        source="markers",
        grain_tables=totals.tables,
        allocated_grains=totals.allocated,
        zeroed_grains=totals.zeroed,
        bad_entries=tables.bad_count + totals.bad,
        redundant_mismatches=None,
    )


def _report_marker_tables(
    ctx: Context,
    layout: TableLayout,
    tables: _MarkerTables,
    gd: scan.PointerTableResult | None,
) -> None:
    if tables.first_bad is not None:
        offset, result = tables.first_bad
        label = f"the grain table at byte {offset}"
        if gd is not None and offset in gd.offsets:
            label = f"grain table {gd.indexes[gd.offsets.index(offset)]} (byte {offset})"
        bound = f"not before its grain table marker at byte {offset - SECTOR}"
        _report_grain_table(ctx, layout, label, result.bad_index, result, tables.bad_count, bound)
    if tables.claims is None and len(tables.offsets):
        ctx.findings.add(
            OVERLAP_UNCHECKED,
            f"the stream is over {CLAIM_MAP_LIMIT * 8 * SECTOR} bytes: grains were not "
            "checked for overlaps",
        )


def _match_marker_tables(
    ctx: Context, layout: TableLayout, gd: scan.PointerTableResult, tables: _MarkerTables
) -> _TableTotals:
    totals = _TableTotals()
    used = bytearray(-(-len(tables.offsets) // 8))
    outside = _Tally()
    twice = _Tally()
    for index, offset in zip(gd.indexes, gd.offsets, strict=True):
        k = bisect.bisect_left(tables.offsets, offset)
        if k == len(tables.offsets) or tables.offsets[k] != offset:
            outside.note(index)
        elif used[k >> 3] & (1 << (k & 7)):
            twice.note(index)
        else:
            used[k >> 3] |= 1 << (k & 7)
            totals.tables += 1
            totals.allocated += tables.allocated[k]
            totals.zeroed += tables.zeroed[k]
    if outside.count:
        ctx.findings.add(
            GT_OUTSIDE_MARKER,
            f"{outside.count} grain directory entries name no grain table marker's payload "
            f"(the first: entry {outside.first})",
        )
    if twice.count:
        ctx.findings.add(
            CLAIMED_TWICE,
            f"{twice.count} grain directory entries name a grain table another entry names "
            f"(the first: entry {twice.first})",
        )
    totals.bad = outside.count + twice.count
    return totals


class _Tally:
    """How many, and the first."""

    def __init__(self) -> None:
        self.count = 0
        self.first = -1

    def note(self, index: int) -> None:
        if not self.count:
            self.first = index
        self.count += 1


# --- stream tail ---------------------------------------------------------------------------


def _read_stream_tail(
    ctx: Context, header: SparseHeader
) -> tuple[StreamInfo, SparseHeader | None, bytes]:
    """Find VMware's footer marker, footer and end-of-stream marker at the end of a stream."""
    size = ctx.source.size
    start = max(0, size - FOOTER_SEARCH)
    tail = _read_optional(ctx, start, size - start, "stream footer") or b""
    gd_at_end = header.gd_offset == GD_AT_END
    if size % SECTOR:
        ctx.findings.add(
            F.TRUNCATED, f"the stream ends inside a sector ({size} bytes is not a multiple of 512)"
        )
    found = _find_footer(tail, start, size)
    if found.footer_offset is None:
        if found.marker_offset is not None:
            ctx.findings.add(
                FOOTER_INVALID,
                f"the footer marker at byte {found.marker_offset} is not followed by a header copy",
            )
        elif gd_at_end and tail:
            ctx.findings.add(
                FOOTER_MISSING,
                "gdOffset says the grain directory is at the end, but the stream ends "
                f"without a footer (size {size} bytes)",
            )
        layout = "vmware" if gd_at_end else "qemu"
        info = StreamInfo(layout, gd_at_end, None, None, 0)
        return info, None, tail
    footer = _sparse_header(tail[found.footer_offset - start :], "VMDK stream footer")
    usable: SparseHeader | None = footer
    if footer.gd_offset == GD_AT_END:
        ctx.findings.add(FOOTER_INVALID, "the stream footer also says gdOffset is at the end")
        usable = None
    eos = found.footer_offset + SECTOR if found.zero_sectors else None
    trailing = max(0, size - found.footer_offset - 2 * SECTOR) if eos is not None else 0
    if eos is None:
        ctx.findings.add(
            F.TRUNCATED,
            f"the stream ends right after its footer (byte {found.footer_offset}): no "
            "end-of-stream marker",
        )
    if trailing:
        ctx.findings.add(
            TRAILING_DATA, f"{trailing} zero bytes follow the end-of-stream marker at byte {eos}"
        )
    info = StreamInfo("vmware", gd_at_end, found.footer_offset, eos, trailing)
    return info, usable, tail


@dataclass(frozen=True)
class _FooterSearch:
    footer_offset: int | None
    marker_offset: int | None
    zero_sectors: int


def _find_footer(tail: bytes, start: int, size: int) -> _FooterSearch:
    """Walk back over zero sectors; the last non-zero sector should be the footer."""
    zero = bytes(SECTOR)
    pos = (size // SECTOR) * SECTOR - SECTOR
    zero_sectors = 0
    while pos >= start and tail[pos - start : pos - start + SECTOR] == zero:
        pos -= SECTOR
        zero_sectors += 1
    if pos < start:
        return _FooterSearch(None, None, zero_sectors)
    marker_at = pos - SECTOR
    is_marker = marker_at >= start and _is_footer_marker(tail[marker_at - start : pos - start])
    if tail[pos - start : pos - start + 4] == SPARSE_MAGIC and is_marker:
        return _FooterSearch(pos, marker_at, zero_sectors)
    return _FooterSearch(None, marker_at if is_marker else None, zero_sectors)


def _is_footer_marker(sector: bytes) -> bool:
    if len(sector) < METADATA_MARKER_SIZE:
        return False
    marker = parse_struct(METADATA_MARKER, sector[:METADATA_MARKER_SIZE], "metadata marker")
    return bool(marker.size == 0 and marker.type == MARKER_FOOTER)


_FOOTER_FIELDS = (
    "version",
    "flags",
    "capacity",
    "grain_size",
    "num_gtes_per_gt",
    "compress_algorithm",
    "descriptor_offset",
    "descriptor_size",
)


def _compare_footer(ctx: Context, header: SparseHeader, footer: SparseHeader) -> None:
    differences = [
        f"{name} {getattr(header, name)} vs {getattr(footer, name)}"
        for name in _FOOTER_FIELDS
        if getattr(header, name) != getattr(footer, name)
    ]
    if header.gd_offset != GD_AT_END and header.gd_offset != footer.gd_offset:
        differences.append(f"gd_offset {header.gd_offset} vs {footer.gd_offset}")
    if differences:
        ctx.findings.add(FOOTER_MISMATCH, "header vs footer: " + ", ".join(differences))


# --- the embedded descriptor ---------------------------------------------------------------


def _read_embedded_descriptor(
    ctx: Context, header: SparseHeader, window: bytes | None
) -> Descriptor | None:
    offset, length = header.descriptor_offset, header.descriptor_size
    size = ctx.source.size
    if offset == 0 and length == 0:
        ctx.findings.add(DESCRIPTOR_MISSING, "the sparse header has no embedded descriptor")
        return None
    if length * SECTOR > MAX_DESCRIPTOR:
        ctx.findings.add(
            DESCRIPTOR_TOO_LARGE,
            f"the header's descriptor size is {length} sectors ({length * SECTOR} bytes); not read",
        )
        return None
    if offset == 0 or (offset + length) * SECTOR > size:
        ctx.findings.add(
            DESCRIPTOR_OUT_OF_RANGE,
            f"the descriptor ({length} sectors at sector {offset}) is not inside the file "
            f"({size} bytes, header at sector 0)",
        )
        return None
    if not ctx.deep and length * SECTOR > HEADER_ONLY_DESCRIPTOR_READ:
        ctx.findings.add(
            DESCRIPTOR_LIMITS,
            f"header-only mode: the {length * SECTOR}-byte descriptor is over the "
            f"{HEADER_ONLY_DESCRIPTOR_READ}-byte budget and was not read",
        )
        return None
    start, end = offset * SECTOR - QEMU_SPARSE_DESC_OFFSET, (offset + length) * SECTOR
    if window is not None and start >= 0 and end - QEMU_SPARSE_DESC_OFFSET <= len(window):
        raw: bytes | None = window[start : end - QEMU_SPARSE_DESC_OFFSET]  # already read
    else:
        raw = _read_optional(ctx, offset * SECTOR, length * SECTOR, "embedded descriptor")
    if raw is None:
        return None
    text = c_string(raw)
    if not text.strip():
        ctx.findings.add(DESCRIPTOR_MISSING, f"the descriptor area at sector {offset} is empty")
        return None
    return parse_descriptor(text)


def _judge_sparse_descriptor(ctx: Context, desc: Descriptor, header: SparseHeader) -> None:
    """A monolithic sparse file: one SPARSE extent naming the file itself, and nothing else."""
    create_type = desc.get("createType")
    lowered = (create_type or "").lower()
    if lowered in SELF_CONTAINED:
        streamed = lowered == "streamoptimized"
        if streamed != _compressed(header):
            ctx.findings.add(
                CREATE_TYPE_MISMATCH,
                f"createType {_show(create_type)} but the header "
                f"{'has no' if streamed else 'has'} compressed grains",
            )
    if desc.extent_count and desc.extent_sectors != header.capacity:
        ctx.findings.add(
            EXTENT_SIZE_MISMATCH,
            f"the extents add up to {desc.extent_sectors} sectors, the header says "
            f"{header.capacity}",
        )


def _qemu_sparse_view(
    ctx: Context,
    header: SparseHeader,
    effective: SparseHeader,
    tail: bytes,
    window: bytes,
) -> QemuView:
    """qemu's ``vmdk_open_vmdk4``: header checks, then CID and parent from offset 512."""
    size = ctx.source.size
    if header.capacity == 0 and header.descriptor_offset:
        # qemu reads the embedded descriptor as a descriptor file, extents and all.
        limit = QEMU_DESCRIPTOR_READ if ctx.deep else HEADER_ONLY_REREAD
        buf = _read_optional(ctx, header.descriptor_offset * SECTOR, min(size, limit), "descriptor")
        return _qemu_descriptor_view(buf or b"", window)
    create_type = (
        "streamOptimized"
        if effective.compress_algorithm == COMPRESSION_DEFLATE
        else "monolithicSparse"
    )
    error = _qemu_sparse_error(header, effective, tail, size)
    extent = QemuExtent(
        file=None,
        type="",
        sectors=effective.capacity,
        flat=False,
        compressed=effective.compress_algorithm == COMPRESSION_DEFLATE,
        cluster_size=effective.grain_size * SECTOR,
    )
    scanned = _QemuExtents([extent], 1, effective.capacity)
    return _qemu_view(create_type, scanned, window, error)


def _qemu_sparse_error(
    header: SparseHeader, effective: SparseHeader, tail: bytes, size: int
) -> str | None:
    if header.gd_offset == GD_AT_END and not _qemu_footer_ok(tail, size):
        return "Invalid footer (qemu reads it exactly 1536 bytes before the end)"
    h = effective
    entry_sectors = (h.num_gtes_per_gt * h.grain_size) & 0xFFFF_FFFF
    checks = (
        (h.version > 3, f"Unsupported VMDK version {h.version}"),
        (h.num_gtes_per_gt > QEMU_MAX_GTES_PER_GT, "L2 table size too big"),
        (entry_sectors == 0, "L1 entry size is invalid"),
        (-(-size // SECTOR) < h.overhead, "File truncated"),
        (h.grain_size > QEMU_MAX_GRAIN_SECTORS, "Invalid granularity"),
        (h.capacity > _INT64_MAX // SECTOR, "capacity too large"),
    )
    for failed, message in checks:
        if failed:
            return message
    l1_size = ((h.capacity + entry_sectors - 1) % (1 << 64) // entry_sectors) & 0xFFFF_FFFF
    if l1_size > QEMU_MAX_GD_ENTRIES:
        return "L1 size too big"
    return None


def _qemu_footer_ok(tail: bytes, size: int) -> bool:
    """qemu's footer test: marker, ``KDMV`` and end-of-stream exactly at EOF − 1536."""
    at = -(-size // SECTOR) * SECTOR - 3 * SECTOR
    start = size - len(tail)
    if at < start:
        return False
    block = tail[at - start : at - start + 3 * SECTOR].ljust(3 * SECTOR, b"\0")
    marker = parse_struct(METADATA_MARKER, block[:16], "footer marker")
    eos = parse_struct(METADATA_MARKER, block[1024:1040], "end-of-stream marker")
    return bool(
        block[512:516] == SPARSE_MAGIC
        and marker.size == 0
        and marker.type == MARKER_FOOTER
        and eos.value == 0
        and eos.size == 0
        and eos.type == MARKER_EOS
    )


# --- COWD and seSparse ---------------------------------------------------------------------


def _parse_cowd(ctx: Context, head: bytes) -> Parsed:
    if len(head) < COWD_HEADER_SIZE:
        raise InvalidImage(f"COWD header needs {COWD_HEADER_SIZE} bytes, the file has {len(head)}")
    raw = parse_struct(COWD_HEADER, head, "COWD header")
    root = bool(raw.flags & COWD_FLAG_ROOT)
    parent = None if root else cstring(raw.parent_or_geometry)
    geometry = None
    if root:
        geo = parse_struct(COWD_ROOT_GEOMETRY, raw.parent_or_geometry[:12], "COWD geometry")
        geometry = Geometry(cylinders=geo.cylinders, heads=geo.heads, sectors=geo.sectors)
    ctx.findings.add(
        COWD_EXTENT,
        f"ESX COWD extent, version {raw.version}, {'root' if root else 'child'} disk",
    )
    if parent is not None:
        ctx.findings.add(PARENT_FILE, f"COWD child disk names its parent {_show(parent)}")
    _check_table(ctx, "COWD grain directory", raw.gd_offset, raw.num_gd_entries)
    grain = raw.grain_size
    if grain == 0 or grain & (grain - 1) or grain > QEMU_MAX_GRAIN_SECTORS:
        ctx.findings.add(BAD_HEADER, f"COWD grain size {grain} sectors")
    window = _read_optional(ctx, QEMU_SPARSE_DESC_OFFSET, QEMU_CID_WINDOW, "descriptor window")
    error = None
    if grain > QEMU_MAX_GRAIN_SECTORS:
        error = "Invalid granularity"
    elif raw.num_gd_entries > QEMU_MAX_GD_ENTRIES:
        error = "L1 size too big"
    extent = QemuExtent(None, "", raw.num_sectors, False, False, grain * SECTOR)
    qemu = _qemu_view("", _QemuExtents([extent], 1, raw.num_sectors), window or b"", error)
    section = _section(
        "cowd",
        None,
        grain_size=grain * SECTOR,
        compressed=False,
        capacity=raw.num_sectors * SECTOR,
        gd_offset=raw.gd_offset * SECTOR,
        parent_file=parent,
        geometry=geometry,
        cowd=CowdInfo(
            version=raw.version,
            flags=raw.flags,
            root=root,
            gd_offset=raw.gd_offset,
            num_gd_entries=raw.num_gd_entries,
            free_sector=raw.free_sector,
            generation=raw.generation,
            name=cstring(raw.name),
            description=cstring(raw.description),
        ),
        qemu=qemu,
    )
    return Parsed(virtual_size=raw.num_sectors * SECTOR, section=section)


def _parse_sesparse(ctx: Context, head: bytes) -> Parsed:
    if len(head) < SECTOR:
        raise InvalidImage(f"seSparse header needs 512 bytes, the file has {len(head)}")
    raw = parse_struct(SESPARSE_HEADER, head[:SECTOR], "seSparse header")
    ctx.findings.add(
        SESPARSE_EXTENT,
        f"seSparse extent (version 0x{raw.version:016x}, {raw.capacity} sectors); its parent "
        "is named by a descriptor elsewhere",
    )
    if raw.version != SESPARSE_VERSION:
        ctx.findings.add(BAD_HEADER, f"seSparse version 0x{raw.version:016x}")
    capacity = _sectors_to_bytes(raw.capacity)
    if capacity is None:
        ctx.findings.add(BAD_HEADER, f"seSparse capacity {raw.capacity} sectors (over 8 EiB)")
    qemu = QemuView(
        opens=False,
        error="qemu opens seSparse extents only through a descriptor",
        create_type="",
        cid=None,
        parent_cid=None,
        backing_file=None,
        extents=(),
        extent_count=0,
        virtual_size=None,
    )
    section = _section(
        "sesparse",
        None,
        grain_size=raw.grain_size * SECTOR,
        compressed=False,
        capacity=capacity,
        gd_offset=raw.grain_dir_offset * SECTOR,
        sesparse=SeSparseInfo(
            version=raw.version,
            grain_table_size=raw.grain_table_size,
            flags=raw.flags,
            grain_dir_offset=raw.grain_dir_offset,
            grain_dir_size=raw.grain_dir_size,
            grains_offset=raw.grains_offset,
            grains_size=raw.grains_size,
        ),
        qemu=qemu,
    )
    return Parsed(virtual_size=capacity, section=section)


# --- text descriptor files -----------------------------------------------------------------


def _parse_text(ctx: Context) -> Parsed:
    size = ctx.source.size
    limit = QEMU_DESCRIPTOR_READ if ctx.deep else HEADER_ONLY_DESCRIPTOR_READ
    buf = _read_optional(ctx, 0, min(size, limit), "descriptor") or b""
    if not ctx.deep and len(buf) < min(size, QEMU_DESCRIPTOR_READ):
        ctx.findings.add(
            DESCRIPTOR_LIMITS,
            f"header-only mode: only the first {len(buf)} bytes of the descriptor were read",
        )
    if size > MAX_DESCRIPTOR:
        ctx.findings.add(
            DESCRIPTOR_TOO_LARGE,
            f"the descriptor file is {size} bytes; only its first {len(buf)} bytes were read",
        )
    desc = parse_descriptor(c_string(buf))
    qemu = _qemu_descriptor_view(buf, buf[:QEMU_CID_WINDOW])
    section = _section(
        "descriptor",
        desc,
        grain_size=None,
        compressed=False,
        capacity=None,
        descriptor_offset=0,
        descriptor_size=len(c_string(buf)),
        qemu=qemu,
    )
    create_type = desc.get("createType")
    if (create_type or "").lower() in SELF_CONTAINED:
        message = f"text descriptor claims createType {_show(create_type)} but has no sparse header"
    else:
        message = (
            f"text descriptor (createType {_show(create_type)}): the disk data is in the files it "
            "names, not in this file"
        )
    ctx.findings.add(DESCRIPTOR_WITHOUT_HEADER, message)
    _judge_descriptor(ctx, desc, section, embedded=False)
    _judge_qemu_view(ctx, qemu, desc)
    return Parsed(virtual_size=_sectors_to_bytes(desc.extent_sectors), section=section)


# --- building the section and judging the descriptor ---------------------------------------


def _section(kind: str, desc: Descriptor | None, **values: Any) -> VmdkSection:
    if desc is None:
        desc = Descriptor()
    parent = desc.get("parentFileNameHint")
    values.setdefault("parent_file", parent if parent else None)
    values.setdefault("geometry", _geometry(desc))
    return VmdkSection(
        header_kind=kind,
        create_type=desc.get("createType"),
        adapter_type=desc.ddb_value("adapterType"),
        version=_int_or_none(desc.get("version")),
        cid=desc.get("CID"),
        parent_cid=desc.get("parentCID"),
        hw_version=desc.ddb_value("virtualHWVersion"),
        tools_version=desc.ddb_value("toolsVersion"),
        extents=tuple(desc.extents),
        extent_count=desc.extent_count,
        ddb=dict(desc.ddb),
        encoding=desc.encoding,
        **values,
    )


def _judge_descriptor(
    ctx: Context, desc: Descriptor, section: VmdkSection, *, embedded: bool
) -> None:
    """Findings from the descriptor's own lines.

    ``embedded``: the descriptor sits in a sparse file with data, whose single SPARSE extent
    names the file itself; in every other case each named file is somewhere else.
    """
    _judge_create_type(ctx, desc.get("createType"))
    for key, first, second in desc.duplicates:
        ctx.findings.add(
            DUPLICATE_KEY, f"{_show(key)} is given as {_show(first)} and again as {_show(second)}"
        )
    for line in desc.bad_lines:
        ctx.findings.add(BAD_EXTENT_LINE, f"cannot parse the extent line {_show(line)}")
    if desc.extent_count > MAX_EXTENTS or desc.ddb_count + desc.other_count > MAX_DDB_KEYS:
        ctx.findings.add(
            DESCRIPTOR_LIMITS,
            f"{desc.extent_count} extents and {desc.ddb_count + desc.other_count} keys; the "
            f"section keeps {MAX_EXTENTS} and {MAX_DDB_KEYS}",
        )
    names: list[str] = []
    for index, extent in enumerate(desc.extents):
        if extent.type.upper() not in EXTENT_TYPES:
            ctx.findings.add(UNKNOWN_EXTENT_TYPE, f"extent type {_show(extent.type)}")
        if extent.file is None:
            continue
        is_self = embedded and index == 0 and extent.type.upper() == "SPARSE"
        if not (is_self and _path_kind(extent.file) == "name"):
            names.append(extent.file)
    _report_files(ctx, names)
    if section.parent_file:
        ctx.findings.add(PARENT_FILE, f"parentFileNameHint names {_show(section.parent_file)}")
    parent_cid = desc.get("parentCID")
    if parent_cid is not None and parent_cid.strip().lower() != "ffffffff":
        ctx.findings.add(PARENT_CID, f"parentCID is {_show(parent_cid)}")


def _judge_create_type(ctx: Context, create_type: str | None) -> None:
    if create_type is None:
        ctx.findings.add(CREATE_TYPE_MISSING, "the descriptor has no createType")
        return
    lowered = create_type.lower()
    if lowered not in CREATE_TYPES:
        ctx.findings.add(UNKNOWN_CREATE_TYPE, f"createType {_show(create_type)}")
    elif lowered not in SELF_CONTAINED:
        ctx.findings.add(
            NOT_SELF_CONTAINED, f"createType {_show(create_type)} keeps the disk in other files"
        )


_PATH_SEPARATORS = re.compile(r"[/\\]")
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")


def _path_kind(name: str) -> str:
    """``escape`` (absolute or with ``..``), ``name`` (a bare file name) or ``relative``."""
    parts = _PATH_SEPARATORS.split(name)
    if name.startswith(("/", "\\")) or _DRIVE_LETTER.match(name) or ".." in parts:
        return "escape"
    if len(parts) == 1 and name not in ("", "."):
        return "name"
    return "relative"


def _report_files(ctx: Context, names: list[str]) -> None:
    seen: list[str] = []
    for name in names:
        if name in seen:
            continue
        seen.append(name)
        if len(seen) > MAX_EXTENT_FINDINGS:
            ctx.findings.add(
                EXTERNAL_EXTENT, f"more than {MAX_EXTENT_FINDINGS} files are named by extents"
            )
            return
        if _path_kind(name) == "escape":
            ctx.findings.add(EXTENT_PATH_ESCAPE, f"an extent names the file {_show(name)}")
        else:
            ctx.findings.add(EXTERNAL_EXTENT, f"an extent names the file {_show(name)}")


def _judge_qemu_view(ctx: Context, qemu: QemuView, desc: Descriptor | None) -> None:
    """Findings for what qemu would take from the bytes where the descriptor says otherwise."""
    files = [e.file for e in qemu.extents if e.file is not None]
    _report_files(ctx, files)
    ours_parent = desc.get("parentFileNameHint") if desc is not None else None
    if qemu.backing_file and qemu.backing_file != ours_parent:
        ctx.findings.add(PARENT_FILE, f"qemu reads the parent file name {_show(qemu.backing_file)}")
    ours_parent_cid = _hex_or_none(desc.get("parentCID")) if desc is not None else None
    if qemu.parent_cid not in (None, 0xFFFF_FFFF, ours_parent_cid):
        ctx.findings.add(PARENT_CID, f"qemu reads parentCID {qemu.parent_cid:08x}")
    if desc is None or not qemu.opens:
        return
    differences = []
    ours_cid = _hex_or_none(desc.get("CID"))
    if qemu.cid is not None and ours_cid is not None and qemu.cid != ours_cid:
        differences.append(f"CID {qemu.cid:08x} (descriptor: {ours_cid:08x})")
    if any(e.file is not None for e in qemu.extents) or qemu.create_type in QEMU_DESCRIPTOR_TYPES:
        ours_type = desc.get("createType")
        if ours_type != qemu.create_type:
            differences.append(
                f"createType {_show(qemu.create_type)} (descriptor: {_show(ours_type)})"
            )
        qemu_sectors = (qemu.virtual_size or 0) // SECTOR
        if (qemu.extent_count, qemu_sectors) != (desc.extent_count, desc.extent_sectors):
            differences.append(
                f"{qemu.extent_count} extents of {qemu_sectors} sectors in all (descriptor: "
                f"{desc.extent_count} of {desc.extent_sectors})"
            )
    if differences:
        ctx.findings.add(QEMU_VIEW_DIFFERS, "qemu reads " + "; ".join(differences))


def _hex_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip(), 16) & 0xFFFF_FFFF
    except ValueError:
        return None


# --- qemu-img info -------------------------------------------------------------------------


def qemu_info(md: Any, filename: str | None = None) -> dict[str, Any]:
    """The keys of ``qemu-img info --output=json`` that qemu takes from a VMDK.

    :param filename: the image's path as given to qemu-img; extent file names are built from
        it as qemu does (the image itself, or a name beside it).  Without it, the names
        written in the descriptor stand in.
    """
    section: VmdkSection | None = md.vmdk
    if section is None or section.qemu is None:
        raise InvalidImage("VMDK too damaged for a qemu-img view")
    view = section.qemu
    own_name = filename
    if own_name is None:
        own_name = section.extents[0].file if section.extents and section.extents[0].file else ""
    extents = [_qemu_extent_info(e, own_name, filename) for e in view.extents]
    info: dict[str, Any] = {"format": "vmdk"}
    if view.virtual_size is not None:
        info["virtual-size"] = view.virtual_size
    cluster_size = _qemu_cluster_size(view.extents)
    if cluster_size is not None:
        info["cluster-size"] = cluster_size
    info["format-specific"] = {
        "type": "vmdk",
        "data": {
            "cid": view.cid if view.cid is not None else 0,
            "parent-cid": view.parent_cid if view.parent_cid is not None else 0,
            "create-type": view.create_type,
            "extents": extents,
        },
    }
    if view.backing_file:
        info["backing-filename"] = view.backing_file
        info["backing-filename-format"] = "vmdk"
        if filename is not None:
            info["full-backing-filename"] = qemu_path_combine(filename, view.backing_file)
    info["dirty-flag"] = False
    return info


def _qemu_extent_info(extent: QemuExtent, own_name: str, filename: str | None) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if extent.compressed:
        result["compressed"] = True
    result["virtual-size"] = extent.sectors * SECTOR
    if extent.file is None:
        result["filename"] = own_name
    elif filename is None:
        result["filename"] = extent.file
    else:
        result["filename"] = qemu_path_combine(filename, extent.file)
    if not extent.flat and extent.cluster_size is not None:
        result["cluster-size"] = extent.cluster_size
    result["format"] = extent.type
    return result


def _qemu_cluster_size(extents: tuple[QemuExtent, ...]) -> int | None:
    """qemu reports a cluster size when every extent is alike and the first is not flat."""
    if not extents:
        return None
    first = extents[0]
    for other in extents[1:]:
        if other.flat != first.flat or other.compressed != first.compressed:
            return None
        if not first.flat and other.cluster_size != first.cluster_size:
            return None
    return None if first.flat else first.cluster_size


def qemu_path_combine(base: str, name: str) -> str:
    """qemu's ``path_combine``: an absolute or protocol name stands, else beside ``base``."""
    if name.startswith("/") or _has_protocol(name):
        return name
    return base[: base.rfind("/") + 1] + name


def _has_protocol(name: str) -> bool:
    stop = min((i for i in (name.find(":"), name.find("/")) if i >= 0), default=-1)
    return stop >= 0 and name[stop] == ":"


FORMAT = FormatSpec(NAME, probe, parse, qemu_info)
