"""The tar walk: member headers read where they lie, pax and GNU long names bounded."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ... import findings as F
from ...frozen import frozen
from ...source import StreamGap
from ...structs import cstring
from ..base import MAX_LISTED, Context
from .codes import BAD_ARCHIVE, HEADER_ONLY_LIMIT, UNSAFE_MEMBER
from .layout import (
    BLOCK,
    GNU_LONG_TYPES,
    HEADER_ONLY_MEMBERS,
    MAX_EXTENDED_HEADER,
    MAX_MEMBERS,
    MAX_NAME,
    PAX_TYPES,
    REGULAR_TYPES,
    TAR_HEADERS,
)
from .probe import _octal, checksum_ok
from .section import Member

# --- the tar walk --------------------------------------------------------------------------


@frozen
class RawMember:
    name: str
    typeflag: bytes
    offset: int  # of the data
    size: int
    linkname: str


@dataclass
class Walk:
    """How far the tar walk got: the next header, the names and sizes a pax or GNU header
    left for the member after it, and the members found so far."""

    pos: int = 0
    headers: int = 0
    pending_name: str | None = None
    pending_size: int | None = None
    members: list[RawMember] = field(default_factory=list)
    # What the parse looks members up by, kept as they are found (not rebuilt per run).
    by_name: dict[str, RawMember] = field(default_factory=dict)
    descriptors: list[RawMember] = field(default_factory=list)
    manifest: RawMember | None = None
    certificate: RawMember | None = None

    def add(self, member: RawMember) -> None:
        self.members.append(member)
        self.by_name[member.name] = member
        name = member.name.lower()
        if name.endswith(".ovf") and member.typeflag in REGULAR_TYPES:
            self.descriptors.append(member)
        elif name.endswith(".mf") and self.manifest is None:
            self.manifest = member
        elif name.endswith(".cert") and self.certificate is None:
            self.certificate = member


def _members(ctx: Context) -> Walk:
    """Every member, walked from the start, or (a rehearsal of a stream's parse) from where
    the previous rehearsal stopped (Source.memo) to the first header not yet arrived: the
    walk costs one read per header however many times the parse runs."""
    walk: Walk = ctx.source.memo("ova-tar-walk").setdefault("walk", Walk())
    try:
        _walk_tar(ctx, walk)
    except StreamGap:
        ctx.findings.add(F.STREAM_UNCHECKED, "tar headers lay outside the kept stream")
    return walk


def _walk_tar(ctx: Context, walk: Walk) -> None:
    """Add every member to ``walk``; pax and GNU long-name blocks apply to the member after
    them."""
    src = ctx.source
    judge = not src.speculative  # a rehearsal's findings are thrown away
    limit = MAX_MEMBERS if ctx.deep else HEADER_ONLY_MEMBERS
    while walk.headers < limit:
        member = _next_member(ctx, walk)
        if member is None:
            return
        if member is _EXTENDED:
            continue
        walk.add(member)
        problem = _member_problem(member) if judge else None
        if problem:
            ctx.findings.add(UNSAFE_MEMBER, f"member {member.name!r}: {problem}")
    if not src.read_at(walk.pos, BLOCK).strip(b"\0"):
        return  # the end-of-archive marker right after the last header allowed
    if ctx.deep:
        ctx.findings.add(BAD_ARCHIVE, f"more than {MAX_MEMBERS} tar headers")
    else:
        ctx.findings.add(HEADER_ONLY_LIMIT, f"header-only mode reads the first {limit} tar headers")


#: What ``_next_member`` returns for a pax or GNU header (it applies to the next member).
_EXTENDED = RawMember("", b"x", 0, 0, "")


def _next_member(ctx: Context, walk: Walk) -> RawMember | None:
    """Read the header at ``walk.pos`` and move past it and its data; None at the end."""
    src = ctx.source
    pos = walk.pos
    block = src.read_at(pos, BLOCK)
    if src.pending(pos, BLOCK):
        return None  # a rehearsal: not here yet
    if len(block) < BLOCK:
        if block.strip(b"\0"):
            ctx.findings.add(F.TRUNCATED, f"tar header at {pos} is cut short")
        return None
    if not block.strip(b"\0"):
        return None  # end-of-archive marker
    if not checksum_ok(block):
        ctx.findings.add(BAD_ARCHIVE, f"tar header at {pos} has a bad checksum")
        return None
    hdr = TAR_HEADERS.decode(block)
    size = _octal(hdr.size)
    if size is None or size < 0:
        ctx.findings.add(BAD_ARCHIVE, f"tar header at {pos} has a bad size field")
        return None
    data_at = pos + BLOCK
    extended = hdr.typeflag in PAX_TYPES or hdr.typeflag in GNU_LONG_TYPES
    if not extended and walk.pending_size is not None:
        size = walk.pending_size  # a pax size overrides the header's, even where it lies
    if data_at + size > src.size:
        ctx.findings.add(
            F.TRUNCATED, f"tar member at {pos} claims {size} bytes past the archive's end"
        )
        size = max(0, src.size - data_at)
    member: RawMember = _EXTENDED
    if extended:
        extra = _read_extended(ctx, data_at, size, hdr.typeflag)
        if src.pending(data_at, len(extra or b"")):
            return None
        if hdr.typeflag == b"x" and extra is not None:
            walk.pending_name, walk.pending_size = _pax_fields(
                extra, walk.pending_name, walk.pending_size
            )
        elif hdr.typeflag == b"L" and extra is not None:
            walk.pending_name = cstring(extra)
    else:
        name = _bounded_name(ctx, walk.pending_name or _joined_name(hdr), pos)
        member = RawMember(name, hdr.typeflag, data_at, size, cstring(hdr.linkname)[:MAX_NAME])
        walk.pending_name, walk.pending_size = None, None
    walk.headers += 1
    walk.pos = data_at + -(-size // BLOCK) * BLOCK
    return member


def _bounded_name(ctx: Context, name: str, pos: int) -> str:
    if len(name) <= MAX_NAME:
        return name
    ctx.findings.add(
        BAD_ARCHIVE, f"tar member at {pos} has a name of {len(name)} characters (over {MAX_NAME})"
    )
    return name[:MAX_NAME]


def _read_extended(ctx: Context, offset: int, size: int, typeflag: bytes) -> bytes | None:
    if typeflag in GNU_LONG_TYPES:
        size = min(size, MAX_NAME + 1)  # enough to tell a name too long (nothing is kept)
    if size > MAX_EXTENDED_HEADER:
        ctx.findings.add(BAD_ARCHIVE, f"extended tar header of {size} bytes at {offset}")
        return None
    return ctx.source.read_at(offset, size)


def _pax_fields(data: bytes, name: str | None, size: int | None) -> tuple[str | None, int | None]:
    """``path`` and ``size`` from pax records ``"<len> key=value\\n"``."""
    for record in data.split(b"\n"):
        _, _, keyvalue = record.partition(b" ")
        key, sep, value = keyvalue.partition(b"=")
        if not sep:
            continue
        if key == b"path":
            name = value.decode("utf-8", errors="replace")
        elif key == b"size" and value.isdigit() and len(value) < 20:
            size = int(value)
    return name, size


def _joined_name(hdr: Any) -> str:
    name = cstring(hdr.name)
    if hdr.magic.startswith(b"ustar") and hdr.prefix.strip(b"\0"):
        name = cstring(hdr.prefix) + "/" + name
    return name


def _listed(ctx: Context, members: list[RawMember]) -> tuple[Member, ...]:
    """The members as the answer lists them: the first :data:`MAX_LISTED`."""
    if ctx.source.speculative:
        return ()  # a rehearsal's answer is thrown away
    if len(members) > MAX_LISTED:
        ctx.findings.add(
            F.LIST_CAPPED, f"{len(members)} tar members: the first {MAX_LISTED} are listed"
        )
    listed = members[:MAX_LISTED]
    return tuple(Member(m.name, m.size, m.offset, _kind(m.typeflag)) for m in listed)


def _member_problem(member: RawMember) -> str | None:
    if member.typeflag in (b"1", b"2"):
        return f"a link to {member.linkname!r}"
    if member.typeflag in (b"3", b"4", b"6"):
        return "a device or FIFO"
    if escapes(member.name):
        return "an absolute or climbing path"
    return None


def escapes(name: str) -> bool:
    """True for names that would land outside the directory they are extracted into."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return True
    return ".." in re.split(r"[\\/]", name)


def _kind(typeflag: bytes) -> str:
    return {b"5": "directory", b"1": "hardlink", b"2": "symlink"}.get(
        typeflag, "file" if typeflag in REGULAR_TYPES else f"type-{typeflag!r}"
    )
