"""What ``qemu-img info`` prints for a qcow2."""

from __future__ import annotations

from typing import Any

from ...errors import InvalidImage
from .section import Qcow2Section, Snapshot

# --- qemu-img info view ---------------------------------------------------------------------


def qemu_info(md: Any, filename: str | None = None) -> dict[str, Any]:
    """The keys of ``qemu-img info --output=json`` that come from the qcow2 header."""
    section: Qcow2Section | None = md.qcow2
    if section is None:
        raise InvalidImage("qcow2 header too damaged for a qemu-img view")
    data: dict[str, Any] = {
        "compat": "0.10" if section.version == 2 else "1.1",
        "compression-type": section.compression_type,
    }
    if section.version == 3:
        data["lazy-refcounts"] = section.lazy_refcounts
    if section.bitmaps:
        data["bitmaps"] = [
            {
                "flags": [f for f in b.flags if f in ("in-use", "auto")],
                "name": b.name,
                "granularity": b.granularity,
            }
            for b in section.bitmaps
        ]
    data["refcount-bits"] = section.refcount_bits
    if section.data_file is not None:
        data["data-file"] = section.data_file
    if "external-data-file" in section.incompatible_features:
        data["data-file-raw"] = section.data_file_raw
    if section.luks is not None:
        from .. import luks  # imported already: it made section.luks

        data["encrypt"] = luks.qemu_luks_info(section.luks, with_format=True)
    elif section.encryption is not None:
        data["encrypt"] = {"format": section.encryption}
    if section.version == 3:
        data["corrupt"] = section.corrupt
        data["extended-l2"] = section.extended_l2
    info: dict[str, Any] = {
        "cluster-size": section.cluster_size,
        "format": "qcow2",
        "format-specific": {"type": "qcow2", "data": data},
        "dirty-flag": section.dirty,
    }
    if section.encryption is not None:
        info["encrypted"] = True
    if section.backing_file is not None:
        info["backing-filename"] = section.backing_file
        if section.backing_format:
            info["backing-filename-format"] = section.backing_format
    if section.snapshots:
        info["snapshots"] = [_qemu_snapshot(s) for s in section.snapshots]
    return info


def _qemu_snapshot(snap: Snapshot) -> dict[str, Any]:
    result: dict[str, Any] = {
        "vm-clock-nsec": snap.vm_clock_nsec % 1_000_000_000,
        "name": snap.name,
        "date-sec": snap.date_sec,
        "date-nsec": snap.date_nsec,
        "vm-clock-sec": snap.vm_clock_nsec // 1_000_000_000,
        "id": snap.id,
        "vm-state-size": snap.vm_state_size,
    }
    if snap.icount is not None:
        result["icount"] = snap.icount
    return result
