"""Finding and reading the OVF descriptor: bounded, DTD-free XML and its small helpers."""

from __future__ import annotations

import io
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree as SafeET

from ... import findings as F
from ..base import Context, NotThisFormat
from .codes import (
    BAD_ARCHIVE,
    DESCRIPTOR_NOT_FIRST,
    HEADER_ONLY_LIMIT,
    NO_DESCRIPTOR,
    NOT_OVF,
    SEVERAL_DESCRIPTORS,
    TAR_NOT_OVA,
    XML_DTD,
    XML_INVALID,
)
from .layout import HEADER_ONLY_OVF_BYTES, MAX_OVF_BYTES, MAX_OVF_ELEMENTS, OVF_NAMESPACES
from .tar import RawMember, Walk


def _descriptor(ctx: Context, walk: Walk) -> RawMember | None:
    ovfs = walk.descriptors
    if not ovfs:
        if not ctx.findings.codes() & {
            BAD_ARCHIVE,
            HEADER_ONLY_LIMIT,
            F.STREAM_UNCHECKED,
            F.TRUNCATED,
        }:
            # Every member was seen: a plain tar (of a VHD, say), which qemu reads as raw.
            members = walk.members
            names = ", ".join(repr(m.name) for m in members[:5]) or "no members"
            more = f" and {len(members) - 5} more" if len(members) > 5 else ""
            raise NotThisFormat(
                TAR_NOT_OVA,
                f"a tar archive ({names}{more}) with no .ovf descriptor, which DSP0243 "
                "requires as the first member: not an OVA",
            )
        ctx.findings.add(NO_DESCRIPTOR, "no .ovf member in the part of the archive read")
        return None
    if len(ovfs) > 1:
        names = ", ".join(repr(m.name) for m in ovfs[:8]) + (", ..." if len(ovfs) > 8 else "")
        ctx.findings.add(SEVERAL_DESCRIPTORS, f"{len(ovfs)} descriptors {names}; the first is used")
    if walk.members[0] is not ovfs[0]:
        ctx.findings.add(DESCRIPTOR_NOT_FIRST, f"{ovfs[0].name!r} is not the first member")
    return ovfs[0]


def read_ovf(ctx: Context, member: RawMember) -> tuple[Element | None, str | None]:
    if not ctx.deep and member.size > HEADER_ONLY_OVF_BYTES:
        ctx.findings.add(
            HEADER_ONLY_LIMIT, f"{member.name!r} ({member.size} bytes) is not read header-only"
        )
        return None, None
    if member.size > MAX_OVF_BYTES:
        ctx.findings.add(XML_INVALID, f"descriptor of {member.size} bytes is not read")
        return None, None
    data = ctx.read_optional(member.offset, member.size, "the OVF lay outside the kept stream")
    if data is None:
        return None, None
    try:
        root = _parse_xml(data)
    except _TooManyElements:
        ctx.findings.add(
            XML_INVALID, f"{member.name!r} has over {MAX_OVF_ELEMENTS} elements; not read"
        )
        return None, None
    except defusedxml.DefusedXmlException as exc:
        ctx.findings.add(XML_DTD, f"{member.name!r}: {type(exc).__name__}")
        return None, None
    except (ParseError, ValueError) as exc:
        ctx.findings.add(XML_INVALID, f"{member.name!r}: {exc}")
        return None, None
    namespace, tag = _split(root.tag)
    if tag != "Envelope":
        ctx.findings.add(NOT_OVF, f"root element is {tag!r}")
        return None, None
    return root, OVF_NAMESPACES.get(namespace, f"unknown ({namespace})" if namespace else None)


class _TooManyElements(Exception):
    pass


#: The piece of the OVF handed to expat at once.  iterparse asks for 16 KiB, and expat
#: scans a token that spans pieces again from its start on every piece: a 4 MiB comment
#: took seconds.  Larger pieces make that a few scans, while the element count is still
#: checked often enough to stop a flood of elements early (65,536 ``<a/>`` per piece).
XML_PIECE = 256 * 1024


class Pieces(io.BytesIO):
    """The OVF's bytes, handed out in pieces of at least :data:`XML_PIECE`."""

    def read(self, size: int | None = -1, /) -> bytes:
        if size is None or size < 0:
            return super().read()
        return super().read(max(size, XML_PIECE))


def _parse_xml(data: bytes) -> Element:
    """The OVF's root, parsed by defusedxml and cut off past :data:`MAX_OVF_ELEMENTS`
    (4 MiB of ``<a/>`` would otherwise be a million-element tree)."""
    events = SafeET.iterparse(
        Pieces(data), events=("start",), forbid_dtd=True, forbid_entities=True
    )
    for count, _ in enumerate(events, start=1):
        if count > MAX_OVF_ELEMENTS:
            raise _TooManyElements
    root: Element = events.root
    return root


def _split(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        namespace, _, local = tag[1:].partition("}")
        return namespace, local
    return "", tag


def _local(element: Element) -> str:
    return _split(element.tag)[1]


def attr(element: Element, name: str) -> str | None:
    """An attribute by local name, whatever namespace prefix the producer used."""
    for key, value in element.attrib.items():
        if _split(key)[1] == name:
            return value
    return None


def children(element: Element | None, name: str) -> list[Element]:
    if element is None:
        return []
    return [child for child in element if _local(child) == name]


def descendants(element: Element | None, name: str) -> list[Element]:
    if element is None:
        return []
    return [node for node in element.iter() if _local(node) == name]


def _text(element: Element, name: str) -> str | None:
    for child in element:
        if _local(child) == name and child.text is not None:
            return child.text.strip()
    return None


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None
