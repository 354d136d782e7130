"""The header path: v3 fields, geometry, extensions, backing file, and their judgements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ... import findings as F
from ...frozen import frozen
from ...source import StreamGap
from ...structs import cstring, parse_struct
from ..base import Context

if TYPE_CHECKING:
    from ..luks import LuksSection

from .codes import (
    BACKING_FILE,
    BAD_BITMAPS,
    BAD_EXTENSION,
    BAD_GEOMETRY,
    BAD_VERSION,
    CORRUPT,
    DATA_FILE,
    DIRTY,
    ENCRYPTED,
    LEGACY_AES,
    UNKNOWN_EXTENSION,
    UNKNOWN_INCOMPATIBLE,
)
from .layout import (
    BITMAPS_EXTENSION,
    COMPRESSION_TYPES,
    ENCRYPTION_POINTER,
    EXT_BACKING_FORMAT,
    EXT_BITMAPS,
    EXT_DATA_FILE,
    EXT_ENCRYPTION,
    EXT_END,
    EXT_FEATURE_TABLE,
    EXTENSION_AREA_LIMIT,
    EXTENSION_HEADERS,
    FEATURE_NAMES,
    HEADER_V3_TAIL,
    INT_MAX,
    MAX_BACKING_FILE_NAME,
    MAX_CLUSTER_BITS,
    MAX_L1_BYTES,
    MAX_REFTABLE_BYTES,
    MAX_SIZE,
    MIN_CLUSTER_BITS,
    MIN_EXTENDED_L2_CLUSTER_BITS,
    V2_HEADER_LENGTH,
    V3_MIN_HEADER_LENGTH,
    Header,
)
from .section import Qcow2Section


@dataclass
class Extensions:
    backing_format: str | None = None
    data_file: str | None = None
    feature_names: dict[tuple[int, int], str] | None = None
    bitmaps: Any = None
    encryption: Any = None


@frozen
class V3Fields:
    incompatible_features: int
    compatible_features: int
    autoclear_features: int
    refcount_order: int
    header_length: int


def v3_fields(ctx: Context, hdr: Header, head: bytes) -> V3Fields | None:
    """The version-3 header fields, or version 2's implied values; None if unusable."""
    if hdr.version == 2:
        return V3Fields(0, 0, 0, 4, V2_HEADER_LENGTH)
    if hdr.version != 3:
        ctx.findings.add(BAD_VERSION, f"qcow2 version {hdr.version}")
        ctx.findings.add(F.QEMU_CANNOT_OPEN, f"Unsupported qcow2 version {hdr.version}")
        return None
    if len(head) < V3_MIN_HEADER_LENGTH:
        ctx.findings.add(F.TRUNCATED, f"qcow2 v3 header cut short: {len(head)} of 104 bytes")
        return None
    tail = parse_struct(
        HEADER_V3_TAIL, head[V2_HEADER_LENGTH:V3_MIN_HEADER_LENGTH], "qcow2 v3 header"
    )
    return V3Fields(
        tail.incompatible_features,
        tail.compatible_features,
        tail.autoclear_features,
        tail.refcount_order,
        tail.header_length,
    )


def check_geometry(ctx: Context, hdr: Header, v3: V3Fields, extended_l2: bool) -> None:
    """Flag every header number qemu would refuse, and tables the file does not hold."""
    bad: list[str] = []
    bits = hdr.cluster_bits
    if not MIN_CLUSTER_BITS <= bits <= MAX_CLUSTER_BITS:
        bad.append(f"cluster_bits {bits} outside {MIN_CLUSTER_BITS}..{MAX_CLUSTER_BITS}")
    elif extended_l2 and bits < MIN_EXTENDED_L2_CLUSTER_BITS:
        bad.append(f"extended L2 entries need cluster_bits >= 14, not {bits}")
    if hdr.version == 3 and (v3.header_length < V3_MIN_HEADER_LENGTH or v3.header_length % 8):
        bad.append(f"header_length {v3.header_length} (must be >= 104 and a multiple of 8)")
    if v3.refcount_order > 6:
        bad.append(f"refcount_order {v3.refcount_order} > 6")
    if hdr.size > MAX_SIZE:
        bad.append(f"virtual size {hdr.size} exceeds 2^63 - 1")
    refusal = _qemu_refusal(hdr, extended_l2)
    if bad:  # the numbers below are meaningless without a sane cluster size
        ctx.findings.add(BAD_GEOMETRY, "; ".join(bad))
        _refuse(ctx, refusal, bad)
        return
    needed_l1 = _l1_entries_needed(hdr.size, bits, extended_l2)
    cluster_size = 1 << bits
    if hdr.l1_size < needed_l1:
        bad.append(f"l1_size {hdr.l1_size} cannot map {hdr.size} bytes (needs {needed_l1})")
    if hdr.l1_size * 8 > MAX_L1_BYTES:
        bad.append(f"l1_size {hdr.l1_size} exceeds qemu's {MAX_L1_BYTES // 8} entries")
    if hdr.refcount_table_clusters * cluster_size > MAX_REFTABLE_BYTES:
        bad.append(f"refcount table of {hdr.refcount_table_clusters} clusters is too large")
    if hdr.refcount_table_clusters == 0:
        bad.append("no refcount table")
    for name in ("l1_table_offset", "refcount_table_offset", "snapshots_offset"):
        value = getattr(hdr, name)
        if value % cluster_size:
            bad.append(f"{name} {value:#x} not aligned to the {cluster_size}-byte cluster")
    refused = list(bad)  # qemu refuses all of the above; it accepts the overlaps below
    if hdr.l1_size and hdr.l1_table_offset < cluster_size:
        bad.append(f"L1 table at {hdr.l1_table_offset:#x} overlaps the header cluster")
    if hdr.refcount_table_offset < cluster_size:
        bad.append(f"refcount table at {hdr.refcount_table_offset:#x} overlaps the header cluster")
    if bad:
        ctx.findings.add(BAD_GEOMETRY, "; ".join(bad))
    _refuse(ctx, refusal, refused)
    _check_in_file(ctx, "L1 table", hdr.l1_table_offset, hdr.l1_size * 8)
    _check_in_file(
        ctx,
        "refcount table",
        hdr.refcount_table_offset,
        hdr.refcount_table_clusters * cluster_size,
    )


def _refuse(ctx: Context, refusal: str | None, problems: list[str]) -> None:
    """``qemu-cannot-open``: qemu's own words where we have them, else the problems."""
    if refusal is None and problems:
        refusal = "qemu refuses the qcow2 header: " + "; ".join(problems)
    if refusal is not None:
        ctx.findings.add(F.QEMU_CANNOT_OPEN, refusal)


def _l1_entries_needed(size: int, cluster_bits: int, extended_l2: bool) -> int:
    """L1 entries that map ``size`` bytes (qemu's ``size_to_l1``)."""
    cluster_size = 1 << cluster_bits
    l2_entries = cluster_size // (16 if extended_l2 else 8)
    return -(-size // (cluster_size * l2_entries))


def _qemu_refusal(hdr: Any, extended_l2: bool) -> str | None:
    """qemu's reason to refuse the image for its cluster size, L1 size or virtual size (the
    first it checks, worded as qemu words it), or None."""
    bits = hdr.cluster_bits
    if not MIN_CLUSTER_BITS <= bits <= MAX_CLUSTER_BITS:
        return f"Unsupported cluster size: 2^{bits}"
    if hdr.l1_size * 8 > MAX_L1_BYTES:
        return f"Active L1 table too large ({hdr.l1_size} entries)"
    needed = _l1_entries_needed(hdr.size, bits, extended_l2)
    if needed > INT_MAX:
        return (
            f"Image is too big (a virtual size of {hdr.size} bytes needs {needed} L1 entries; "
            f"qemu takes at most {INT_MAX})"
        )
    if hdr.l1_size < needed:
        return f"L1 table is too small ({hdr.l1_size} entries, {needed} needed)"
    return None


def _check_in_file(ctx: Context, what: str, offset: int, length: int) -> None:
    if length and offset + length > ctx.source.size:
        ctx.findings.add(
            F.TRUNCATED,
            f"{what} at {offset:#x} ({length} bytes) ends past the image's {ctx.source.size} bytes",
        )


def read_extensions(ctx: Context, hdr: Header, header_length: int, cluster_size: int) -> Extensions:
    """Walk the header extensions; they live between the header and the backing file name."""
    exts = Extensions()
    if not cluster_size:
        return exts
    end = cluster_size
    if hdr.backing_file_offset and hdr.backing_file_offset < end:
        end = hdr.backing_file_offset
    end = min(end, header_length + EXTENSION_AREA_LIMIT)
    if end <= header_length:
        return exts
    # The first cluster is always within a stream's kept head, but be explicit.
    unkept = "qcow2 header extensions not kept from stream"
    area = ctx.read_optional(header_length, end - header_length, unkept)
    if area is None:
        return exts
    pos = 0
    while pos + 8 <= len(area):
        kind, length = EXTENSION_HEADERS.layout.unpack_from(area, pos)
        if kind == EXT_END:
            return exts
        data = area[pos + 8 : pos + 8 + length]
        if len(data) < length:
            ctx.findings.add(
                BAD_EXTENSION,
                f"extension {kind:#010x} at {header_length + pos:#x} claims "
                f"{length} bytes, past the end of the extension area",
            )
            return exts
        _store_extension(ctx, exts, kind, data)
        pos += 8 + ((length + 7) & ~7)
    if len(area) < end - header_length:
        ctx.findings.add(F.TRUNCATED, "qcow2 header extensions run past the end of the file")
    return exts


def _store_extension(ctx: Context, exts: Extensions, kind: int, data: bytes) -> None:
    if kind == EXT_BACKING_FORMAT:
        exts.backing_format = _ext_string(ctx, data, "backing format")
    elif kind == EXT_DATA_FILE:
        exts.data_file = _ext_string(ctx, data, "external data file name")
    elif kind == EXT_FEATURE_TABLE:
        names = exts.feature_names if exts.feature_names is not None else {}
        usable = len(data) - len(data) % FEATURE_NAMES.size
        for kind, bit, name in FEATURE_NAMES.layout.iter_unpack(data[:usable]):
            names[(kind, bit)] = cstring(name)
        exts.feature_names = names
    elif kind == EXT_BITMAPS:
        if len(data) != BITMAPS_EXTENSION.size:
            ctx.findings.add(BAD_BITMAPS, f"bitmaps extension of {len(data)} bytes, not 24")
        else:
            exts.bitmaps = parse_struct(BITMAPS_EXTENSION, data, "bitmaps extension")
    elif kind == EXT_ENCRYPTION:
        if len(data) != ENCRYPTION_POINTER.size:
            ctx.findings.add(BAD_EXTENSION, f"encryption pointer of {len(data)} bytes, not 16")
        else:
            exts.encryption = parse_struct(ENCRYPTION_POINTER, data, "encryption pointer")
    else:
        ctx.findings.add(UNKNOWN_EXTENSION, f"unknown header extension {kind:#010x}")


def _ext_string(ctx: Context, data: bytes, what: str) -> str:
    if b"\0" in data:
        ctx.findings.add(BAD_EXTENSION, f"{what} contains a NUL byte")
    return data.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def read_luks_header(ctx: Context, exts: Extensions, crypt_method: int) -> LuksSection | None:
    """The LUKS header the encryption extension points at (qemu prints it in ``info``)."""
    if crypt_method != 2 or exts.encryption is None:
        return None
    from .. import luks  # only LUKS-encrypted images need the LUKS module

    pointer = exts.encryption
    if pointer.length < luks.HEADER_V1_SIZE:
        ctx.findings.add(BAD_EXTENSION, f"LUKS header area of {pointer.length} bytes")
        return None
    try:
        header = ctx.source.read_at(pointer.offset, luks.HEADER_V1_SIZE)
    except StreamGap:
        ctx.findings.add(F.STREAM_UNCHECKED, "the LUKS header lay outside the kept stream")
        return None
    if len(header) < luks.HEADER_V1_SIZE:
        ctx.findings.add(F.TRUNCATED, f"LUKS header at {pointer.offset:#x} is past the end")
        return None
    if header[:6] != luks.MAGIC:
        ctx.findings.add(BAD_EXTENSION, f"no LUKS header at {pointer.offset:#x}")
        return None
    section, problems = luks.read_luks1(header)
    if problems:
        ctx.findings.add(BAD_EXTENSION, "LUKS header: " + "; ".join(problems))
    return section


def read_backing_file(ctx: Context, hdr: Header, cluster_size: int) -> str | None:
    if not hdr.backing_file_offset:
        return None
    size = hdr.backing_file_size
    problems = []
    if size > MAX_BACKING_FILE_NAME:
        problems.append(f"backing file name of {size} bytes (qemu allows 1023)")
    if cluster_size and hdr.backing_file_offset > cluster_size:
        problems.append(f"backing file name at {hdr.backing_file_offset:#x}, past cluster 0")
    if problems:
        ctx.findings.add(BAD_GEOMETRY, "; ".join(problems))
        size = min(size, MAX_BACKING_FILE_NAME)
    raw = ctx.source.read_at(hdr.backing_file_offset, size) if size else b""
    if len(raw) < size:
        ctx.findings.add(F.TRUNCATED, "the backing file name runs past the end of the file")
    # Reported as written; an empty name still makes qemu look for a backing file.
    return raw.decode("utf-8", errors="replace")


def _compression_type(ctx: Context, version: int, v3: V3Fields, head: bytes) -> str:
    has_bit = bool(v3.incompatible_features & (1 << 3))
    # The compression type byte exists only when the header is longer than 104 bytes.
    has_field = version == 3 and v3.header_length > V3_MIN_HEADER_LENGTH
    code = head[V3_MIN_HEADER_LENGTH] if has_field and len(head) > V3_MIN_HEADER_LENGTH else 0
    name = COMPRESSION_TYPES.get(code)
    if name is None:
        ctx.findings.add(BAD_GEOMETRY, f"unknown compression type {code}")
        ctx.findings.add(F.QEMU_CANNOT_OPEN, f"qcow2: unknown compression type: {code}")
        return f"type-{code}"
    if (code != 0) != has_bit:
        problem = f"compression type {name} disagrees with the compression-type feature bit"
        ctx.findings.add(BAD_GEOMETRY, problem)
        ctx.findings.add(F.QEMU_CANNOT_OPEN, f"qcow2: {problem}")
    return name


def _feature_names(bits: int, names: dict[int, str]) -> tuple[str, ...]:
    found = []
    bits &= (1 << 64) - 1
    while bits:  # only the set bits, lowest first (most fields have none or one)
        bit = (bits & -bits).bit_length() - 1
        found.append(names.get(bit, f"bit-{bit}"))
        bits &= bits - 1
    return tuple(found)


def judge(ctx: Context, section: Qcow2Section, exts: Extensions) -> None:
    """The findings that follow from the decoded header."""
    add = ctx.findings.add
    if section.backing_file is not None:
        fmt = f" (format {section.backing_format})" if section.backing_format else ""
        add(BACKING_FILE, f"backing file {section.backing_file!r}{fmt}")
    has_data_file_bit = "external-data-file" in section.incompatible_features
    if section.data_file is not None or has_data_file_bit:
        name = repr(section.data_file) if section.data_file is not None else "(unnamed)"
        add(DATA_FILE, f"external data file {name}")
    if section.data_file_raw and not has_data_file_bit:
        add(BAD_GEOMETRY, "raw-external-data set without an external data file")
    unknown = [f for f in section.incompatible_features if f.startswith("bit-")]
    if unknown:
        labels = [_label(exts, 0, int(f[4:])) for f in unknown]
        add(UNKNOWN_INCOMPATIBLE, "unknown incompatible features: " + ", ".join(labels))
        add(F.QEMU_CANNOT_OPEN, "Unsupported qcow2 feature(s): " + ", ".join(labels))
    if section.corrupt:
        add(CORRUPT, "the corrupt bit is set")
    if section.dirty:
        add(DIRTY, "the dirty bit is set")
    if section.encryption is not None:
        add(ENCRYPTED, f"encrypted with {section.encryption}")
        if section.encryption == "aes":
            add(LEGACY_AES, "legacy AES-CBC encryption")
        elif section.encryption != "luks":
            add(BAD_GEOMETRY, f"unknown encryption {section.encryption}")
            add(F.QEMU_CANNOT_OPEN, f"Unsupported encryption method {section.encryption}")
    if section.encryption == "luks" and section.encryption_header is None:
        add(BAD_EXTENSION, "LUKS encryption without a LUKS header extension")


def _label(exts: Extensions, kind: int, bit: int) -> str:
    name = (exts.feature_names or {}).get((kind, bit))
    return f"bit-{bit} ({name})" if name else f"bit-{bit}"
