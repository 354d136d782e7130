"""Library defects the fuzzers found that are not fixed yet, recognised by their signature.

A fuzzer that meets one of these does not fail: it records a hypothesis ``event`` (shown by
``pytest --hypothesis-show-statistics``) and moves on to the next input, so the suite keeps
hunting for *new* defects while these wait for a fix in ``src/``.  Each entry has an exact
reproducer in ``test_known_bugs.py``, marked ``xfail(strict=True)``: the day the library is
fixed that test passes, fails the suite as XPASS, and its entry here must be deleted.

A signature is deliberately narrow (the exception type *and* the function that raised it, or
the exact shape of a disagreement), so that a different defect with a similar symptom still
fails the fuzzer.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from imageintrospect.findings import STREAM_UNCHECKED


@dataclass(frozen=True)
class Failure:
    """What a property violation looked like."""

    kind: str  # "internal" (InternalParserError), "disagree", ...
    exc: BaseException | None = None
    seekable: Any = None  # properties.Outcome
    streamed: Any = None
    size: int = 0  # of the input


@dataclass(frozen=True)
class KnownBug:
    key: str
    summary: str
    matches: Callable[[Failure], bool]


def raised_in(exc: BaseException | None, path_suffix: str, function: str) -> bool:
    """True when ``exc`` (or its cause) was raised through ``function`` of ``path_suffix``."""
    for error in (exc, exc.__cause__ if exc is not None else None):
        if error is None:
            continue
        for frame in traceback.extract_tb(error.__traceback__):
            if frame.filename.endswith(path_suffix) and frame.name == function:
                return True
    return False


def _internal(cause_type: type[BaseException], path: str, function: str, text: str = "") -> Any:
    def match(failure: Failure) -> bool:
        cause = failure.exc.__cause__ if failure.exc is not None else None
        return (
            failure.kind == "internal"
            and isinstance(cause, cause_type)
            and text in str(cause)
            and raised_in(failure.exc, path, function)
        )

    return match


def _both_dicts(failure: Failure, fmt: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    if failure.kind != "disagree" or failure.seekable is None or failure.streamed is None:
        return None
    seek, stream = failure.seekable.answer, failure.streamed.answer
    if not (isinstance(seek, dict) and isinstance(stream, dict)):
        return None
    if seek.get("format") != fmt or stream.get("format") != fmt:
        return None
    return seek, stream


def _codes(answer: dict[str, Any]) -> set[str]:
    return {f["code"] for f in answer["findings"]}


#: The stream may keep this much of the start of a stream (stream.HEAD_KEEP, 960 KiB).
SMALL = 960 * 1024


#: What the qcow2 deep walk reports about table entries.
QCOW2_DEEP_CODES = {
    "entry-out-of-range",
    "entry-misaligned",
    "entry-in-metadata",
    "entry-reserved-bits",
    "cluster-claimed-twice",
    "bad-compressed-cluster",
    "bad-subcluster-bitmap",
}


def _qcow2_stream_misses_entries(failure: Failure) -> bool:
    """Streamed, the qcow2 deep walk counts fewer bad L2 entries than the seekable walk (so
    it may miss an unsafe finding altogether), with no ``stream-unchecked``."""
    pair = _both_dicts(failure, "qcow2")
    if pair is None or failure.size > SMALL:
        return False
    seek, stream = pair
    if _codes(stream) - QCOW2_DEEP_CODES != _codes(seek) - QCOW2_DEEP_CODES:
        return False
    if not _codes(stream) <= _codes(seek) or STREAM_UNCHECKED in _codes(stream):
        return False
    keep = ("format", "virtual_size", "image_size")
    if any(seek.get(key) != stream.get(key) for key in keep):
        return False

    def layout(answer: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in answer["qcow2"].items() if k != "allocation"}

    def bad_entries(answer: dict[str, Any]) -> int:
        return int((answer["qcow2"].get("allocation") or {}).get("bad_entries") or 0)

    return layout(seek) == layout(stream) and bad_entries(seek) > bad_entries(stream)


def _luks2_json_memory(failure: Failure) -> bool:
    """A LUKS2 JSON area of up to 4 MiB parsed whole: dense JSON (a million small lists)
    is ~100 MiB of Python objects."""
    outcome = failure.seekable
    return (
        failure.kind == "memory"
        and outcome is not None
        and isinstance(outcome.answer, dict)
        and outcome.answer.get("format") == "luks"
        and (outcome.answer.get("luks") or {}).get("version") == 2
    )


KNOWN_BUGS: tuple[KnownBug, ...] = (
    KnownBug(
        "luks2-shake-checksum",
        "LUKS2 checksum_alg 'shake_128'/'shake_256': hashlib's digest() needs a length, the "
        "TypeError escapes luks._checksum_valid as InternalParserError",
        _internal(TypeError, "formats/luks.py", "_checksum_valid"),
    ),
    KnownBug(
        "ova-unit-digits",
        "OVF capacityAllocationUnits 'byte * 2^<4301+ digits>': int() raises ValueError "
        "(int_max_str_digits) in ova._unit_factor, escapes as InternalParserError",
        _internal(ValueError, "formats/ova.py", "_unit_factor", "Exceeds the limit"),
    ),
    KnownBug(
        "luks2-json-memory",
        "a LUKS2 JSON area (up to 4 MiB, deep mode) goes whole through json.loads: dense "
        "JSON such as 1.4 million empty lists takes ~100 MiB of heap (contract: 64 MiB)",
        _luks2_json_memory,
    ),
    KnownBug(
        "qcow2-stream-misses-l2-entry",
        "streamed qcow2 (deep): the L2 walk sees fewer bad entries than the seekable walk, "
        "e.g. misses an out-of-range entry altogether (no finding, no stream-unchecked, "
        "another allocated_size)",
        _qcow2_stream_misses_entries,
    ),
)


def known(failure: Failure) -> KnownBug | None:
    return next((bug for bug in KNOWN_BUGS if bug.matches(failure)), None)
