"""What must hold for every input, however hostile: the fuzzers' oracle.

For each input, :func:`check` introspects it twice, seekable (``io.BytesIO``) and as a
forward-only stream (an object with nothing but ``read()``), and asserts:

a. the answer is a :class:`Metadata` or an :class:`ImageIntrospectError`; never
   :class:`InternalParserError` (a parser defect, shown with its cause) nor any other
   exception;
b. every view of a :class:`Metadata` is JSON: ``to_dict()``, ``glance_properties()`` and the
   ``qemu-img info`` view the CLI prints;
c. the streamed answer equals the seekable one, ``stream-unchecked`` findings aside (see
   :func:`assert_agree` for what a stream may legitimately not know);
d. the Python heap grows by at most :data:`MEMORY_LIMIT` during a call (tracemalloc, on
   the examples that draw it: tracing makes a call 3-5 times slower), 64 MiB whatever the
   header claims;
e. with ``deep=False`` the seekable read takes at most :data:`HEADER_ONLY_READ` bytes.

Work is bounded by what it costs (heap, bytes read; tests/test_resource_bounds.py counts
the reads of images claiming absurd sizes), never by seconds of wall clock, which a busy
machine stretches at will.

A failing input is written to :data:`FAILURES` so it can be replayed outside hypothesis::

    python -c 'import imageintrospect as ii; print(ii.introspect("<path>").to_dict())'
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import traceback
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import currently_in_test_context, event, note

from imageintrospect import ImageIntrospectError, InternalParserError, Metadata, introspect
from imageintrospect.findings import STREAM_UNCHECKED
from imageintrospect.qemu_json import qemu_info_json
from tests.support import CountingBytes, OnlyRead

from .known_bugs import Failure, known

#: Memory held for one image, whatever the header claims.
MEMORY_LIMIT = 64 * 1024 * 1024
#: Header-only introspection reads at most 1 MiB.
HEADER_ONLY_READ = 1024 * 1024
#: Where failing inputs are saved (one file per input, named by its SHA-256).
FAILURES = Path(
    os.environ.get("IMAGEINTROSPECT_FUZZ_FAILURES")
    or Path(tempfile.gettempdir()) / "imageintrospect-fuzz-failures"
)


@dataclass
class Outcome:
    """One introspection's result: the answer as plain data, and what it cost."""

    mode: str
    metadata: Metadata | None
    answer: dict[str, Any] | tuple[str, str]  # to_dict(), or (error class, message)
    peak_bytes: int
    exc: BaseException | None = None

    @property
    def error(self) -> str | None:
        return self.answer[0] if isinstance(self.answer, tuple) else None


def save(data: bytes) -> Path:
    FAILURES.mkdir(parents=True, exist_ok=True)
    path = FAILURES / f"{hashlib.sha256(data).hexdigest()[:16]}.img"
    path.write_bytes(data)
    return path


class KnownBugMet(Exception):
    """An input hit a defect listed in :mod:`.known_bugs`: stop checking it, do not fail."""


def fail(data: bytes, message: str, failure: Failure | None = None) -> None:
    bug = known(failure) if failure is not None else None
    if bug is not None:
        raise KnownBugMet(bug.key)
    path = save(data)
    if currently_in_test_context():
        note(f"failing input saved as {path}")
    raise AssertionError(f"{message}\n(input: {len(data)} bytes, saved as {path})")


def run(data: bytes, source: Any, mode: str, *, deep: bool, memory: bool) -> Outcome:
    """Introspect ``source`` once and turn the result into an :class:`Outcome`."""
    if memory:
        tracemalloc.start()
        tracemalloc.reset_peak()
    error: BaseException | None = None
    try:
        md: Metadata | None = introspect(source, deep=deep)
        answer: dict[str, Any] | tuple[str, str] = md.to_dict()  # type: ignore[union-attr]
    except InternalParserError as exc:
        cause = exc.__cause__
        shown = "".join(traceback.format_exception(cause)) if cause else repr(exc)
        message = f"{mode}: InternalParserError (a parser defect): {exc}\n{shown}"
        fail(data, message, Failure("internal", exc, size=len(data)))
        raise  # not reached
    except ImageIntrospectError as exc:
        md, answer, error = None, (type(exc).__name__, str(exc)), exc
    except Exception as exc:
        shown = "".join(traceback.format_exception(exc))
        fail(data, f"{mode}: {type(exc).__name__} escaped introspect(): {exc}\n{shown}")
        raise
    finally:
        peak = 0
        if memory:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    outcome = Outcome(mode, md, answer, peak, error)
    if peak > MEMORY_LIMIT:
        message = f"{mode}: the heap grew by {peak >> 20} MiB (limit {MEMORY_LIMIT >> 20} MiB)"
        fail(data, message, Failure("memory", None, outcome, size=len(data)))
    return outcome


def assert_views_are_json(data: bytes, md: Metadata) -> None:
    """``to_dict()`` and ``glance_properties()`` are JSON; the ``qemu-img info`` view is JSON
    or, where the image is too damaged to have one, an :class:`ImageIntrospectError`."""
    try:
        json.dumps(md.to_dict(), allow_nan=False)
        json.dumps(md.glance_properties(), allow_nan=False)
        try:
            json.loads(qemu_info_json(md, "fuzz.img", len(data)))
        except InternalParserError:
            raise
        except ImageIntrospectError:
            pass
    except Exception as exc:
        shown = "".join(traceback.format_exception(exc))
        message = f"a view of the Metadata is not JSON: {type(exc).__name__}: {exc}\n{shown}"
        fail(data, message, Failure("view", exc))


def _without_unchecked(answer: dict[str, Any]) -> dict[str, Any]:
    out = dict(answer)
    out["findings"] = [f for f in answer["findings"] if f["code"] != STREAM_UNCHECKED]
    return out


def assert_agree(data: bytes, seekable: Outcome, streamed: Outcome) -> None:
    """The streamed answer is the seekable one, except where the stream says it could not
    check a structure (``stream-unchecked``)."""
    if seekable.answer == streamed.answer:
        return
    unchecked = isinstance(streamed.answer, dict) and any(
        f["code"] == STREAM_UNCHECKED for f in streamed.answer["findings"]
    )
    if unchecked:
        # The stream could not see everything: it may know less (where the seekable read
        # found a structure too broken to describe, the stream may not have reached it), but
        # it must not take the image for another format.
        if seekable.error is not None:
            return
        if seekable.answer["format"] == streamed.answer["format"]:  # type: ignore[index]
            return
    if isinstance(seekable.answer, dict) and isinstance(streamed.answer, dict):
        if _without_unchecked(seekable.answer) == _without_unchecked(streamed.answer):
            return
        diff = {
            key: (seekable.answer.get(key), streamed.answer.get(key))
            for key in set(seekable.answer) | set(streamed.answer)
            if seekable.answer.get(key) != streamed.answer.get(key)
        }
        message = f"seekable and streamed answers differ: {json.dumps(diff, default=str)}"
        fail(data, message, Failure("disagree", None, seekable, streamed, len(data)))
    message = f"seekable gave {seekable.answer!r:.600}\nstreamed gave {streamed.answer!r:.600}"
    fail(data, message, Failure("disagree", None, seekable, streamed, len(data)))


def check(
    data: bytes, *, deep: bool = True, chunk: int = 65536, memory: bool = True
) -> Outcome | None:
    """Every property above for one input; returns the seekable outcome, or None when the
    input met a known, still unfixed defect (recorded as a hypothesis event)."""
    try:
        return _check(data, deep=deep, chunk=chunk, memory=memory)
    except KnownBugMet as met:
        if currently_in_test_context():
            event(f"known bug: {met}")
        return None


def _check(data: bytes, *, deep: bool, chunk: int, memory: bool) -> Outcome:
    source = CountingBytes(data)
    seekable = run(data, source, "seekable", deep=deep, memory=memory)
    if not deep and source.bytes_read > HEADER_ONLY_READ:
        fail(data, f"deep=False read {source.bytes_read} bytes (limit {HEADER_ONLY_READ})")
    streamed = run(data, OnlyRead(data, chunk), "streamed", deep=deep, memory=memory)
    for outcome in (seekable, streamed):
        if outcome.metadata is not None:
            assert_views_are_json(data, outcome.metadata)
    assert_agree(data, seekable, streamed)
    return seekable


#: How a stream may deliver its bytes: a socket's small reads, the library's own read size,
#: large buffered reads, and an odd size that never lines up with a sector.
CHUNK_SIZES = (65536, 4096, 1024 * 1024, 777)


def fuzz_one(data: Any, strategy: Any) -> Outcome | None:
    """Draw an input from ``strategy`` through hypothesis' ``st.data()`` object ``data``,
    with a deep flag, a stream read size and whether to trace the heap (tracemalloc makes a
    call 3-5 times slower, so half the examples go without), and check every property."""
    from hypothesis import strategies as st

    mutant = data.draw(strategy, label="input")
    deep = data.draw(st.booleans(), label="deep")
    # Odd tiny reads of a multi-MiB image cost thousands of calls and find nothing more.
    sizes = CHUNK_SIZES if len(mutant.data) <= 1024 * 1024 else CHUNK_SIZES[:3]
    chunk = data.draw(st.sampled_from(sizes), label="chunk")
    memory = data.draw(st.booleans(), label="tracemalloc")
    return check(mutant.data, deep=deep, chunk=chunk, memory=memory)
