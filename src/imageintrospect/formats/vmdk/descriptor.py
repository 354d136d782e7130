"""Parsing a VMDK text descriptor (embedded or a file of its own) into a :class:`Descriptor`."""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from .layout import (
    ACCESS_MODES,
    ASCII_COMPATIBLE,
    KEYS_ALWAYS_KEPT,
    MAX_DDB_KEYS,
    MAX_EXTENT_FINDINGS,
    MAX_EXTENTS,
)
from .section import Extent, Geometry

# --- the descriptor ------------------------------------------------------------------------

_KEY_VALUE = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_.:\-]*)\s*=\s*(?P<value>.*)$")
_EXTENT = re.compile(
    r"""^(?P<access>[A-Za-z]+)\s+(?P<sectors>\d+)\s+(?P<type>[A-Za-z0-9_]+)
        (?:\s+(?:"(?P<quoted>[^"]*)"|(?P<bare>[^\s"]+))
           (?:\s+(?P<offset>\d+))?)?\s*$""",
    re.VERBOSE,
)


@dataclass
class Descriptor:
    """A parsed text descriptor; keys keep the case they were written in."""

    values: dict[str, tuple[str, str]] = field(default_factory=dict)  # lower → (key, value)
    ddb: dict[str, str] = field(default_factory=dict)
    extents: list[Extent] = field(default_factory=list)
    extent_count: int = 0
    extent_sectors: int = 0
    ddb_count: int = 0
    other_count: int = 0
    duplicates: list[tuple[str, str, str]] = field(default_factory=list)
    bad_lines: list[str] = field(default_factory=list)
    encoding: str | None = None

    def get(self, key: str) -> str | None:
        entry = self.values.get(key.lower())
        return entry[1] if entry is not None else None

    def ddb_value(self, key: str) -> str | None:
        return self.get("ddb." + key)


def parse_descriptor(raw: bytes) -> Descriptor:
    """Parse descriptor text leniently: spaces around ``=``, quoted or bare values, CRLF,
    comments, blank lines, utf-8 or windows-1252 (or the declared ``encoding``)."""
    desc = Descriptor()
    text, desc.encoding = _decode(raw)
    for line in _lines(text):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        first = stripped.split(None, 1)[0]
        if first.upper() in ACCESS_MODES:
            _add_extent(desc, stripped)
            continue
        match = _KEY_VALUE.match(stripped)
        if match is not None:
            _add_value(desc, match["key"], _unquote(match["value"]))
    return desc


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text`` one at a time (a hostile descriptor may hold a million)."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        if end < 0:
            end = len(text)
        yield text[start:end]
        start = end + 1


def _decode(raw: bytes) -> tuple[str, str | None]:
    raw = raw.removeprefix(codecs.BOM_UTF8)
    declared = None
    match = re.search(rb'(?im)^[ \t]*encoding[ \t]*=[ \t]*"?([A-Za-z0-9_.:\-]{1,40})', raw)
    if match is not None:
        declared = match[1].decode("ascii")
        codec = _ascii_compatible_codec(declared)
        if codec is not None:
            return raw.decode(codec, errors="replace"), declared
    try:
        return raw.decode("utf-8"), declared
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace"), declared


def _ascii_compatible_codec(name: str) -> str | None:
    try:
        canonical = codecs.lookup(name).name
    except LookupError:
        return None
    return canonical if canonical in ASCII_COMPATIBLE or canonical.startswith("iso8859") else None


def _unquote(value: str) -> str:
    value = value.strip()
    if value.startswith('"'):
        end = value.find('"', 1)
        return value[1:] if end < 0 else value[1:end]
    return value


def _add_value(desc: Descriptor, key: str, value: str) -> None:
    lower = key.lower()
    known = desc.values.get(lower)
    if known is not None:
        if known[1] != value and len(desc.duplicates) < MAX_EXTENT_FINDINGS:
            desc.duplicates.append((key, known[1], value))
        return  # the first one wins, as in qemu (strstr finds the first)
    if lower.startswith("ddb."):
        desc.ddb_count += 1
    else:
        desc.other_count += 1
    if lower not in KEYS_ALWAYS_KEPT and len(desc.values) >= MAX_DDB_KEYS:
        return
    desc.values[lower] = (key, value)
    if lower.startswith("ddb."):
        desc.ddb[key] = value


def _add_extent(desc: Descriptor, line: str) -> None:
    match = _EXTENT.match(line)
    if match is None or match["access"].upper() not in ACCESS_MODES:
        if len(desc.bad_lines) < MAX_EXTENT_FINDINGS:
            desc.bad_lines.append(line[:200])
        return
    sectors = int(match["sectors"])
    desc.extent_count += 1
    desc.extent_sectors += sectors
    if len(desc.extents) >= MAX_EXTENTS:
        return
    name = match["quoted"] if match["quoted"] is not None else match["bare"]
    offset = match["offset"]
    desc.extents.append(
        Extent(
            access=match["access"],
            sectors=sectors,
            type=match["type"],
            file=name,
            offset=int(offset) if offset is not None else None,
        )
    )


def int_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    # isascii(): str.isdigit() also accepts digits int() refuses, such as "²".
    return int(value) if value.isascii() and value.isdigit() and len(value) < 20 else None


def descriptor_geometry(desc: Descriptor) -> Geometry | None:
    values = [desc.ddb_value(f"geometry.{part}") for part in ("cylinders", "heads", "sectors")]
    if all(v is None for v in values):
        return None
    cylinders, heads, sectors = (int_or_none(v) for v in values)
    return Geometry(cylinders=cylinders, heads=heads, sectors=sectors)
