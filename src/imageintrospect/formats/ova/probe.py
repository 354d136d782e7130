"""Recognising a ustar archive from its first header block."""

from __future__ import annotations

from ..base import Probe
from .layout import BLOCK

# --- probe ---------------------------------------------------------------------------------


def probe(probe: Probe) -> bool:
    """A POSIX (ustar/pax/GNU) tar whose first header checks out."""
    head = probe.head
    if len(head) < BLOCK or head[257:262] != b"ustar":
        return False
    return checksum_ok(head[:BLOCK])


def checksum_ok(block: bytes) -> bool:
    stored = _octal(block[148:156])
    if stored is None:
        return False
    unsigned = sum(block) - sum(block[148:156]) + 8 * 32  # the field counts as spaces
    if stored == unsigned:
        return True
    # Some old tars summed signed chars: every byte over 127 then counts 256 less.
    high = sum(1 for b in block[:148] + block[156:] if b > 127)
    return stored == unsigned - 256 * high


def _octal(field: bytes) -> int | None:
    """A tar numeric field: NUL/space padded octal, or GNU base-256 when the top bit is set."""
    if field and field[0] & 0x80:
        value = int.from_bytes(field[1:], "big") | ((field[0] & 0x3F) << (8 * (len(field) - 1)))
        return -value if field[0] & 0x40 else value
    text = field.split(b"\0", 1)[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        return None
