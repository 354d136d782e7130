"""``introspect()``: open the source, decide the format, let its module parse it."""

from __future__ import annotations

import functools
import os
from typing import IO, TYPE_CHECKING, Any

from . import detect, formats
from .errors import FormatMismatch, ImageIntrospectError, InternalParserError, InvalidImage
from .findings import Findings
from .formats import SECTION_NAMES
from .formats.base import Context, FormatSpec, NotThisFormat, Parsed, Probe
from .metadata import Metadata
from .source import Source, open_source

if TYPE_CHECKING:
    from .stream import StreamInspector

STREAM_READ = 256 * 1024

PathOrFile = str | os.PathLike[str] | IO[bytes] | Any


def introspect(
    source: PathOrFile, *, deep: bool = True, expected_format: str | None = None
) -> Metadata:
    """Describe the disk image in ``source`` from its own bytes.

    :param source: a path, a seekable binary file object (read at random, only what is
        needed, from its current position on; the position is put back when the call
        returns), or any object with ``read()`` (read forward once, to its end, memory
        bounded).  Data in memory (``bytes``) and text-mode files are a :class:`TypeError`.
    :param deep: also validate the allocation tables and compute ``allocated_size``.
        ``False`` reads headers only (at most 1 MiB).
    :param expected_format: the format the caller was told (Glance's ``disk_format``);
        :class:`FormatMismatch` is raised when the content is something else.
    :returns: a :class:`Metadata`; unsafe images are returned with ``safe == False``.
    :raises ImageIntrospectError: when the bytes cannot be described at all.

    No file named inside the image (backing files, extents, parents) is ever opened.
    """
    with open_source(source) as src:
        if deep:  # once the source is known good: a caller's mistake is no deep walk
            from . import scan  # the scanners load when a deep walk may need them

            scan.warn_if_slow(stacklevel=2)
        if isinstance(src, Source):
            return introspect_source(src, deep=deep, expected_format=expected_format)
        return _introspect_stream(src, deep=deep, expected_format=expected_format)


def _introspect_stream(reader: Any, *, deep: bool, expected_format: str | None) -> Metadata:
    """Read a forward-only stream once (see :mod:`imageintrospect.stream`)."""
    inspector = stream_inspector(deep=deep, expected_format=expected_format)
    while True:
        try:
            chunk = reader.read(STREAM_READ)
        except OSError as exc:
            raise InvalidImage(f"reading the stream failed: {exc}") from exc
        if not chunk:
            break
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            # the caller's object is not a binary stream (a text stream gives str)
            raise TypeError(f"the stream returned {type(chunk).__name__}, not bytes")
        inspector.feed(bytes(chunk))
    result: Metadata = inspector.finish()
    return result


def stream_inspector(
    *, deep: bool, expected_format: str | None, head_keep: int | None = None
) -> StreamInspector:
    """The stream driver used by ``introspect()`` on streams, by ``InspectingReader`` and by
    the oslo.utils drop-in (which holds a smaller head: ``head_keep``; by default
    :data:`~imageintrospect.stream.HEAD_KEEP`)."""
    from .stream import HEAD_KEEP, StreamInspector  # streams only: a path never needs it

    on_head = None
    head_size = detect.PROBE_HEAD
    if expected_format is not None:
        on_head = functools.partial(check_head, expected_format=expected_format)
        # checked as soon as the bytes that decide the expected format have arrived
        entry = formats.get(detect.canonical_format(expected_format))
        if entry is not None and entry.decided_within is not None:
            head_size = entry.decided_within
    return StreamInspector(
        lambda src: introspect_source(src, deep=deep, expected_format=expected_format),
        on_head=on_head,
        head_size=head_size,
        head_keep=HEAD_KEEP if head_keep is None else head_keep,
    )


def check_head(head: bytes, *, expected_format: str) -> None:
    """Raise :class:`FormatMismatch` when the head alone proves another format: another
    format claims it, or the expected format's probe, which looks at no more than this
    head (``Format.decided_within`` in :mod:`imageintrospect.formats`), rejects it."""
    probe = Probe(head=head, tail=b"", size=-1)
    claims = detect.claimants(probe)
    expected = detect.canonical_format(expected_format)
    found = claims[0].name if claims else formats.RAW.name
    if claims and all(spec.name != expected for spec in claims):
        raise FormatMismatch(expected_format, found)
    entry = formats.get(expected)
    if entry is None or entry.decided_within is None or len(head) < entry.decided_within:
        return
    if not entry.spec().probe(probe):
        raise FormatMismatch(expected_format, found)


def introspect_source(
    src: Source, *, deep: bool, expected_format: str | None, depth: int = 0
) -> Metadata:
    """Introspect an already opened :class:`Source` (shared by the streaming reader, and by
    an archive for its members: ``depth`` counts the archives around ``src``)."""
    try:
        return _introspect(src, deep, expected_format, depth)
    except ImageIntrospectError:
        raise
    except (MemoryError, RecursionError):
        raise
    except Exception as exc:  # a parser defect must not leak a foreign exception type
        raise InternalParserError(
            f"internal error while reading the image ({type(exc).__name__}: {exc})"
        ) from exc


def _introspect(src: Source, deep: bool, expected_format: str | None, depth: int) -> Metadata:
    findings = Findings()
    probe = detect.read_probe(src)
    spec = detect.detect(probe, findings)
    _check_expected(spec, expected_format)
    detected = findings.freeze()
    nested = functools.partial(introspect_source, deep=deep, expected_format=None, depth=depth + 1)
    try:
        ctx = Context(source=src, findings=findings, deep=deep, nested=nested, depth=depth)
        parsed = spec.parse(ctx)
    except NotThisFormat as exc:
        # The claimant's own findings described a format the bytes are not: start afresh.
        findings = Findings()
        findings.extend(detected)
        findings.add(exc.code, str(exc))
        spec = formats.RAW.spec()
        _check_expected(spec, expected_format)
        ctx = Context(source=src, findings=findings, deep=deep, nested=nested, depth=depth)
        parsed = spec.parse(ctx)
    return _metadata(spec.name, parsed, src.size, findings)


def _check_expected(spec: FormatSpec, expected_format: str | None) -> None:
    if expected_format is not None:
        expected = detect.canonical_format(expected_format)
        if expected != spec.name:
            raise FormatMismatch(expected_format, spec.name)


def _metadata(name: str, parsed: Parsed, image_size: int, findings: Findings) -> Metadata:
    sections: dict[str, Any] = {}
    if name in SECTION_NAMES and parsed.section is not None:
        sections[name] = parsed.section
    return Metadata(
        format=name,
        virtual_size=parsed.virtual_size,
        allocated_size=parsed.allocated_size,
        image_size=image_size,
        findings=findings.freeze(),
        partition_table=parsed.partition_table,
        partitions=parsed.partitions,
        **sections,
    )
