"""raw: anything no other format claims.  Its virtual size is the image's length.

A raw image may be a whole partitioned disk: :mod:`.partitions` reads its first sectors and
tells ``partition_table`` (``gpt``, ``mbr`` or None) and what is wrong with the table.  That is
description, not detection: a GPT or MBR disk is still ``raw``, and a FAT boot sector at sector
0 is a file system on the whole disk, not an MBR.
"""

from __future__ import annotations

from typing import Any

from . import partitions
from .base import Context, FormatSpec, Parsed, Probe

NAME = "raw"
#: qemu's block layer counts whole 512-byte sectors: a raw file's last partial sector is
#: presented to the guest (and reported by qemu-img) padded with zeros.
QEMU_SECTOR = 512


def probe(probe: Probe) -> bool:
    return True


def parse(ctx: Context) -> Parsed:
    layout = partitions.scan(ctx)
    # The length of the image itself, never "the bytes read so far".
    return Parsed(
        virtual_size=ctx.source.size,
        section=None,
        partition_table=layout.table,
        partitions=layout.partitions(),
    )


def qemu_virtual_size(image_size: int) -> int:
    """The ``virtual-size`` qemu-img reports for a raw file of ``image_size`` bytes."""
    return -(-image_size // QEMU_SECTOR) * QEMU_SECTOR


def qemu_info(md: Any, filename: str | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"format": "raw"}
    if md.image_size is not None:
        info["virtual-size"] = qemu_virtual_size(md.image_size)
    return info


FORMAT = FormatSpec(NAME, probe, parse, qemu_info)
