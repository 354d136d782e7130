"""One place that turns bytes into field values, without importing construct.

Every on-disk structure is a construct schema (``imageintrospect.formats.schemas``): that is
the one documented layout.  ``scripts/gen_layouts.py`` derives from each schema, ahead of
time, a :class:`Layout` (a ``struct`` format string, the field names, the size, the magic
constants to check) into the generated module ``imageintrospect._layouts``, so parsing a
header imports ``struct`` and that module, never construct (whose import alone costs several
times the interpreter's start).  ``tests/test_layouts.py`` fails when the generated module
no longer matches the schemas; ``tests/fuzz/test_layouts_two_way.py`` checks every layout
against construct's own parse on real and random bytes, errors included: every failure is an
:class:`InvalidImage` naming the structure, as construct's error would have been (``cannot
parse (StreamError)`` when the bytes are cut short, ``(ConstError)`` when a magic differs).
"""

from __future__ import annotations

import struct
from collections import namedtuple
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from .errors import InvalidImage

#: A field made of several values: (its index among the names, how many (None: one nested
#: structure, not a tuple), the Layout of each entry (None: plain integers)).
Group = tuple[int, "int | None", "Layout | None"]


class Layout:
    """A fixed-size structure as ``struct`` reads it, derived from its construct schema.

    Made only by the generated module; its ``struct.Struct`` and its named-tuple type are
    built on first use (a run parses a handful of the ~60 layouts).
    """

    __slots__ = (
        "_make",
        "_struct",
        "consts",
        "fmt",
        "groups",
        "names",
        "size",
        "source",
        "swapped",
        "type_name",
    )

    def __init__(
        self,
        source: str,
        type_name: str,
        fmt: str,
        size: int,
        names: tuple[str, ...],
        consts: tuple[tuple[int, int, bytes], ...] = (),
        groups: tuple[Group, ...] = (),
        swapped: tuple[tuple[int, str], ...] = (),
    ) -> None:
        self.source = source  # "module:NAME" of the construct schema it was derived from
        self.type_name = type_name
        self.fmt = fmt
        self.size = size
        self.names = names  # the fields in order (padding has none)
        self.consts = consts  # (index among the unpacked values, offset, expected bytes)
        self.groups = groups
        # (index among the unpacked values, byte order): integers in the other byte order
        # than the format string's, unpacked as bytes (ISO 9660 stores numbers both ways)
        self.swapped = swapped
        self._struct: struct.Struct | None = None
        self._make: Callable[[Iterable[Any]], Any] | None = None

    @property
    def compiled(self) -> struct.Struct:
        if self._struct is None:
            self._struct = struct.Struct(self.fmt)
        return self._struct

    @property
    def make(self) -> Callable[[Iterable[Any]], Any]:
        """Values in field order → the named tuple (its fields read like construct's)."""
        if self._make is None:
            record: Any = namedtuple(self.type_name, self.names)  # type: ignore[misc]
            self._make = record._make
        return self._make

    @property
    def schema(self) -> Any:
        """The construct schema this layout was derived from (imports construct: tests and
        the generator only)."""
        import importlib

        module, name = self.source.split(":")
        return getattr(importlib.import_module(module), name)

    def parse(self, data: bytes, what: str) -> Any:
        """The structure at the start of ``data`` (which may run on), as a named tuple; an
        :class:`InvalidImage` naming ``what`` when the bytes are short or a magic differs."""
        if len(data) < self.size:
            raise InvalidImage(f"{what}: cannot parse ({self._failure(data)})")
        values = self.compiled.unpack_from(data)
        for index, _, expected in self.consts:
            if values[index] != expected:
                raise InvalidImage(f"{what}: cannot parse (ConstError)")
        if self.swapped:
            values = self._swap(values)
        if self.groups:
            return self.make(self._grouped(values))
        return self.make(values)

    def _swap(self, values: tuple[Any, ...]) -> tuple[Any, ...]:
        out = list(values)
        for index, order in self.swapped:
            out[index] = int.from_bytes(out[index], order)  # type: ignore[arg-type]  # str order
        return tuple(out)

    def _failure(self, data: bytes) -> str:
        # construct reads the fields in order: a magic that differs is found before the end.
        for _, offset, expected in self.consts:
            if len(data) < offset + len(expected):
                return "StreamError"
            if data[offset : offset + len(expected)] != expected:
                return "ConstError"
        return "StreamError"

    def _grouped(self, values: tuple[Any, ...]) -> list[Any]:
        groups = {index: (count, entry) for index, count, entry in self.groups}
        out: list[Any] = []
        at = 0
        for index in range(len(self.names)):
            if index not in groups:
                out.append(values[at])
                at += 1
                continue
            count, entry = groups[index]
            if count is None:  # one nested structure
                assert entry is not None
                width = len(entry.names)
                out.append(entry.make(values[at : at + width]))
                at += width
                continue
            if entry is None:
                out.append(tuple(values[at : at + count]))
                at += count
                continue
            width = len(entry.names)
            make = entry.make
            out.append(
                tuple(make(values[at + k * width : at + (k + 1) * width]) for k in range(count))
            )
            at += count * width
        return out


def parse_struct(layout: Layout, data: bytes, what: str) -> Any:
    """Parse ``data`` with ``layout``; raise :class:`InvalidImage` naming ``what`` on failure."""
    return layout.parse(data, what)


R = TypeVar("R")


class Record(Generic[R]):
    """A header whose parse is handed on as a typed record: a ``NamedTuple`` naming the
    fields the parser uses, with their types, so the header does not travel as ``Any``.

    The record's fields must be fields of the layout (checked when the module is imported).
    """

    def __init__(self, layout: Layout, record: type[R], what: str) -> None:
        named: Any = record  # a NamedTuple class; typing has no bound for "any NamedTuple"
        fields: tuple[str, ...] = getattr(named, "_fields", ())
        missing = [name for name in fields if name not in layout.names]
        if not fields or missing:
            raise TypeError(f"{record.__name__}: {missing or 'no fields'} not in the schema")
        self.layout = layout
        self.what = what
        self.size: int = layout.size
        self._fields = fields
        self._make: Callable[[Iterable[Any]], R] = named._make

    def parse(self, data: bytes) -> R:
        """``data`` parsed as :func:`parse_struct` does, as the record."""
        parsed = self.layout.parse(data, self.what)
        return self._make(getattr(parsed, name) for name in self._fields)


def cstring(raw: bytes, encoding: str = "utf-8") -> str:
    """Decode a NUL-padded byte field; undecodable bytes are replaced, never raised."""
    return raw.split(b"\0", 1)[0].decode(encoding, errors="replace")


class EntryTable:
    """A table's fixed-size entries, decoded in one ``struct`` call for the whole table
    (construct would cost a few µs per field, and a table repeats its entry tens of times on
    every image).  The entry's layout must be flat: integers and byte strings."""

    def __init__(self, layout: Layout, what: str) -> None:
        if layout.consts or layout.groups:
            raise TypeError(f"{layout.source}: a table entry must be a flat layout")
        self.entry = layout
        self.what = what  # names the entry in errors, as parse_struct's ``what`` does
        self.size = layout.size

    @property
    def layout(self) -> struct.Struct:
        return self.entry.compiled

    @property
    def schema(self) -> Any:
        return self.entry.schema

    def decode(self, data: bytes, offset: int = 0) -> Any:
        """The entry at ``offset`` of ``data``; :class:`InvalidImage` when it is cut short,
        as :func:`parse_struct` would raise."""
        if len(data) - offset < self.size:
            raise InvalidImage(f"{self.what}: cannot parse (StreamError)")
        return self.entry.make(self.entry.compiled.unpack_from(data, offset))

    def decode_all(self, data: bytes) -> list[Any]:
        """Every whole entry in ``data``, back to back (a trailing part entry is ignored)."""
        whole = len(data) - len(data) % self.size
        make = self.entry.make
        return [make(v) for v in self.entry.compiled.iter_unpack(data[:whole])]


class TableHeader:
    """A header that holds a table of fixed-size entries: parsed whole, the table a tuple of
    named tuples under its field name, and :attr:`table` its entries' :class:`EntryTable`."""

    def __init__(self, layout: Layout, table: str, what: str, entry_what: str) -> None:
        index = layout.names.index(table)
        entry = next((e for i, n, e in layout.groups if i == index and n is not None), None)
        if entry is None:
            raise TypeError(f"{what}: field {table!r} is not a table of entries")
        self.layout = layout
        self.table = EntryTable(entry, entry_what)
        self.size = layout.size
        self.what = what

    def parse(self, raw: bytes) -> Any:
        """The header in ``raw`` (which may run on); :class:`InvalidImage` when it is short."""
        if len(raw) < self.size:
            raise InvalidImage(f"{self.what}: {len(raw)} of {self.size} bytes")
        return self.layout.parse(raw, self.what)
