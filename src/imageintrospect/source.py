"""One place that turns what the caller passed into a source of image bytes.

``introspect()`` accepts a path, a seekable binary file object, or anything with only a
``read()`` (a pipe, a socket, an HTTP body).  Format modules never see the difference: they
call :meth:`Source.read_at` with an offset and a bounded length.

* :class:`SeekableSource` reads exactly what is asked, nothing else.
* :class:`StreamSource` reads the stream forward once, keeping the first
  :data:`STREAM_HEAD` bytes and the last :data:`STREAM_TAIL` bytes (where every format keeps
  its headers, descriptors and footers) and counting the rest.  A read that falls between
  the two windows raises :class:`StreamGap`; the format module reports what it therefore
  could not check (``stream-unchecked``) instead of guessing.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, Protocol, runtime_checkable

from .errors import ImageIntrospectError, InvalidImage

#: The most one ``read_at`` call may ask for; format modules read tables in windows below it.
MAX_READ = 16 * 1024 * 1024
#: How much of a stream's start is kept (headers, descriptors, early tables).
STREAM_HEAD = 4 * 1024 * 1024
#: How much of a stream's end is kept (VHD footers, VMware stream footers).
STREAM_TAIL = 1024 * 1024
_CHUNK = 1024 * 1024


class StreamGap(ImageIntrospectError):
    """A read asked for stream bytes that were neither in the kept head nor in the tail."""

    def __init__(self, offset: int, length: int) -> None:
        super().__init__(f"bytes {offset}..{offset + length} were not kept from the stream")
        self.offset = offset
        self.length = length


@runtime_checkable
class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Source:
    """Random access to the image's bytes with a running count of what was read."""

    #: True when the bytes came from a forward-only stream.
    is_stream: bool = False

    def __init__(self, size: int) -> None:
        self.size = size
        self.bytes_read = 0

    def read_at(self, offset: int, length: int) -> bytes:
        """Return up to ``length`` bytes at ``offset``; shorter only at the end of the image."""
        if offset < 0 or length < 0:
            raise InvalidImage(f"negative read ({offset}, {length})")
        if length > MAX_READ:
            raise InvalidImage(f"refusing to read {length} bytes at once")
        if offset >= self.size or length == 0:
            return b""
        length = min(length, self.size - offset)
        data = self._read(offset, length)
        self.bytes_read += len(data)
        return data

    def read_exact(self, offset: int, length: int, what: str) -> bytes:
        """Like :meth:`read_at`, but a short read is an :class:`InvalidImage` naming ``what``."""
        data = self.read_at(offset, length)
        if len(data) != length:
            raise InvalidImage(
                f"{what}: needs {length} bytes at offset {offset}, image is {self.size} bytes"
            )
        return data

    def _read(self, offset: int, length: int) -> bytes:
        raise NotImplementedError


class SeekableSource(Source):
    """A seekable file object; offsets are relative to its position when it was handed over."""

    def __init__(self, fileobj: IO[bytes]) -> None:
        self._file = fileobj
        try:
            self._base = fileobj.tell()
            end = fileobj.seek(0, io.SEEK_END)
        except (OSError, ValueError) as exc:
            raise InvalidImage(f"cannot seek in the source: {exc}") from exc
        super().__init__(max(0, end - self._base))

    def _read(self, offset: int, length: int) -> bytes:
        try:
            self._file.seek(self._base + offset)
            parts = []
            remaining = length
            while remaining > 0:
                part = self._file.read(remaining)
                if not part:
                    break
                parts.append(part)
                remaining -= len(part)
        except OSError as exc:
            raise InvalidImage(f"read failed at offset {offset}: {exc}") from exc
        return b"".join(parts)


class StreamWindow:
    """Accumulates a forward stream: keeps its head and its tail, counts everything."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        self.total += len(chunk)
        room = STREAM_HEAD - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > 2 * STREAM_TAIL:  # trim in batches, not on every chunk
                del self.tail[: len(self.tail) - STREAM_TAIL]

    def source(self) -> StreamSource:
        """The finished stream as a :class:`Source` (call once the stream has ended)."""
        if len(self.tail) > STREAM_TAIL:
            del self.tail[: len(self.tail) - STREAM_TAIL]
        return StreamSource(bytes(self.head), bytes(self.tail), self.total)


class StreamSource(Source):
    """A forward-only stream that has been read to its end: its head and tail windows."""

    is_stream = True

    def __init__(self, head: bytes, tail: bytes, total: int) -> None:
        self._head = head
        self._tail = tail
        self._tail_start = total - len(tail)
        super().__init__(total)

    @classmethod
    def from_reader(cls, reader: Readable) -> StreamSource:
        window = StreamWindow()
        while True:
            try:
                chunk = reader.read(_CHUNK)
            except OSError as exc:
                raise InvalidImage(f"reading the stream failed: {exc}") from exc
            if not chunk:
                break
            if not isinstance(chunk, (bytes, bytearray, memoryview)):
                raise InvalidImage(f"stream returned {type(chunk).__name__}, not bytes")
            window.feed(chunk)
        return window.source()

    def _read(self, offset: int, length: int) -> bytes:
        end = offset + length
        if end <= len(self._head):
            return self._head[offset:end]
        if offset >= self._tail_start:
            start = offset - self._tail_start
            return self._tail[start : start + length]
        if len(self._head) == self._tail_start and offset < len(self._head):
            # Head and tail touch: nothing of the stream was dropped.
            return self._head[offset:] + self._tail[: end - self._tail_start]
        raise StreamGap(offset, length)


class SliceSource(Source):
    """A window of another source: an archive member introspected in place, never copied."""

    def __init__(self, parent: Source, offset: int, length: int) -> None:
        self._parent = parent
        self._offset = offset
        self.is_stream = parent.is_stream
        super().__init__(max(0, min(length, parent.size - offset)))

    def _read(self, offset: int, length: int) -> bytes:
        return self._parent.read_at(self._offset + offset, length)


def _is_seekable(obj: Any) -> bool:
    seekable = getattr(obj, "seekable", None)
    if not callable(seekable):
        return False
    try:
        return bool(seekable())
    except (OSError, ValueError):
        return False


@contextmanager
def open_source(source: Any) -> Iterator[Source]:
    """Yield a :class:`Source` for a path or a binary file object, closing what it opened."""
    if isinstance(source, (str, os.PathLike)):
        try:
            fileobj = open(source, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise InvalidImage(f"cannot open {os.fspath(source)!r}: {exc.strerror}") from exc
        with fileobj:
            if _is_seekable(fileobj):
                yield SeekableSource(fileobj)
            else:  # a FIFO or character device given by path
                yield StreamSource.from_reader(fileobj)
        return
    if not callable(getattr(source, "read", None)):
        raise TypeError(
            f"introspect() takes a path or a binary file object, not {type(source).__name__}"
        )
    if _is_seekable(source):
        yield SeekableSource(source)
    else:
        yield StreamSource.from_reader(source)
