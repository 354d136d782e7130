"""``introspect()``: open the source, decide the format, let its module parse it."""

from __future__ import annotations

import os
from typing import IO, Any

from . import detect
from .errors import FormatMismatch, ImageIntrospectError, InternalParserError
from .findings import Findings
from .formats.base import Context, Parsed
from .metadata import SECTION_NAMES, Metadata
from .source import Source, open_source

PathOrFile = str | os.PathLike[str] | IO[bytes] | Any


def introspect(
    source: PathOrFile, *, deep: bool = True, expected_format: str | None = None
) -> Metadata:
    """Describe the disk image in ``source`` from its own bytes.

    :param source: a path, a seekable binary file object (read at random, only what is
        needed), or any object with ``read()`` (read forward once, memory bounded).
    :param deep: also validate the allocation tables and compute ``allocated_size``.
        ``False`` reads headers only (at most 1 MiB).
    :param expected_format: the format the caller was told (Glance's ``disk_format``);
        :class:`FormatMismatch` is raised when the content is something else.
    :returns: a :class:`Metadata`; unsafe images are returned with ``safe == False``.
    :raises ImageIntrospectError: when the bytes cannot be described at all.

    No file named inside the image (backing files, extents, parents) is ever opened.
    """
    with open_source(source) as src:
        return introspect_source(src, deep=deep, expected_format=expected_format)


def introspect_source(src: Source, *, deep: bool, expected_format: str | None) -> Metadata:
    """Introspect an already opened :class:`Source` (shared by the streaming reader)."""
    try:
        return _introspect(src, deep, expected_format)
    except ImageIntrospectError:
            raise
    except (MemoryError, RecursionError):
        raise
    except Exception as exc:  # a parser defect must not leak a foreign exception type
        raise InternalParserError(
            f"internal error while reading the image ({type(exc).__name__}: {exc})"
        ) from exc


def _introspect(src: Source, deep: bool, expected_format: str | None) -> Metadata:
    findings = Findings()
    probe = detect.read_probe(src)
    spec = detect.detect(probe, findings)
    if expected_format is not None:
        expected = detect.canonical_format(expected_format)
        if expected != spec.name:
            raise FormatMismatch(expected_format, spec.name)
    parsed = spec.parse(Context(source=src, findings=findings, deep=deep))
    return _metadata(spec.name, parsed, src.size, findings)


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
        **sections,
    )
