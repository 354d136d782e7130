"""What every format module provides, and the context it is handed.

A format module reads top to bottom as: layouts (``structs.Layout``, generated from the
construct schemas in ``formats/schemas``), ``probe`` (does this format claim
the bytes?), ``parse`` (header → section + findings), and ``qemu_info(md, filename)`` (what
``qemu-img info`` would print).  Detection (``detect.py``) is the only place that chooses
among them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import ImageIntrospectError
from ..findings import STREAM_UNCHECKED, Findings
from ..frozen import frozen
from ..source import Source, StreamGap

if TYPE_CHECKING:
    from ..metadata import Metadata


def _plain(value: Any) -> Any:
    """Turn a section's values into JSON-ready ones (tuples → lists, nested sections → dicts,
    a nested image's :class:`Metadata` → its own ``to_dict()``)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if not isinstance(value, Section) and hasattr(value, "to_dict"):
            return value.to_dict()  # a nested image's Metadata: its own dict view
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.hex()
    return value


#: The most entries a section's list holds (qcow2 snapshots and bitmaps, OVA members): an
#: answer is stored, logged and sent over RPC, so its size must not follow what a hostile
#: image claims.  The first ones are listed, and a ``list-capped`` finding counts them all.
MAX_LISTED = 1024


@frozen
class Section:
    """Base of every format's detail section (``Metadata.qcow2``, ``Metadata.vmdk``, ...)."""

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = _plain(self)
        return result

    def glance_properties(self, image: dict[str, Any]) -> dict[str, Any]:
        """The Glance properties of the image this section describes, given those every
        image has (``disk_format``, ``container_format``, ``virtual_size``): a section adds
        its own (a VMDK's disk and adapter types) or, for an archive, says them instead."""
        return image


@frozen
class Probe:
    """The bytes every probe may look at: the image's start, its end, and its length."""

    head: bytes
    tail: bytes
    size: int


def _no_nesting(source: Source) -> Metadata:
    raise TypeError("this Context introspects no nested image")


@dataclass
class Context:
    """Per-introspection state handed to ``parse``: the source, findings, the deep flag, and
    how to introspect an image nested in this one (an archive's member).

    ``nested`` is given by the caller (``core``) so that a format holding other images needs
    no import of the code that chose it; ``depth`` counts the archives around this image.
    """

    source: Source
    findings: Findings
    deep: bool
    nested: Callable[[Source], Metadata] = _no_nesting
    depth: int = 0

    def read_optional(self, offset: int, length: int, unchecked: str) -> bytes | None:
        """The bytes at ``offset`` (as ``source.read_at``), or None when a stream let them go
        by unkept: the ``stream-unchecked`` finding then says ``unchecked``."""
        try:
            return self.source.read_at(offset, length)
        except StreamGap:
            self.findings.add(STREAM_UNCHECKED, unchecked)
            return None


@frozen
class Parsed:
    """What a format module's ``parse`` returns."""

    virtual_size: int | None
    section: Section | None
    allocated_size: int | None = None
    partition_table: str | None = None
    #: the GPT or MBR partitions when ``partition_table`` is set, in table order
    partitions: tuple[Section, ...] = ()


class QemuRefuses(ImageIntrospectError):
    """``qemu-img info`` fails on this image: raised by a ``qemu_info`` (and by the qemu-img
    view for a ``qemu-cannot-open`` finding), so that the view fails where qemu-img does.
    The image was described; only the qemu-img view of it does not exist.

    ``str(exc)`` is qemu's reason; ``status`` is qemu-img's exit status (1 for every image
    it cannot open).
    """

    def __init__(self, reason: str, status: int = 1) -> None:
        super().__init__(reason)
        self.status = status


class NotThisFormat(Exception):
    """Raised by a ``parse`` that finds the bytes are not its format after all (a tar with no
    OVF descriptor is not an OVA); the image is then read as raw, with ``code`` (a registered
    finding code) and the message saying why."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class FormatSpec(NamedTuple):
    """A format as the detector sees it."""

    name: str
    probe: Callable[[Probe], bool]
    parse: Callable[[Context], Parsed]
    #: ``qemu_info(md, filename)``: the format's keys of ``qemu-img info --output=json``;
    #: ``filename`` is the image's name as given (qemu builds extent names from it).  A key
    #: whose value is None is one qemu leaves out.  It raises :class:`QemuRefuses` for an
    #: image qemu-img cannot open.
    qemu_info: Callable[[Any, str | None], dict[str, Any]] | None = None
