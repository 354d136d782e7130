"""``InspectingReader``: inspect an upload while its bytes pass through unchanged."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import scan
from .core import stream_inspector
from .metadata import Metadata
from .source import check_binary_source

_DEFAULT_READ = 64 * 1024
_NEVER = 1 << 62


class InspectingReader:
    """A readable binary stream over ``source`` that introspects the bytes it hands out.

    ``source`` is a readable binary stream or an iterable of ``bytes`` chunks; a ``bytes``,
    ``bytearray``, ``memoryview`` or ``str`` given as the source itself, a text-mode file
    and a chunk that is not bytes-like are a :class:`TypeError` (wrap data already in memory
    as ``io.BytesIO(data)`` or ``[data]``).  Iterate over
    the reader or call :meth:`read`; the bytes come out unchanged.  After the end of the
    stream, :meth:`metadata` returns the :class:`Metadata`.  With ``expected_format``,
    :class:`~imageintrospect.FormatMismatch` is raised from ``read`` (or the iteration) as
    soon as the head of the stream shows another format, and otherwise from ``metadata``.
    """

    def __init__(
        self, source: Any, expected_format: str | None = None, *, deep: bool = True
    ) -> None:
        check_binary_source(source)
        read = getattr(source, "read", None)
        if callable(read):
            # iter(callable, sentinel) loops in C: no Python frame per chunk.
            self._chunks: Iterator[Any] = iter(functools.partial(read, _DEFAULT_READ), b"")
            self._read: Callable[[int], Any] | None = read
        elif isinstance(source, Iterable):
            self._chunks = iter(source)
            self._read = None
        else:
            raise TypeError("InspectingReader takes a readable stream or an iterable of bytes")
        if deep:
            scan.warn_if_slow(stacklevel=2)
        self._inspector = stream_inspector(deep=deep, expected_format=expected_format)
        self._feed = self._inspector.feed
        # What was fed but not yet handed out: the tail of one chunk, from _offset on (no
        # copying into a buffer of our own: a chunk read whole is handed out as it is).
        self._chunk = b""
        self._offset = 0
        self._eof = False
        self._metadata: Metadata | None = None
        # read(n) of at least this much goes straight to the stream (see _fetch); never
        # for an iterable, nor after the end.
        self._direct = _DEFAULT_READ if self._read is not None else _NEVER

    # -- the stream interface -------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        """``size`` bytes of the stream, unchanged (fewer only at its end; all that remains
        with ``size`` negative or None); ``b""`` at the end.  The bytes are inspected as they
        are read; :class:`~imageintrospect.FormatMismatch` is raised here as soon as the head
        of the stream proves another format than ``expected_format``."""
        if size is None or size < 0:
            return self._read_all()
        held = len(self._chunk) - self._offset
        if held == 0 and size >= self._direct:  # the usual case, without a call of ours
            data = self._read(size)  # type: ignore[misc]  # (_direct: only with a read)
            if type(data) is bytes and len(data) == size:
                self._feed(data)
                return data
            return self._odd_read(data, size)
        if held >= size:  # from the held chunk: one slice
            start = self._offset
            self._offset = start + size
            return self._chunk[start : start + size]
        if held == 0:
            chunk = self._fetch(size)
            if len(chunk) == size or not chunk:  # the usual case: the caller's size, whole
                return chunk
            if len(chunk) > size:
                self._chunk, self._offset = chunk, size
                return chunk[:size]
            self._chunk, self._offset, held = chunk, 0, len(chunk)
        return self._gather(size, held)

    def _odd_read(self, data: Any, size: int) -> bytes:
        """What the direct read in ``read`` does not take whole: the end, a chunk that is
        not bytes, more than was asked for (the rest held back) or less (the rest read)."""
        if not data:
            self._end()
            return b""
        chunk = data if type(data) is bytes else chunk_bytes(data)
        self._feed(chunk)
        if len(chunk) == size:
            return chunk
        if len(chunk) > size:
            self._chunk, self._offset = chunk, size
            return chunk[:size]
        self._chunk, self._offset = chunk, 0
        return self._gather(size, len(chunk))

    def _end(self) -> None:
        self._eof = True
        self._direct = _NEVER

    def _fetch(self, size: int) -> bytes:
        """The next non-empty chunk, fed to the inspector (b"" at the end).  A stream is
        read at the caller's size when that is at least the default (the chunk then goes
        out without a copy); smaller reads are cut from a default-sized chunk, so that the
        inspector is fed as few chunks as it would be by iteration."""
        if self._eof:
            return b""
        if self._read is not None and size >= _DEFAULT_READ:
            data = self._read(size)
            if data:
                data = data if type(data) is bytes else chunk_bytes(data)
                self._feed(data)
                return data
        else:
            for chunk in self._chunks:
                if chunk:
                    data = chunk if type(chunk) is bytes else chunk_bytes(chunk)
                    self._feed(data)
                    return data
        self._end()
        return b""

    def _gather(self, size: int, held: int) -> bytes:
        """``size`` bytes across chunks: the held tail and whole chunks, joined once."""
        chunk, offset = self._chunk, self._offset
        parts: list[bytes | memoryview] = [chunk if offset == 0 else memoryview(chunk)[offset:]]
        self._chunk, self._offset = b"", 0
        while held < size and (more := self._fetch(size - held)):
            parts.append(more)
            held += len(more)
        if held > size:  # the last chunk is handed out in part: hold its rest
            last = parts[-1]
            keep = len(last) - (held - size)
            self._chunk, self._offset = bytes(last), keep
            parts[-1] = memoryview(self._chunk)[:keep]
        elif len(parts) == 1 and offset == 0:  # a short chunk at the end: as it came
            return chunk
        return b"".join(parts)

    def _read_all(self) -> bytes:
        parts: list[bytes | memoryview] = [memoryview(self._chunk)[self._offset :]]
        self._chunk, self._offset = b"", 0
        while chunk := self._fetch(_DEFAULT_READ):
            parts.append(chunk)
        return b"".join(parts)

    def __iter__(self) -> Iterator[bytes]:
        if self._offset < len(self._chunk):
            held = self._chunk[self._offset :]
            self._chunk, self._offset = b"", 0
            yield held
        if self._eof:
            return
        feed = self._feed  # the upload's hot loop: as few calls per chunk as can be
        for chunk in self._chunks:
            if not chunk:
                continue
            data = chunk if type(chunk) is bytes else chunk_bytes(chunk)
            feed(data)
            yield data
        self._end()

    def metadata(self) -> Metadata:
        """The image's :class:`Metadata`; only after the stream has been read to its end."""
        if not self._eof:
            raise RuntimeError("metadata() is available once the stream has been read to EOF")
        if self._metadata is None:
            self._metadata = self._inspector.finish()
        return self._metadata


def chunk_bytes(chunk: Any) -> bytes:
    """A chunk as bytes; anything not bytes-like (an int from iterating over a bytes object,
    a str) is the caller's mistake, not data to turn into zeros."""
    if not isinstance(chunk, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"InspectingReader: the source gave a {type(chunk).__name__}, not bytes; "
            "pass a binary stream or an iterable of bytes chunks"
        )
    return bytes(chunk)
