"""File objects that count the bytes they hand out, to check a read budget."""

from __future__ import annotations

import io
from typing import Any


class _CountsReads:
    """Counts the bytes ``read()`` and ``readinto()`` hand out (to check a read budget: the
    library reads a file object through either); mixed into a file type."""

    bytes_read = 0

    def read(self, size: int | None = -1, /) -> bytes:
        data: bytes = super().read(size)  # type: ignore[misc]
        self.bytes_read += len(data)
        return data

    def readinto(self, buffer: Any, /) -> int:
        count: int | None = super().readinto(buffer)  # type: ignore[misc]
        self.bytes_read += count or 0
        return count or 0


class CountingFile(_CountsReads, io.FileIO):
    """A real file that counts the bytes it hands out."""


class CountingBytes(_CountsReads, io.BytesIO):
    """An in-memory seekable file that counts the bytes it hands out."""
