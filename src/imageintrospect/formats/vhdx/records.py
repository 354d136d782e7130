"""The parse's working records: problems grouped by finding code, the metadata as read."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from ... import findings as F
from ..base import Context
from .layout import MESSAGES_PER_FINDING
from .section import MetadataItem

# --- parse ---------------------------------------------------------------------------------


class _Problems:
    """Problems found, grouped by finding code; each code becomes one bounded finding."""

    def __init__(self) -> None:
        self._shown: dict[str, list[str]] = {}
        self._more: dict[str, int] = {}
        self._refusals: list[str] = []

    def refuse(self, code: str, message: str) -> None:
        """A problem that qemu's VHDX driver refuses to open the image for, too."""
        self.add(code, message)
        self._refusals.append(message)

    def add(self, code: str, message: str) -> None:
        shown = self._shown.setdefault(code, [])
        if message in shown:
            return
        if len(shown) < MESSAGES_PER_FINDING:
            shown.append(message)
        else:
            self._more[code] = self._more.get(code, 0) + 1

    def report(self, ctx: Context) -> None:
        for code, shown in self._shown.items():
            more = self._more.get(code, 0)
            ctx.findings.add(code, "; ".join(shown) + (f"; and {more} more" if more else ""))
        if self._refusals:
            shown = self._refusals[:MESSAGES_PER_FINDING]
            ctx.findings.add(F.QEMU_CANNOT_OPEN, "qemu refuses the VHDX: " + "; ".join(shown))


@dataclass
class _Metadata:
    """The metadata region's decoded content (None where an item was absent or unreadable)."""

    items: tuple[MetadataItem, ...] = ()
    block_size: int | None = None
    flags: int | None = None
    virtual_size: int | None = None
    page_83: uuid.UUID | None = None
    logical_sector_size: int | None = None
    physical_sector_size: int | None = None
    locator_type: uuid.UUID | None = None
    locator: dict[str, str] | None = None
    present: frozenset[str] = frozenset()  # the known items the table lists
