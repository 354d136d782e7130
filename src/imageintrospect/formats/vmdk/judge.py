"""Building the VMDK section and judging what a descriptor says."""

from __future__ import annotations

import re
from typing import Any

from ... import findings as F
from ..base import Context
from .codes import (
    BAD_EXTENT_LINE,
    CREATE_TYPE_MISSING,
    DESCRIPTOR_LIMITS,
    DUPLICATE_KEY,
    EXTENT_PATH_ESCAPE,
    EXTERNAL_EXTENT,
    NOT_SELF_CONTAINED,
    PARENT_CID,
    PARENT_FILE,
    QEMU_VIEW_DIFFERS,
    UNKNOWN_CREATE_TYPE,
    UNKNOWN_EXTENT_TYPE,
    show,
)
from .descriptor import Descriptor, descriptor_geometry, int_or_none
from .layout import (
    CREATE_TYPES,
    EXTENT_TYPES,
    MAX_DDB_KEYS,
    MAX_EXTENT_FINDINGS,
    MAX_EXTENTS,
    QEMU_DESCRIPTOR_TYPES,
    SECTOR,
    SELF_CONTAINED,
)
from .qemu import QEMU_NO_EXTENTS
from .section import QemuView, VmdkSection

# --- building the section and judging the descriptor ---------------------------------------


def build_section(kind: str, desc: Descriptor | None, **values: Any) -> VmdkSection:
    if desc is None:
        desc = Descriptor()
    parent = desc.get("parentFileNameHint")
    values.setdefault("parent_file", parent if parent else None)
    values.setdefault("geometry", descriptor_geometry(desc))
    return VmdkSection(
        header_kind=kind,
        create_type=desc.get("createType"),
        adapter_type=desc.ddb_value("adapterType"),
        version=int_or_none(desc.get("version")),
        cid=desc.get("CID"),
        parent_cid=desc.get("parentCID"),
        hw_version=desc.ddb_value("virtualHWVersion"),
        tools_version=desc.ddb_value("toolsVersion"),
        extents=tuple(desc.extents),
        extent_count=desc.extent_count,
        ddb=dict(desc.ddb),
        encoding=desc.encoding,
        **values,
    )


def judge_descriptor(
    ctx: Context, desc: Descriptor, section: VmdkSection, *, embedded: bool
) -> None:
    """Findings from the descriptor's own lines.

    ``embedded``: the descriptor sits in a sparse file with data, whose single SPARSE extent
    names the file itself; in every other case each named file is somewhere else.
    """
    _judge_create_type(ctx, desc.get("createType"))
    for key, first, second in desc.duplicates:
        ctx.findings.add(
            DUPLICATE_KEY, f"{show(key)} is given as {show(first)} and again as {show(second)}"
        )
    for line in desc.bad_lines:
        ctx.findings.add(BAD_EXTENT_LINE, f"cannot parse the extent line {show(line)}")
    if desc.extent_count > MAX_EXTENTS or desc.ddb_count + desc.other_count > MAX_DDB_KEYS:
        ctx.findings.add(
            DESCRIPTOR_LIMITS,
            f"{desc.extent_count} extents and {desc.ddb_count + desc.other_count} keys; the "
            f"section keeps {MAX_EXTENTS} and {MAX_DDB_KEYS}",
        )
    names: list[str] = []
    for index, extent in enumerate(desc.extents):
        if extent.type.upper() not in EXTENT_TYPES:
            ctx.findings.add(UNKNOWN_EXTENT_TYPE, f"extent type {show(extent.type)}")
        if extent.file is None:
            continue
        is_self = embedded and index == 0 and extent.type.upper() == "SPARSE"
        if not (is_self and _path_kind(extent.file) == "name"):
            names.append(extent.file)
    _report_files(ctx, names)
    if section.parent_file:
        ctx.findings.add(PARENT_FILE, f"parentFileNameHint names {show(section.parent_file)}")
    parent_cid = desc.get("parentCID")
    if parent_cid is not None and parent_cid.strip().lower() != "ffffffff":
        ctx.findings.add(PARENT_CID, f"parentCID is {show(parent_cid)}")


def _judge_create_type(ctx: Context, create_type: str | None) -> None:
    if create_type is None:
        ctx.findings.add(CREATE_TYPE_MISSING, "the descriptor has no createType")
        return
    lowered = create_type.lower()
    if lowered not in CREATE_TYPES:
        ctx.findings.add(UNKNOWN_CREATE_TYPE, f"createType {show(create_type)}")
    elif lowered not in SELF_CONTAINED:
        ctx.findings.add(
            NOT_SELF_CONTAINED, f"createType {show(create_type)} keeps the disk in other files"
        )


_PATH_SEPARATORS = re.compile(r"[/\\]")
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")


def _path_kind(name: str) -> str:
    """``escape`` (absolute or with ``..``), ``name`` (a bare file name) or ``relative``."""
    parts = _PATH_SEPARATORS.split(name)
    if name.startswith(("/", "\\")) or _DRIVE_LETTER.match(name) or ".." in parts:
        return "escape"
    if len(parts) == 1 and name not in ("", "."):
        return "name"
    return "relative"


def _report_files(ctx: Context, names: list[str]) -> None:
    seen: list[str] = []
    for name in names:
        if name in seen:
            continue
        seen.append(name)
        if len(seen) > MAX_EXTENT_FINDINGS:
            ctx.findings.add(
                EXTERNAL_EXTENT, f"more than {MAX_EXTENT_FINDINGS} files are named by extents"
            )
            return
        if _path_kind(name) == "escape":
            ctx.findings.add(EXTENT_PATH_ESCAPE, f"an extent names the file {show(name)}")
        else:
            ctx.findings.add(EXTERNAL_EXTENT, f"an extent names the file {show(name)}")


def judge_qemu_view(ctx: Context, qemu: QemuView, desc: Descriptor | None) -> None:
    """Findings for what qemu would take from the bytes where the descriptor says otherwise."""
    files = [e.file for e in qemu.extents if e.file is not None]
    _report_files(ctx, files)
    ours_parent = desc.get("parentFileNameHint") if desc is not None else None
    if qemu.backing_file and qemu.backing_file != ours_parent:
        ctx.findings.add(PARENT_FILE, f"qemu reads the parent file name {show(qemu.backing_file)}")
    ours_parent_cid = _hex_or_none(desc.get("parentCID")) if desc is not None else None
    if qemu.parent_cid not in (None, 0xFFFF_FFFF, ours_parent_cid):
        ctx.findings.add(PARENT_CID, f"qemu reads parentCID {qemu.parent_cid:08x}")
    if not qemu.opens:
        # A consumer that runs qemu cannot use the image at all: it must not pass the gate.
        ctx.findings.add(F.QEMU_CANNOT_OPEN, f"qemu refuses the VMDK: {qemu.error}")
    elif qemu.extent_count == 0:
        ctx.findings.add(F.QEMU_CANNOT_OPEN, QEMU_NO_EXTENTS)
    if desc is None or not qemu.opens:
        return
    differences = []
    ours_cid = _hex_or_none(desc.get("CID"))
    if qemu.cid is not None and ours_cid is not None and qemu.cid != ours_cid:
        differences.append(f"CID {qemu.cid:08x} (descriptor: {ours_cid:08x})")
    if any(e.file is not None for e in qemu.extents) or qemu.create_type in QEMU_DESCRIPTOR_TYPES:
        ours_type = desc.get("createType")
        if ours_type != qemu.create_type:
            differences.append(
                f"createType {show(qemu.create_type)} (descriptor: {show(ours_type)})"
            )
        qemu_sectors = (qemu.virtual_size or 0) // SECTOR
        if (qemu.extent_count, qemu_sectors) != (desc.extent_count, desc.extent_sectors):
            differences.append(
                f"{qemu.extent_count} extents of {qemu_sectors} sectors in all (descriptor: "
                f"{desc.extent_count} of {desc.extent_sectors})"
            )
    if differences:
        ctx.findings.add(QEMU_VIEW_DIFFERS, "qemu reads " + "; ".join(differences))


def _hex_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip(), 16) & 0xFFFF_FFFF
    except ValueError:
        return None
