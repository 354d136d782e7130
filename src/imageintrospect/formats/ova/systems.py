"""Virtual systems: CPUs, memory, controllers, NICs and the judgements across disks."""

from __future__ import annotations

import re
from typing import Any
from xml.etree.ElementTree import Element

from ...glance import (
    GLANCE_CIM_PASD,
    vmware_properties,
)
from ..base import Context
from ..ovf_terms import VBOX_TO_VMWARE, VMWARE_GUEST_ID, VMWARE_OVF_NS
from .codes import ADAPTER_OVERRIDE, UNREFERENCED
from .layout import (
    CIM_PASD_NS,
    CONTROLLER_TYPES,
    MAX_OVF_ITEMS,
    REGULAR_TYPES,
    RESOURCE_CPU,
    RESOURCE_DISK,
    RESOURCE_MEMORY,
    RESOURCE_NIC,
)
from .ovf import _int, _local, _split, _text, attr, children, descendants
from .section import OvaDisk, OvaFile, VirtualSystem, _ovf_adapter
from .tar import RawMember

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


def scaled(value: str | None, units: str | None) -> int | None:
    number = _int(value)
    factor = _unit_factor(units)
    if number is None or factor is None:
        return None
    return number * factor


def _virtual_systems(envelope: Element | None) -> tuple[VirtualSystem, ...]:
    systems = descendants(envelope, "VirtualSystem")[:MAX_OVF_ITEMS]
    return tuple(_virtual_system(node) for node in systems)


def _virtual_system(node: Element) -> VirtualSystem:
    os_section = next(iter(children(node, "OperatingSystemSection")), None)
    os_type = None
    if os_section is not None:
        os_type = attr(os_section, "osType") or _text(os_section, "OSType")
    cpus = memory_mb = None
    controllers: list[dict[str, Any]] = []
    nics: list[dict[str, Any]] = []
    disks: list[dict[str, Any]] = []
    cim_pasd: dict[str, str] = {}
    for hardware in children(node, "VirtualHardwareSection"):
        for item in list(hardware)[:MAX_OVF_ITEMS]:
            if _local(item) not in ("Item", "StorageItem", "EthernetPortItem"):
                continue
            kind = _text(item, "ResourceType")
            if kind == RESOURCE_CPU:
                cpus = _int(_text(item, "VirtualQuantity"))
                cim_pasd.update(_cim_pasd(item))
            elif kind == RESOURCE_MEMORY:
                size = scaled(_text(item, "VirtualQuantity"), _text(item, "AllocationUnits"))
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
        name=name_node or attr(node, "id"),
        os_id=attr(os_section, "id") if os_section is not None else None,
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


def glance_cim_pasd(envelope: Element | None) -> dict[str, str]:
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


def attach_controllers(
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


def judge_adapters(ctx: Context, disks: tuple[OvaDisk, ...]) -> None:
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


def judge_members(
    ctx: Context,
    members: list[RawMember],
    files: dict[str, OvaFile],
    ovf: RawMember | None,
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
