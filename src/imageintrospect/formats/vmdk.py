"""VMDK — placeholder until the VMDK module lands (owned by the VMDK work)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import Context, FormatSpec, Parsed, Probe, Section

NAME = "vmdk"


@dataclass(frozen=True)
class VmdkSection(Section):
    create_type: str | None = None
    adapter_type: str | None = None


def probe(probe: Probe) -> bool:
    return probe.head[:4] == b"KDMV"


def parse(ctx: Context) -> Parsed:
    return Parsed(virtual_size=None, section=VmdkSection())


def qemu_info(md: Any) -> dict[str, Any]:
    return {"format": "vmdk"}


FORMAT = FormatSpec(NAME, probe, parse, qemu_info)
