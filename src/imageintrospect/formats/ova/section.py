"""What an OVA section reports, and the Glance properties it contributes."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from ...frozen import frozen
from ...glance import (
    GLANCE_CONTROLLER_SUBTYPES,
    GLANCE_NIC_MODELS,
    vmware_properties,
)
from ..base import Section

if TYPE_CHECKING:
    from ...metadata import Metadata


# --- section -------------------------------------------------------------------------------


@frozen
class OvaFile(Section):
    href: str
    size: int | None
    present: bool
    file_id: str | None = None
    chunk_size: int | None = None


@frozen
class OvaDisk(Section):
    disk_id: str | None
    file: str | None
    capacity: int | None
    format_uri: str | None
    populated_size: int | None
    image: Metadata | None  # the disk member's own answer
    controller: dict[str, Any] | None = None


@frozen
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


@frozen
class Manifest(Section):
    file: str | None
    algorithm: str | None
    verified: bool | None
    mismatches: tuple[str, ...]


@frozen
class Member(Section):
    name: str
    size: int
    offset: int
    kind: str


@frozen
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
