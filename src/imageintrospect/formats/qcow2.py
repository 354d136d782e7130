"""QCOW2 — placeholder until the VMDK module lands (owned by the VMDK work)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import Context, FormatSpec, Parsed, Probe, Section

NAME = "qcow2"


@dataclass(frozen=True)
class Qcow2Section(Section):
    create_type: str | None = None
    adapter_type: str | None = None


def probe(probe: Probe) -> bool:
    return probe.head[:4] == b"QFI\xfb"


def parse(ctx: Context) -> Parsed:
    return Parsed(virtual_size=None, section=Qcow2Section())


def qemu_info(md: Any) -> dict[str, Any]:
    return {"format": "qcow2"}


FORMAT = FormatSpec(NAME, probe, parse, qemu_info)
