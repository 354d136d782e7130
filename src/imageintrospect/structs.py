"""One place that turns bytes into construct values.

Like pyelftools' ``struct_parse``, every construct error becomes an :class:`InvalidImage`
naming the structure that failed, so no construct exception reaches a caller.  Schemas are
used interpreted (never ``.compile()``d): the input is hostile and the interpreter is the
better-reviewed path.  Headers are parsed that way; the entries of a table, repeated tens of
times, go through :class:`EntryTable`, a plain ``struct`` layout derived from the schema, and a
header that holds such a table goes through :class:`TableHeader`.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

import construct

from .errors import InvalidImage


def parse_struct(schema: construct.Construct, data: bytes, what: str) -> Any:
    """Parse ``data`` with ``schema``; raise :class:`InvalidImage` naming ``what`` on failure."""
    try:
        return schema.parse(data)
    except construct.ConstructError as exc:
        raise InvalidImage(f"{what}: cannot parse ({type(exc).__name__})") from exc


R = TypeVar("R")


class Record(Generic[R]):
    """A header schema whose parse is handed on as a typed record: a ``NamedTuple`` naming
    the fields the parser uses, with their types, so the header does not travel as ``Any``.

    The record's fields must be fields of the schema (checked when the module is imported);
    the schema stays the documented layout.
    """

    def __init__(self, schema: construct.Struct, record: type[R], what: str) -> None:
        named: Any = record  # a NamedTuple class; typing has no bound for "any NamedTuple"
        fields: tuple[str, ...] = getattr(named, "_fields", ())
        names = {sub.name for sub in schema.subcons}
        missing = [name for name in fields if name not in names]
        if not fields or missing:
            raise TypeError(f"{record.__name__}: {missing or 'no fields'} not in the schema")
        self.schema = schema
        self.what = what
        self.size: int = schema.sizeof()
        self._fields = fields
        self._make: Callable[[Iterable[Any]], R] = named._make

    def parse(self, data: bytes) -> R:
        """``data`` parsed as :func:`parse_struct` does, as the record."""
        parsed = parse_struct(self.schema, data, self.what)
        return self._make(parsed[name] for name in self._fields)


def cstring(raw: bytes, encoding: str = "utf-8") -> str:
    """Decode a NUL-padded byte field; undecodable bytes are replaced, never raised."""
    return raw.split(b"\0", 1)[0].decode(encoding, errors="replace")


class EntryTable:
    """Fast decoding of a table's fixed-size entries, derived from their construct schema.

    The construct ``Struct`` stays the documented layout (and what tests and fuzz seeds take
    field offsets from); this precompiles the same layout into one :class:`struct.Struct`,
    because interpreted construct costs a few µs per field and a table repeats its entry
    tens of times on every image.  Only schemas made of fixed-size integers and byte strings
    (one byte order) can be derived; anything else is refused when the module is imported.
    ``tests/fuzz/test_entry_tables.py`` checks that both decodings agree on real and random bytes.
    """

    def __init__(self, schema: construct.Struct, name: str, what: str) -> None:
        fields = [(sub.name, sub.subcon) for sub in schema.subcons]
        orders = {f.fmtstr[0] for _, f in fields if isinstance(f, construct.FormatField)}
        if len(orders) > 1:
            raise TypeError(f"{name}: fields of more than one byte order")
        codes = "".join(_struct_code(name, field) for _, field in fields)
        self.schema = schema
        self.what = what  # names the entry in errors, as parse_struct's ``what`` does
        self.layout = struct.Struct((orders.pop() if orders else ">") + codes)
        self.size = self.layout.size
        # Entries are named tuples: read like the construct Container (``entry.first_lba``).
        field_names = [str(field_name) for field_name, _ in fields]
        entry_type: Any = namedtuple(name, field_names)  # type: ignore[misc]  # name is dynamic
        self._make: Callable[[Iterable[Any]], Any] = entry_type._make

    def decode(self, data: bytes, offset: int = 0) -> Any:
        """The entry at ``offset`` of ``data``; :class:`InvalidImage` when it is cut short,
        as :func:`parse_struct` would raise."""
        if len(data) - offset < self.size:
            raise InvalidImage(f"{self.what}: cannot parse (StreamError)")
        return self._make(self.layout.unpack_from(data, offset))

    def decode_all(self, data: bytes) -> list[Any]:
        """Every whole entry in ``data``, back to back (a trailing part entry is ignored)."""
        whole = len(data) - len(data) % self.size
        return [self._make(v) for v in self.layout.iter_unpack(data[:whole])]


def _struct_code(table: str, field: construct.Construct) -> str:
    if isinstance(field, construct.FormatField):
        return str(field.fmtstr[1:])
    if isinstance(field, construct.Bytes) and isinstance(field.length, int):
        return f"{field.length}s"
    raise TypeError(f"{table}: {field!r} has no fixed struct layout")


class TableHeader:
    """A header schema that holds a table of fixed-size entries (a ``construct.Array`` of a
    flat Struct): construct parses the fields before the table, :class:`EntryTable` the
    table, and fields after the table (reserved padding) are not decoded.

    The result reads like the schema's own Container, the table as a tuple of named tuples
    under its field name.  ``tests/fuzz/test_entry_tables.py`` checks it against the whole
    schema on real and random bytes.
    """

    def __init__(
        self, schema: construct.Struct, table: str, entry_name: str, what: str, entry_what: str
    ) -> None:
        names = [sub.name for sub in schema.subcons]
        at = names.index(table)
        array = schema.subcons[at].subcon
        if not isinstance(array, construct.Array) or not isinstance(array.count, int):
            raise TypeError(f"{what}: field {table!r} is not a fixed-size Array")
        self.fields = construct.Struct(*schema.subcons[:at])
        self.table_field = table
        self.table_at = self.fields.sizeof()
        self.table = EntryTable(array.subcon, entry_name, entry_what)
        self.table_end = self.table_at + array.count * self.table.size
        self.size = schema.sizeof()
        self.what = what

    def parse(self, raw: bytes) -> Any:
        """The header in ``raw`` (which may run on); :class:`InvalidImage` when it is short."""
        if len(raw) < self.size:
            raise InvalidImage(f"{self.what}: {len(raw)} of {self.size} bytes")
        header = parse_struct(self.fields, raw[: self.table_at], self.what)
        header[self.table_field] = tuple(self.table.decode_all(raw[self.table_at : self.table_end]))
        return header
