"""QED (qemu enhanced disk): recognised, described, and refused.

Layout: qemu's QED specification and ``block/qed.h``.  All integers are little-endian.  No
cloud image service accepts QED (it is not among Glance's disk formats), so every QED image
gets the unsafe ``qed-image`` finding; the header is still decoded so that the caller learns
its size and, above all, the backing file it names.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import _layouts
from .. import findings as F
from ..errors import InvalidImage
from ..frozen import frozen
from ..structs import Record
from .base import Context, FormatSpec, Parsed, Probe, Section
from .qcow2 import BACKING_FILE

NAME = "qed"
MAGIC = b"QED\0"

# --- schemas -------------------------------------------------------------------------------

# The layouts, derived from the construct schemas in formats/schemas/qed.py by
# scripts/gen_layouts.py (edit the schema, then run it): no construct on this path.
HEADER = _layouts.QED_HEADER


class Header(NamedTuple):
    """The QED header as the parser uses it."""

    cluster_size: int
    table_size: int
    header_size: int
    features: int
    compat_features: int
    autoclear_features: int
    l1_table_offset: int
    image_size: int
    backing_filename_offset: int
    backing_filename_size: int


HEADER_RECORD = Record(HEADER, Header, "QED header")
HEADER_SIZE = HEADER_RECORD.size

FEATURE_BACKING_FILE = 1 << 0
FEATURE_NEED_CHECK = 1 << 1
FEATURE_BACKING_FORMAT_NO_PROBE = 1 << 2
FEATURES = {0: "backing-file", 1: "need-check", 2: "backing-format-no-probe"}
KNOWN_FEATURES = FEATURE_BACKING_FILE | FEATURE_NEED_CHECK | FEATURE_BACKING_FORMAT_NO_PROBE

# qemu's limits (block/qed.h).
MIN_CLUSTER_SIZE = 4 * 1024
MAX_CLUSTER_SIZE = 64 * 1024 * 1024
MIN_TABLE_SIZE = 1
MAX_TABLE_SIZE = 16
MAX_BACKING_NAME = 4096 - 1  # qemu reads the name into a PATH_MAX buffer with its NUL
U32 = (1 << 32) - 1
U64 = (1 << 64) - 1

# --- findings ------------------------------------------------------------------------------

QED_IMAGE = F.define(
    "qed-image",
    "unsafe",
    "qed",
    "A QED image: no cloud image service accepts the format; convert it to qcow2 or raw.",
)
BAD_HEADER = F.define(
    "qed-bad-header",
    "unsafe",
    "qed",
    "A QED header field is impossible or refused by qemu (sizes, offsets, feature bits).",
)
NEEDS_CHECK = F.define(
    "qed-needs-check",
    "warning",
    "qed",
    "The QED need-check bit is set: the image was not closed cleanly.",
)

# --- the section ---------------------------------------------------------------------------


@frozen
class QedSection(Section):
    cluster_size: int
    backing_file: str | None
    backing_format: str | None
    table_size: int
    header_size: int
    image_size: int
    l1_table_offset: int
    need_check: bool
    features: tuple[str, ...]
    compat_features: tuple[str, ...]
    autoclear_features: tuple[str, ...]
    backing_filename_offset: int
    backing_filename_size: int


# --- probe ---------------------------------------------------------------------------------


def probe(probe: Probe) -> bool:
    return probe.head[:4] == MAGIC


# --- parse ---------------------------------------------------------------------------------


def parse(ctx: Context) -> Parsed:
    head = ctx.source.read_at(0, HEADER_SIZE)
    ctx.findings.add(QED_IMAGE, "QED image (not accepted by cloud image services)")
    if len(head) < HEADER_SIZE:
        ctx.findings.add(F.TRUNCATED, f"QED header cut short: {len(head)} of {HEADER_SIZE} bytes")
        return Parsed(virtual_size=None, section=None)
    hdr = HEADER_RECORD.parse(head)
    _check_header(ctx, hdr)
    backing_file = _read_backing_file(ctx, hdr)
    has_backing = backing_file is not None
    section = QedSection(
        cluster_size=hdr.cluster_size,
        backing_file=backing_file,
        backing_format=(
            "raw" if has_backing and hdr.features & FEATURE_BACKING_FORMAT_NO_PROBE else None
        ),
        table_size=hdr.table_size,
        header_size=hdr.header_size,
        image_size=hdr.image_size,
        l1_table_offset=hdr.l1_table_offset,
        need_check=bool(hdr.features & FEATURE_NEED_CHECK),
        features=_bit_names(hdr.features, FEATURES),
        compat_features=_bit_names(hdr.compat_features, {}),
        autoclear_features=_bit_names(hdr.autoclear_features, {}),
        backing_filename_offset=hdr.backing_filename_offset,
        backing_filename_size=hdr.backing_filename_size,
    )
    _judge(ctx, section)
    return Parsed(virtual_size=hdr.image_size, section=section)


def _is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def _max_image_size(cluster_size: int, table_size: int) -> int:
    # qemu computes this in 64-bit arithmetic that wraps for the largest clusters and
    # tables (then refusing every size); mirror that so we refuse what qemu refuses.
    entries = table_size * cluster_size // 8
    return (entries * ((entries * cluster_size) & U64)) & U64


def _check_header(ctx: Context, hdr: Header) -> None:
    """Every header value qemu's QED driver refuses, in one ``qed-bad-header`` finding."""
    bad: list[str] = []
    unknown = hdr.features & ~KNOWN_FEATURES
    if unknown:
        bad.append(f"unknown feature bits {unknown:#x}")
    cluster_ok = (
        _is_power_of_two(hdr.cluster_size)
        and MIN_CLUSTER_SIZE <= hdr.cluster_size <= MAX_CLUSTER_SIZE
    )
    table_ok = _is_power_of_two(hdr.table_size) and hdr.table_size <= MAX_TABLE_SIZE
    if not cluster_ok:
        bad.append(f"cluster size {hdr.cluster_size}")
    if not table_ok:
        bad.append(f"table size {hdr.table_size} clusters")
    if cluster_ok and table_ok:
        bad += _size_and_offset_problems(ctx, hdr)
    if bad:
        ctx.findings.add(BAD_HEADER, "; ".join(bad))
    # qemu refuses all of these but a header size of 0 (it reads the L1 table regardless).
    accepted = {f"header size {hdr.header_size} clusters"} if hdr.header_size == 0 else set()
    refused = [problem for problem in bad if problem not in accepted]
    if refused:
        ctx.findings.add(F.QEMU_CANNOT_OPEN, "qemu refuses the QED header: " + "; ".join(refused))


def _size_and_offset_problems(ctx: Context, hdr: Header) -> list[str]:
    bad: list[str] = []
    cluster = hdr.cluster_size
    limit = _max_image_size(cluster, hdr.table_size)
    if hdr.image_size % 512 or hdr.image_size > limit:
        bad.append(f"image size {hdr.image_size} (a multiple of 512 up to {limit})")
    if hdr.header_size == 0 or hdr.header_size > U32 // cluster:
        bad.append(f"header size {hdr.header_size} clusters")
    header_bytes = hdr.header_size * cluster
    # qemu checks the L1 table's first and last clusters against the file, rounded down to
    # a whole cluster; an L1 table of one cluster fails its overflow test (a qemu quirk).
    file_end = ctx.source.size - ctx.source.size % cluster
    first = hdr.l1_table_offset
    last = first + (hdr.table_size - 1) * cluster
    if hdr.table_size == 1:
        bad.append("L1 table of a single cluster (qemu's overflow check refuses it)")
    elif first % cluster or first < header_bytes or last < first:
        bad.append(f"L1 table offset {first:#x} (cluster-aligned, after the header)")
    elif last >= file_end:
        where = f"QED L1 table at {first:#x} ({hdr.table_size} clusters)"
        ctx.findings.add(
            F.TRUNCATED, f"{where} lies past the end of the image ({ctx.source.size} bytes)"
        )
        ctx.findings.add(
            F.QEMU_CANNOT_OPEN, f"QED table offset is invalid: {where} ends past the file"
        )
    if hdr.features & FEATURE_BACKING_FILE:
        name_end = hdr.backing_filename_offset + hdr.backing_filename_size
        if name_end > header_bytes:
            bad.append(
                f"backing file name at {hdr.backing_filename_offset:#x} "
                f"({hdr.backing_filename_size} bytes) outside the {header_bytes}-byte header"
            )
        if hdr.backing_filename_size > MAX_BACKING_NAME:
            bad.append(f"backing file name of {hdr.backing_filename_size} bytes")
    return bad


def _read_backing_file(ctx: Context, hdr: Header) -> str | None:
    if not hdr.features & FEATURE_BACKING_FILE:
        return None
    size = min(hdr.backing_filename_size, MAX_BACKING_NAME)
    unkept = "the QED backing file name lay outside the stream"
    raw = ctx.read_optional(hdr.backing_filename_offset, size, unkept) if size else b""
    if raw is None:
        return ""
    if len(raw) < size:
        ctx.findings.add(F.TRUNCATED, "the QED backing file name runs past the end of the file")
    # qemu keeps the name as a C string: it ends at the first NUL.
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def _bit_names(bits: int, names: dict[int, str]) -> tuple[str, ...]:
    return tuple(names.get(bit, f"bit-{bit}") for bit in range(64) if bits >> bit & 1)


def _judge(ctx: Context, section: QedSection) -> None:
    if section.backing_file == "":
        # qemu treats an empty name as no backing file at all.
        ctx.findings.add(BAD_HEADER, "the backing-file feature is set but the name is empty")
    elif section.backing_file is not None:
        fmt = f" (format {section.backing_format})" if section.backing_format else ""
        ctx.findings.add(BACKING_FILE, f"QED backing file {section.backing_file!r}{fmt}")
    if section.need_check:
        ctx.findings.add(NEEDS_CHECK, "the need-check bit is set")


# --- qemu-img info view ---------------------------------------------------------------------


def qemu_info(md: Any, filename: str | None = None) -> dict[str, Any]:
    """The keys of ``qemu-img info --output=json`` that come from the QED header."""
    section = md.qed
    if not isinstance(section, QedSection):
        raise InvalidImage("QED header too damaged for a qemu-img view")
    info: dict[str, Any] = {"format": "qed", "cluster-size": section.cluster_size}
    if section.backing_file:
        info["backing-filename"] = section.backing_file
        if section.backing_format is not None:
            info["backing-filename-format"] = section.backing_format
    return info


FORMAT = FormatSpec(NAME, probe, parse, qemu_info)
