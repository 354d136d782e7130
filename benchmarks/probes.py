"""What the benchmarks watch besides time: the reads ours makes, and oslo's verdict."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from oslo_utils.imageutils import format_inspector as fi


class WatchedFile(io.RawIOBase):
    """A seekable binary file over ``path`` whose subclasses watch the reads made of it."""

    buffering = -1  # as ``open()``: a subclass that records disk reads asks for 0

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._file = open(path, "rb", buffering=self.buffering)  # noqa: SIM115 - closed with this object

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()
        super().close()


def oslo_verdict(inspector: Any) -> str:
    """oslo's ``safety_check()`` of a detected format (None: none detected) as a short verdict
    for the table; a failed check or a refusal is a verdict, not an error."""
    if inspector is None:
        return "undecided"
    try:
        inspector.safety_check()
    except fi.SafetyCheckFailed as exc:
        return f"{inspector.NAME} unsafe: {', '.join(sorted(exc.failures))}"
    except fi.ImageFormatError as exc:
        return f"{inspector.NAME} refused: {exc}"
    return f"{inspector.NAME} safe"
