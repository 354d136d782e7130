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

from ..base import Context, FormatSpec, Parsed
from .extents import parse_cowd, parse_sesparse, parse_text
from .layout import (
    COWD_HEADER,
    COWD_HEADER_SIZE,
    COWD_MAGIC,
    FLAG_ZEROED_GRAIN,
    GRAIN_MARKER,
    MAX_EXTENTS,
    METADATA_MARKER,
    NAME,
    SESPARSE_HEADER,
    SESPARSE_MAGIC,
    SESPARSE_VERSION,
    SPARSE_HEADER,
    SPARSE_MAGIC,
)
from .probe import probe
from .qemu import qemu_info
from .section import VmdkSection
from .sparse import parse_sparse

# --- parse ---------------------------------------------------------------------------------


def parse(ctx: Context) -> Parsed:
    head = ctx.source.read_at(0, COWD_HEADER_SIZE)
    if head[:4] == SPARSE_MAGIC:
        return parse_sparse(ctx, head)
    if head[:4] == COWD_MAGIC:
        return parse_cowd(ctx, head)
    if head[:8] == SESPARSE_MAGIC:
        return parse_sesparse(ctx, head)
    return parse_text(ctx)


FORMAT = FormatSpec(NAME, probe, parse, qemu_info)

# What other modules and the tests use, as ``vmdk.X``.
__all__ = [
    "COWD_HEADER",
    "COWD_HEADER_SIZE",
    "FLAG_ZEROED_GRAIN",
    "FORMAT",
    "GRAIN_MARKER",
    "MAX_EXTENTS",
    "METADATA_MARKER",
    "NAME",
    "SESPARSE_HEADER",
    "SESPARSE_VERSION",
    "SPARSE_HEADER",
    "VmdkSection",
    "parse",
    "probe",
    "qemu_info",
]
