"""What the Glance plugin does with an introspected image: accept it (and with which
attributes and properties) or refuse it, and why.

Pure decisions over a :class:`~imageintrospect.Metadata` and the image's declared values: no
Glance, taskflow or oslo.config here, so every rule is testable without them.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import field
from typing import Any

from ..frozen import frozen
from ..metadata import Metadata

#: The properties ``glance_properties()`` may give beyond the image's own attributes.
DEFAULT_PROPERTIES = (
    "vmware_disktype",
    "vmware_adaptertype",
    "vmware_ostype",
    "hw_vif_model",
    "cim_pasd_*",
)
#: Glance's own default for ``[image_format] vmdk_allowed_types``.
DEFAULT_VMDK_TYPES = ("streamOptimized", "monolithicSparse")

#: Glance attributes (not extra properties) in ``glance_properties()``.
ATTRIBUTES = ("disk_format", "container_format", "virtual_size")

#: ``disk_format`` values whose content this library recognises.  Glance lets content that
#: nothing recognises (``raw``) through as ``ami``, ``aki``, ``ari`` or ``ploop``; a format we
#: recognise must be declared as itself.
INSPECTABLE = frozenset({"raw", "qcow2", "vmdk", "vhd", "vhdx", "vdi", "qed", "iso", "luks"})


@frozen
class Settings:
    """The plugin's options (see :mod:`imageintrospect.glance_plugin.options`)."""

    deep: bool = True
    properties: tuple[str, ...] = DEFAULT_PROPERTIES
    override_user_properties: bool = False
    vmdk_allowed_types: tuple[str, ...] = DEFAULT_VMDK_TYPES
    extract_ova: bool = True
    #: Properties to leave out because a later plugin rewrites the disk (image_conversion).
    drop: frozenset[str] = frozenset()


@frozen
class Extraction:
    """The one disk of an OVA, to be copied out of the archive in place of the staged file."""

    member: str
    offset: int
    size: int


@frozen
class Verdict:
    """Accept (``refusal is None``) with these changes, or refuse with ``refusal`` as reason."""

    refusal: str | None = None
    codes: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)
    kept_user: dict[str, str] = field(default_factory=dict)
    extraction: Extraction | None = None


def refuse(reason: str, codes: Sequence[str] = ()) -> Verdict:
    return Verdict(refusal=reason, codes=tuple(codes))


def judge(
    md: Metadata,
    *,
    disk_format: str | None,
    container_format: str | None,
    user_properties: Mapping[str, Any],
    settings: Settings,
) -> Verdict:
    """Decide what happens to an image whose content ``introspect()`` described as ``md``."""
    if not md.safe:
        unsafe = [f for f in md.findings if f.severity == "unsafe"]
        codes = sorted({f.code for f in unsafe})
        details = "; ".join(f"{f.code}: {f.message}" for f in unsafe)
        return refuse(f"the image is unsafe ({', '.join(codes)}): {details}", codes)
    if container_format == "ova":
        return _judge_ova(md, disk_format, user_properties, settings)
    problem = format_problem(md.format, disk_format) or vmdk_problem(
        md.vmdk.create_type if md.vmdk is not None else None, md.format, settings
    )
    if problem is not None:
        return refuse(problem)
    # The declared disk_format stays (an ``ami`` is ``raw`` content but stays ``ami``).
    return _accept(md.glance_properties(), ("virtual_size",), user_properties, settings)


def _judge_ova(
    md: Metadata, disk_format: str | None, user: Mapping[str, Any], settings: Settings
) -> Verdict:
    if md.ova is None:
        return refuse(f"container_format is ova, but the content is {md.format}")
    disks = md.ova.disks
    if len(disks) != 1:
        return refuse(
            f"the OVA has {len(disks)} disks; only an OVA with exactly one disk can be imported"
        )
    disk = disks[0]
    if disk.image is None:
        return refuse(f"the OVA's disk {disk.file!r} could not be read")
    image = disk.image
    create_type = image.vmdk.create_type if image.vmdk is not None else None
    problem = format_problem(image.format, disk_format) or vmdk_problem(
        create_type, image.format, settings
    )
    if problem is not None:
        return refuse(f"the OVA's disk {disk.file!r}: {problem}")
    props = md.glance_properties()
    if not settings.extract_ova:
        return _accept(props, ("virtual_size",), user, settings)
    # The staged file becomes the disk itself, as Glance's ovf_process leaves it: a bare
    # image of the disk's format, whose size is the member's.
    member = next((m for m in md.ova.members if m.name == disk.file), None)
    if member is None or member.kind != "file":
        return refuse(f"the OVA's disk {disk.file!r} is not a regular member of the archive")
    props.update(container_format="bare", size=member.size)
    verdict = _accept(props, (*ATTRIBUTES, "size"), user, settings)
    return Verdict(
        attributes=verdict.attributes,
        properties=verdict.properties,
        kept_user=verdict.kept_user,
        extraction=Extraction(member.name, member.offset, member.size),
    )


def format_problem(content: str, declared: str | None) -> str | None:
    """Glance's rule: the content must be the declared ``disk_format`` (a GPT or MBR disk is
    ``raw``; an ISO is accepted only as ``iso``); unrecognised content (``raw``) may be
    declared as a format nothing can inspect (``ami``, ``aki``, ...)."""
    declared = (declared or "").strip().lower()
    if content == declared:
        return None
    if content == "raw" and declared and declared not in INSPECTABLE:
        return None
    return f"disk_format is {declared or 'not set'}, but the content is {content}"


def vmdk_problem(create_type: str | None, content: str, settings: Settings) -> str | None:
    """Glance's ``vmdk_allowed_types`` rule: only the listed create types (compared without
    regard to case, as VMware and qemu read them); an empty list allows no VMDK."""
    if content != "vmdk":
        return None
    allowed = {t.strip().lower() for t in settings.vmdk_allowed_types if t.strip()}
    if (create_type or "").strip().lower() in allowed:
        return None
    listed = ", ".join(settings.vmdk_allowed_types) or "none"
    return f"VMDK createType {create_type!r} is not allowed (allowed: {listed})"


def _accept(
    props: dict[str, Any],
    set_attributes: Sequence[str],
    user: Mapping[str, Any],
    settings: Settings,
) -> Verdict:
    """Split ``glance_properties()`` into the attributes to set and the extra properties the
    options allow; a property the user already set is kept unless the options say otherwise."""
    attributes = {k: props[k] for k in set_attributes if props.get(k) is not None}
    wanted: dict[str, str] = {}
    kept: dict[str, str] = {}
    for key, value in props.items():
        if key in ATTRIBUTES or key == "size" or value is None or key in settings.drop:
            continue
        if not any(fnmatch.fnmatchcase(key, pattern) for pattern in settings.properties):
            continue
        if key in user and not settings.override_user_properties:
            kept[key] = str(user[key])
            continue
        wanted[key] = str(value)
    return Verdict(attributes=attributes, properties=wanted, kept_user=kept)
