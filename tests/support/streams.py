"""Forward-only sources, and the answers ``introspect()`` gives through them."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from imageintrospect import (
    ImageIntrospectError,
    InspectingReader,
    InternalParserError,
    Metadata,
    introspect,
)
from imageintrospect.core import STREAM_READ


class OnlyRead:
    """A forward-only source: ``read()`` and nothing else (no seek, no tell, no seekable()),
    handing out at most ``chunk`` bytes per call, as a pipe or an HTTP body does."""

    def __init__(self, data: bytes, chunk: int = 65536) -> None:
        self._buf = io.BytesIO(data)
        self._chunk = chunk

    def read(self, size: int = -1) -> bytes:
        return self._buf.read(self._chunk if size is None or size < 0 else min(size, self._chunk))


def forward_only(source: Path | bytes, chunk: int = 65536) -> OnlyRead:
    """An image file's (or bytes') content as an :class:`OnlyRead` stream."""
    return OnlyRead(source.read_bytes() if isinstance(source, Path) else source, chunk)


def streamed(data: bytes, chunk: int) -> Any:
    """The answer for ``data`` arriving forward-only in ``chunk``-byte pieces.

    ``introspect()`` asks a stream for at most ``core.STREAM_READ`` bytes at a time, so
    larger pieces go through ``InspectingReader``, which takes them as they come.
    """
    if chunk <= STREAM_READ:
        return introspect(OnlyRead(data, chunk))
    reader = InspectingReader(data[at : at + chunk] for at in range(0, len(data), chunk))
    for _ in reader:
        pass
    return reader.metadata()


def introspect_hostile(source: Any) -> Metadata | None:
    """``introspect()`` of a hostile image, as the never-escape properties want it: the
    Metadata (checked to serialise as JSON), or None when it was refused with an
    ImageIntrospectError.  An InternalParserError is a parser defect (an unexpected
    exception wrapped by the library): the test fails with its cause shown."""
    try:
        md = introspect(source)
    except InternalParserError as exc:
        raise AssertionError(f"parser defect: {exc.__cause__!r}") from exc
    except ImageIntrospectError:
        return None
    json.dumps(md.to_dict())
    return md


def describe(source: Any) -> dict[str, Any] | str:
    """``introspect(source).to_dict()``, or the name of the ImageIntrospectError it ended in
    (an InternalParserError is a bug, never an answer: it propagates)."""
    try:
        return introspect(source).to_dict()
    except InternalParserError:
        raise
    except ImageIntrospectError as exc:
        return type(exc).__name__


def assert_stream_agrees(source: Path | bytes, chunk: int) -> Metadata:
    """Check that ``source`` read forward-only in ``chunk``-byte pieces gives the very answer
    it gives seekable, and return that answer for the caller's own checks."""
    data = source.read_bytes() if isinstance(source, Path) else source
    seekable = introspect(io.BytesIO(data))
    assert introspect(OnlyRead(data, chunk)).to_dict() == seekable.to_dict()
    return seekable


def assert_stream_describes_alike(data: bytes, chunk: int) -> None:
    """Like :func:`assert_stream_agrees` for any bytes, an error's name standing for the answer."""
    assert describe(io.BytesIO(data)) == describe(OnlyRead(data, chunk))
