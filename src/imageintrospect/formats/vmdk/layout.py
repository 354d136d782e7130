"""VMDK on-disk layout: magic numbers, flags, limits, and the layouts of its structures."""

from __future__ import annotations

from ... import _layouts
from ...structs import EntryTable

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
# deep=False reads at most 1 MiB in all (docs/security.md): descriptors are read only this far
# then.
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

# The layouts, derived from the construct schemas in formats/schemas/vmdk.py by
# scripts/gen_layouts.py (edit the schema, then run it): no construct on this path.
SPARSE_HEADER = _layouts.VMDK_SPARSE_HEADER
METADATA_MARKER = _layouts.VMDK_METADATA_MARKER
GRAIN_MARKER = _layouts.VMDK_GRAIN_MARKER
COWD_HEADER = _layouts.VMDK_COWD_HEADER
COWD_ROOT_GEOMETRY = _layouts.VMDK_COWD_ROOT_GEOMETRY
SESPARSE_HEADER = _layouts.VMDK_SESPARSE_HEADER
SPARSE_HEADER_SIZE = SECTOR

METADATA_MARKER_SIZE = METADATA_MARKER.size


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
#: The fields of METADATA_MARKER as a struct layout, for the marker walk's hot loop.
MARKERS = EntryTable(METADATA_MARKER, "stream marker")
MARKER_FIELDS = MARKERS.layout
