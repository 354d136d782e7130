"""The plugin's oslo.config options, in their own ``[imageintrospect]`` group."""

from __future__ import annotations

from typing import Any

from oslo_config import cfg

from .policy import DEFAULT_PROPERTIES, DEFAULT_VMDK_TYPES, Settings

GROUP = "imageintrospect"

OPTS = [
    cfg.BoolOpt(
        "deep",
        default=True,
        help="Walk every allocation table of the staged image (qcow2 L1/L2 and refcounts, "
        "VMDK grain tables and stream markers, VHD/VHDX BATs, the VDI block map) and check "
        "an OVA's manifest digests. False reads the headers only (at most 1 MiB).",
    ),
    cfg.ListOpt(
        "properties",
        default=list(DEFAULT_PROPERTIES),
        help="The image properties the plugin may set from what it reads; shell-style "
        "patterns such as cim_pasd_* are allowed. virtual_size is always set.",
    ),
    cfg.BoolOpt(
        "override_user_properties",
        default=False,
        help="Replace a property the user already set with the detected value. By default "
        "the user's value wins and the disagreement is logged.",
    ),
    cfg.ListOpt(
        "vmdk_allowed_types",
        default=list(DEFAULT_VMDK_TYPES),
        help="VMDK createType values that may be imported (compared without regard to "
        "case). An empty list refuses every VMDK. Same meaning as Glance's "
        "[image_format] vmdk_allowed_types.",
    ),
    cfg.BoolOpt(
        "extract_ova",
        default=True,
        help="For container_format=ova, replace the staged archive with its single disk and "
        "set container_format=bare and the disk's disk_format, as Glance's ovf_process "
        "does. False keeps the archive and only sets the properties.",
    ),
]

cfg.CONF.register_opts(OPTS, group=GROUP)


def list_opts() -> list[tuple[str, list[Any]]]:
    """For ``oslo-config-generator --namespace imageintrospect.glance_plugin``."""
    return [(GROUP, OPTS)]


def settings(conf: Any = None) -> Settings:
    """The current option values as a :class:`Settings`."""
    group = getattr(conf or cfg.CONF, GROUP)
    return Settings(
        deep=group.deep,
        properties=tuple(group.properties),
        override_user_properties=group.override_user_properties,
        vmdk_allowed_types=tuple(group.vmdk_allowed_types),
        extract_ova=group.extract_ova,
    )
