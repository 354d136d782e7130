"""``InspectingReader``: inspect an upload while its bytes pass through unchanged."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from . import detect
from .core import introspect_source
from .errors import FormatMismatch, ImageIntrospectError
from .formats.base import Probe
from .metadata import Metadata
from .source import StreamWindow

_DEFAULT_READ = 64 * 1024


class InspectingReader:
    """A readable binary stream over ``source`` that introspects the bytes it hands out.

    ``source`` is a readable binary stream or an iterable of ``bytes`` chunks.  Iterate over
    the reader or call :meth:`read`; the bytes come out unchanged.  After the end of the
    stream, :meth:`metadata` returns the :class:`Metadata`.  With ``expected_format``,
    :class:`FormatMismatch` is raised from ``read`` as soon as the head of the stream shows
    another format.
    """

    def __init__(self, source: Any, expected_format: str | None = None) -> None:
        if callable(getattr(source, "read", None)):
            self._chunks: Iterator[bytes] = _read_chunks(source)
        elif isinstance(source, Iterable):
            self._chunks = iter(source)
        else:
            raise TypeError("InspectingReader takes a readable stream or an iterable of bytes")
        self._expected = expected_format
        self._window = StreamWindow()
        self._pending = b""
        self._eof = False
        self._checked_head = expected_format is None
        self._metadata: Metadata | None = None

    # -- the stream interface -------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts = [self._pending]
            self._pending = b""
            while (chunk := self._next_chunk()) is not None:
                parts.append(chunk)
            return b"".join(parts)
        while len(self._pending) < size and (chunk := self._next_chunk()) is not None:
            self._pending += chunk
        out, self._pending = self._pending[:size], self._pending[size:]
        return out

    def __iter__(self) -> Iterator[bytes]:
        if self._pending:
            pending, self._pending = self._pending, b""
            yield pending
        while (chunk := self._next_chunk()) is not None:
            yield chunk

    def metadata(self) -> Metadata:
        """The image's :class:`Metadata`; only after the stream has been read to its end."""
        if not self._eof:
            raise RuntimeError("metadata() is available once the stream has been read to EOF")
        if self._metadata is None:
            self._metadata = introspect_source(
                self._window.source(), deep=True, expected_format=self._expected
            )
        return self._metadata

    # -- internals ------------------------------------------------------------------------
    def _next_chunk(self) -> bytes | None:
        if self._eof:
            return None
        for chunk in self._chunks:
            if not chunk:
                continue
            data = bytes(chunk)
            self._window.feed(data)
            self._check_head()
            return data
        self._eof = True
        return None

    def _check_head(self) -> None:
        """Raise FormatMismatch once the head alone proves the content is another format."""
        if self._checked_head or len(self._window.head) < detect.PROBE_HEAD:
            return
        self._checked_head = True
        assert self._expected is not None
        probe = Probe(head=bytes(self._window.head[: detect.PROBE_HEAD]), tail=b"", size=-1)
        try:
            claims = detect.claimants(probe)
        except ImageIntrospectError:
            return
        expected = detect.canonical_format(self._expected)
        if claims and all(spec.name != expected for spec in claims):
            raise FormatMismatch(self._expected, claims[0].name)


def _read_chunks(stream: Any) -> Iterator[bytes]:
    while True:
        chunk = stream.read(_DEFAULT_READ)
        if not chunk:
            return
        yield chunk


__all__ = ["InspectingReader"]
