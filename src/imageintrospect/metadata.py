"""The answer: :class:`Metadata`, immutable, with its dict and Glance views."""

from __future__ import annotations

from dataclasses import field
from typing import TYPE_CHECKING, Any

from .findings import Finding
from .formats import SECTION_NAMES
from .formats.base import Section
from .frozen import frozen

if TYPE_CHECKING:
    from .formats.base import Section
    from .formats.iso import IsoSection
    from .formats.luks import LuksSection
    from .formats.ova import OvaSection
    from .formats.qcow2 import Qcow2Section
    from .formats.qed import QedSection
    from .formats.vdi import VdiSection
    from .formats.vhd import VhdSection
    from .formats.vhdx import VhdxSection
    from .formats.vmdk import VmdkSection


@frozen
class Metadata:
    """What an image is, as read from its own bytes (every attribute: docs/api.rst).

    One section field per format of :data:`imageintrospect.formats.SECTION_NAMES`, named
    after it and typed with its entry's section class (the tests hold the two together).
    """

    format: str
    virtual_size: int | None = None
    allocated_size: int | None = None
    image_size: int | None = None
    findings: tuple[Finding, ...] = ()
    partition_table: str | None = None
    #: the partitions of a GPT or MBR disk (``MbrPartition``/``GptPartition``), in table order
    partitions: tuple[Section, ...] = ()
    qcow2: Qcow2Section | None = None
    vmdk: VmdkSection | None = None
    vhd: VhdSection | None = None
    vhdx: VhdxSection | None = None
    vdi: VdiSection | None = None
    qed: QedSection | None = None
    luks: LuksSection | None = None
    iso: IsoSection | None = None
    ova: OvaSection | None = None
    safe: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "safe", all(f.severity != "unsafe" for f in self.findings))

    @property
    def section(self) -> Section | None:
        """The detail section of the detected format, or None."""
        if self.format in SECTION_NAMES:
            value: Section | None = getattr(self, self.format)
            return value
        return None

    def codes(self) -> set[str]:
        """The set of finding codes, for quick membership tests."""
        return {f.code for f in self.findings}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict: ``format``, ``virtual_size``, ``allocated_size``,
        ``image_size``, ``safe``, ``findings`` (a list of ``{code, severity, message}``),
        ``partition_table``, ``partitions`` (only when there are some), and the detected
        format's section under the format's name."""
        result: dict[str, Any] = {
            "format": self.format,
            "virtual_size": self.virtual_size,
            "allocated_size": self.allocated_size,
            "image_size": self.image_size,
            "safe": self.safe,
            "findings": [f.to_dict() for f in self.findings],
            "partition_table": self.partition_table,
        }
        if self.partitions:
            result["partitions"] = [p.to_dict() for p in self.partitions]
        section = self.section
        if section is not None:
            result[self.format] = section.to_dict()
        return result

    def glance_properties(self) -> dict[str, Any]:
        """The Glance image properties this image should carry (docs/api.rst): the ones
        every image has, with what its detail section adds or (an OVA) says instead."""
        props: dict[str, Any] = {
            "disk_format": self.format,
            "container_format": "bare",
            "virtual_size": self.virtual_size,
        }
        section = self.section
        return props if section is None else section.glance_properties(props)
