"""Named byte ranges an inspector subclass can ask to be captured as the image streams by.

oslo.utils' inspectors are built on such ranges; the drop-in's own inspectors are not (the
library's parsers read the image), but code that subclasses an inspector and registers its
own ranges with ``new_region`` keeps working: every range it registers is filled from the
chunks its inspector is fed.  ``region("header")`` of a built-in inspector is the image's
first 512 bytes, as far as they have been read.
"""

from __future__ import annotations

from collections.abc import Callable


class CaptureRegion:
    """``length`` bytes from ``offset``: filled by :meth:`capture` with each chunk, however
    the chunks fall; ``complete`` once all are there (or ``min_length`` of them)."""

    def __init__(self, offset: int, length: int, min_length: int | None = None) -> None:
        self.offset = offset
        self.length = length
        self.min_length = min_length
        self.data: bytes | bytearray = b""

    @property
    def complete(self) -> bool:
        want = self.length if self.min_length is None else self.min_length
        return len(self.data) >= want

    def capture(self, chunk: bytes, current_position: int) -> bytes:
        """Take this region's part of ``chunk``, which ends at ``current_position``."""
        start = current_position - len(chunk)
        have = self.offset + len(self.data)  # the next byte the region wants
        end = self.offset + self.length
        if have >= end or current_position <= have or start > have:
            return b""
        self.data = bytes(self.data) + chunk[have - start : end - start]
        return b""


class EndCaptureRegion(CaptureRegion):
    """The last ``offset`` bytes of the stream; complete only after :meth:`finish`."""

    def __init__(self, offset: int) -> None:
        super().__init__(offset, offset)
        self._ended = False

    def capture(self, chunk: bytes, current_position: int) -> bytes:
        self.data = (bytes(self.data) + chunk)[-self.length :] if self.length else b""
        self.offset = current_position - len(self.data)
        return b""

    @property
    def complete(self) -> bool:
        return self._ended and super().complete

    def finish(self) -> None:
        self._ended = True


class HeadRegion(CaptureRegion):
    """The image's first bytes, taken from the shared reading rather than copied again."""

    def __init__(self, head: Callable[[int], bytes], length: int = 512) -> None:
        super().__init__(0, length)
        self._head = head

    @property
    def data(self) -> bytes:
        return self._head(self.length)

    @data.setter
    def data(self, value: bytes | bytearray) -> None:
        if value:  # the constructor's empty start is the only write allowed
            raise TypeError("the header region is a view of the image's bytes, not settable")

    def capture(self, chunk: bytes, current_position: int) -> bytes:
        return b""
