"""What qemu itself reads from VMDK bytes (:class:`QemuView`); ``qemu-img info`` from it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ...errors import InvalidImage
from ...frozen import frozen
from ..base import Context, QemuRefuses
from .codes import unkept
from .layout import (
    MAX_EXTENTS,
    QEMU_CID_WINDOW,
    QEMU_DESCRIPTOR_TYPES,
    QEMU_EXTENT_TYPES,
    QEMU_FLAT_TYPES,
    QEMU_MAX_BACKING,
    QEMU_SPARSE_DESC_OFFSET,
    SECTOR,
)
from .section import QemuExtent, QemuView, VmdkSection

# --- what qemu reads -----------------------------------------------------------------------

_C_SPACE = b" \t\n\v\f\r"
_C_SPACES = re.compile(rb"[ \t\n\v\f\r]*")
_NON_BLANK_LINE = re.compile(rb"(?m)^([ \t\v\f\r]*)[^ \t\n\v\f\r][^\n]*")
_SCANF_TOKEN = re.compile(rb"[^ \t\n\v\f\r]{1,10}")
_SCANF_INT = re.compile(rb"[+-]?[0-9]+")
_SCANF_NAME = re.compile(rb'[^\n\r"]{1,511}')
_SCANF_HEX = re.compile(rb"[ \t\n\v\f\r]*([+-]?)(?:0[xX](?=[0-9a-fA-F]))?([0-9a-fA-F]+)")
INT64_MAX = (1 << 63) - 1


def c_string(data: bytes) -> bytes:
    """``data`` up to its first NUL, as C string functions see it."""
    return data.split(b"\0", 1)[0]


def qemu_find_cid(window: bytes, name: bytes) -> int | None:
    """qemu's ``vmdk_read_cid``: ``strstr`` for ``name``, skip ``name=``, ``sscanf("%x")``."""
    text = c_string(window[: QEMU_CID_WINDOW - 1])
    found = text.find(name)
    if found < 0:
        return None
    match = _SCANF_HEX.match(text, found + len(name) + 1)
    if match is None:
        return None
    value = int(match[2], 16)
    if value > 0xFFFF_FFFF_FFFF_FFFF:
        value = 0xFFFF_FFFF_FFFF_FFFF  # strtoul saturates
    elif match[1] == b"-":
        value = -value % (1 << 64)
    return value & 0xFFFF_FFFF


def qemu_find_parent(window: bytes) -> tuple[str | None, str | None]:
    """qemu's ``vmdk_parent_open``: the backing name, or an error that stops qemu opening."""
    text = c_string(window[:QEMU_CID_WINDOW])
    found = text.find(b"parentFileNameHint")
    if found < 0:
        return None, None
    start = found + len("parentFileNameHint") + 2  # skips '="' whatever they are
    end = text.find(b'"', start) if start <= len(text) else -1
    if end < 0:
        return None, "parentFileNameHint has no closing quote"
    if end - start > QEMU_MAX_BACKING:
        return None, "parentFileNameHint is too long"
    return text[start:end].decode("utf-8", errors="replace"), None


def qemu_find_option(buf: bytes, name: bytes, limit: int = 128) -> str | None:
    """qemu's ``vmdk_parse_description``: ``strstr``, skip ``name="``, read up to ``"``."""
    text = c_string(buf)
    found = text.find(name)
    if found < 0:
        return None
    start = found + len(name) + 2
    if start >= len(text):
        return None
    end = text.find(b'"', start)
    if end < 0 or end - start + 1 > limit:
        return None
    return text[start:end].decode("utf-8", errors="replace")


@frozen
class _ScannedLine:
    """What qemu's ``sscanf`` takes from an extent line."""

    matches: int
    access: bytes
    sectors: int
    type: bytes
    name: bytes
    offset: int


def _scanf_skip(text: bytes, at: int) -> int:
    """Past the whitespace at ``at`` (a blank in a scanf format matches any run of it)."""
    match = _C_SPACES.match(text, at)
    return match.end() if match is not None else at


def _scanf_integer(text: bytes, at: int) -> tuple[int, int] | None:
    """``%ld`` at ``at``: the value (saturated as strtol does) and where it ends."""
    match = _SCANF_INT.match(text, _scanf_skip(text, at))
    if match is None:
        return None
    return max(-(1 << 63), min(INT64_MAX, int(match[0]))), match.end()


def _scan_extent(text: bytes, pos: int) -> _ScannedLine:
    """``sscanf(p, "%10s %ld %10s \\"%511[^\\n\\r\\"]\\" %ld", ...)`` on the rest of ``text``.

    Like the C call it reads across line breaks: whitespace directives and numbers skip them.
    """
    access = _SCANF_TOKEN.match(text, _scanf_skip(text, pos))
    if access is None:
        return _ScannedLine(0, b"", 0, b"", b"", -1)
    if access[0] != b"RW":  # qemu ignores every line whose access is not RW
        return _ScannedLine(1, access[0], 0, b"", b"", -1)
    sectors = _scanf_integer(text, access.end())
    if sectors is None:
        return _ScannedLine(1, access[0], 0, b"", b"", -1)
    kind = _SCANF_TOKEN.match(text, _scanf_skip(text, sectors[1]))
    if kind is None:
        return _ScannedLine(2, access[0], sectors[0], b"", b"", -1)
    at = _scanf_skip(text, kind.end())
    if text[at : at + 1] != b'"':
        return _ScannedLine(3, access[0], sectors[0], kind[0], b"", -1)
    name = _SCANF_NAME.match(text, at + 1)
    if name is None:
        return _ScannedLine(3, access[0], sectors[0], kind[0], b"", -1)
    if text[name.end() : name.end() + 1] != b'"':
        return _ScannedLine(4, access[0], sectors[0], kind[0], name[0], -1)
    offset = _scanf_integer(text, name.end() + 1)
    if offset is None:
        return _ScannedLine(4, access[0], sectors[0], kind[0], name[0], -1)
    return _ScannedLine(5, access[0], sectors[0], kind[0], name[0], offset[0])


@dataclass
class QemuExtents:
    extents: list[QemuExtent] = field(default_factory=list)
    count: int = 0
    sectors: int = 0
    error: str | None = None


def qemu_extents(buf: bytes) -> QemuExtents:
    """The extents qemu's ``vmdk_parse_extents`` adds for a descriptor (in order).

    qemu calls ``sscanf`` at every line start, and ``sscanf`` skips line breaks, so a blank
    line before an extent line adds that extent once more.  Each distinct place a scan lands
    on is scanned once and counted as many times as qemu would read it.
    """
    text = c_string(buf)
    result = QemuExtents()
    previous_end = -1
    for line in _NON_BLANK_LINE.finditer(text):
        landing = line.start() + len(line[1])
        repeats = 1 + text.count(b"\n", previous_end + 1, landing)
        previous_end = line.end()
        if not text.startswith(b"RW", landing):
            continue  # the access token is not RW: qemu ignores the line (no sscanf needed)
        scanned = _scan_extent(text, landing)
        if scanned.matches < 4 or scanned.access != b"RW":
            continue
        error = _qemu_extent_error(scanned)
        if error is not None:
            result.error = error
            return result
        kind = scanned.type.decode("latin-1")
        if scanned.sectors <= 0 or kind not in QEMU_EXTENT_TYPES:
            continue
        extent = QemuExtent(
            file=scanned.name.decode("utf-8", errors="replace"),
            type=kind,
            sectors=scanned.sectors,
            flat=kind in QEMU_FLAT_TYPES,
            compressed=False,
            cluster_size=None,
        )
        result.count += repeats
        result.sectors += repeats * scanned.sectors
        room = MAX_EXTENTS - len(result.extents)
        result.extents.extend([extent] * min(repeats, room))
    return result


def _qemu_extent_error(line: _ScannedLine) -> str | None:
    if line.type == b"FLAT":
        bad = line.matches != 5 or line.offset < 0
    elif line.type == b"VMFS":
        bad = line.matches != 4
    else:
        bad = line.matches != 4
    if bad:
        return "invalid extent line for qemu"
    return None


def qemu_descriptor_view(buf: bytes, cid_window: bytes) -> QemuView:
    """qemu's reading of a text descriptor (a descriptor file, or a capacity-0 sparse file)."""
    create_type = qemu_find_option(buf, b"createType")
    error = None
    scanned = QemuExtents()
    if create_type is None:
        error = 'invalid VMDK image descriptor (no createType="...")'
    elif create_type not in QEMU_DESCRIPTOR_TYPES:
        error = f"Unsupported image type '{create_type}'"
    else:
        scanned = qemu_extents(buf)
        error = scanned.error
    return qemu_view(create_type or "", scanned, cid_window, error)


def qemu_view(create_type: str, scanned: QemuExtents, window: bytes, error: str | None) -> QemuView:
    backing, backing_error = qemu_find_parent(window)
    cid = qemu_find_cid(window, b"CID")
    parent_cid = qemu_find_cid(window, b"parentCID")
    if error is None:
        error = backing_error
    if error is None and (cid is None or parent_cid is None):
        error = "no CID/parentCID where qemu reads them"
    return QemuView(
        opens=error is None,
        error=error,
        create_type=create_type,
        cid=cid,
        parent_cid=parent_cid,
        backing_file=backing or None,
        extents=tuple(scanned.extents),
        extent_count=scanned.count,
        virtual_size=scanned.sectors * SECTOR if error is None else None,
    )


# --- qemu-img info -------------------------------------------------------------------------

#: qemu 7.2 opens a descriptor without extents, then ``qemu-img info`` fails an assertion.
QEMU_NO_EXTENTS = "the descriptor has no extent qemu reads (qemu-img aborts: s->num_extents)"
#: What a shell reports for qemu-img killed by SIGABRT.
QEMU_ABORT_STATUS = 128 + 6


def qemu_info(md: Any, filename: str | None = None) -> dict[str, Any]:
    """The keys of ``qemu-img info --output=json`` that qemu takes from a VMDK.

    :param filename: the image's path as given to qemu-img; extent file names are built from
        it as qemu does (the image itself, or a name beside it).  Without it, the names
        written in the descriptor stand in.
    """
    section: VmdkSection | None = md.vmdk
    if section is None or section.qemu is None:
        raise InvalidImage("VMDK too damaged for a qemu-img view")
    view = section.qemu
    if not view.opens:
        raise QemuRefuses(view.error or "Invalid argument")
    if view.extent_count == 0:
        raise QemuRefuses(QEMU_NO_EXTENTS, QEMU_ABORT_STATUS)
    own_name = filename
    if own_name is None:
        own_name = section.extents[0].file if section.extents and section.extents[0].file else ""
    extents = [_qemu_extent_info(e, own_name, filename) for e in view.extents]
    info: dict[str, Any] = {"format": "vmdk"}
    if view.virtual_size is not None:
        info["virtual-size"] = view.virtual_size
    cluster_size = _qemu_cluster_size(view.extents)
    if cluster_size is not None:
        info["cluster-size"] = cluster_size
    info["format-specific"] = {
        "type": "vmdk",
        "data": {
            "cid": view.cid if view.cid is not None else 0,
            "parent-cid": view.parent_cid if view.parent_cid is not None else 0,
            "create-type": view.create_type,
            "extents": extents,
        },
    }
    if view.backing_file:
        info["backing-filename"] = view.backing_file
        info["backing-filename-format"] = "vmdk"
        if filename is not None:
            info["full-backing-filename"] = qemu_path_combine(filename, view.backing_file)
    info["dirty-flag"] = False
    return info


def _qemu_extent_info(extent: QemuExtent, own_name: str, filename: str | None) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if extent.compressed:
        result["compressed"] = True
    result["virtual-size"] = extent.sectors * SECTOR
    if extent.file is None:
        result["filename"] = own_name
    elif filename is None:
        result["filename"] = extent.file
    else:
        result["filename"] = qemu_path_combine(filename, extent.file)
    if not extent.flat and extent.cluster_size is not None:
        result["cluster-size"] = extent.cluster_size
    result["format"] = extent.type
    return result


def _qemu_cluster_size(extents: tuple[QemuExtent, ...]) -> int | None:
    """qemu reports a cluster size when every extent is alike and the first is not flat."""
    if not extents:
        return None
    first = extents[0]
    for other in extents[1:]:
        if other.flat != first.flat or other.compressed != first.compressed:
            return None
        if not first.flat and other.cluster_size != first.cluster_size:
            return None
    return None if first.flat else first.cluster_size


def qemu_path_combine(base: str, name: str) -> str:
    """qemu's ``path_combine``: an absolute or protocol name stands, else beside ``base``."""
    if name.startswith("/") or _has_protocol(name):
        return name
    return base[: base.rfind("/") + 1] + name


def _has_protocol(name: str) -> bool:
    stop = min((i for i in (name.find(":"), name.find("/")) if i >= 0), default=-1)
    return stop >= 0 and name[stop] == ":"


def read_cid_window(ctx: Context) -> bytes | None:
    """The bytes qemu reads CID, parent CID and parent hint from (None: a stream lost them)."""
    where = QEMU_SPARSE_DESC_OFFSET
    return ctx.read_optional(where, QEMU_CID_WINDOW, unkept("descriptor window", where))
