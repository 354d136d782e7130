"""One place that turns what the caller passed into a source of image bytes.

``introspect()`` accepts a path, a seekable binary file object, or anything with only a
``read()`` (a pipe, a socket, an HTTP body).  Format modules never see the difference: they
ask a :class:`Source` for bytes at an offset (:meth:`Source.read_at`), for several ranges at
once (:meth:`Source.prefetch`), or for a pass over ranges too large to hold
(:meth:`Source.scan`: tables checked window by window, members hashed).

* :class:`SeekableSource` reads exactly what is asked, nothing else.
* A forward-only stream is read once by :mod:`imageintrospect.stream`, which runs the
  format's parser against what has arrived so far, keeps the ranges the parser asks for as
  they pass, and parses for real once the stream has ended.  A range that had already gone
  by when it was asked for raises :class:`StreamGap`; the format module then reports what it
  could not check (``stream-unchecked``) instead of guessing.
* :class:`SliceSource` is a window of another source: an archive member read in place.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any, Protocol, TypeVar, runtime_checkable

from .errors import ImageIntrospectError, InvalidImage

#: The most one ``read_at`` call may ask for; format modules read tables in windows below it.
MAX_READ = 16 * 1024 * 1024
#: The window in which :meth:`Source.scan` hands a seekable source's bytes to a consumer.
SCAN_WINDOW = 4 * 1024 * 1024

Range = tuple[int, int]  # (offset, length)


class StreamGap(ImageIntrospectError):
    """Stream bytes that were asked for after they had gone by (and were not kept)."""

    def __init__(self, offset: int, length: int) -> None:
        super().__init__(f"bytes {offset}..{offset + length} were not kept from the stream")
        self.offset = offset
        self.length = length


class Consumer(Protocol):
    """Receives the bytes of a :meth:`Source.scan`, in order, in pieces of any size.

    A consumer may also offer ``read_from(source, ranges)``: on a seekable source the scan
    then lets it read the ranges itself (straight into its own buffer, or only the bytes it
    turns out to need) instead of feeding it windows.  A stream always feeds.
    """

    def feed(self, offset: int, data: bytes) -> None: ...


C = TypeVar("C", bound=Consumer)


@runtime_checkable
class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Source:
    """Random access to the image's bytes with a running count of what was read."""

    #: True when the bytes came from a forward-only stream.
    is_stream: bool = False
    #: True while a stream is still arriving: the parse is a rehearsal (stream.py).
    speculative: bool = False

    def __init__(self, size: int) -> None:
        self.size = size
        self.bytes_read = 0
        self._head = b""  # the detector's first read, served again from memory

    def remember_head(self, head: bytes) -> None:
        """Keep the bytes at offset 0 that detection read, so parsers do not read them twice."""
        self._head = head

    def _clipped_length(self, offset: int, length: int) -> int:
        """``length`` cut to the end of the image, once negative and oversized reads are
        refused."""
        if offset < 0 or length < 0:
            raise InvalidImage(f"negative read ({offset}, {length})")
        if length > MAX_READ:
            raise InvalidImage(f"refusing to read {length} bytes at once")
        return max(0, min(length, self.size - offset))

    def read_at(self, offset: int, length: int) -> bytes:
        """Return up to ``length`` bytes at ``offset``; shorter only at the end of the image
        (:attr:`size`).  A source that ends before its size raises :class:`InvalidImage`."""
        length = self._clipped_length(offset, length)
        if length == 0:
            return b""
        if offset + length <= len(self._head):
            return self._head[offset : offset + length]
        data = self._read(offset, length)
        self.bytes_read += len(data)
        if len(data) < length:
            raise self._shrank(offset + len(data))
        return data

    def read_into(self, offset: int, buffer: memoryview) -> int:
        """Fill ``buffer`` with the bytes at ``offset`` like :meth:`read_at`, and return how
        many there were.  A caller that reuses one buffer for many tables saves a bytes
        object and a copy per read (a seekable file reads straight into it)."""
        length = self._clipped_length(offset, len(buffer))
        head = self._head
        if offset < len(head):
            # the part the detector read is copied from memory, the rest read into place (a
            # table right after the header: a VHD's BAT, a VDI's block map)
            kept = min(length, len(head) - offset)
            buffer[:kept] = head[offset : offset + kept]
            if kept == length:
                return length
            return kept + self.read_into(offset + kept, buffer[kept:length])
        if length < len(buffer):
            buffer = buffer[:length]
        done = self._read_into(offset, buffer) if length else 0
        self.bytes_read += done
        if done < length:
            raise self._shrank(offset + done)
        return done

    def _shrank(self, end: int) -> InvalidImage:
        """A read that ended before the size the source had when it was opened: the file is
        shorter than it was (still being written, or cut by its store).  Never read as
        absent data, which could make a cut image look whole."""
        return InvalidImage(
            f"truncated: the source ended at byte {end}, but was {self.size} bytes when opened"
        )

    def read_exact(self, offset: int, length: int, what: str) -> bytes:
        """Like :meth:`read_at`, but a short read is an :class:`InvalidImage` naming ``what``."""
        data = self.read_at(offset, length)
        if len(data) != length:
            raise InvalidImage(
                f"{what}: needs {length} bytes at offset {offset}, image is {self.size} bytes"
            )
        return data

    def prefetch(self, ranges: Sequence[Range]) -> None:
        """Announce reads to come, so a stream keeps them all in one pass.  Seekable: no-op."""

    def memo(self, key: Hashable) -> dict[str, Any]:
        """A dict in which a walk keeps how far it got, across the rehearsals of a stream's
        parse (stream.py), so that each rehearsal resumes the walk instead of repeating it:
        an OVA of thousands of members would otherwise be walked once per member that
        arrives.  Empty for every other parse, the final one of a stream included."""
        return {}

    def pending(self, offset: int, length: int) -> bool:
        """True while a stream is still to deliver some of these bytes (a rehearsal then read
        zeros for them): a walk whose next step depends on them stops there, rather than
        walk on through zeros and ask to keep ranges the true bytes will not lead to."""
        return False

    def scan(
        self, key: Hashable, ranges: Sequence[Range], make: Callable[[], C], *, wait: bool = True
    ) -> C:
        """Hand the bytes of ``ranges`` (ascending, clipped to the image) to a new consumer.

        ``key`` names the scan: a stream, whose parser runs several times, starts each scan
        once and returns the same consumer at the end.  Raises :class:`StreamGap` when a
        stream had passed a range before the scan was asked for.  ``wait=False`` says the
        parser does not need the result to go on (a digest checked at the end), so a stream
        does not hold the parse back until the scan is complete.
        """
        consumer = make()
        read_from = getattr(consumer, "read_from", None)
        if read_from is not None:
            read_from(self, [(o, min(n, self.size - o)) for o, n in ranges if o < self.size])
            return consumer
        for offset, length in ranges:
            end = min(offset + length, self.size)
            position = offset
            while position < end:
                size = min(SCAN_WINDOW, end - position)
                data = self.read_at(position, size)
                if not data:
                    break
                consumer.feed(position, data)
                position += len(data)
        return consumer

    def _read(self, offset: int, length: int) -> bytes:
        raise NotImplementedError

    def _read_into(self, offset: int, buffer: memoryview) -> int:
        data = self._read(offset, len(buffer))
        buffer[: len(data)] = data
        return len(data)


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
        self._fd = _plain_file_fd(fileobj)
        # a caller's file object may lack readinto: read_into then copies from read()
        self._readinto = getattr(fileobj, "readinto", None)

    def restore_position(self) -> None:
        """Put the file back where it was handed over, so that the caller can read it again
        (an upload handler hashing or storing the same file object)."""
        # closed or broken meanwhile: nothing to restore
        with contextlib.suppress(OSError, ValueError):
            self._file.seek(self._base)

    def _read_into(self, offset: int, buffer: memoryview) -> int:
        fd, readinto = self._fd, self._readinto
        if fd is not None:
            # a plain file: one preadv where seek-and-readinto takes two system calls (the
            # qcow2 walk reads thousands of L2 tables this way, so no helper call per read)
            position, done = self._base + offset, 0
            try:
                while done < len(buffer):
                    part = os.preadv(fd, [buffer[done:] if done else buffer], position + done)
                    if not part:
                        break
                    done += part
            except OSError as exc:
                raise InvalidImage(f"read failed at offset {offset}: {exc}") from exc
            return done
        if readinto is None:
            return super()._read_into(offset, buffer)
        return self._fill(offset, buffer, lambda part, done: readinto(part), seek=True)

    def _fill(
        self,
        offset: int,
        buffer: memoryview,
        read_part: Callable[[memoryview, int], int | None],
        *,
        seek: bool = False,
    ) -> int:
        """Fill ``buffer`` from ``offset`` by ``read_part(rest, done)`` calls until it is
        full or the end is reached; the bytes filled."""
        done = 0
        try:
            if seek:
                self._file.seek(self._base + offset)
            while done < len(buffer):
                part = read_part(buffer[done:], done)
                if not part:
                    break
                done += part
        except OSError as exc:
            raise InvalidImage(f"read failed at offset {offset}: {exc}") from exc
        return done

    def _read(self, offset: int, length: int) -> bytes:
        if self._fd is not None:
            return self._pread(self._fd, offset, length)
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

    def _pread(self, fd: int, offset: int, length: int) -> bytes:
        """One system call where seek-and-read takes two: a streamOptimized VMDK's marker
        walk makes one small read per marker, tens of thousands on a few GiB."""
        try:
            data = os.pread(fd, length, self._base + offset)
        except OSError as exc:
            raise InvalidImage(f"read failed at offset {offset}: {exc}") from exc
        if 0 < len(data) < length:  # short, but not at the end: read on
            data += self._pread(fd, offset + len(data), length - len(data))
        return data


def _plain_file_fd(fileobj: IO[bytes]) -> int | None:
    """The descriptor of a plain read-only file (``open(path, "rb")`` and its unbuffered
    form), read with ``os.pread`` and ``os.preadv`` where the platform has both; None for
    anything else, which is read through its own ``seek`` and ``read`` (a wrapper may count
    or change what it reads, a file open for writing may hold bytes not yet written)."""
    raw = fileobj.raw if type(fileobj) is io.BufferedReader else fileobj
    if type(raw) is not io.FileIO or not (hasattr(os, "pread") and hasattr(os, "preadv")):
        return None
    try:
        return fileobj.fileno()
    except (OSError, ValueError):
        return None


class SliceSource(Source):
    """A window of another source: an archive member introspected in place, never copied."""

    def __init__(self, parent: Source, offset: int, length: int) -> None:
        self._parent = parent
        self._offset = offset
        self.is_stream = parent.is_stream
        self.speculative = parent.speculative
        super().__init__(max(0, min(length, parent.size - offset)))

    def _read(self, offset: int, length: int) -> bytes:
        return self._parent.read_at(self._offset + offset, length)

    def _read_into(self, offset: int, buffer: memoryview) -> int:
        return self._parent.read_into(self._offset + offset, buffer)

    def prefetch(self, ranges: Sequence[Range]) -> None:
        self._parent.prefetch([(self._offset + o, n) for o, n in self._clip(ranges)])

    def pending(self, offset: int, length: int) -> bool:
        return self._parent.pending(self._offset + offset, length)

    def memo(self, key: Hashable) -> dict[str, Any]:
        return self._parent.memo(("slice", self._offset, key))

    def scan(
        self, key: Hashable, ranges: Sequence[Range], make: Callable[[], C], *, wait: bool = True
    ) -> C:
        if not self.is_stream:  # read through this slice, as any seekable source does
            return super().scan(key, ranges, make, wait=wait)
        shifted = [(self._offset + o, n) for o, n in self._clip(ranges)]
        outer = self._parent.scan(
            ("slice", self._offset, key),
            shifted,
            lambda: _Shift(make(), self._offset),
            wait=wait,
        )
        inner: C = outer.inner
        return inner

    def _clip(self, ranges: Sequence[Range]) -> list[Range]:
        clipped = []
        for offset, length in ranges:
            length = min(length, self.size - offset)
            if length > 0:
                clipped.append((offset, length))
        return clipped


class _Shift:
    """Feeds a slice's consumer with offsets relative to the slice."""

    def __init__(self, inner: Any, base: int) -> None:
        self.inner = inner
        self._base = base

    def feed(self, offset: int, data: bytes) -> None:
        self.inner.feed(offset - self._base, data)


def check_binary_source(source: Any) -> None:
    """Refuse, with a :class:`TypeError`, what is not a binary stream of an image: data given
    where a source was expected, and a file opened in text mode."""
    if isinstance(source, (bytes, bytearray, memoryview, str)):
        raise TypeError(
            f"expected a binary file object or stream, not {type(source).__name__} "
            "(wrap data in memory as io.BytesIO(data))"
        )
    if isinstance(source, io.TextIOBase):
        raise TypeError("the file is open in text mode; open the image with mode 'rb'")


def _is_seekable(obj: Any) -> bool:
    seekable = getattr(obj, "seekable", None)
    if not callable(seekable):
        return False
    try:
        return bool(seekable())
    except (OSError, ValueError):
        return False


@contextmanager
def open_source(source: Any) -> Iterator[Source | Readable]:
    """Yield a :class:`SeekableSource`, or the readable stream itself, closing what it opened."""
    if isinstance(source, (str, os.PathLike)):
        try:
            fileobj = open(source, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise InvalidImage(f"cannot open {os.fspath(source)!r}: {exc.strerror}") from exc
        with fileobj:
            # A FIFO or character device given by path is read as a stream.
            yield SeekableSource(fileobj) if _is_seekable(fileobj) else fileobj
        return
    if not callable(getattr(source, "read", None)):
        raise TypeError(
            f"introspect() takes a path or a binary file object, not {type(source).__name__}"
        )
    check_binary_source(source)
    if not _is_seekable(source):
        yield source
        return
    seekable = SeekableSource(source)
    try:
        yield seekable
    finally:
        seekable.restore_position()
