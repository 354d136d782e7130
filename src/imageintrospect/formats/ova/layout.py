"""OVA constants: the ustar header schema, the walk's limits, the OVF vocabulary."""

from __future__ import annotations

import re

from ... import _layouts
from ...structs import EntryTable

NAME = "ova"
BLOCK = 512

# --- tar schema ----------------------------------------------------------------------------

# The layouts, derived from the construct schemas in formats/schemas/ova.py by
# scripts/gen_layouts.py (edit the schema, then run it): no construct on this path.
TAR_HEADER = _layouts.OVA_TAR_HEADER
# The walk decodes one header per member, on every run of a streamed parse: through the
# struct layout derived from the schema (~1 µs a header; construct takes ~70 µs, and an OVA
# may hold thousands of members).
TAR_HEADERS = EntryTable(TAR_HEADER, "tar header")
REGULAR_TYPES = (b"0", b"\0", b"7")
PAX_TYPES = (b"x", b"g")
GNU_LONG_TYPES = (b"L", b"K")

#: The most tar headers the walk reads (a member's pax or GNU long-name header counts as
#: one): past them the archive is refused (``ova-bad-archive``).
MAX_MEMBERS = 4096
#: Header-only introspection (``deep=False``) reads at most this many tar headers (256 KiB),
#: an OVF of at most HEADER_ONLY_OVF_BYTES and a manifest of at most
#: HEADER_ONLY_MANIFEST_BYTES (576 KiB in all, within its 1 MiB besides the disks' own
#: header reads); what lies past them is reported (``ova-header-only-limit``), not read.
HEADER_ONLY_MEMBERS = 512
HEADER_ONLY_OVF_BYTES = 256 * 1024
HEADER_ONLY_MANIFEST_BYTES = 64 * 1024
#: The longest member name accepted (no extractor takes a longer path): a longer one is
#: refused (``ova-bad-archive``) and cut to this length in the answer.
MAX_NAME = 1024
#: Files, disks, virtual systems and hardware items described (an OVF may list millions).
MAX_OVF_ITEMS = 1024
MAX_OVF_ELEMENTS = 100_000
MAX_EXTENDED_HEADER = 64 * 1024  # pax / GNU long-name blocks
MAX_OVF_BYTES = 4 * 1024 * 1024
MAX_MANIFEST_BYTES = 1024 * 1024
STREAM_DIGEST = "SHA256"

# --- OVF vocabulary ------------------------------------------------------------------------

OVF_NAMESPACES = {
    "http://www.vmware.com/schema/ovf/1/envelope": "0.9",
    "http://schemas.dmtf.org/ovf/envelope/1": "1.x",
    "http://schemas.dmtf.org/ovf/envelope/2": "2.x",
}
CIM_PASD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ProcessorAllocationSettingData"

RESOURCE_CPU = "3"
RESOURCE_MEMORY = "4"
CONTROLLER_TYPES = {"5": "ide", "6": "scsi", "20": "other", "7": "fc", "8": "iscsi", "9": "ib"}
RESOURCE_NIC = "10"
RESOURCE_DISK = "17"

MANIFEST_LINE = re.compile(rb"^\s*(SHA1|SHA256|SHA512)\s*\((.+)\)\s*=\s*([0-9A-Fa-f]+)\s*$")
