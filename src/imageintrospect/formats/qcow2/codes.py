"""The qcow2 findings."""

from __future__ import annotations

from ... import findings as F

# --- findings ------------------------------------------------------------------------------

BACKING_FILE = F.define(
    "backing-file",
    "unsafe",
    "qcow2",
    "The image names a backing file; using it would make the host read that file.",
)
DATA_FILE = F.define(
    "external-data-file",
    "unsafe",
    "qcow2",
    "The image keeps its guest data in an external file that it names.",
)
UNKNOWN_INCOMPATIBLE = F.define(
    "unknown-incompatible-feature",
    "unsafe",
    "qcow2",
    "An incompatible feature bit this library (and qemu) does not know is set.",
)
CORRUPT = F.define("corrupt-flag", "unsafe", "qcow2", "The image's own header marks it as corrupt.")
DIRTY = F.define(
    "dirty-flag",
    "warning",
    "qcow2",
    "The image was not closed cleanly (refcounts may be stale; qemu repairs on open).",
)
ENCRYPTED = F.define(
    "encrypted",
    "warning",
    "qcow2",
    "The guest data is encrypted; its content cannot be inspected or converted without a key.",
)
LEGACY_AES = F.define(
    "legacy-aes-encryption",
    "unsafe",
    "qcow2",
    "Legacy qcow2 AES encryption: broken by design and refused by qemu's system emulators.",
)
BAD_GEOMETRY = F.define(
    "bad-geometry",
    "unsafe",
    "qcow2",
    "A header field is impossible: cluster size, L1 size, virtual size or a table offset.",
)
BAD_VERSION = F.define(
    "unsupported-version", "unsafe", "qcow2", "The header version is neither 2 nor 3."
)
BAD_EXTENSION = F.define(
    "bad-header-extension",
    "unsafe",
    "qcow2",
    "A header extension is malformed (overruns its area, bad length, or bad content).",
)
UNKNOWN_EXTENSION = F.define(
    "unknown-header-extension",
    "info",
    "qcow2",
    "A header extension of an unknown type is present (qemu ignores it).",
)
BAD_SNAPSHOTS = F.define(
    "bad-snapshot-table",
    "unsafe",
    "qcow2",
    "The snapshot table is out of range, misaligned, or has an impossible entry.",
)
BAD_BITMAPS = F.define(
    "bad-bitmap-directory",
    "unsafe",
    "qcow2",
    "The persistent-bitmap extension or directory is malformed.",
)
TABLE_NOT_READ = F.define(
    "table-not-read",
    "info",
    "qcow2",
    "Header-only mode: a metadata table larger than the header budget was not read.",
)
SNAPSHOTS_PRESENT = F.define(
    "internal-snapshots",
    "info",
    "qcow2",
    "The image holds internal snapshots (their data is part of the image).",
)

# Deep validation: one code per class of bad table entry (the message names the table, the
# entry index and its value, and how many entries of that table are bad).
ENTRY_OUT_OF_RANGE = F.define(
    "entry-out-of-range",
    "unsafe",
    "qcow2",
    "An L1, L2 or refcount table entry points past the end of the file.",
)
ENTRY_MISALIGNED = F.define(
    "entry-misaligned",
    "unsafe",
    "qcow2",
    "A table entry's offset is not aligned to the cluster size.",
)
ENTRY_IN_METADATA = F.define(
    "entry-in-metadata",
    "unsafe",
    "qcow2",
    "A table entry points into the header cluster (or other metadata).",
)
ENTRY_RESERVED_BITS = F.define(
    "entry-reserved-bits",
    "unsafe",
    "qcow2",
    "A table entry has reserved bits set.",
)
CLUSTER_CLAIMED_TWICE = F.define(
    "cluster-claimed-twice",
    "unsafe",
    "qcow2",
    "A host cluster is used twice (by two guest clusters, or by data and metadata).",
)
BAD_COMPRESSED = F.define(
    "bad-compressed-cluster",
    "unsafe",
    "qcow2",
    "A compressed-cluster descriptor that cannot be valid (runs past the end of the file).",
)
BAD_SUBCLUSTER = F.define(
    "bad-subcluster-bitmap",
    "unsafe",
    "qcow2",
    "An extended-L2 subcluster bitmap marks a subcluster both allocated and zero.",
)
OVERLAP_UNCHECKED = F.define(
    "overlap-check-skipped",
    "info",
    "qcow2",
    "The file has too many clusters for the double-use map; tables were checked without it.",
)
