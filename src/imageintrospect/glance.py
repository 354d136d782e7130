"""Glance's vocabulary: the image properties values Glance and Nova accept, and the
mappings from what an image's own bytes say to them.

Allowed values come from Glance's metadefs (``compute-vmware.json``) and Nova's VMware driver.
A section contributes its properties through ``Section.glance_properties``; this module only
holds the words, so it imports nothing of the package.
"""

from __future__ import annotations

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

#: OVF controller ResourceSubType (case-insensitive) → Glance ``vmware_adaptertype``.
GLANCE_CONTROLLER_SUBTYPES = {
    "lsilogic": "lsiLogic",
    "buslogic": "busLogic",
    "lsilogicsas": "lsiLogicsas",
    "virtualscsi": "paraVirtual",
    "pvscsi": "paraVirtual",
}
#: OVF NIC ResourceSubType (case-insensitive) → Glance ``hw_vif_model``.
GLANCE_NIC_MODELS = {
    "e1000": "e1000",
    "e1000e": "e1000e",
    "vmxnet3": "VirtualVmxnet3",
    "pcnet32": "VirtualPCNet32",
}
#: The CIM_ProcessorAllocationSettingData values Glance's OVF plugin copies.
GLANCE_CIM_PASD = ("ProcessorArchitecture", "InstructionSet", "InstructionSetExtensionName")


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
