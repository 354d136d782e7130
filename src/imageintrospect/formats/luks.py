"""LUKS (Linux Unified Key Setup) containers, versions 1 and 2.

Layouts: the LUKS1 on-disk format specification (big-endian, a 592-byte header with eight
48-byte key slots) and the LUKS2 specification (a 4 KiB big-endian binary header followed by
a JSON area; ``hdr_size`` covers both).  The guest data (the "payload") is encrypted, so all
that can be told is how it is encrypted, where the payload starts, and whether the header is
sound.  ``virtual_size`` is the payload's size, as qemu reports it: never the bytes read.

:func:`luks1_qemu_encrypt_info` turns a LUKS1 header into what ``qemu-img info`` prints for
it; the qcow2 module uses it for the LUKS header that a LUKS-encrypted qcow2 carries.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, NamedTuple

from .. import _layouts
from .. import findings as F
from ..errors import InvalidImage
from ..findings import Findings
from ..frozen import frozen
from ..source import StreamGap
from ..structs import Record, TableHeader, cstring
from .base import Context, FormatSpec, Parsed, Probe, Section

NAME = "luks"
MAGIC = b"LUKS\xba\xbe"
SECTOR_SIZE = 512

# --- schemas -------------------------------------------------------------------------------

# The layouts, derived from the construct schemas in formats/schemas/luks.py by
# scripts/gen_layouts.py (edit the schema, then run it): no construct on this path.
KEY_SLOT_V1 = _layouts.LUKS_KEY_SLOT_V1
HEADER_V1 = _layouts.LUKS_HEADER_V1
HEADER_V2 = _layouts.LUKS_HEADER_V2
HEADER_V1_SIZE = HEADER_V1.size
# The eight key slots are a table at the header's end (structs.TableHeader).
HEADER_V1_PARSER = TableHeader(HEADER_V1, "key_slots", "LUKS1 header", "LUKS1 key slot")
KEY_SLOT_TABLE = HEADER_V1_PARSER.table


class HeaderV2(NamedTuple):
    """The LUKS2 binary header as the parser uses it."""

    version: int
    header_size: int
    label: bytes
    checksum_alg: bytes
    uuid: bytes
    subsystem: bytes
    header_offset: int
    checksum: bytes


HEADER_V2_RECORD = Record(HEADER_V2, HeaderV2, "LUKS2 header")
BINARY_HEADER_V2 = 4096
CHECKSUM_FIELD = slice(448, 512)
# cryptsetup's allowed hdr_size values: 16 KiB .. 4 MiB, powers of two.
V2_HEADER_SIZES = frozenset(16384 << n for n in range(9))
#: The secondary LUKS2 header's magic; it sits at ``hdr_size``, one of V2_HEADER_SIZES.
SECONDARY_MAGIC = b"SKUL\xba\xbe"
SECONDARY_OFFSETS = tuple(sorted(V2_HEADER_SIZES))
# How much of a LUKS2 header we read: all of it when deep, a header budget otherwise.
V2_READ_LIMIT = {True: 4 * 1024 * 1024, False: 512 * 1024}

#: The most LUKS2 JSON metadata text that is parsed (the area itself may be 4 MiB).
MAX_JSON_TEXT = 256 * 1024

SLOT_ACTIVE = 0x00AC71F3
SLOT_INACTIVE = 0x0000DEAD
V1_KEY_SLOTS = 8
V1_STRIPES = 4000
# Key material starts after the first 4 KiB and is aligned to it (qemu's layout rules).
V1_KEY_SLOT_OFFSET = 4096 // SECTOR_SIZE

# What qemu 7.2 can decode (crypto/block-luks.c): cipher name → key sizes it accepts.
QEMU_CIPHERS = {
    "aes": {16: "aes-128", 24: "aes-192", 32: "aes-256"},
    "cast5": {16: "cast5-128"},
    "serpent": {16: "serpent-128", 24: "serpent-192", 32: "serpent-256"},
    "twofish": {16: "twofish-128", 24: "twofish-192", 32: "twofish-256"},
    "sm4": {16: "sm4"},
}
QEMU_MODES = ("ecb", "cbc", "xts", "ctr")
QEMU_IVGENS = ("plain", "plain64", "essiv")
QEMU_HASHES = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512", "ripemd160")

# --- findings ------------------------------------------------------------------------------

ENCRYPTED = F.define(
    "luks-encrypted",
    "warning",
    "luks",
    "A LUKS container: the disk's data is encrypted and cannot be inspected without a key.",
)
BAD_VERSION = F.define(
    "luks-unsupported-version", "unsafe", "luks", "The LUKS header version is neither 1 nor 2."
)
BAD_HEADER = F.define(
    "luks-bad-header",
    "unsafe",
    "luks",
    "A LUKS header field is impossible: key slots overlapping, bad offsets, malformed JSON.",
)
BAD_CHECKSUM = F.define(
    "luks-bad-checksum",
    "unsafe",
    "luks",
    "The LUKS2 header checksum does not match: cryptsetup would ignore this header.",
)
NO_KEY_SLOT = F.define(
    "luks-no-active-key-slot",
    "warning",
    "luks",
    "No key slot is active: no passphrase or key file can ever open the container.",
)
QEMU_UNSUPPORTED = F.define(
    "luks-qemu-unsupported",
    "warning",
    "luks",
    "qemu cannot open this container (LUKS2, or a cipher, mode or hash it does not know).",
)
PRIMARY_INVALID = F.define(
    "luks-primary-header-invalid",
    "unsafe",
    "luks",
    "The LUKS2 primary header is missing or invalid and the secondary is valid: cryptsetup "
    "recovers the container from the secondary (and rewrites the primary, even when only "
    "asked whether it is LUKS), while other readers see no LUKS header. Described from the "
    "secondary.",
)
METADATA_NOT_READ = F.define(
    "luks-metadata-not-read",
    "info",
    "luks",
    "Header-only mode: a LUKS2 JSON area larger than the header budget was not read.",
)

# --- the section ---------------------------------------------------------------------------


@frozen
class LuksKeySlot(Section):
    """One key slot.  Offsets and sizes in bytes; ``state`` is LUKS1's raw state word."""

    index: int
    active: bool
    iterations: int | None
    key_offset: int
    key_area_size: int | None
    stripes: int | None
    kdf: str | None
    key_size: int | None
    state: int | None


@frozen
class LuksSection(Section):
    """A LUKS header.  ``active_key_slots`` holds the indexes of the active slots."""

    version: int
    cipher: str | None
    mode: str | None
    hash: str | None
    uuid: str
    payload_offset: int | None
    payload_size: int | None
    active_key_slots: tuple[int, ...]
    key_bytes: int | None
    slots: tuple[LuksKeySlot, ...]
    master_key_iterations: int | None
    sector_size: int | None
    header_size: int
    label: str | None = None
    subsystem: str | None = None
    checksum_valid: bool | None = None
    requirements: tuple[str, ...] = ()


# --- probe ---------------------------------------------------------------------------------


def probe(probe: Probe) -> bool:
    """The primary header's magic, or a LUKS2 secondary header within the probed head where
    the primary should be (cryptsetup opens that container, recovering the primary)."""
    return probe.head[:6] == MAGIC or _secondary_in_head(probe.head) is not None


def _secondary_in_head(head: bytes) -> int | None:
    for offset in SECONDARY_OFFSETS:
        if len(head) < offset + 8:
            break
        if (
            head[offset : offset + 6] == SECONDARY_MAGIC
            and head[offset + 6 : offset + 8] == b"\0\2"
        ):
            return offset
    return None


# --- parse ---------------------------------------------------------------------------------


def parse(ctx: Context) -> Parsed:
    head = ctx.source.read_at(0, BINARY_HEADER_V2)
    if len(head) < 8:
        ctx.findings.add(F.TRUNCATED, f"LUKS header cut short: {len(head)} bytes")
        return Parsed(virtual_size=None, section=None)
    if head[:6] != MAGIC:
        section = _parse_secondary(ctx)
        if section is None:
            return Parsed(virtual_size=None, section=None)
        _judge(ctx, section)
        return Parsed(virtual_size=section.payload_size, section=section)
    version = int.from_bytes(head[6:8], "big")
    if version == 1:
        section = _parse_v1(ctx, head)
    elif version == 2:
        section = _parse_v2(ctx, head)
    else:
        ctx.findings.add(BAD_VERSION, f"LUKS version {version}")
        return Parsed(virtual_size=None, section=None)
    if section is None:
        return Parsed(virtual_size=None, section=None)
    _judge(ctx, section)
    return Parsed(virtual_size=section.payload_size, section=section)


def _judge(ctx: Context, section: LuksSection) -> None:
    how = ""
    if section.cipher is not None:
        how = f", {section.cipher}-{section.mode}"
        if section.key_bytes:
            how += f" with a {section.key_bytes * 8}-bit key"
    ctx.findings.add(ENCRYPTED, f"LUKS{section.version} container{how}")
    if not section.active_key_slots:
        ctx.findings.add(NO_KEY_SLOT, "no key slot is active")
    if section.payload_offset is not None and section.payload_offset > ctx.source.size:
        ctx.findings.add(
            F.TRUNCATED,
            f"the encrypted payload starts at {section.payload_offset}, past the image's "
            f"{ctx.source.size} bytes",
        )
    if section.version == 2:
        ctx.findings.add(QEMU_UNSUPPORTED, "qemu reads LUKS2 as raw")
    else:
        unsupported = qemu_unsupported(section)
        if unsupported:
            ctx.findings.add(QEMU_UNSUPPORTED, "; ".join(unsupported))


# --- LUKS1 -----------------------------------------------------------------------------------


def _parse_v1(ctx: Context, head: bytes) -> LuksSection | None:
    if len(head) < HEADER_V1_SIZE:
        ctx.findings.add(
            F.TRUNCATED, f"LUKS1 header cut short: {len(head)} of {HEADER_V1_SIZE} bytes"
        )
        return None
    section, problems = read_luks1(head, ctx.source.size)
    if problems:
        ctx.findings.add(BAD_HEADER, "; ".join(problems))
    # qemu opens LUKS1 itself: it refuses every header problem above (they are its checks
    # and cryptsetup's), the algorithms it does not implement, and a payload past the end.
    refusals = problems + qemu_unsupported(section)
    if section.payload_offset is not None and section.payload_offset > ctx.source.size:
        refusals.append(f"the payload starts at {section.payload_offset}, past the end")
    if refusals:
        ctx.findings.add(
            F.QEMU_CANNOT_OPEN, "qemu refuses the LUKS1 header: " + "; ".join(refusals)
        )
    return section


def _parse_luks1_header(header: bytes) -> Any:
    """The parsed 592-byte header (``header`` may run on)."""
    hdr = HEADER_V1_PARSER.parse(header)
    if hdr.version != 1:
        raise InvalidImage(f"LUKS header version {hdr.version}, not 1")
    return hdr


def read_luks1(header: bytes, image_size: int | None = None) -> tuple[LuksSection, list[str]]:
    """The section for a LUKS1 header and what makes it unusable, from one parse.

    :param header: at least the header's first 592 bytes.
    :param image_size: the container's size, for ``payload_size``; None when the header is
        embedded in another format (qcow2), where the payload is elsewhere.
    :raises InvalidImage: not a LUKS1 header at all.
    """
    hdr = _parse_luks1_header(header)
    return _v1_section(hdr, image_size), _v1_problems(hdr)


def decode_luks1(header: bytes, image_size: int | None = None) -> LuksSection:
    """The section for a LUKS1 header (see :func:`read_luks1`)."""
    return _v1_section(_parse_luks1_header(header), image_size)


def _v1_section(hdr: Any, image_size: int | None) -> LuksSection:
    slots = tuple(_v1_slot(index, slot, hdr.key_bytes) for index, slot in enumerate(hdr.key_slots))
    payload_offset = hdr.payload_offset * SECTOR_SIZE
    payload_size = None
    if image_size is not None and payload_offset <= image_size:
        payload_size = image_size - payload_offset
    return LuksSection(
        version=1,
        cipher=cstring(hdr.cipher_name),
        mode=cstring(hdr.cipher_mode),
        hash=cstring(hdr.hash_spec),
        uuid=cstring(hdr.uuid),
        payload_offset=payload_offset,
        payload_size=payload_size,
        active_key_slots=tuple(s.index for s in slots if s.active),
        key_bytes=hdr.key_bytes,
        slots=slots,
        master_key_iterations=hdr.mk_digest_iterations,
        sector_size=SECTOR_SIZE,
        header_size=HEADER_V1_SIZE,
    )


def _v1_slot(index: int, slot: Any, key_bytes: int) -> LuksKeySlot:
    return LuksKeySlot(
        index=index,
        active=slot.state == SLOT_ACTIVE,
        iterations=slot.iterations,
        key_offset=slot.key_material_offset * SECTOR_SIZE,
        key_area_size=_split_key_sectors(key_bytes, slot.stripes) * SECTOR_SIZE,
        stripes=slot.stripes,
        kdf="pbkdf2",
        key_size=key_bytes,
        state=slot.state,
    )


def _split_key_sectors(key_bytes: int, stripes: int) -> int:
    """Sectors a slot's anti-forensic key material takes, rounded up to 4 KiB as qemu does."""
    sectors = -(-key_bytes * stripes // SECTOR_SIZE)
    return -(-sectors // V1_KEY_SLOT_OFFSET) * V1_KEY_SLOT_OFFSET


def _v1_problems(hdr: Any) -> list[str]:
    """What makes a LUKS1 header unusable: qemu's and cryptsetup's consistency checks."""
    bad: list[str] = []
    for name in ("cipher_name", "cipher_mode", "hash_spec"):
        if b"\0" not in getattr(hdr, name):
            bad.append(f"{name} is not NUL-terminated")
    if hdr.key_bytes == 0:
        bad.append("master key of 0 bytes")
    if hdr.payload_offset < V1_KEY_SLOT_OFFSET:
        bad.append(f"payload at sector {hdr.payload_offset} overlaps the header")
    if hdr.mk_digest_iterations == 0:
        bad.append("master key digest iteration count is 0")
    for index, slot in enumerate(hdr.key_slots):
        bad += _v1_slot_problems(index, slot, hdr)
    return bad


def _v1_slot_problems(index: int, slot: Any, hdr: Any) -> list[str]:
    bad: list[str] = []
    if slot.state not in (SLOT_ACTIVE, SLOT_INACTIVE):
        bad.append(f"key slot {index} state {slot.state:#010x} is neither active nor inactive")
    if slot.stripes != V1_STRIPES:
        bad.append(f"key slot {index} has {slot.stripes} stripes, not {V1_STRIPES}")
        return bad  # its extent is meaningless
    if slot.state == SLOT_ACTIVE and slot.iterations == 0:
        bad.append(f"key slot {index} iteration count is 0")
    start = slot.key_material_offset
    end = start + _split_key_sectors(hdr.key_bytes, slot.stripes)
    if start < V1_KEY_SLOT_OFFSET:
        bad.append(f"key slot {index} at sector {start} overlaps the header")
    if end > hdr.payload_offset:
        bad.append(f"key slot {index} (sectors {start}..{end}) overlaps the payload")
    for other in range(index + 1, V1_KEY_SLOTS):
        slot2 = hdr.key_slots[other]
        if slot2.stripes != V1_STRIPES:
            continue
        start2 = slot2.key_material_offset
        end2 = start2 + _split_key_sectors(hdr.key_bytes, slot2.stripes)
        if start < end2 and start2 < end:
            bad.append(f"key slots {index} and {other} overlap")
    return bad


# --- LUKS2 -----------------------------------------------------------------------------------


class _BadJson(Exception):
    """The LUKS2 JSON area does not have the shape the specification gives it."""


def _parse_secondary(ctx: Context) -> LuksSection | None:
    """No primary header: the first valid secondary, as cryptsetup looks for it."""
    for offset in SECONDARY_OFFSETS:
        if offset + BINARY_HEADER_V2 > ctx.source.size:
            break
        section = _secondary_at(ctx, offset)
        if section is not None:
            ctx.findings.add(
                PRIMARY_INVALID,
                f"no LUKS header at offset 0, a valid secondary LUKS2 header at {offset}: "
                "cryptsetup opens (and repairs) the container from it",
            )
            return section
    ctx.findings.add(BAD_HEADER, "no LUKS header at offset 0 and no valid secondary header")
    return None


def _secondary_at(ctx: Context, offset: int) -> LuksSection | None:
    """The container as the secondary header at ``offset`` describes it, if that header is
    valid (magic, version 2, its own offset and size, checksum); its findings are kept only
    then."""
    try:
        head = ctx.source.read_at(offset, BINARY_HEADER_V2)
    except StreamGap:
        return None
    if head[:6] != SECONDARY_MAGIC or head[6:8] != b"\0\2" or len(head) < BINARY_HEADER_V2:
        return None
    hdr = HEADER_V2_RECORD.parse((MAGIC + head[6:])[: HEADER_V2_RECORD.size])
    if hdr.header_offset != offset or hdr.header_size != offset:
        return None
    scratch = Context(source=ctx.source, findings=Findings(), deep=ctx.deep)
    section = _parse_v2(scratch, MAGIC + head[6:], offset)
    if section is None or section.checksum_valid is not True:
        return None
    ctx.findings.extend(scratch.findings.freeze())
    return section


def _parse_v2(ctx: Context, head: bytes, offset: int = 0) -> LuksSection | None:
    """The LUKS2 container as the header copy at ``offset`` (0: the primary) describes it."""
    if len(head) < BINARY_HEADER_V2:
        ctx.findings.add(
            F.TRUNCATED, f"LUKS2 header cut short: {len(head)} of {BINARY_HEADER_V2} bytes"
        )
        return None
    hdr = HEADER_V2_RECORD.parse(head[: HEADER_V2_RECORD.size])
    bad: list[str] = []
    if hdr.header_size not in V2_HEADER_SIZES:
        bad.append(f"header size {hdr.header_size} is not a power of two in 16 KiB..4 MiB")
    if hdr.header_offset != offset:
        bad.append(f"the header at {offset} claims offset {hdr.header_offset}")
    area, checksum_valid = _read_v2_area(ctx, hdr, bad, offset)
    if checksum_valid is False and offset == 0:
        backup = _secondary_at(ctx, hdr.header_size) if hdr.header_size in V2_HEADER_SIZES else None
        alg = cstring(hdr.checksum_alg)
        if backup is not None:
            ctx.findings.add(
                BAD_CHECKSUM,
                f"the primary header's {alg} checksum does not match; described from the "
                f"valid secondary header at {hdr.header_size}, which cryptsetup uses",
            )
            return backup
        ctx.findings.add(BAD_CHECKSUM, f"the primary header's {alg} checksum does not match")
    metadata: dict[str, Any] = {}
    if area is not None:
        try:
            metadata = _load_json(area)
        except _BadJson as exc:
            bad.append(f"JSON area: {exc}")
    try:
        section = _v2_section(ctx, hdr, metadata, checksum_valid, bad)
    except _BadJson as exc:
        bad.append(f"JSON area: {exc}")
        section = _v2_section(ctx, hdr, {}, checksum_valid, bad)
    bad += _v2_layout_problems(section)
    if bad:
        ctx.findings.add(BAD_HEADER, "; ".join(bad))
    return section


def _v2_layout_problems(section: LuksSection) -> list[str]:
    """Key material and payload must lie after both header copies, and not overlap."""
    if section.payload_offset is None or section.header_size not in V2_HEADER_SIZES:
        return []
    headers_end = 2 * section.header_size  # the primary and the secondary header
    bad: list[str] = []
    if section.payload_offset < headers_end:
        bad.append(f"payload at {section.payload_offset} overlaps the headers")
    for slot in section.slots:
        end = slot.key_offset + (slot.key_area_size or 0)
        if slot.key_offset < headers_end or end > section.payload_offset:
            bad.append(
                f"key slot {slot.index} area {slot.key_offset}..{end} is outside "
                f"{headers_end}..{section.payload_offset}"
            )
    return bad


def _read_v2_area(
    ctx: Context, hdr: HeaderV2, bad: list[str], offset: int = 0
) -> tuple[bytes | None, bool | None]:
    """The whole header copy at ``offset`` (binary + JSON) if we may read it, and whether its
    checksum holds."""
    if hdr.header_size not in V2_HEADER_SIZES:
        return None, None
    if hdr.header_size > V2_READ_LIMIT[ctx.deep]:
        ctx.findings.add(
            METADATA_NOT_READ, f"LUKS2 header of {hdr.header_size} bytes not read without deep"
        )
        return None, None
    try:
        whole = ctx.source.read_at(offset, hdr.header_size)
    except StreamGap:
        ctx.findings.add(F.STREAM_UNCHECKED, "the LUKS2 JSON area lay outside the kept stream")
        return None, None
    if len(whole) < hdr.header_size:
        ctx.findings.add(F.TRUNCATED, f"the LUKS2 header of {hdr.header_size} bytes is cut short")
        return None, None
    return whole[BINARY_HEADER_V2:], _checksum_valid(hdr, whole, bad)


def _checksum_valid(hdr: HeaderV2, whole: bytes, bad: list[str]) -> bool | None:
    alg = cstring(hdr.checksum_alg)
    try:
        digest = hashlib.new(alg)
    except (ValueError, TypeError):
        bad.append(f"unknown checksum algorithm {alg!r}")
        return None
    if digest.digest_size == 0:  # shake_*: no fixed length, and no LUKS2 writer uses one
        bad.append(f"checksum algorithm {alg!r} has no fixed digest length")
        return None
    zeroed = bytearray(whole)
    zeroed[CHECKSUM_FIELD] = bytes(64)
    digest.update(zeroed)
    value = digest.digest()
    return bool(hdr.checksum[: len(value)] == value)


def _load_json(area: bytes) -> dict[str, Any]:
    text = area.split(b"\0", 1)[0]
    if len(text) > MAX_JSON_TEXT:
        # json.loads of dense JSON costs ~25x its size in objects: 4 MiB of "[]," would take
        # ~100 MiB.  cryptsetup writes a few KiB (12 KiB areas by default).
        raise _BadJson(f"{len(text)} bytes of JSON, over the {MAX_JSON_TEXT} parsed")
    try:
        value = json.loads(text.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise _BadJson(f"not valid JSON ({type(exc).__name__})") from exc
    if not isinstance(value, dict):
        raise _BadJson("not a JSON object")
    return value


def _v2_section(
    ctx: Context, hdr: HeaderV2, meta: dict[str, Any], checksum_valid: bool | None, bad: list[str]
) -> LuksSection:
    segment = _first_crypt_segment(meta, bad) if meta else None
    slots = _v2_slots(meta)
    digest = _digest_for(meta)
    encryption = _get(segment, "encryption", str) if segment else None
    cipher, _, mode = encryption.partition("-") if encryption else (None, "", None)
    payload_offset = _number(segment, "offset") if segment else None
    payload_size = _payload_size(ctx, segment, payload_offset)
    key_bytes = next((s.key_size for s in slots if s.key_size is not None), None)
    config = _get(meta, "config", dict) or {}
    requirements = _get(config, "requirements", dict) or {}
    mandatory = _get(requirements, "mandatory", list) or []
    return LuksSection(
        version=2,
        cipher=cipher,
        mode=mode or None,
        hash=_get(digest, "hash", str) if digest else None,
        uuid=cstring(hdr.uuid),
        payload_offset=payload_offset,
        payload_size=payload_size,
        active_key_slots=tuple(s.index for s in slots),
        key_bytes=key_bytes,
        slots=slots,
        master_key_iterations=_get(digest, "iterations", int) if digest else None,
        sector_size=_get(segment, "sector_size", int) if segment else None,
        header_size=hdr.header_size,
        label=cstring(hdr.label),
        subsystem=cstring(hdr.subsystem),
        checksum_valid=checksum_valid,
        requirements=tuple(str(r) for r in mandatory),
    )


def _get(obj: Any, key: str, kind: type) -> Any:
    """``obj[key]`` if ``obj`` is a dict and the value has the expected type, else None."""
    if not isinstance(obj, dict):
        return None
    value = obj.get(key)
    if kind is int and isinstance(value, bool):
        return None
    return value if isinstance(value, kind) else None


def _number(obj: Any, key: str) -> int | None:
    """LUKS2 writes 64-bit numbers as decimal strings; accept those (and plain integers)."""
    value = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and _is_decimal(value, 20):
        return int(value)
    return None


def _is_decimal(text: str, max_digits: int) -> bool:
    # str.isdigit() alone also accepts digits int() refuses (superscripts, other scripts).
    return 0 < len(text) <= max_digits and text.isascii() and text.isdigit()


def _indexed(obj: Any) -> list[tuple[int, Any]]:
    """A LUKS2 object keyed by decimal indexes ("0", "1", ...), sorted by index."""
    if not isinstance(obj, dict):
        return []
    items = [(int(k), v) for k, v in obj.items() if isinstance(k, str) and _is_decimal(k, 9)]
    return sorted(items, key=lambda item: item[0])


def _first_crypt_segment(meta: dict[str, Any], bad: list[str]) -> dict[str, Any] | None:
    segments = _indexed(meta.get("segments"))
    for _, segment in segments:
        if _get(segment, "type", str) == "crypt":
            result: dict[str, Any] = segment
            if _number(segment, "offset") is None:
                bad.append("the crypt segment has no valid offset")
            return result
    bad.append("no crypt segment")
    return None


def _payload_size(ctx: Context, segment: Any, offset: int | None) -> int | None:
    if segment is None or offset is None:
        return None
    if segment.get("size") == "dynamic":
        return ctx.source.size - offset if offset <= ctx.source.size else None
    size = _number(segment, "size")
    if size is not None and offset + size > ctx.source.size:
        ctx.findings.add(
            F.TRUNCATED,
            f"the LUKS2 segment of {size} bytes at {offset} ends past the image's "
            f"{ctx.source.size} bytes",
        )
    return size


def _v2_slots(meta: dict[str, Any]) -> tuple[LuksKeySlot, ...]:
    slots = []
    for index, slot in _indexed(meta.get("keyslots")):
        area = _get(slot, "area", dict) or {}
        kdf = _get(slot, "kdf", dict) or {}
        af = _get(slot, "af", dict) or {}
        slots.append(
            LuksKeySlot(
                index=index,
                active=True,  # LUKS2 lists only the key slots in use
                iterations=_get(kdf, "iterations", int) or _get(kdf, "time", int),
                key_offset=_number(area, "offset") or 0,
                key_area_size=_number(area, "size"),
                stripes=_get(af, "stripes", int),
                kdf=_get(kdf, "type", str),
                key_size=_get(slot, "key_size", int),
                state=None,
            )
        )
    return tuple(slots)


def _digest_for(meta: dict[str, Any]) -> dict[str, Any] | None:
    digests = _indexed(meta.get("digests"))
    for _, digest in digests:
        if isinstance(digest, dict):
            result: dict[str, Any] = digest
            return result
    return None


# --- the qemu-img info view -------------------------------------------------------------------


def qemu_unsupported(section: LuksSection) -> list[str]:
    """Why qemu 7.2 cannot open this LUKS1 header's algorithms ([] when it can)."""
    mode, _, ivgen = (section.mode or "").partition("-")
    ivgen_alg, has_hash, ivgen_hash = ivgen.partition(":")
    problems: list[str] = []
    if _qemu_cipher(section) is None:
        problems.append(f"cipher {section.cipher} with {_cipher_key_bytes(section)}-byte keys")
    if mode not in QEMU_MODES:
        problems.append(f"cipher mode {section.mode!r}")
    if ivgen_alg not in QEMU_IVGENS:
        problems.append(f"IV generator {ivgen_alg!r}")
    elif ivgen_alg == "essiv" and (not has_hash or ivgen_hash not in QEMU_HASHES):
        problems.append(f"ESSIV hash {ivgen_hash!r}")
    if section.hash not in QEMU_HASHES:
        problems.append(f"hash {section.hash!r}")
    return problems


def _cipher_key_bytes(section: LuksSection) -> int:
    key_bytes = section.key_bytes or 0
    if (section.mode or "").startswith("xts-"):
        key_bytes //= 2  # XTS uses half of the key for the tweak
    return key_bytes


def _qemu_cipher(section: LuksSection) -> str | None:
    return QEMU_CIPHERS.get(section.cipher or "", {}).get(_cipher_key_bytes(section))


def qemu_luks_info(section: LuksSection, *, with_format: bool) -> dict[str, Any]:
    """What ``qemu-img info`` prints for a LUKS1 header (QAPI ``QCryptoBlockInfoLUKS``).

    Where qemu could not decode an algorithm name it would fail to open the image; this view
    then shows the name as written, so that the rest of the header can still be compared.
    """
    mode, _, ivgen = (section.mode or "").partition("-")
    ivgen_alg, _, ivgen_hash = ivgen.partition(":")
    info: dict[str, Any] = {"format": "luks"} if with_format else {}
    # Keys in QAPI order: qemu_json orders them as qemu's QDict does.
    written = f"{section.cipher}-{_cipher_key_bytes(section) * 8}"
    info["cipher-alg"] = _qemu_cipher(section) or written
    info["cipher-mode"] = mode
    info["ivgen-alg"] = ivgen_alg
    if ivgen_alg == "essiv":
        info["ivgen-hash-alg"] = ivgen_hash
    info["hash-alg"] = section.hash
    info["payload-offset"] = section.payload_offset
    info["master-key-iters"] = section.master_key_iterations
    info["uuid"] = section.uuid
    info["slots"] = [_qemu_slot(slot) for slot in section.slots]
    return info


def _qemu_slot(slot: LuksKeySlot) -> dict[str, Any]:
    result: dict[str, Any] = {"active": slot.active}
    if slot.active:
        result["iters"] = slot.iterations
        result["stripes"] = slot.stripes
    result["key-offset"] = slot.key_offset
    return result


def luks1_qemu_encrypt_info(header: bytes) -> dict[str, Any]:
    """``format-specific.data.encrypt`` of ``qemu-img info`` for a LUKS-encrypted qcow2.

    :param header: the bytes at the offset named by the qcow2 encryption-header extension
        (at least 592).
    :raises InvalidImage: the bytes are not a LUKS1 header.
    """
    return qemu_luks_info(decode_luks1(header), with_format=True)


def qemu_info(md: Any, filename: str | None = None) -> dict[str, Any]:
    """The keys of ``qemu-img info --output=json`` that come from the LUKS header."""
    section = md.luks
    if not isinstance(section, LuksSection):
        raise InvalidImage("LUKS header too damaged for a qemu-img view")
    if section.version != 1:
        # qemu 7.2 does not recognise LUKS2: it reads the container as a raw image.
        return {"format": "raw", "virtual-size": md.image_size}
    return {
        "format": "luks",
        "encrypted": True,
        "format-specific": {"type": "luks", "data": qemu_luks_info(section, with_format=False)},
    }


FORMAT = FormatSpec(NAME, probe, parse, qemu_info)
