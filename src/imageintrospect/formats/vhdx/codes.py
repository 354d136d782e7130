"""The VHDX findings."""

from __future__ import annotations

from ... import findings as F

# --- findings ------------------------------------------------------------------------------

DIFFERENCING = F.define(
    "vhdx-differencing",
    "unsafe",
    "vhdx",
    "A differencing disk: the has-parent bit or a parent locator names another file "
    "(the paths are in the message).",
)
LOG_PENDING = F.define(
    "vhdx-log-pending",
    "warning",
    "vhdx",
    "The header's log GUID is set but the log holds no sequence of entries to replay "
    "(qemu opens such an image).",
)
LOG_REPLAYED = F.define(
    "vhdx-log-replayed",
    "warning",
    "vhdx",
    "The log held writes not yet applied: they were replayed in memory and the image is "
    "described as it reads after replay (qemu-img refuses to open it read-only).",
)
LOG_UNREPLAYABLE = F.define(
    "vhdx-log-unreplayable",
    "unsafe",
    "vhdx",
    "The log may hold writes not yet applied, and they could not be replayed: entries that "
    "break the specification, a log over 16 MiB, a truncated file, header-only mode or a "
    "stream that let the log go by. What the file says before replay cannot be trusted.",
)
HEADER_INVALID = F.define(
    "vhdx-header-invalid",
    "warning",
    "vhdx",
    "One of the two header copies is invalid (checksum, signature or version); "
    "the other one is used.",
)
NO_VALID_HEADER = F.define(
    "vhdx-no-valid-header",
    "unsafe",
    "vhdx",
    "Neither header copy is valid.",
)
HEADER_CONFLICT = F.define(
    "vhdx-header-conflict",
    "unsafe",
    "vhdx",
    "Both header copies are valid with the same sequence number but different contents.",
)
REGION_TABLE_INVALID = F.define(
    "vhdx-region-table-invalid",
    "warning",
    "vhdx",
    "The first region table copy is invalid (checksum or signature); the second is used.",
)
REGION_TABLES_DIFFER = F.define(
    "vhdx-region-tables-differ",
    "warning",
    "vhdx",
    "Both region table copies are valid but not identical; the first is used.",
)
NO_VALID_REGION_TABLE = F.define(
    "vhdx-no-valid-region-table",
    "unsafe",
    "vhdx",
    "Neither region table copy is valid, so the BAT and metadata cannot be located.",
)
BAD_REGION_TABLE = F.define(
    "vhdx-bad-region-table",
    "unsafe",
    "vhdx",
    "The region table has too many entries, or lacks or repeats the BAT or metadata region.",
)
UNKNOWN_REQUIRED_REGION = F.define(
    "vhdx-unknown-required-region",
    "unsafe",
    "vhdx",
    "A region this library does not know is marked required (readers must refuse the file).",
)
BAD_LAYOUT = F.define(
    "vhdx-bad-layout",
    "unsafe",
    "vhdx",
    "A region or the log is misaligned, empty, or overlaps the header section, "
    "another region or the log.",
)
BAD_LOG = F.define(
    "vhdx-bad-log",
    "unsafe",
    "vhdx",
    "The header's log fields are impossible (log version, offset or length).",
)
BAD_METADATA = F.define(
    "vhdx-bad-metadata",
    "unsafe",
    "vhdx",
    "The metadata table or an item is malformed: signature, entry count, an item outside "
    "the region or overlapping another, a missing, repeated or short item.",
)
UNKNOWN_REQUIRED_METADATA = F.define(
    "vhdx-unknown-required-metadata",
    "unsafe",
    "vhdx",
    "A metadata item this library does not know is marked required.",
)
METADATA_UNCHECKED = F.define(
    "vhdx-metadata-unchecked",
    "unsafe",
    "vhdx",
    "Read as a stream, the metadata region had gone by before it could be kept: the "
    "has-parent bit and the disk size could not be checked.",
)
BAD_BLOCK_SIZE = F.define(
    "vhdx-bad-block-size",
    "unsafe",
    "vhdx",
    "The block size is not a power of two between 1 MiB and 256 MiB.",
)
BAD_SECTOR_SIZE = F.define(
    "vhdx-bad-sector-size",
    "unsafe",
    "vhdx",
    "A logical or physical sector size is neither 512 nor 4096.",
)
BAD_VIRTUAL_SIZE = F.define(
    "vhdx-bad-virtual-size",
    "unsafe",
    "vhdx",
    "The virtual disk size is 0, above the 64 TiB maximum, or not a whole number of "
    "logical sectors.",
)
BAT_TOO_SMALL = F.define(
    "vhdx-bat-too-small",
    "unsafe",
    "vhdx",
    "The BAT region cannot hold the entries the virtual size and block size need.",
)

BAT_RESERVED_BITS = F.define(
    "vhdx-bat-reserved-bits",
    "unsafe",
    "vhdx",
    "A BAT entry has reserved bits (3-19) set: its offset is not a whole MiB, or the entry "
    "is garbage.",
)
BAT_BAD_STATE = F.define(
    "vhdx-bat-bad-state",
    "unsafe",
    "vhdx",
    "A BAT entry's state is undefined (payload 4 or 5, a sector bitmap other than 0 or 6), or "
    "partially present in a disk without a parent.",
)
BAT_OUT_OF_RANGE = F.define(
    "vhdx-bat-out-of-range",
    "unsafe",
    "vhdx",
    "A present payload block or sector bitmap block runs past the end of the file.",
)
BAT_IN_METADATA = F.define(
    "vhdx-bat-in-metadata",
    "unsafe",
    "vhdx",
    "A present block lies over the header section, the log, the BAT, the metadata region or "
    "another region: guest writes would overwrite the image's own structures.",
)
BAT_CLAIMED_TWICE = F.define(
    "vhdx-bat-claimed-twice",
    "unsafe",
    "vhdx",
    "Two present blocks overlap: the same file bytes serve two places of the disk.",
)
