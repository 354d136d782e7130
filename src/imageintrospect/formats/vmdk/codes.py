"""The finding codes VMDK checks raise, and the helpers that word their messages."""

from __future__ import annotations

from ... import findings as F
from .layout import MAX_SHOWN

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


def show(value: object) -> str:
    """A value quoted for a finding message, cut short (a hostile name may be huge)."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 5] + "...'"


def unkept(what: str, offset: int) -> str:
    """The ``stream-unchecked`` message for an optional read a stream did not keep."""
    return f"{what} at offset {offset} lies in the unkept middle of the stream"
