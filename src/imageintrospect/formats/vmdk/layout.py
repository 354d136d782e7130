"""VMDK on-disk layout: magic numbers, flags, limits, and the construct schemas."""

from __future__ import annotations

import construct as c

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
METADATA_MARKER_SIZE = METADATA_MARKER.sizeof()
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
MARKERS = EntryTable(METADATA_MARKER, "Marker", "stream marker")
MARKER_FIELDS = MARKERS.layout
