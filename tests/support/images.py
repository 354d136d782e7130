"""Editing image files and bytes: how the hostile variants are made."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from imageintrospect import Metadata


def patch(path: Path, offset: int, data: bytes) -> None:
    """Overwrite bytes in place: how the hostile variants are made."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def read_at(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def edit(path: Path, offset: int, fmt: str, *values: Any) -> Path:
    """``patch`` with ``struct.pack(fmt, *values)``; returns ``path`` for chaining."""
    patch(path, offset, struct.pack(fmt, *values))
    return path


def mutate_bytes(data: Any, seed: bytes, offsets: st.SearchStrategy[int]) -> bytearray:
    """``seed`` with 1 to 12 bytes at drawn ``offsets`` overwritten, then maybe cut short."""
    blob = bytearray(seed)
    edits = data.draw(st.lists(st.tuples(offsets, st.integers(0, 255)), min_size=1, max_size=12))
    for offset, value in edits:
        blob[offset] = value
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    return blob


def finding(md: Metadata, code: str) -> str:
    """The message of ``md``'s first finding ``code`` (which must be there)."""
    messages = [f.message for f in md.findings if f.code == code]
    assert messages, f"no {code} in {md.codes()}"
    return messages[0]
