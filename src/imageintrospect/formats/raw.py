"""raw: anything no other format claims.  Its virtual size is the image's length."""

from __future__ import annotations

from typing import Any

from .base import Context, FormatSpec, Parsed, Probe

NAME = "raw"


def probe(probe: Probe) -> bool:
    return True


def parse(ctx: Context) -> Parsed:
    # The length of the image itself, never "the bytes read so far".
    return Parsed(virtual_size=ctx.source.size, section=None)


def qemu_info(md: Any) -> dict[str, Any]:
    return {"format": "raw"}


FORMAT = FormatSpec(NAME, probe, parse, qemu_info)
