"""``InspectingReader``: inspect an upload while its bytes pass through unchanged."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import Any

from . import scan
from .core import stream_inspector
from .metadata import Metadata
from .source import check_binary_source

_DEFAULT_READ = 64 * 1024


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
        if callable(getattr(source, "read", None)):
            # iter(callable, sentinel) loops in C: no Python frame per chunk.
            self._chunks: Iterator[Any] = iter(functools.partial(source.read, _DEFAULT_READ), b"")
        elif isinstance(source, Iterable):
            self._chunks = iter(source)
        else:
            raise TypeError("InspectingReader takes a readable stream or an iterable of bytes")
        if deep:
            scan.warn_if_slow(stacklevel=2)
        self._inspector = stream_inspector(deep=deep, expected_format=expected_format)
        self._pending = bytearray()
        self._eof = False
        self._metadata: Metadata | None = None

    # -- the stream interface -------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes of the stream, unchanged (all that remains with ``size``
        negative or None); ``b""`` at the end.  The bytes are inspected as they are read;
        :class:`~imageintrospect.FormatMismatch` is raised here as soon as the head of the
        stream proves another format than ``expected_format``."""
        if size is None or size < 0:
            while (chunk := self._next_chunk()) is not None:
                self._pending += chunk
            out = bytes(self._pending)
            self._pending.clear()
            return out
        while len(self._pending) < size and (chunk := self._next_chunk()) is not None:
            self._pending += chunk
        out = bytes(self._pending[:size])
        del self._pending[:size]
        return out

    def __iter__(self) -> Iterator[bytes]:
        if self._pending:
            pending = bytes(self._pending)
            self._pending.clear()
            yield pending
        if self._eof:
            return
        feed = self._inspector.feed  # the upload's hot loop: as few calls per chunk as can be
        for chunk in self._chunks:
            if not chunk:
                continue
            data = chunk if type(chunk) is bytes else chunk_bytes(chunk)
            feed(data)
            yield data
        self._eof = True

    def metadata(self) -> Metadata:
        """The image's :class:`Metadata`; only after the stream has been read to its end."""
        if not self._eof:
            raise RuntimeError("metadata() is available once the stream has been read to EOF")
        if self._metadata is None:
            self._metadata = self._inspector.finish()
        return self._metadata

    # -- internals ------------------------------------------------------------------------
    def _next_chunk(self) -> bytes | None:
        if self._eof:
            return None
        for chunk in self._chunks:
            if not chunk:
                continue
            data = chunk_bytes(chunk)
            self._inspector.feed(data)
            return data
        self._eof = True
        return None


def chunk_bytes(chunk: Any) -> bytes:
    """A chunk as bytes; anything not bytes-like (an int from iterating over a bytes object,
    a str) is the caller's mistake, not data to turn into zeros."""
    if not isinstance(chunk, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"InspectingReader: the source gave a {type(chunk).__name__}, not bytes; "
            "pass a binary stream or an iterable of bytes chunks"
        )
    return bytes(chunk)
