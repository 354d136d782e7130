"""QED — placeholder: the module is being written (issue 3)."""

from __future__ import annotations

from typing import Any

from .base import Context, FormatSpec, Parsed, Probe

NAME = "qed"


def probe(probe: Probe) -> bool:
    return False


def parse(ctx: Context) -> Parsed:
    return Parsed(virtual_size=None, section=None)


def qemu_info(md: Any) -> dict[str, Any]:
    return {"format": NAME}


FORMAT = FormatSpec(NAME, probe, parse, qemu_info)
