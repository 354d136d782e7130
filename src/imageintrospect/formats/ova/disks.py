"""The OVF's disks: each disk member introspected in place through a window of the archive."""

from __future__ import annotations

from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ...errors import ImageIntrospectError
from ...source import SliceSource
from ..base import Context
from ..ovf_terms import declared_format

if TYPE_CHECKING:
    from ...metadata import Metadata

from .codes import (
    CAPACITY_MISMATCH,
    DISK_FORMAT_MISMATCH,
    DISK_UNREADABLE,
    MULTIPLE_DISKS,
    NESTED_OVA,
)
from .layout import MAX_OVF_ITEMS, NAME
from .ovf import _int, attr, children
from .section import OvaDisk, OvaFile
from .systems import scaled
from .tar import RawMember, escapes


def _disks(
    ctx: Context,
    envelope: Element | None,
    files: dict[str, OvaFile],
    by_name: dict[str, RawMember],
) -> tuple[OvaDisk, ...]:
    disks = []
    # Each member is introspected once, however many Disk elements name it: a thousand
    # names for one disk must not cost a thousand walks of its tables.
    images: dict[int, Metadata | None] = {}
    for section in children(envelope, "DiskSection"):
        for node in children(section, "Disk")[:MAX_OVF_ITEMS]:
            file_ref = attr(node, "fileRef")
            ref = files.get(file_ref or "")
            href = ref.href if ref else None
            capacity = scaled(attr(node, "capacity"), attr(node, "capacityAllocationUnits"))
            member = by_name.get(href) if href and not escapes(href) else None
            image = None
            if member is not None and href is not None:
                if member.offset not in images:
                    images[member.offset] = _introspect_member(ctx, member, href)
                image = images[member.offset]
            disk_id = attr(node, "diskId")
            format_uri = attr(node, "format")
            if image is not None:
                _judge_disk_format(ctx, disk_id, href, format_uri, image)
            if image is not None and capacity is not None:
                inner = image.virtual_size
                if inner is not None and inner != capacity:
                    ctx.findings.add(
                        CAPACITY_MISMATCH,
                        f"disk {disk_id!r}: ovf:capacity {capacity}, image says {inner}",
                    )
            disks.append(
                OvaDisk(
                    disk_id=disk_id,
                    file=href,
                    capacity=capacity,
                    format_uri=format_uri,
                    populated_size=_int(attr(node, "populatedSize")),
                    image=image,
                )
            )
    if len(disks) > 1:
        ctx.findings.add(MULTIPLE_DISKS, f"{len(disks)} disks")
    return tuple(disks)


def disk_refs(envelope: Element | None) -> tuple[str, ...]:
    """The members the OVF's disks name, each once, as :func:`_disks` finds them (the
    ``File`` a ``Disk``'s ``fileRef`` names, later ids winning; no name that escapes): what
    a stream's rehearsal introspects without building the whole section."""
    hrefs: dict[str, str] = {}
    for references in children(envelope, "References"):
        for node in children(references, "File")[:MAX_OVF_ITEMS]:
            href = attr(node, "href") or ""
            hrefs[attr(node, "id") or href] = href
    refs: dict[str, None] = {}
    for section in children(envelope, "DiskSection"):
        for node in children(section, "Disk")[:MAX_OVF_ITEMS]:
            named = hrefs.get(attr(node, "fileRef") or "")
            if named and not escapes(named):
                refs[named] = None
    return tuple(refs)


def rehearse_disks(ctx: Context, refs: tuple[str, ...], by_name: dict[str, RawMember]) -> None:
    """A rehearsal introspects the disk members found so far (``refs`` from
    :func:`disk_refs`), so that their own parses ask for what they need before it passes."""
    for href in refs:
        member = by_name.get(href)
        if member is not None:
            _introspect_member(ctx, member, href)


def _judge_disk_format(
    ctx: Context, disk_id: str | None, href: str | None, uri: str | None, image: Metadata
) -> None:
    """The disk's bytes must be the format its ``ovf:format`` declares: a consumer that trusts
    the declaration (VMware's importers, Glance's ``disk_format``) would misread it."""
    declared = declared_format(uri)
    if declared is None:
        return
    fmt, create_types = declared
    actual = image.format
    where = f"disk {disk_id!r} ({href})"
    if actual != fmt:
        ctx.findings.add(
            DISK_FORMAT_MISMATCH,
            f"{where}: ovf:format {uri!r} declares {fmt}, the bytes are {actual}",
        )
        return
    actual_type = ((image.vmdk.create_type if image.vmdk else None) or "").strip().lower()
    if create_types is not None and actual_type not in create_types:
        ctx.findings.add(
            DISK_FORMAT_MISMATCH,
            f"{where}: ovf:format {uri!r} declares a {' or '.join(sorted(create_types))} "
            f"VMDK, the descriptor says {actual_type or 'nothing'}",
        )


def _introspect_member(ctx: Context, member: RawMember, href: str) -> Metadata | None:
    """Introspect a disk member in place; its findings join the OVA's, prefixed by its name."""
    if ctx.depth > 0:
        ctx.findings.add(NESTED_OVA, f"{href!r} sits inside a nested archive")
        return None
    try:
        inner = ctx.nested(SliceSource(ctx.source, member.offset, member.size))
    except ImageIntrospectError as exc:
        ctx.findings.add(DISK_UNREADABLE, f"{href!r}: {exc}")
        return None
    if inner.format == NAME:
        ctx.findings.add(NESTED_OVA, f"{href!r} is an OVA")
    for finding in inner.findings:
        ctx.findings.add(finding.code, f"{href}: {finding.message}")
    return inner
