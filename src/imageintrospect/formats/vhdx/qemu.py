"""What ``qemu-img info`` prints for a VHDX."""

from __future__ import annotations

from typing import Any

from ...errors import InvalidImage
from ..base import QemuRefuses
from .layout import NAME
from .section import VhdxSection

# --- qemu-img info view ---------------------------------------------------------------------


def qemu_info(md: Any, filename: str | None = None) -> dict[str, Any]:
    """The keys of ``qemu-img info --output=json`` that come from the VHDX metadata.

    qemu 7.2 prints no format-specific data for VHDX; its cluster size is the block size.
    """
    section = md.vhdx
    if not isinstance(section, VhdxSection):
        raise InvalidImage("VHDX metadata too damaged for a qemu-img view")
    if section.log_replay is not None:
        name = filename or "-"
        raise QemuRefuses(
            f"VHDX image file '{name}' opened read-only, but contains a log that needs to be "
            f"replayed.  To replay the log, execute:\n qemu-img check -r all '{name}'"
        )
    info: dict[str, Any] = {"format": NAME}
    if section.block_size is not None:
        info["cluster-size"] = section.block_size
    return info
