"""The answer: :class:`Metadata`, immutable, with its dict and Glance views."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .findings import Finding
from .formats import SECTION_NAMES
from .formats.base import Section

if TYPE_CHECKING:
    from .formats.iso import IsoSection
    from .formats.luks import LuksSection
    from .formats.ova import OvaSection
    from .formats.qcow2 import Qcow2Section
    from .formats.qed import QedSection
    from .formats.vdi import VdiSection
    from .formats.vhd import VhdSection
    from .formats.vhdx import VhdxSection
    from .formats.vmdk import VmdkSection

#: ``ddb.adapterType`` (case-insensitive) → Glance ``vmware_adaptertype``.
GLANCE_ADAPTER_TYPES = {
    "ide": "ide",
    "buslogic": "busLogic",
    "lsilogic": "lsiLogic",
    "lsilogicsas": "lsiLogicsas",
    "lsisas1068": "lsiLogicsas",
    "pvscsi": "paraVirtual",
    "paravirtual": "paraVirtual",
}
#: VMDK ``createType`` (case-insensitive, as qemu and VMware read it) → ``vmware_disktype``.
GLANCE_DISK_TYPES = {"streamoptimized": "streamOptimized", "monolithicsparse": "sparse"}


@dataclass(frozen=True)
class Metadata:
    """What an image is, as read from its own bytes.  See the contract for every attribute.

    One section field per format of :data:`imageintrospect.formats.SECTION_NAMES`, named
    after it and typed with its entry's section class (the tests hold the two together).
    """

    format: str
    virtual_size: int | None = None
    allocated_size: int | None = None
    image_size: int | None = None
    findings: tuple[Finding, ...] = ()
    partition_table: str | None = None
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
        """A JSON-serialisable dict with the keys the contract names."""
        result: dict[str, Any] = {
            "format": self.format,
            "virtual_size": self.virtual_size,
            "allocated_size": self.allocated_size,
            "image_size": self.image_size,
            "safe": self.safe,
            "findings": [f.to_dict() for f in self.findings],
            "partition_table": self.partition_table,
        }
        section = self.section
        if section is not None:
            result[self.format] = section.to_dict()
        return result

    def glance_properties(self) -> dict[str, Any]:
        """The Glance image properties this image should carry (contract §3)."""
        if self.ova is not None:
            from .formats.ova import glance_properties as ova_properties

            return ova_properties(self.ova)
        props: dict[str, Any] = {
            "disk_format": self.format,
            "container_format": "bare",
            "virtual_size": self.virtual_size,
        }
        if self.vmdk is not None:
            props.update(vmware_properties(self.vmdk.create_type, self.vmdk.adapter_type))
        return props


def vmware_properties(create_type: str | None, adapter_type: str | None) -> dict[str, str]:
    """Glance's ``vmware_disktype``/``vmware_adaptertype`` for a VMDK's descriptor values."""
    props: dict[str, str] = {}
    disk_type = GLANCE_DISK_TYPES.get((create_type or "").strip().lower())
    if disk_type is not None:
        props["vmware_disktype"] = disk_type
    adapter = GLANCE_ADAPTER_TYPES.get((adapter_type or "").strip().lower())
    if adapter is not None:
        props["vmware_adaptertype"] = adapter
    return props
