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

import dataclasses
import functools
import hashlib
import io
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element, ParseError

import construct as c
import defusedxml
import defusedxml.ElementTree as SafeET

from .. import findings as F
from ..errors import ImageIntrospectError
from ..glance import (
    GLANCE_CIM_PASD,
    GLANCE_CONTROLLER_SUBTYPES,
    GLANCE_NIC_MODELS,
    vmware_properties,
)
from ..source import SliceSource, Source, StreamGap
from ..structs import EntryTable, cstring
from . import raw
from .base import MAX_LISTED, Context, FormatSpec, NotThisFormat, Parsed, Probe, Section
from .ovf_terms import VBOX_TO_VMWARE, VMWARE_GUEST_ID, VMWARE_OVF_NS, declared_format

if TYPE_CHECKING:
    from ..metadata import Metadata

NAME = "ova"
BLOCK = 512

# --- tar schema ----------------------------------------------------------------------------

# The ustar header: 512 bytes of fixed text fields.
TAR_HEADER = c.Struct(
    "name" / c.Bytes(100),
    "mode" / c.Bytes(8),
    "uid" / c.Bytes(8),
    "gid" / c.Bytes(8),
    "size" / c.Bytes(12),
    "mtime" / c.Bytes(12),
    "checksum" / c.Bytes(8),
    "typeflag" / c.Bytes(1),
    "linkname" / c.Bytes(100),
    "magic" / c.Bytes(6),
    "version" / c.Bytes(2),
    "uname" / c.Bytes(32),
    "gname" / c.Bytes(32),
    "devmajor" / c.Bytes(8),
    "devminor" / c.Bytes(8),
    "prefix" / c.Bytes(155),
    "padding" / c.Bytes(12),
)
# The walk decodes one header per member, on every run of a streamed parse: through the
# struct layout derived from the schema (~1 µs a header; construct takes ~70 µs, and an OVA
# may hold thousands of members).
TAR_HEADERS = EntryTable(TAR_HEADER, "TarHeader", "tar header")
REGULAR_TYPES = (b"0", b"\0", b"7")
PAX_TYPES = (b"x", b"g")
GNU_LONG_TYPES = (b"L", b"K")

#: The most tar headers the walk reads (a member's pax or GNU long-name header counts as
#: one): past them the archive is refused (``ova-bad-archive``).
MAX_MEMBERS = 4096
#: Header-only introspection (``deep=False``) reads at most this many tar headers (256 KiB),
#: an OVF of at most HEADER_ONLY_OVF_BYTES and a manifest of at most
#: HEADER_ONLY_MANIFEST_BYTES (576 KiB in all, within its 1 MiB besides the disks' own
#: header reads); what lies past them is reported (``ova-header-only-limit``), not read.
HEADER_ONLY_MEMBERS = 512
HEADER_ONLY_OVF_BYTES = 256 * 1024
HEADER_ONLY_MANIFEST_BYTES = 64 * 1024
#: The longest member name accepted (no extractor takes a longer path): a longer one is
#: refused (``ova-bad-archive``) and cut to this length in the answer.
MAX_NAME = 1024
#: Files, disks, virtual systems and hardware items described (an OVF may list millions).
MAX_OVF_ITEMS = 1024
MAX_OVF_ELEMENTS = 100_000
MAX_EXTENDED_HEADER = 64 * 1024  # pax / GNU long-name blocks
MAX_OVF_BYTES = 4 * 1024 * 1024
MAX_MANIFEST_BYTES = 1024 * 1024
STREAM_DIGEST = "SHA256"

# --- OVF vocabulary ------------------------------------------------------------------------

OVF_NAMESPACES = {
    "http://www.vmware.com/schema/ovf/1/envelope": "0.9",
    "http://schemas.dmtf.org/ovf/envelope/1": "1.x",
    "http://schemas.dmtf.org/ovf/envelope/2": "2.x",
}
CIM_PASD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ProcessorAllocationSettingData"

RESOURCE_CPU = "3"
RESOURCE_MEMORY = "4"
CONTROLLER_TYPES = {"5": "ide", "6": "scsi", "20": "other", "7": "fc", "8": "iscsi", "9": "ib"}
RESOURCE_NIC = "10"
RESOURCE_DISK = "17"

MANIFEST_LINE = re.compile(rb"^\s*(SHA1|SHA256|SHA512)\s*\((.+)\)\s*=\s*([0-9A-Fa-f]+)\s*$")

# --- findings ------------------------------------------------------------------------------

UNSAFE_MEMBER = F.define(
    "ova-unsafe-member",
    "unsafe",
    "ova",
    "A tar member is a link or device, or its name is absolute or climbs with '..'.",
)
HREF_OUTSIDE = F.define(
    "ova-external-reference",
    "unsafe",
    "ova",
    "The OVF references a file outside the archive (a URL, an absolute path or '..').",
)
XML_DTD = F.define(
    "ova-xml-dtd",
    "unsafe",
    "ova",
    "The OVF carries a DOCTYPE, entities or external references; it was not parsed.",
)
XML_INVALID = F.define("ova-xml-invalid", "unsafe", "ova", "The OVF is not well-formed XML.")
NOT_OVF = F.define("ova-not-ovf", "unsafe", "ova", "The descriptor's root is not an OVF Envelope.")
NO_DESCRIPTOR = F.define(
    "ova-no-descriptor", "unsafe", "ova", "The archive holds no .ovf descriptor."
)
DESCRIPTOR_NOT_FIRST = F.define(
    "ova-descriptor-not-first",
    "warning",
    "ova",
    "The .ovf is not the first member, as the OVF standard requires.",
)
SEVERAL_DESCRIPTORS = F.define(
    "ova-several-descriptors", "unsafe", "ova", "The archive holds more than one .ovf."
)
MISSING_FILE = F.define(
    "ova-missing-file", "unsafe", "ova", "A file the OVF references is not in the archive."
)
UNREFERENCED = F.define(
    "ova-unreferenced-member",
    "warning",
    "ova",
    "A member is neither referenced by the OVF nor its manifest or certificate.",
)
MANIFEST_MISMATCH = F.define(
    "ova-manifest-mismatch",
    "unsafe",
    "ova",
    "A member's digest differs from the manifest, or the manifest names a missing member.",
)
MANIFEST_UNLISTED = F.define(
    "ova-manifest-unlisted",
    "warning",
    "ova",
    "A member that the manifest does not list (its content is not protected by it).",
)
MANIFEST_BAD = F.define(
    "ova-manifest-invalid", "unsafe", "ova", "The manifest has lines that are not digests."
)
MANIFEST_UNVERIFIED = F.define(
    "ova-manifest-unverified",
    "info",
    "ova",
    "The manifest was not verified (header-only mode, or members not kept from a stream).",
)
CERTIFICATE = F.define(
    "ova-certificate",
    "info",
    "ova",
    "The archive carries a signing certificate (.cert); its signature is not verified.",
)
CHUNKED = F.define(
    "ova-chunked-file",
    "warning",
    "ova",
    "A file is split into chunks (ovf:chunkSize); chunked disks are not introspected.",
)
SIZE_MISMATCH = F.define(
    "ova-size-mismatch",
    "warning",
    "ova",
    "A File's ovf:size differs from the member's size in the archive.",
)
CAPACITY_MISMATCH = F.define(
    "ova-capacity-mismatch",
    "warning",
    "ova",
    "A Disk's ovf:capacity differs from the virtual size of the disk image itself.",
)
MULTIPLE_DISKS = F.define(
    "ova-multiple-disks", "info", "ova", "The appliance has more than one disk."
)
ADAPTER_OVERRIDE = F.define(
    "ova-adapter-type-override",
    "info",
    "ova",
    "The OVF's controller for the disk differs from the VMDK's ddb.adapterType; the OVF wins.",
)
DISK_UNREADABLE = F.define(
    "ova-disk-unreadable", "unsafe", "ova", "A disk member could not be introspected."
)
NESTED_OVA = F.define(
    "ova-nested", "unsafe", "ova", "A disk member is itself an OVA (not introspected further)."
)
TAR_NOT_OVA = F.define(
    "tar-not-ova",
    "warning",
    "raw",
    "A tar archive with no OVF descriptor: not an OVA (DSP0243), so it is read as raw, as "
    "qemu reads it.",
)
DISK_FORMAT_MISMATCH = F.define(
    "ova-disk-format-mismatch",
    "unsafe",
    "ova",
    "A Disk's ovf:format declares a disk format (a streamOptimized or sparse VMDK, a VHD, a "
    "qcow2) that the disk's own bytes are not.",
)
NO_DISK = F.define(
    "ova-no-disk",
    "unsafe",
    "ova",
    "The OVF declares no disk: the appliance has nothing to boot or import.",
)
BAD_ARCHIVE = F.define(
    "ova-bad-archive",
    "unsafe",
    "ova",
    "The tar structure is broken: bad checksum, bad size field, too many members, or a "
    "member name too long to extract.",
)
HEADER_ONLY_LIMIT = F.define(
    "ova-header-only-limit",
    "unsafe",
    "ova",
    "Header-only mode: the archive holds more than header-only reads (more tar headers, a "
    "larger OVF or manifest), so members or references that make an OVA unsafe may lie "
    "past what was checked; a deep read checks them.",
)

# --- section -------------------------------------------------------------------------------


@dataclass(frozen=True)
class OvaFile(Section):
    href: str
    size: int | None
    present: bool
    file_id: str | None = None
    chunk_size: int | None = None


@dataclass(frozen=True)
class OvaDisk(Section):
    disk_id: str | None
    file: str | None
    capacity: int | None
    format_uri: str | None
    populated_size: int | None
    image: Metadata | None  # the disk member's own answer
    controller: dict[str, Any] | None = None


@dataclass(frozen=True)
class VirtualSystem(Section):
    name: str | None
    os_id: str | None
    os_type: str | None
    cpus: int | None
    memory_mb: int | None
    controllers: tuple[dict[str, Any], ...]
    nics: tuple[dict[str, Any], ...]
    disks: tuple[dict[str, Any], ...]
    cim_pasd: dict[str, str]
    #: The VMware guest ID for ``os_type``: as written when the OVF gives a VMware one
    #: (``vmw:osType``), mapped from VirtualBox's ``vbox:OSType`` where a mapping exists.
    vmware_ostype: str | None = None


@dataclass(frozen=True)
class Manifest(Section):
    file: str | None
    algorithm: str | None
    verified: bool | None
    mismatches: tuple[str, ...]


@dataclass(frozen=True)
class Member(Section):
    name: str
    size: int
    offset: int
    kind: str


@dataclass(frozen=True)
class OvaSection(Section):
    ovf_file: str | None
    ovf_version: str | None
    manifest: Manifest
    files: tuple[OvaFile, ...]
    virtual_systems: tuple[VirtualSystem, ...]
    disks: tuple[OvaDisk, ...]
    members: tuple[Member, ...]
    certificate: str | None
    #: Glance's ``CIM_ProcessorAllocationSettingData`` values, wherever the OVF carries them.
    cim_pasd: dict[str, str] = dataclasses.field(default_factory=dict)

    def glance_properties(self, image: dict[str, Any]) -> dict[str, Any]:
        # An OVA's own properties replace the archive's: its disk's format, the OVF's facts.
        return glance_properties(self)


# --- probe ---------------------------------------------------------------------------------


def probe(probe: Probe) -> bool:
    """A POSIX (ustar/pax/GNU) tar whose first header checks out."""
    head = probe.head
    if len(head) < BLOCK or head[257:262] != b"ustar":
        return False
    return _checksum_ok(head[:BLOCK])


def _checksum_ok(block: bytes) -> bool:
    stored = _octal(block[148:156])
    if stored is None:
        return False
    unsigned = sum(block) - sum(block[148:156]) + 8 * 32  # the field counts as spaces
    if stored == unsigned:
        return True
    # Some old tars summed signed chars: every byte over 127 then counts 256 less.
    high = sum(1 for b in block[:148] + block[156:] if b > 127)
    return stored == unsigned - 256 * high


def _octal(field: bytes) -> int | None:
    """A tar numeric field: NUL/space padded octal, or GNU base-256 when the top bit is set."""
    if field and field[0] & 0x80:
        value = int.from_bytes(field[1:], "big") | ((field[0] & 0x3F) << (8 * (len(field) - 1)))
        return -value if field[0] & 0x40 else value
    text = field.split(b"\0", 1)[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        return None


# --- the tar walk --------------------------------------------------------------------------


@dataclass(frozen=True)
class _RawMember:
    name: str
    typeflag: bytes
    offset: int  # of the data
    size: int
    linkname: str


@dataclass
class _Walk:
    """How far the tar walk got: the next header, the names and sizes a pax or GNU header
    left for the member after it, and the members found so far."""

    pos: int = 0
    headers: int = 0
    pending_name: str | None = None
    pending_size: int | None = None
    members: list[_RawMember] = field(default_factory=list)
    # What the parse looks members up by, kept as they are found (not rebuilt per run).
    by_name: dict[str, _RawMember] = field(default_factory=dict)
    descriptors: list[_RawMember] = field(default_factory=list)
    manifest: _RawMember | None = None
    certificate: _RawMember | None = None

    def add(self, member: _RawMember) -> None:
        self.members.append(member)
        self.by_name[member.name] = member
        name = member.name.lower()
        if name.endswith(".ovf") and member.typeflag in REGULAR_TYPES:
            self.descriptors.append(member)
        elif name.endswith(".mf") and self.manifest is None:
            self.manifest = member
        elif name.endswith(".cert") and self.certificate is None:
            self.certificate = member


def _members(ctx: Context) -> _Walk:
    """Every member, walked from the start, or (a rehearsal of a stream's parse) from where
    the previous rehearsal stopped (Source.memo) to the first header not yet arrived: the
    walk costs one read per header however many times the parse runs."""
    walk: _Walk = ctx.source.memo("ova-tar-walk").setdefault("walk", _Walk())
    try:
        _walk_tar(ctx, walk)
    except StreamGap:
        ctx.findings.add(F.STREAM_UNCHECKED, "tar headers lay outside the kept stream")
    return walk


def _walk_tar(ctx: Context, walk: _Walk) -> None:
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
_EXTENDED = _RawMember("", b"x", 0, 0, "")


def _next_member(ctx: Context, walk: _Walk) -> _RawMember | None:
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
    if not _checksum_ok(block):
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
    member: _RawMember = _EXTENDED
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
        member = _RawMember(name, hdr.typeflag, data_at, size, cstring(hdr.linkname)[:MAX_NAME])
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


# --- parse ---------------------------------------------------------------------------------


def parse(ctx: Context) -> Parsed:
    walk = _members(ctx)
    members, by_name = walk.members, walk.by_name
    ovf_member = _descriptor(ctx, walk)
    envelope, ovf_version = (None, None)
    if ovf_member is not None:
        # a rehearsal parses the OVF once it has arrived, not once per member after it
        parsed = ctx.source.memo(("ova-ovf", ovf_member.offset))
        if "ovf" not in parsed:
            envelope, ovf_version = _read_ovf(ctx, ovf_member)
            if not ctx.source.pending(ovf_member.offset, ovf_member.size):
                parsed["ovf"] = envelope, ovf_version
        else:
            envelope, ovf_version = parsed["ovf"]
    files = _files(ctx, envelope, by_name)
    manifest = _manifest(ctx, walk)
    cert = walk.certificate.name if walk.certificate is not None else None
    if cert is not None:
        ctx.findings.add(CERTIFICATE, f"certificate {cert!r}")
    disks = _disks(ctx, envelope, files, by_name)
    if envelope is not None and not disks:
        ctx.findings.add(NO_DISK, "the OVF's DiskSection declares no Disk")
    systems = _virtual_systems(envelope)
    disks = _attach_controllers(disks, systems)
    _judge_adapters(ctx, disks)
    if not ctx.source.speculative:
        _judge_members(ctx, members, files, ovf_member, manifest.file, cert)
    section = OvaSection(
        ovf_file=ovf_member.name if ovf_member else None,
        ovf_version=ovf_version,
        manifest=manifest,
        files=tuple(files.values()),
        virtual_systems=systems,
        disks=disks,
        members=_listed(ctx, members),
        certificate=cert,
        cim_pasd=_glance_cim_pasd(envelope),
    )
    return Parsed(virtual_size=_virtual_size(disks), section=section)


def _listed(ctx: Context, members: list[_RawMember]) -> tuple[Member, ...]:
    """The members as the answer lists them: the first :data:`MAX_LISTED`."""
    if ctx.source.speculative:
        return ()  # a rehearsal's answer is thrown away
    if len(members) > MAX_LISTED:
        ctx.findings.add(
            F.LIST_CAPPED, f"{len(members)} tar members: the first {MAX_LISTED} are listed"
        )
    listed = members[:MAX_LISTED]
    return tuple(Member(m.name, m.size, m.offset, _kind(m.typeflag)) for m in listed)


def _member_problem(member: _RawMember) -> str | None:
    if member.typeflag in (b"1", b"2"):
        return f"a link to {member.linkname!r}"
    if member.typeflag in (b"3", b"4", b"6"):
        return "a device or FIFO"
    if _escapes(member.name):
        return "an absolute or climbing path"
    return None


def _escapes(name: str) -> bool:
    """True for names that would land outside the directory they are extracted into."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return True
    return ".." in re.split(r"[\\/]", name)


def _kind(typeflag: bytes) -> str:
    return {b"5": "directory", b"1": "hardlink", b"2": "symlink"}.get(
        typeflag, "file" if typeflag in REGULAR_TYPES else f"type-{typeflag!r}"
    )


def _descriptor(ctx: Context, walk: _Walk) -> _RawMember | None:
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


def _read_ovf(ctx: Context, member: _RawMember) -> tuple[Element | None, str | None]:
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


class _Pieces(io.BytesIO):
    """The OVF's bytes, handed out in pieces of at least :data:`XML_PIECE`."""

    def read(self, size: int | None = -1, /) -> bytes:
        if size is None or size < 0:
            return super().read()
        return super().read(max(size, XML_PIECE))


def _parse_xml(data: bytes) -> Element:
    """The OVF's root, parsed by defusedxml and cut off past :data:`MAX_OVF_ELEMENTS`
    (4 MiB of ``<a/>`` would otherwise be a million-element tree)."""
    events = SafeET.iterparse(
        _Pieces(data), events=("start",), forbid_dtd=True, forbid_entities=True
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


def _attr(element: Element, name: str) -> str | None:
    """An attribute by local name, whatever namespace prefix the producer used."""
    for key, value in element.attrib.items():
        if _split(key)[1] == name:
            return value
    return None


def _children(element: Element | None, name: str) -> list[Element]:
    if element is None:
        return []
    return [child for child in element if _local(child) == name]


def _descendants(element: Element | None, name: str) -> list[Element]:
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


def _files(
    ctx: Context, envelope: Element | None, by_name: dict[str, _RawMember]
) -> dict[str, OvaFile]:
    files: dict[str, OvaFile] = {}
    for references in _children(envelope, "References"):
        for node in _children(references, "File")[:MAX_OVF_ITEMS]:
            href = _attr(node, "href") or ""
            file_id = _attr(node, "id")
            size = _int(_attr(node, "size"))
            chunk = _int(_attr(node, "chunkSize"))
            if "://" in href or _escapes(href):
                ctx.findings.add(HREF_OUTSIDE, f"file {file_id!r} references {href!r}")
            if chunk:
                ctx.findings.add(CHUNKED, f"{href!r} is split into {chunk}-byte chunks")
            member = by_name.get(href)
            present = member is not None or (
                bool(chunk) and any(name.startswith(href + ".") for name in by_name)
            )
            if not present:
                ctx.findings.add(MISSING_FILE, f"{href!r} is referenced but not in the archive")
            elif member is not None and size is not None and size != member.size:
                ctx.findings.add(
                    SIZE_MISMATCH, f"{href!r}: ovf:size {size}, member holds {member.size}"
                )
            files[file_id or href] = OvaFile(href, size, present, file_id, chunk)
    return files


def _manifest(ctx: Context, walk: _Walk) -> Manifest:
    members, by_name, mf = walk.members, walk.by_name, walk.manifest
    if mf is None:
        if ctx.source.is_stream and ctx.deep:
            _hash_ahead(ctx.source, members)
        return Manifest(None, None, None, ())
    if not ctx.deep and mf.size > HEADER_ONLY_MANIFEST_BYTES:
        ctx.findings.add(
            HEADER_ONLY_LIMIT, f"{mf.name!r} ({mf.size} bytes) is not read header-only"
        )
        return Manifest(mf.name, None, None, ())
    if mf.size > MAX_MANIFEST_BYTES:
        ctx.findings.add(MANIFEST_BAD, f"manifest of {mf.size} bytes is not read")
        return Manifest(mf.name, None, None, ())
    digests, algorithm = _manifest_lines(ctx, ctx.source.read_at(mf.offset, mf.size))
    if not ctx.deep:
        ctx.findings.add(MANIFEST_UNVERIFIED, "header-only mode: digests not computed")
        return Manifest(mf.name, algorithm, None, ())
    mismatches = []
    verified = True
    for name, (algo, expected) in digests.items():
        member = by_name.get(name)
        if member is None:
            mismatches.append(name)
            ctx.findings.add(MANIFEST_MISMATCH, f"manifest lists {name!r}, not in the archive")
            continue
        try:
            actual = _digest(ctx.source, member, algo)
        except StreamGap:
            ctx.findings.add(MANIFEST_UNVERIFIED, f"{name!r} was not kept from the stream")
            verified = False
            continue
        if actual != expected:
            mismatches.append(name)
            ctx.findings.add(MANIFEST_MISMATCH, f"{algo}({name}) is {actual}, not {expected}")
    for member in members:
        listable = member.typeflag in REGULAR_TYPES and member is not mf
        if listable and member.name not in digests and not member.name.endswith(".cert"):
            ctx.findings.add(MANIFEST_UNLISTED, f"{member.name!r} is not in the manifest")
    return Manifest(mf.name, algorithm, verified and not mismatches, tuple(mismatches))


def _hash_ahead(src: Source, members: list[_RawMember]) -> None:
    """A stream whose manifest may come last: hash members as they pass, before it is known.

    SHA-256 only (what ovftool and VirtualBox write); a later manifest in another algorithm
    is reported unverified rather than paying for three digests of every byte.  A rehearsal
    starts only the digests of members it has not seen before.
    """
    memo = src.memo("ova-hash-ahead")
    done = memo.get("members", 0)
    memo["members"] = len(members)
    for member in members[done:]:
        if member.typeflag in REGULAR_TYPES and not member.name.lower().endswith(".ovf"):
            _digest(src, member, STREAM_DIGEST)


def _manifest_lines(ctx: Context, data: bytes) -> tuple[dict[str, tuple[str, str]], str | None]:
    digests: dict[str, tuple[str, str]] = {}
    algorithms = set()
    for line in data.splitlines():
        if not line.strip():
            continue
        match = MANIFEST_LINE.match(line)
        if match is None:
            ctx.findings.add(MANIFEST_BAD, f"unreadable manifest line {line[:80]!r}")
            continue
        algo = match.group(1).decode()
        name = match.group(2).decode("utf-8", errors="replace").strip()
        digests[name] = (algo, match.group(3).decode().lower())
        algorithms.add(algo)
    algorithm = ",".join(sorted(algorithms)) if algorithms else None
    return digests, algorithm


class _Hasher:
    """A scan consumer computing one digest."""

    def __init__(self, algorithm: str) -> None:
        self.hash = hashlib.new(algorithm.lower())

    def feed(self, offset: int, data: bytes) -> None:
        self.hash.update(data)


def _digest(src: Source, member: _RawMember, algorithm: str) -> str:
    """The member's digest, computed as its bytes go by (a single pass on streams too)."""
    key = ("digest", member.offset, algorithm)
    make = functools.partial(_Hasher, algorithm)
    hasher = src.scan(key, [(member.offset, member.size)], make, wait=False)
    return hasher.hash.hexdigest()


def _disks(
    ctx: Context,
    envelope: Element | None,
    files: dict[str, OvaFile],
    by_name: dict[str, _RawMember],
) -> tuple[OvaDisk, ...]:
    disks = []
    # Each member is introspected once, however many Disk elements name it: a thousand
    # names for one disk must not cost a thousand walks of its tables.
    images: dict[int, Metadata | None] = {}
    for section in _children(envelope, "DiskSection"):
        for node in _children(section, "Disk")[:MAX_OVF_ITEMS]:
            file_ref = _attr(node, "fileRef")
            ref = files.get(file_ref or "")
            href = ref.href if ref else None
            capacity = _scaled(_attr(node, "capacity"), _attr(node, "capacityAllocationUnits"))
            member = by_name.get(href) if href and not _escapes(href) else None
            image = None
            if member is not None and href is not None:
                if member.offset not in images:
                    images[member.offset] = _introspect_member(ctx, member, href)
                image = images[member.offset]
            disk_id = _attr(node, "diskId")
            format_uri = _attr(node, "format")
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
                    populated_size=_int(_attr(node, "populatedSize")),
                    image=image,
                )
            )
    if len(disks) > 1:
        ctx.findings.add(MULTIPLE_DISKS, f"{len(disks)} disks")
    return tuple(disks)


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


def _introspect_member(ctx: Context, member: _RawMember, href: str) -> Metadata | None:
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


# Bounded digit counts: int() of thousands of digits raises, and no real unit needs them.
UNIT = re.compile(r"^\s*byte\s*(?:\*\s*(\d{1,5})\s*\^\s*(\d{1,5}))?\s*$", re.IGNORECASE)
WORD_UNITS = {
    "bytes": 1,
    "kilobytes": 1 << 10,
    "kb": 1 << 10,
    "megabytes": 1 << 20,
    "mb": 1 << 20,
    "gigabytes": 1 << 30,
    "gb": 1 << 30,
    "terabytes": 1 << 40,
    "tb": 1 << 40,
}


def _unit_factor(units: str | None) -> int | None:
    """OVF allocation units (DSP0004 programmatic units like ``byte * 2^20``) → bytes."""
    if units is None or not units.strip():
        return 1
    match = UNIT.match(units)
    if match:
        if match.group(1) is None:
            return 1
        base, exponent = int(match.group(1)), int(match.group(2))
        if base > 1024 or exponent > 64:
            return None
        factor: int = base**exponent
        return factor
    return WORD_UNITS.get(units.strip().lower())


def _scaled(value: str | None, units: str | None) -> int | None:
    number = _int(value)
    factor = _unit_factor(units)
    if number is None or factor is None:
        return None
    return number * factor


def _virtual_systems(envelope: Element | None) -> tuple[VirtualSystem, ...]:
    systems = _descendants(envelope, "VirtualSystem")[:MAX_OVF_ITEMS]
    return tuple(_virtual_system(node) for node in systems)


def _virtual_system(node: Element) -> VirtualSystem:
    os_section = next(iter(_children(node, "OperatingSystemSection")), None)
    os_type = None
    if os_section is not None:
        os_type = _attr(os_section, "osType") or _text(os_section, "OSType")
    cpus = memory_mb = None
    controllers: list[dict[str, Any]] = []
    nics: list[dict[str, Any]] = []
    disks: list[dict[str, Any]] = []
    cim_pasd: dict[str, str] = {}
    for hardware in _children(node, "VirtualHardwareSection"):
        for item in list(hardware)[:MAX_OVF_ITEMS]:
            if _local(item) not in ("Item", "StorageItem", "EthernetPortItem"):
                continue
            kind = _text(item, "ResourceType")
            if kind == RESOURCE_CPU:
                cpus = _int(_text(item, "VirtualQuantity"))
                cim_pasd.update(_cim_pasd(item))
            elif kind == RESOURCE_MEMORY:
                size = _scaled(_text(item, "VirtualQuantity"), _text(item, "AllocationUnits"))
                memory_mb = size // (1 << 20) if size is not None else None
            elif kind in CONTROLLER_TYPES:
                controllers.append(
                    {
                        "type": CONTROLLER_TYPES[kind],
                        "subtype": _text(item, "ResourceSubType"),
                        "instance_id": _text(item, "InstanceID"),
                    }
                )
            elif kind == RESOURCE_NIC:
                nics.append(
                    {
                        "subtype": _text(item, "ResourceSubType"),
                        "network": _text(item, "Connection"),
                    }
                )
            elif kind == RESOURCE_DISK:
                disks.append(
                    {
                        "host_resource": _text(item, "HostResource"),
                        "parent": _text(item, "Parent"),
                        "address_on_parent": _text(item, "AddressOnParent"),
                    }
                )
    name_node = _text(node, "Name")
    vmware_ostype = _vmware_guest_id(os_section) if os_section is not None else None
    return VirtualSystem(
        name=name_node or _attr(node, "id"),
        os_id=_attr(os_section, "id") if os_section is not None else None,
        os_type=os_type,
        cpus=cpus,
        memory_mb=memory_mb,
        controllers=tuple(controllers),
        nics=tuple(nics),
        disks=tuple(disks),
        cim_pasd=cim_pasd,
        vmware_ostype=vmware_ostype,
    )


def _vmware_guest_id(os_section: Element) -> str | None:
    """The VMware guest ID the OS section gives or maps to; None rather than a foreign name."""
    for key, value in os_section.attrib.items():
        namespace, name = _split(key)
        if name == "osType" and namespace == VMWARE_OVF_NS and VMWARE_GUEST_ID.match(value):
            return value
    for child in os_section:
        if _local(child) == "OSType" and child.text is not None:
            mapped = VBOX_TO_VMWARE.get(child.text.strip())
            if mapped is not None:
                return mapped
    return None


def _glance_cim_pasd(envelope: Element | None) -> dict[str, str]:
    """Glance's rule (its OVF import task): every element of the
    ``CIM_ProcessorAllocationSettingData`` namespace whose tag is one Glance copies, wherever
    it is in the document; a later one replaces an earlier one of the same tag."""
    values: dict[str, str] = {}
    if envelope is None:
        return values
    for node in envelope.iter():
        namespace, tag = _split(node.tag)
        if namespace == CIM_PASD_NS and tag in GLANCE_CIM_PASD:
            values[tag] = (node.text or "").strip()
    return values


def _cim_pasd(item: Element) -> dict[str, str]:
    values = {}
    for child in item.iter():
        namespace, tag = _split(child.tag)
        if namespace == CIM_PASD_NS and tag in GLANCE_CIM_PASD:
            values[tag] = (child.text or "").strip()
    return values


def _attach_controllers(
    disks: tuple[OvaDisk, ...], systems: tuple[VirtualSystem, ...]
) -> tuple[OvaDisk, ...]:
    """Give each disk the controller its hardware item hangs from (``Parent`` → InstanceID)."""
    attached = []
    for disk in disks:
        controller = None
        for system in systems:
            for item in system.disks:
                resource = item["host_resource"] or ""
                if disk.disk_id and resource.rstrip("/").split("/")[-1] == disk.disk_id:
                    controller = next(
                        (c for c in system.controllers if c["instance_id"] == item["parent"]),
                        None,
                    )
        attached.append(
            OvaDisk(
                disk.disk_id,
                disk.file,
                disk.capacity,
                disk.format_uri,
                disk.populated_size,
                disk.image,
                controller,
            )
        )
    return tuple(attached)


def _judge_adapters(ctx: Context, disks: tuple[OvaDisk, ...]) -> None:
    for disk in disks:
        ovf_adapter = _ovf_adapter(disk)
        vmdk = disk.image.vmdk if disk.image is not None else None
        adapter_type = vmdk.adapter_type if vmdk is not None else None
        own = vmware_properties(None, adapter_type).get("vmware_adaptertype")
        if ovf_adapter is not None and own is not None and own != ovf_adapter:
            ctx.findings.add(
                ADAPTER_OVERRIDE,
                f"{disk.file}: OVF controller says {ovf_adapter}, the VMDK says {adapter_type}",
            )


def _judge_members(
    ctx: Context,
    members: list[_RawMember],
    files: dict[str, OvaFile],
    ovf: _RawMember | None,
    manifest: str | None,
    cert: str | None,
) -> None:
    referenced = {f.href for f in files.values()}
    chunked = [f.href for f in files.values() if f.chunk_size]
    for member in members:
        if member.typeflag not in REGULAR_TYPES or member.name in referenced:
            continue
        if member is ovf or member.name in (manifest, cert):
            continue
        if any(member.name.startswith(href + ".") for href in chunked):
            continue
        ctx.findings.add(UNREFERENCED, f"{member.name!r} is not referenced by the OVF")


def _virtual_size(disks: tuple[OvaDisk, ...]) -> int | None:
    if not disks:
        return None
    first = disks[0]
    if first.image is not None and first.image.virtual_size is not None:
        return first.image.virtual_size
    return first.capacity


# --- Glance --------------------------------------------------------------------------------


def glance_properties(section: OvaSection) -> dict[str, Any]:
    """Glance properties of an OVA (docs/api.rst): the first disk's format and VMware
    properties, the OVF's CPU and NIC facts.  The OVF's controller for the disk wins over
    the VMDK's adapter type."""
    props: dict[str, Any] = {"container_format": "ova"}
    disk = section.disks[0] if section.disks else None
    image = disk.image if disk is not None else None
    if image is not None:
        props["disk_format"] = image.format
        props["virtual_size"] = image.virtual_size
        if image.vmdk is not None:
            props.update(vmware_properties(image.vmdk.create_type, image.vmdk.adapter_type))
    elif disk is not None:
        props["virtual_size"] = disk.capacity
    adapter = _ovf_adapter(disk)
    if adapter is not None:
        props["vmware_adaptertype"] = adapter
    system = section.virtual_systems[0] if section.virtual_systems else None
    if system is not None:
        if system.vmware_ostype:
            props["vmware_ostype"] = system.vmware_ostype
        if system.nics:
            model = GLANCE_NIC_MODELS.get((system.nics[0]["subtype"] or "").lower())
            if model is not None:
                props["hw_vif_model"] = model
    for tag, value in section.cim_pasd.items():
        props[f"cim_pasd_{tag}"] = value
    return props


def _ovf_adapter(disk: OvaDisk | None) -> str | None:
    if disk is None or disk.controller is None:
        return None
    if disk.controller["type"] == "ide":
        return "ide"
    return GLANCE_CONTROLLER_SUBTYPES.get((disk.controller["subtype"] or "").lower())


def qemu_info(md: Any, filename: str | None = None) -> dict[str, Any]:
    # qemu-img knows no OVA: it reads the tar as a raw disk of the archive's length (not the
    # first disk's size).
    return raw.qemu_info(md, filename)


FORMAT = FormatSpec(NAME, probe, parse, qemu_info)
