"""The two headers, the creator string and the log: the current header, what a replay changed."""

from __future__ import annotations

import uuid
from typing import Any

from ... import findings as F
from ...scan import crc32c  # C when built, else the shared pure-Python one
from ...source import StreamGap
from ...structs import parse_struct
from ..base import Context
from . import log as vhdx_log
from .codes import (
    BAD_LOG,
    HEADER_CONFLICT,
    HEADER_INVALID,
    LOG_PENDING,
    LOG_REPLAYED,
    LOG_UNREPLAYABLE,
    NO_VALID_HEADER,
)
from .layout import (
    ALIGNMENT,
    CHECKSUM_OFFSET,
    CREATOR_OFFSET,
    CREATOR_SIZE,
    HEADER,
    HEADER_FIELDS_SIZE,
    HEADER_OFFSETS,
    HEADER_SECTION_SIZE,
    HEADER_SIGNATURE,
    HEADER_SIZE,
    ZERO_GUID,
)
from .log import Replay
from .records import _Problems
from .section import HeaderCopy


def header_fields(header: Any) -> dict[str, Any]:
    """The section's values from the current header (all None without a valid header)."""
    if header is None:
        return dict.fromkeys(_HEADER_KEYS)
    return {
        "log_pending": _guid(header.log_guid) != ZERO_GUID,
        "sequence_number": header.sequence_number,
        "file_write_guid": str(_guid(header.file_write_guid)),
        "data_write_guid": str(_guid(header.data_write_guid)),
        "log_guid": str(_guid(header.log_guid)),
        "log_version": header.log_version,
        "version": header.version,
        "log_offset": header.log_offset,
        "log_length": header.log_length,
    }


_HEADER_KEYS = (
    "log_pending",
    "sequence_number",
    "file_write_guid",
    "data_write_guid",
    "log_guid",
    "log_version",
    "version",
    "log_offset",
    "log_length",
)


def _guid(raw: bytes) -> uuid.UUID:
    return uuid.UUID(bytes_le=bytes(raw))


def read_creator(ctx: Context) -> str:
    """The file identifier's creator: free UTF-16LE text, informational only."""
    raw = ctx.source.read_at(CREATOR_OFFSET, CREATOR_SIZE)
    raw = raw[: len(raw) // 2 * 2]
    return raw.decode("utf-16-le", errors="replace").split("\0", 1)[0]


# --- headers -------------------------------------------------------------------------------


def read_headers(
    ctx: Context, problems: _Problems
) -> tuple[Any, int | None, tuple[HeaderCopy, ...]]:
    """Both header copies; returns the current one (or None), its number, and each's status."""
    parsed: list[Any] = []
    raws: list[bytes] = []
    copies: list[HeaderCopy] = []
    for offset in HEADER_OFFSETS:
        raw = ctx.source.read_at(offset, HEADER_SIZE)
        header, problem = _check_header(raw)
        if len(raw) < HEADER_SIZE:
            problems.add(F.TRUNCATED, f"the header at {offset:#x} is cut short at {len(raw)} bytes")
        parsed.append(header if problem is None else None)
        raws.append(raw)
        sequence = header.sequence_number if header is not None else None
        copies.append(HeaderCopy(offset, problem is None, problem, sequence))
    first, second = parsed
    if first is None and second is None:
        problems.refuse(
            NO_VALID_HEADER,
            f"header 1: {copies[0].problem}; header 2: {copies[1].problem}",
        )
        return None, None, tuple(copies)
    if first is None or second is None:
        bad = 0 if first is None else 1
        problems.add(
            HEADER_INVALID,
            f"header {bad + 1} at {HEADER_OFFSETS[bad]:#x}: {copies[bad].problem}; "
            f"header {2 - bad} is used",
        )
        return (second, 2, tuple(copies)) if first is None else (first, 1, tuple(copies))
    if first.sequence_number == second.sequence_number:
        # Identical twins are accepted (qemu notes Disk2VHD writes them); differing ones are not.
        if raws[0] != raws[1]:
            problems.refuse(
                HEADER_CONFLICT,
                f"both headers have sequence number {first.sequence_number} but differ",
            )
        return first, 1, tuple(copies)
    if second.sequence_number > first.sequence_number:
        return second, 2, tuple(copies)
    return first, 1, tuple(copies)


def _check_header(raw: bytes) -> tuple[Any, str | None]:
    """Decode one header copy; the problem that makes it invalid, or None."""
    if len(raw) < HEADER_SIZE:
        return None, f"only {len(raw)} of {HEADER_SIZE} bytes in the file"
    header = parse_struct(HEADER, raw[:HEADER_FIELDS_SIZE], "vhdx header")
    if header.signature != HEADER_SIGNATURE:
        return header, f"signature {bytes(header.signature)!r}, not {HEADER_SIGNATURE!r}"
    computed = _checksum(raw)
    if computed != header.checksum:
        return header, f"checksum {header.checksum:#010x}, computed {computed:#010x}"
    if header.version != 1:
        return header, f"version {header.version}, not 1"
    return header, None


def _checksum(block: bytes) -> int:
    """CRC-32C over ``block`` with its checksum field taken as zero."""
    return crc32c(block[:CHECKSUM_OFFSET] + b"\0\0\0\0" + block[CHECKSUM_OFFSET + 4 :])


def check_log(ctx: Context, problems: _Problems, header: Any) -> Replay | None:
    """Check the log fields; search a log with a GUID for entries to replay (the sequence
    to replay, when there is one)."""
    log_guid = _guid(header.log_guid)
    sane = True
    if header.log_version != 0:
        problems.refuse(BAD_LOG, f"log version {header.log_version}, not 0")
        sane = False
    offset, length = header.log_offset, header.log_length
    if offset < HEADER_SECTION_SIZE or offset % ALIGNMENT:
        problems.refuse(BAD_LOG, f"log offset {offset:#x} is not a 1 MiB multiple past the headers")
        sane = False
    if length % ALIGNMENT:
        problems.add(BAD_LOG, f"log length {length:#x} is not a multiple of 1 MiB")
        sane = False
    if length and offset + length > ctx.source.size:
        problems.add(
            F.TRUNCATED,
            f"the log at {offset:#x} ({length} bytes) ends past the image's "
            f"{ctx.source.size} bytes",
        )
    if log_guid == ZERO_GUID:
        return None
    if length == 0:
        problems.add(BAD_LOG, f"log GUID {log_guid} is set but the log is empty")
        return None
    where = f"log GUID {log_guid}, {length}-byte log at {offset:#x}"
    if not sane:
        problems.add(LOG_UNREPLAYABLE, f"{where}: its fields are impossible (see vhdx-bad-log)")
        return None
    return _search_log(ctx, problems, header, where)


def _search_log(ctx: Context, problems: _Problems, header: Any, where: str) -> Replay | None:
    offset, length = header.log_offset, header.log_length
    if not ctx.deep:
        problems.add(LOG_UNREPLAYABLE, f"{where}: header-only introspection does not read it")
        return None
    if length > vhdx_log.MAX_LOG:
        problems.add(
            LOG_UNREPLAYABLE, f"{where}: larger than the {vhdx_log.MAX_LOG} bytes replayed"
        )
        return None
    ctx.source.prefetch([(offset, length)])
    try:
        log = ctx.source.read_at(offset, length)
        replay = vhdx_log.find_active(log, bytes(header.log_guid), ctx.source.size)
    except StreamGap:
        problems.add(F.STREAM_UNCHECKED, f"{where}: went by before it could be kept")
        problems.add(LOG_UNREPLAYABLE, f"{where}: not kept from the stream")
        return None
    except vhdx_log.Unreplayable as exc:
        problems.add(LOG_UNREPLAYABLE, f"{where}: {exc}")
        return None
    if replay is None:
        problems.add(LOG_PENDING, f"{where}: no sequence of entries to replay")
        return None
    summary = replay_summary(replay)
    # The other problems are found again in the replayed view (the log may have fixed them).
    ctx.findings.add(
        LOG_REPLAYED,
        f"{where}: {summary['entries']} entries (sequence {summary['first_sequence']} to "
        f"{summary['last_sequence']}, {summary['writes']} writes) were replayed in memory; "
        "the image is described as it reads after replay",
    )
    return replay


def replay_summary(replay: Replay) -> dict[str, int]:
    return {
        "entries": len(replay.entries),
        "first_sequence": replay.entries[0].sequence,
        "last_sequence": replay.entries[-1].sequence,
        "writes": len(replay.writes),
    }
