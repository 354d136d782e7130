"""The OVA findings."""

from __future__ import annotations

from ... import findings as F

# --- findings ------------------------------------------------------------------------------

UNSAFE_MEMBER = F.define(
    "ova-unsafe-member",
    "unsafe",
    "ova",
    "A tar member is a link or device, or its name is absolute or climbs with '..'.",
)
HREF_OUTSIDE = F.define(
    "ova-external-reference",
    "unsafe",
    "ova",
    "The OVF references a file outside the archive (a URL, an absolute path or '..').",
)
XML_DTD = F.define(
    "ova-xml-dtd",
    "unsafe",
    "ova",
    "The OVF carries a DOCTYPE, entities or external references; it was not parsed.",
)
XML_INVALID = F.define("ova-xml-invalid", "unsafe", "ova", "The OVF is not well-formed XML.")
NOT_OVF = F.define("ova-not-ovf", "unsafe", "ova", "The descriptor's root is not an OVF Envelope.")
NO_DESCRIPTOR = F.define(
    "ova-no-descriptor", "unsafe", "ova", "The archive holds no .ovf descriptor."
)
DESCRIPTOR_NOT_FIRST = F.define(
    "ova-descriptor-not-first",
    "warning",
    "ova",
    "The .ovf is not the first member, as the OVF standard requires.",
)
SEVERAL_DESCRIPTORS = F.define(
    "ova-several-descriptors", "unsafe", "ova", "The archive holds more than one .ovf."
)
MISSING_FILE = F.define(
    "ova-missing-file", "unsafe", "ova", "A file the OVF references is not in the archive."
)
UNREFERENCED = F.define(
    "ova-unreferenced-member",
    "warning",
    "ova",
    "A member is neither referenced by the OVF nor its manifest or certificate.",
)
MANIFEST_MISMATCH = F.define(
    "ova-manifest-mismatch",
    "unsafe",
    "ova",
    "A member's digest differs from the manifest, or the manifest names a missing member.",
)
MANIFEST_UNLISTED = F.define(
    "ova-manifest-unlisted",
    "warning",
    "ova",
    "A member that the manifest does not list (its content is not protected by it).",
)
MANIFEST_BAD = F.define(
    "ova-manifest-invalid", "unsafe", "ova", "The manifest has lines that are not digests."
)
MANIFEST_UNVERIFIED = F.define(
    "ova-manifest-unverified",
    "info",
    "ova",
    "The manifest was not verified (header-only mode, or members not kept from a stream).",
)
CERTIFICATE = F.define(
    "ova-certificate",
    "info",
    "ova",
    "The archive carries a signing certificate (.cert); its signature is not verified.",
)
CHUNKED = F.define(
    "ova-chunked-file",
    "warning",
    "ova",
    "A file is split into chunks (ovf:chunkSize); chunked disks are not introspected.",
)
SIZE_MISMATCH = F.define(
    "ova-size-mismatch",
    "warning",
    "ova",
    "A File's ovf:size differs from the member's size in the archive.",
)
CAPACITY_MISMATCH = F.define(
    "ova-capacity-mismatch",
    "warning",
    "ova",
    "A Disk's ovf:capacity differs from the virtual size of the disk image itself.",
)
MULTIPLE_DISKS = F.define(
    "ova-multiple-disks", "info", "ova", "The appliance has more than one disk."
)
ADAPTER_OVERRIDE = F.define(
    "ova-adapter-type-override",
    "info",
    "ova",
    "The OVF's controller for the disk differs from the VMDK's ddb.adapterType; the OVF wins.",
)
DISK_UNREADABLE = F.define(
    "ova-disk-unreadable", "unsafe", "ova", "A disk member could not be introspected."
)
NESTED_OVA = F.define(
    "ova-nested", "unsafe", "ova", "A disk member is itself an OVA (not introspected further)."
)
TAR_NOT_OVA = F.define(
    "tar-not-ova",
    "warning",
    "raw",
    "A tar archive with no OVF descriptor: not an OVA (DSP0243), so it is read as raw, as "
    "qemu reads it.",
)
DISK_FORMAT_MISMATCH = F.define(
    "ova-disk-format-mismatch",
    "unsafe",
    "ova",
    "A Disk's ovf:format declares a disk format (a streamOptimized or sparse VMDK, a VHD, a "
    "qcow2) that the disk's own bytes are not.",
)
NO_DISK = F.define(
    "ova-no-disk",
    "unsafe",
    "ova",
    "The OVF declares no disk: the appliance has nothing to boot or import.",
)
BAD_ARCHIVE = F.define(
    "ova-bad-archive",
    "unsafe",
    "ova",
    "The tar structure is broken: bad checksum, bad size field, too many members, or a "
    "member name too long to extract.",
)
HEADER_ONLY_LIMIT = F.define(
    "ova-header-only-limit",
    "unsafe",
    "ova",
    "Header-only mode: the archive holds more than header-only reads (more tar headers, a "
    "larger OVF or manifest), so members or references that make an OVA unsafe may lie "
    "past what was checked; a deep read checks them.",
)
