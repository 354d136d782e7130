"""The formats this library reads: the one list, from which everything else derives.

Detection's probe order (:mod:`imageintrospect.detect`), the names of the detail sections of
:class:`~imageintrospect.Metadata` (its fields are checked against :data:`FORMATS` by the
tests), the names ``expected_format`` accepts, the command line's help and the API page's
list all come from here.

A format module is imported only when it is needed: an entry names its module and carries
``may_claim``, a check of a few magic bytes that is true whenever the module's own ``probe``
could claim the bytes (it may be true more often; never less).  Detection runs the module's
``probe`` only where ``may_claim`` is true, so introspecting a qcow2 imports the qcow2
module and no other (with its layouts, scanners and dataclasses).  Adding a format:
an entry here (in probe order), its module with ``FORMAT``, and a field on ``Metadata``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from .base import FormatSpec, Probe


class Format(NamedTuple):
    """One format as the registry knows it, before its module is imported."""

    name: str
    #: The module under ``imageintrospect.formats`` whose ``FORMAT`` reads it.
    module: str
    #: The class name of its ``Metadata`` section (the field is named after the format).
    section: str | None
    #: True whenever the module's ``probe`` could claim the bytes (see the module doc).
    may_claim: Callable[[Probe], bool]
    #: Other names callers use for it (Glance and qemu spellings).
    aliases: tuple[str, ...] = ()
    #: How many leading bytes decide whether the module's ``probe`` claims an image, for
    #: the formats whose probe looks at the head only; None where the end of the image can
    #: still decide (a fixed VHD's footer) or nothing is probed (raw).  A stream announced
    #: as such a format is refused as soon as that many bytes show otherwise.
    decided_within: int | None = None

    def spec(self) -> FormatSpec:
        """The module's :class:`~imageintrospect.formats.base.FormatSpec` (imports it)."""
        spec: FormatSpec = importlib.import_module(f"{__name__}.{self.module}").FORMAT
        return spec


def _at(offset: int, magic: bytes) -> Callable[[Probe], bool]:
    end = offset + len(magic)
    return lambda probe: probe.head[offset:end] == magic


_VHD_COOKIE = b"conectix"


def _vhd(probe: Probe) -> bool:
    # A footer at the start (dynamic), or in the last 512 or 511 bytes (fixed).
    return probe.head[:8] == _VHD_COOKIE or _VHD_COOKIE in probe.tail[-512:]


#: What detection reads of an image's start: every probe decides within it.
PROBE_HEAD = 64 * 1024


def _luks(probe: Probe) -> bool:
    # The primary header's magic, or (primary wiped) a LUKS2 secondary header where
    # cryptsetup looks for one within the probed head: at hdr_size 16 or 32 KiB.
    head = probe.head
    return head[:6] == b"LUKS\xba\xbe" or b"SKUL\xba\xbe" in (
        head[0x4000:0x4006],
        head[0x8000:0x8006],
    )


#: What a descriptor's padding is compared with.
_NULS = memoryview(bytes(PROBE_HEAD))

#: Bytes no VMDK text descriptor holds before its NUL padding (tab, line breaks allowed).
_CONTROL_BYTES = bytes([*range(0, 9), *range(14, 32), 127])


def _vmdk(probe: Probe) -> bool:
    head = probe.head
    if head[:4] in (b"KDMV", b"COWD") or head[:8] == (0xCAFEBABE).to_bytes(8, "little"):
        return True
    if b"version=" in head[:2048]:  # qemu's test for a descriptor wants such a line
        return True
    # Ours wants text up to the first NUL, without control bytes: its first 512 bytes must
    # be such text (a few µs; most binary images fail here) ...
    text = head[:512].split(b"\0", 1)[0]
    if not text or len(text.translate(None, _CONTROL_BYTES)) != len(text):
        return False
    # ... and only NUL padding after that NUL (a qcow2's magic passes the first test),
    # compared with zeros (memcmp, under a µs): counting the NULs took 20-60 µs per image.
    nul = head.find(b"\0")
    if nul < 0:
        return True
    rest = len(head) - nul
    if rest <= len(_NULS):
        return memoryview(head)[nul:] == _NULS[:rest]
    return head.count(b"\0", nul) == rest


#: Probe order: formats with a magic at offset 0 first, then those found elsewhere (an ISO's
#: volume descriptor at 32 KiB, a fixed VHD's footer in the last sector, a tar's magic at
#: 257).  When several claim the bytes the first one wins (see ``detect``).
FORMATS: tuple[Format, ...] = (
    Format("qcow2", "qcow2", "Qcow2Section", _at(0, b"QFI\xfb"), ("qcow",), 4),
    Format("qed", "qed", "QedSection", _at(0, b"QED\0"), (), 4),
    Format("luks", "luks", "LuksSection", _luks, (), 0x8006),
    Format("vhdx", "vhdx", "VhdxSection", _at(0, b"vhdxfile"), (), 8),
    Format("vdi", "vdi", "VdiSection", _at(0x40, (0xBEDA107F).to_bytes(4, "little")), (), 0x44),
    Format("vmdk", "vmdk", "VmdkSection", _vmdk, (), PROBE_HEAD),
    Format("vhd", "vhd", "VhdSection", _vhd, ("vpc",)),
    Format(
        "iso",
        "iso",
        "IsoSection",
        lambda probe: probe.head[0x8001:0x8006] in (b"CD001", b"BEA01"),
        ("iso9660",),
        PROBE_HEAD,
    ),
    Format("ova", "ova", "OvaSection", _at(257, b"ustar"), (), PROBE_HEAD),
)
#: What nobody else claims (with a GPT or MBR partition table, or none).
RAW = Format("raw", "raw", None, lambda probe: True)

#: Every format name, raw included, in probe order.
NAMES: tuple[str, ...] = tuple(entry.name for entry in (*FORMATS, RAW))
#: The formats with a detail section on ``Metadata`` (a field of that name).
SECTION_NAMES: tuple[str, ...] = tuple(entry.name for entry in FORMATS if entry.section)
#: Lower-case name or alias → format name.
CANONICAL: dict[str, str] = {
    alias: entry.name for entry in (*FORMATS, RAW) for alias in (entry.name, *entry.aliases)
}
#: The other names, in registry order.
ALIASES: tuple[str, ...] = tuple(alias for entry in FORMATS for alias in entry.aliases)
_BY_NAME = {entry.name: entry for entry in (*FORMATS, RAW)}


def get(name: str) -> Format | None:
    """The entry of a format name (not an alias), or None."""
    return _BY_NAME.get(name)


def load_all() -> None:
    """Import every format module (their finding codes register as they are imported)."""
    for entry in (*FORMATS, RAW):
        entry.spec()
