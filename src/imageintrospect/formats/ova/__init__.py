"""OVA: a tar holding an OVF descriptor, a manifest and disks, read in place.

Nothing is extracted: tar headers are read where they lie, the OVF and the manifest are read
into memory (bounded), and each disk member is introspected through a window of the archive
(:class:`~imageintrospect.source.SliceSource`).  The tar reader is our own rather than
:mod:`tarfile` because we need every member's byte range, a hard bound on memory (``tarfile``
reads pax and GNU long-name blocks of any claimed size), and every oddity reported as a
finding instead of being normalised away.  The OVF is parsed by :mod:`defusedxml`, which
refuses DTDs, entities and external references.
"""

from __future__ import annotations

from typing import Any

from .. import raw
from ..base import Context, FormatSpec, Parsed
from .codes import CERTIFICATE, NO_DISK
from .disks import _disks, disk_refs, rehearse_disks
from .layout import (
    HEADER_ONLY_MEMBERS,
    MAX_MEMBERS,
    MAX_NAME,
    MAX_OVF_BYTES,
    NAME,
    TAR_HEADER,
    TAR_HEADERS,
)
from .manifest import _files, _manifest, rehearse_manifest
from .ovf import XML_PIECE, Pieces, _descriptor, read_ovf
from .probe import probe
from .section import (
    Manifest,
    Member,
    OvaDisk,
    OvaFile,
    OvaSection,
    VirtualSystem,
    glance_properties,
)
from .systems import (
    _virtual_size,
    _virtual_systems,
    attach_controllers,
    glance_cim_pasd,
    judge_adapters,
    judge_members,
)
from .tar import RawMember, Walk, _listed, _members

# --- parse ---------------------------------------------------------------------------------


def parse(ctx: Context) -> Parsed:
    walk = _members(ctx)
    members, by_name = walk.members, walk.by_name
    ovf_member = _descriptor(ctx, walk)
    if ctx.source.speculative:
        return _rehearse(ctx, walk, ovf_member)
    envelope, ovf_version = read_ovf(ctx, ovf_member) if ovf_member else (None, None)
    files = _files(ctx, envelope, by_name)
    manifest = _manifest(ctx, walk)
    cert = walk.certificate.name if walk.certificate is not None else None
    if cert is not None:
        ctx.findings.add(CERTIFICATE, f"certificate {cert!r}")
    disks = _disks(ctx, envelope, files, by_name)
    if envelope is not None and not disks:
        ctx.findings.add(NO_DISK, "the OVF's DiskSection declares no Disk")
    systems = _virtual_systems(envelope)
    disks = attach_controllers(disks, systems)
    judge_adapters(ctx, disks)
    judge_members(ctx, members, files, ovf_member, manifest.file, cert)
    section = OvaSection(
        ovf_file=ovf_member.name if ovf_member else None,
        ovf_version=ovf_version,
        manifest=manifest,
        files=tuple(files.values()),
        virtual_systems=systems,
        disks=disks,
        members=_listed(ctx, members),
        certificate=cert,
        cim_pasd=glance_cim_pasd(envelope),
    )
    return Parsed(virtual_size=_virtual_size(disks), section=section)


def _rehearse(ctx: Context, walk: Walk, ovf_member: RawMember | None) -> Parsed:
    """A stream's rehearsal (docs/streaming.md) does only what decides which bytes the
    stream keeps or scans: the tar walk (done by the caller), the OVF, the manifest's
    digests and the disks' own parses.  Its findings and answer are thrown away, so the
    OVF's files, systems and judgements are left to the final parse; and what a run learns
    (the parsed OVF, the disks it names, the manifest) is kept for the next (Source.memo).
    A tar header may arrive every 64 KiB and every one starts a run: a run costs what
    arrived since the last one, not the whole archive again."""
    refs: tuple[str, ...] = ()
    if ovf_member is not None:
        memo = ctx.source.memo(("ova-ovf", ovf_member.offset))
        if "refs" in memo:
            refs = memo["refs"]
        else:
            refs = disk_refs(read_ovf(ctx, ovf_member)[0])
            if not ctx.source.pending(ovf_member.offset, ovf_member.size):
                memo["refs"] = refs  # parsed once it has all arrived, not once per run
    rehearse_manifest(ctx, walk)
    rehearse_disks(ctx, refs, walk.by_name)
    return Parsed(None, None)


def qemu_info(md: Any, filename: str | None = None) -> dict[str, Any]:
    # qemu-img knows no OVA: it reads the tar as a raw disk of the archive's length (not the
    # first disk's size).
    return raw.qemu_info(md, filename)


FORMAT = FormatSpec(NAME, probe, parse, qemu_info)


# What other modules and the tests use, as ``ova.X``.
__all__ = [
    "FORMAT",
    "HEADER_ONLY_MEMBERS",
    "MAX_MEMBERS",
    "MAX_NAME",
    "MAX_OVF_BYTES",
    "NAME",
    "TAR_HEADER",
    "TAR_HEADERS",
    "XML_PIECE",
    "Manifest",
    "Member",
    "OvaDisk",
    "OvaFile",
    "OvaSection",
    "Pieces",
    "VirtualSystem",
    "glance_properties",
    "parse",
    "probe",
    "qemu_info",
]
