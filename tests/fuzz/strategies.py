"""Structure-aware hypothesis strategies: valid images, then their fields pushed to the edges.

A :class:`Seed` is a small valid image plus the places worth attacking: every integer field
of its headers and tables (found from the format module's own construct schemas, so the
offsets cannot drift from what the parser reads), the byte ranges where its metadata lives,
and a ``fix`` that re-seals checksums after an edit, so that most mutants get past the
checksum gate and reach the code behind it.

The values drawn for a field are the ones that break parsers: 0, 1, all ones, 2^31, 2^63,
quotients that make ``count × entry_size`` overflow 32 or 64 bits, counts in the millions,
and offsets just before, at and past the end of the image, in the units the format counts
in (bytes, sectors, clusters, MiB).  Then the image may be cut short, or spliced with
another format's bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import construct as c
from hypothesis import strategies as st

from imageintrospect.structs import Layout

KIB = 1024
MIB = 1024 * KIB

# --- fields --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One field of one structure at an absolute offset in a seed image."""

    name: str
    offset: int
    size: int
    order: str  # "big", "little", or "bytes" for strings, GUIDs, magics

    @property
    def is_int(self) -> bool:
        return self.order != "bytes"


def _int_order(con: c.Construct) -> str | None:
    """The byte order of an integer construct, or None when it is not an integer."""
    if isinstance(con, c.FormatField):
        if con.fmtstr[-1] in "bBcs?x":
            return "big" if con.fmtstr[-1] in "bB" else None
        return "little" if con.fmtstr[0] == "<" else "big"
    if isinstance(con, c.BytesInteger):
        return "little" if con.swapped else "big"
    return None


def fields_of(schema: c.Construct | Layout, base: int, prefix: str = "") -> list[Field]:
    """Every fixed-size field of a construct ``Struct`` (or of the schema a generated layout
    comes from) at ``base`` (nested structs and arrays unrolled), in layout order; stops at
    the first variable-size member."""
    if isinstance(schema, Layout):
        schema = schema.schema
    out: list[Field] = []
    offset = base
    for sub in schema.subcons:
        inner = sub.subcon if isinstance(sub, c.Renamed) else sub
        name = f"{prefix}{sub.name}" if sub.name else ""
        try:
            size = sub.sizeof()
        except c.SizeofError:
            break
        if isinstance(inner, c.Struct):
            out += fields_of(inner, offset, f"{name}.")
        elif isinstance(inner, c.Array) and isinstance(inner.subcon, c.Struct):
            step = inner.subcon.sizeof()
            for index in range(inner.count):
                out += fields_of(inner.subcon, offset + index * step, f"{name}[{index}].")
        elif name:
            order = _int_order(inner)
            out.append(Field(name, offset, size, order or "bytes"))
        offset += size
    return out


def table_fields(name: str, offset: int, entry_size: int, count: int, order: str) -> list[Field]:
    """The first ``count`` entries of an allocation table (L1/L2, BAT, GD/GT, block map)."""
    return [Field(f"{name}[{i}]", offset + i * entry_size, entry_size, order) for i in range(count)]


def read_field(data: bytes | bytearray, f: Field) -> int:
    raw = bytes(data[f.offset : f.offset + f.size])
    if not f.is_int or len(raw) < f.size:
        return 0
    return int.from_bytes(raw, f.order)  # type: ignore[arg-type]


def write_field(data: bytearray, f: Field, value: int | bytes) -> None:
    """Write ``value`` into ``f`` (integers wrap to the field's width), growing nothing."""
    if f.offset >= len(data):
        return
    if isinstance(value, int):
        raw = (value % (1 << (8 * f.size))).to_bytes(f.size, f.order)  # type: ignore[arg-type]
    else:
        raw = value[: f.size]
    end = min(f.offset + len(raw), len(data))
    data[f.offset : end] = raw[: end - f.offset]


# --- interesting values --------------------------------------------------------------------

#: Divisors whose quotient, multiplied back by the parser, wraps 32 or 64 bits.
ENTRY_SIZES = (2, 4, 8, 16, 24, 32, 40, 48, 128, 512, 4096, 65536, MIB, 2 * MIB)
EDGE_VALUES = sorted(
    {0, 1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65}
    | {0x7F, 0x80, 0xFF, 0x100, 0x1FF, 0x200, 0x201, 0xFFF, 0x1000, 0x1001}
    | {0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x10001, 1 << 20, (1 << 20) + 1, 1 << 21, 1 << 22}
    | {10**6, 10**7, 1 << 24, 1 << 30, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32}
    | {(1 << 32) + 1, 1 << 40, (1 << 53) + 1, 1 << 61, 1 << 62, (1 << 63) - 1, 1 << 63}
    | {(1 << 64) - 1, (1 << 64) - 2, (1 << 64) - 512}
    | {(1 << bits) // size + 1 for bits in (32, 64) for size in ENTRY_SIZES}
    | {(1 << bits) // size for bits in (32, 64) for size in ENTRY_SIZES}
)
#: Units images count offsets and sizes in.
UNITS = (1, 512, 2048, 4096, 64 * KIB, MIB, 2 * MIB)


def near_values(length: int, original: int) -> list[int]:
    """Offsets and sizes just before, at and past the end of an image of ``length`` bytes,
    in every unit; and small moves of the field's own value."""
    out = {original + d for d in (-1, 1, 2, -512, 512)}
    out |= {original * 2, original << 8, original << 32, original >> 1, original ^ (1 << 63)}
    for unit in UNITS:
        at = length // unit
        out |= {at - 1, at, at + 1, at * 2, -(-length // unit)}
    return sorted(v for v in out if v >= 0)


def int_values(f: Field, length: int, original: int) -> st.SearchStrategy[int]:
    top = (1 << (8 * f.size)) - 1
    edges = sorted({v & top for v in EDGE_VALUES} | {top, top >> 1, (top >> 1) + 1})
    near = sorted({v & top for v in near_values(length, original)})
    return st.one_of(
        st.sampled_from(edges),
        st.sampled_from(near),
        st.integers(0, 64).map(lambda bit: (1 << bit) & top if bit < 8 * f.size else 0),
        st.integers(0, top),
    )


#: Strings a name, path or magic field can be pushed to.
HOSTILE_STRINGS = (
    b"",
    b"\0",
    b"/etc/passwd",
    b"../../../../etc/shadow",
    b"/dev/sda",
    b"\\\\?\\C:\\Windows\\System32\\config\\SAM",
    b"file:///etc/passwd",
    b'json:{"driver":"file","filename":"/etc/passwd"}',
    b"nbd://evil.example:10809/x",
    b"%s%s%s%n",
    b"\xff\xfe/\0e\0t\0c\0",
    b"\xc3\x28\xa0\xa1",  # invalid UTF-8
    b"aes",
    b"xts-plain64",
    b"sha256",
    # Hash names hashlib.new() accepts whose objects do not behave like SHA-256's.
    b"shake_128",
    b"shake_256",
    b"blake2b",
    b"sha3_512",
    b"md5-sha1",
    b"SHA256",
)


def bytes_values(f: Field, original: bytes) -> st.SearchStrategy[bytes]:
    size = f.size
    return st.one_of(
        st.sampled_from(HOSTILE_STRINGS).map(lambda s: s[:size].ljust(size, b"\0")),
        st.just(b"\0" * size),
        st.just(b"\xff" * size),
        st.just(b"A" * size),  # no terminating NUL anywhere
        st.binary(min_size=size, max_size=size),
        st.integers(0, max(0, size - 1)).map(
            lambda i: (
                original[:i] + bytes([original[i] ^ 0xFF]) + original[i + 1 :]
                if i < len(original)
                else original
            )
        ),
    )


# --- seeds and mutants ---------------------------------------------------------------------


@dataclass(frozen=True)
class Seed:
    """A valid small image and the places worth attacking in it."""

    name: str
    data: bytes
    fields: tuple[Field, ...]
    #: Re-seal checksums after edits (VHD footer, VHDX CRC-32C, GPT CRC32, LUKS2 SHA, tar).
    fix: Callable[[bytearray], None] | None = None
    #: Byte ranges (offset, length) where metadata lives: targets for blind byte edits.
    hot: tuple[tuple[int, int], ...] = ()
    #: Offsets where cutting the image is most interesting (ends of structures).
    boundaries: tuple[int, ...] = ()

    def __repr__(self) -> str:  # hypothesis prints drawn seeds: keep it short
        return f"Seed({self.name!r}, {len(self.data)} bytes)"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


@dataclass
class Mutant:
    """What a mutation strategy drew; ``data`` is the input under test."""

    seed: str
    data: bytes
    edits: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"Mutant({self.seed!r}, {len(self.data)} bytes, edits={self.edits})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


@st.composite
def field_edit(draw: st.DrawFn, seed: Seed, data: bytearray) -> str:
    f = draw(st.sampled_from(seed.fields))
    if f.is_int:
        value: int | bytes = draw(int_values(f, len(data), read_field(data, f)))
    else:
        value = draw(bytes_values(f, bytes(data[f.offset : f.offset + f.size])))
    write_field(data, f, value)
    shown = hex(value) if isinstance(value, int) else repr(value[:16])
    return f"{f.name}@{f.offset:#x}={shown}"


@st.composite
def byte_edit(draw: st.DrawFn, seed: Seed, data: bytearray) -> str:
    regions = seed.hot or ((0, min(len(data), 4096)),)
    start, length = draw(st.sampled_from(regions))
    offset = draw(st.integers(start, max(start, start + length - 1)))
    width = draw(st.sampled_from((1, 1, 2, 4, 8)))
    value = draw(st.binary(min_size=width, max_size=width))
    data[offset : offset + width] = value
    del data[len(seed.data) :]  # an edit near the end must not grow the image
    return f"bytes@{offset:#x}={value.hex()}"


@st.composite
def cut(draw: st.DrawFn, seed: Seed, data: bytearray) -> str:
    """Shorten the image: at the end of a structure (±1), a sector edge, or anywhere."""
    length = len(data)
    points = [b + d for b in seed.boundaries for d in (-1, 0, 1)] + [length - 1, length - 512]
    points = [p for p in points if 0 <= p < length] or [0]
    at = draw(
        st.one_of(
            st.sampled_from(points),
            st.integers(0, max(0, length - 1)).map(lambda x: x - x % 512),
            st.integers(0, max(0, length - 1)),
        )
    )
    del data[at:]
    return f"cut@{at:#x}"


@st.composite
def mutants(draw: st.DrawFn, seeds: Sequence[Seed], *, max_edits: int = 4) -> Mutant:
    """A seed with 1..``max_edits`` field or byte edits, usually re-sealed, sometimes cut."""
    seed = draw(st.sampled_from(seeds))
    data = bytearray(seed.data)
    edits = []
    for _ in range(draw(st.integers(1, max_edits))):
        if seed.fields and draw(st.integers(0, 3)) > 0:
            edits.append(draw(field_edit(seed, data)))
        else:
            edits.append(draw(byte_edit(seed, data)))
    if seed.fix is not None and draw(st.integers(0, 3)) > 0:
        seed.fix(data)
        edits.append("fix")
    if draw(st.integers(0, 4)) == 0:
        edits.append(draw(cut(seed, data)))
    return Mutant(seed.name, bytes(data), edits)


@st.composite
def pristine_or_cut(draw: st.DrawFn, seeds: Sequence[Seed]) -> Mutant:
    """A seed as made, or only cut short: truncation alone must be handled everywhere."""
    seed = draw(st.sampled_from(seeds))
    data = bytearray(seed.data)
    edits = [] if draw(st.booleans()) else [draw(cut(seed, data))]
    return Mutant(seed.name, bytes(data), edits)


# --- splices -------------------------------------------------------------------------------

SECTOR = 512


def vhd_footer(size: int) -> bytes:
    """A valid fixed-VHD footer for ``size`` bytes of data (checksum sealed)."""
    footer = bytearray(512)
    struct.pack_into(
        ">8sIIQI4sI4sQQHBBI",
        footer,
        0,
        b"conectix",
        2,
        0x00010000,
        0xFFFFFFFFFFFFFFFF,
        0,
        b"qemu",
        0x00050003,
        b"Wi2k",
        size,
        size,
        1024,
        16,
        63,
        2,
    )
    seal_vhd_footer(footer, 0)
    return bytes(footer)


def seal_vhd_footer(data: bytearray, at: int) -> None:
    """Recompute the one's-complement checksum of a VHD footer (or dynamic header) at ``at``
    whose checksum field is at ``at + 64``."""
    _seal_ones_complement(data, at, 512, 64)


def _seal_ones_complement(data: bytearray, at: int, length: int, field_at: int) -> None:
    if at < 0 or at + length > len(data):
        return
    data[at + field_at : at + field_at + 4] = bytes(4)
    checksum = ~sum(data[at : at + length]) & 0xFFFFFFFF
    data[at + field_at : at + field_at + 4] = checksum.to_bytes(4, "big")


def seal_vhd_dynamic_header(data: bytearray, at: int) -> None:
    _seal_ones_complement(data, at, 1024, 36)


@st.composite
def splices(draw: st.DrawFn, left: Sequence[Seed], right: Sequence[Seed]) -> Mutant:
    """Two formats in one file: heads and tails joined, a header planted inside another
    image (at 0, 0x8000 where an ISO's descriptors sit, or anywhere sector-aligned), or a
    VHD footer appended to something else."""
    a = draw(st.sampled_from(left))
    b = draw(st.sampled_from(right))
    how = draw(st.sampled_from(("head+tail", "plant", "plant-iso", "append-vhd", "append")))
    if how == "head+tail":
        head = draw(st.integers(0, len(a.data)))
        tail = draw(st.integers(0, len(b.data)))
        data = a.data[:head] + b.data[len(b.data) - tail :]
        note = f"{a.name}[:{head:#x}] + {b.name}[-{tail:#x}:]"
    elif how in ("plant", "plant-iso"):
        width = draw(st.sampled_from((512, 4096, 65536)))
        if how == "plant-iso":
            at = 0x8000
        else:
            at = draw(st.integers(0, max(0, len(b.data) // SECTOR))) * SECTOR
        body = bytearray(b.data.ljust(at + width, b"\0"))
        body[at : at + width] = a.data[:width].ljust(width, b"\0")
        data = bytes(body)
        note = f"{a.name}[:{width:#x}] planted at {at:#x} of {b.name}"
    elif how == "append-vhd":
        data = a.data + vhd_footer(len(a.data))
        note = f"{a.name} + fixed VHD footer"
    else:
        data = a.data + b.data
        note = f"{a.name} + {b.name}"
    return Mutant(f"{a.name}|{b.name}", data, [note])


# --- text and JSON documents ---------------------------------------------------------------

#: Values a key = value line (VMDK descriptor) or an attribute can be pushed to.
HOSTILE_TEXT = (
    "",
    '"',
    '""',
    "-1",
    "0",
    "0x7fffffff",
    "ffffffff",
    "18446744073709551615",
    "18446744073709551616",
    "9" * 400,
    "9" * 5000,  # past int()'s 4300-digit limit: int() raises ValueError
    "1e308",
    "NaN",
    "/etc/passwd",
    "../../../../etc/shadow",
    "\\\\server\\share\\disk.vmdk",
    "/dev/sda",
    "http://169.254.169.254/latest/meta-data/",
    "\x00",
    "\ufeff",
    "\u202e",
    "A" * 5000,
    "monolithicSparse",
    "streamOptimized",
    "vmfsRawDeviceMap",
    "custom",
    "twoGbMaxExtentFlat",
    "windows-1252",
    "UTF-16",
    "ide",
    "lsilogicsas",
)


@st.composite
def extent_lines(draw: st.DrawFn) -> str:
    """A VMDK extent line with hostile parts: access, size, type, file name, offset."""
    access = draw(st.sampled_from(("RW", "RDONLY", "NOACCESS", "rw", "XX", "")))
    sectors = draw(
        st.one_of(
            st.sampled_from(("0", "1", "-1", "18446744073709551616", "9" * 40, "0x10", "")),
            st.integers(0, 1 << 64).map(str),
        )
    )
    kind = draw(
        st.sampled_from(
            (
                *("FLAT", "SPARSE", "ZERO", "VMFS", "VMFSSPARSE", "VMFSRDM", "VMFSRAW"),
                *("SESPARSE", "flat", "BOGUS", ""),
            )
        )
    )
    name = draw(st.sampled_from((*HOSTILE_TEXT[10:17], "disk-flat.vmdk", "disk s001.vmdk")))
    offset = draw(st.sampled_from(("", " 0", " -5", " 18446744073709551615", " 1" + "0" * 30)))
    quote = draw(st.sampled_from(('"', "", "'")))
    return f"{access} {sectors} {kind} {quote}{name}{quote}{offset}\n"


@st.composite
def text_edits(draw: st.DrawFn, text: str, *, max_edits: int = 4) -> str:
    """Line-level edits of a ``key = value`` document (a VMDK descriptor): values pushed to
    hostile ones, duplicated and deleted keys, extra extent lines, binary junk, floods."""
    lines = text.splitlines(keepends=True) or ["\n"]
    for _ in range(draw(st.integers(1, max_edits))):
        op = draw(
            st.sampled_from(("value", "value", "dup", "delete", "extent", "key", "junk", "flood"))
        )
        index = draw(st.integers(0, len(lines) - 1))
        line = lines[index]
        if op == "value" and "=" in line:
            key = line.split("=", 1)[0]
            value = draw(st.sampled_from(HOSTILE_TEXT))
            quote = draw(st.sampled_from(("", '"')))
            lines[index] = f"{key}={quote}{value}{quote}\n"
        elif op == "dup":
            lines.insert(index, line)
        elif op == "delete" and len(lines) > 1:
            del lines[index]
        elif op == "extent":
            lines.insert(index, draw(extent_lines()))
        elif op == "key":
            key = draw(
                st.sampled_from(
                    (
                        *("createType", "parentFileNameHint", "CID", "parentCID", "version"),
                        *("encoding", "ddb.adapterType", "ddb.geometry.cylinders", "ddb.uuid"),
                    )
                )
            )
            lines.insert(index, f"{key} = {draw(st.sampled_from(HOSTILE_TEXT))}\n")
        elif op == "junk":
            lines.insert(index, draw(st.binary(max_size=64)).decode("latin-1"))
        else:  # flood: many lines or one very long line
            count = draw(st.sampled_from((1000, 20000)))
            filler = draw(st.sampled_from(("#\n", "\n", "a=b\n", 'RW 1 FLAT "x"\n', "x" * 80)))
            lines.insert(index, filler * count)
    return "".join(lines)


#: JSON values a field of a JSON document (LUKS2 metadata) can be replaced by.
HOSTILE_JSON = st.one_of(
    st.sampled_from(
        (
            *(None, True, False, 0, -1, 1 << 31, 1 << 63, 1 << 64, 10**30, 1.5, "", "-1", "0"),
            *("18446744073709551616", "1e9", "0x1000", "dynamic", " 4096", "4096 ", "４０９６"),
            *("../../etc/passwd", "aes-xts-plain64", "cipher_null-ecb", "argon2id", "sha256"),
        )
    ),
    st.builds(list),  # a fresh object each time: edits must never create cycles
    st.builds(dict),
    st.integers(-(1 << 70), 1 << 70),
    st.text(max_size=12),
    st.integers(0, 1 << 64).map(str),
)


def _containers(doc: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Paths of every dict and list inside ``doc``."""
    out: list[tuple[object, ...]] = []
    if isinstance(doc, dict):
        out.append(path)
        for key, value in doc.items():
            out += _containers(value, (*path, key))
    elif isinstance(doc, list):
        out.append(path)
        for index, value in enumerate(doc):
            out += _containers(value, (*path, index))
    return out


def _at(doc: Any, path: tuple[object, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


@st.composite
def json_edits(draw: st.DrawFn, doc: dict[str, Any], *, max_edits: int = 4) -> Any:
    """Edits of a JSON document: a value replaced by a hostile one, a key deleted or added,
    a member turned into a deep nest or a long list."""
    import copy

    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, max_edits))):
        path = draw(st.sampled_from(_containers(doc)))
        box = _at(doc, path)
        keys = list(box.keys()) if isinstance(box, dict) else list(range(len(box)))
        op = draw(st.sampled_from(("replace", "replace", "delete", "add", "nest", "many")))
        if not keys and op in ("replace", "delete"):
            op = "add"
        if op == "replace":
            box[draw(st.sampled_from(keys))] = draw(HOSTILE_JSON)
        elif op == "delete":
            del box[draw(st.sampled_from(keys))]
        elif op == "add":
            value = draw(HOSTILE_JSON)
            if isinstance(box, dict):
                box[draw(st.sampled_from(("0", "1", "7", "31", "-1", "x", "99999999999")))] = value
            else:
                box.append(value)
        elif op == "nest":
            # A placeholder that json_text() expands into a nest deeper than json.dumps (or
            # a recursive parser) can go.
            depth = draw(st.sampled_from((50, 1000, 100_000)))
            target = draw(st.sampled_from(keys)) if keys else None
            if target is not None:
                box[target] = f"{NEST}{depth}"
        else:
            count = draw(st.sampled_from((100, 10000)))
            item = _at(doc, path)
            if keys:
                key = draw(st.sampled_from(keys))
                box[key] = [item[key] if not isinstance(item[key], (dict, list)) else 0] * count
    return doc


NEST = "\x00nest:"


def json_text(doc: Any) -> bytes:
    """``doc`` as JSON, with each nest placeholder expanded to ``[[[...0...]]]``."""
    import json
    import re

    text = json.dumps(doc)

    def expand(match: re.Match[str]) -> str:
        depth = int(match.group(1))
        return "[" * depth + "0" + "]" * depth

    return re.sub(r'"\\u0000nest:(\d+)"', expand, text).encode()
