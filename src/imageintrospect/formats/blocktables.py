"""Walking a block allocation table (VHD BAT, VHDX BAT, VDI block map) in bounded windows.

The three formats share one shape: a single table of fixed-size entries at a known offset,
each naming where one block of guest data lies in the file.  :func:`walk_table` hands the
table's bytes, window by window, to a checker (one of :mod:`imageintrospect.scan`'s scanners
with the format's parameters bound) and merges what it says.

Seekable sources are checked as the bytes are read, so memory is one window whatever the
table's size.  A stream is different: its parser runs speculatively while the bytes arrive,
before the file's size is known, and the checks depend on that size (a block past the end of
the file).  So on a stream the table's bytes are held (at most :data:`STREAM_HOLD_LIMIT`) and
checked once the final parse knows the size; a larger table is reported as not checked.

The table can be cut into *segments* at given entry indexes, each with its own merged result:
that is how a format counts the block that straddles the end of the virtual disk apart from
the others.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import functools
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, TypeVar

from .. import findings as F
from .. import scan
from ..frozen import frozen
from ..scan import NOT_SEEN, Reason, Verdict
from ..source import SCAN_WINDOW, StreamGap
from .base import Context, Section

#: The most table bytes a stream holds until the end, when the file's size is known.
STREAM_HOLD_LIMIT = 16 * 1024 * 1024
#: Claim maps (one bit per unit of the file) larger than this are not built.
CLAIM_MAP_LIMIT = 32 * 1024 * 1024

V = TypeVar("V", bound=Verdict)

#: After a bad entry, how many more scanner calls a window gets to find bad entries of other
#: kinds (a scanner reports only the first bad entry of each call).
MAX_RESCANS = 4

#: ``check(entries, first_index, claims)``: one scanner call over whole entries; with
#: ``claims`` False it must not touch the claim map (a rescan of entries already claimed).
Check = Callable[[memoryview, int, bool], Verdict]

_FIRST_BAD_FIELDS = ("bad_index", "bad_value", "bad_reason")


_COUNTERS: dict[type[Verdict], tuple[str, ...]] = {}


def _counter_fields(kind: type[Verdict]) -> tuple[str, ...]:
    names = _COUNTERS.get(kind)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(kind) if f.name not in _FIRST_BAD_FIELDS)
        _COUNTERS[kind] = names
    return names


def merge(results: Sequence[V]) -> V:
    """Results of consecutive windows as one (at least one): counters add up, the first bad
    entry stays.  Merged once at the end of a walk, not window by window: building a result
    costs more than the scanner call over a window of unused entries."""
    last = results[-1]
    if len(results) == 1:
        return last
    bad = next((r for r in results if r.bad_index != NOT_SEEN), last)
    values: dict[str, Any] = {name: getattr(bad, name) for name in _FIRST_BAD_FIELDS}
    for name in _counter_fields(type(last)):
        values[name] = sum(getattr(r, name) for r in results)
    return type(last)(**values)


@frozen
class BadEntry:
    """The first bad entry of one kind: its absolute index, raw value and reason."""

    index: int
    value: int
    reason: Reason


@frozen
class Walk:
    """What a walk over (part of) a table found.

    ``entries``: entries checked; ``segments[k]``: the merged result of the entries in the
    k-th segment (None when it holds none); ``total``: all of them merged (None for an empty
    walk); ``first_bad``: the first bad entry of each kind that was seen, in table order.
    """

    entries: int
    segments: tuple[Verdict | None, ...]
    total: Verdict | None
    first_bad: tuple[BadEntry, ...]

    @property
    def bad_count(self) -> int:
        return self.total.bad_count if self.total is not None else 0


@frozen
class Rules:
    """How a format checks its table.

    ``check`` is one scanner call; ``boundaries`` the entry indexes where segments start;
    ``kind`` splits a scanner reason into the format's kinds of bad entry (the first bad
    entry of each kind is kept), by default the reason itself.
    """

    check: Check
    boundaries: tuple[int, ...] = ()
    kind: Callable[[BadEntry], Hashable] | None = None


class _Tally:
    """Runs the check over whole entries in order, split at the segment boundaries."""

    def __init__(self, entry_size: int, rules: Rules) -> None:
        self._entry_size = entry_size
        self._rules = rules
        self._next_index = 0
        self._segments: list[list[Verdict]] = [[] for _ in range(len(rules.boundaries) + 1)]
        self._first_bad: dict[Hashable, BadEntry] = {}

    def add(self, entries: memoryview) -> None:
        boundaries = self._rules.boundaries
        count = len(entries) // self._entry_size
        start, position = self._next_index, 0
        while position < count:
            index = start + position
            segment = bisect.bisect_right(boundaries, index)
            end = count
            if segment < len(boundaries):
                end = min(count, boundaries[segment] - start)
            piece = entries[position * self._entry_size : end * self._entry_size]
            result = self._rules.check(piece, index, True)
            self._segments[segment].append(result)
            self._rescan(piece, index, result)
            position = end
        self._next_index = start + count

    def _rescan(self, piece: memoryview, first: int, result: Verdict) -> None:
        """Note the first bad entry, then look past it for bad entries of other kinds.

        The entries after it have claimed their blocks already, so the rescans run without
        the claim map: what they find is bad whatever came before (a VDI index used twice
        within the rescanned entries included), but an overlap with an earlier block is
        seen only when it is a call's first bad entry (it always counts in ``bad_count``).
        """
        for _ in range(MAX_RESCANS + 1):
            if result.bad_index == NOT_SEEN:
                return
            bad = BadEntry(result.bad_index, result.bad_value, Reason(result.bad_reason))
            kind = self._rules.kind(bad) if self._rules.kind is not None else bad.reason
            self._first_bad.setdefault(kind, bad)
            after = result.bad_index + 1 - first
            if result.bad_count < 2 or after * self._entry_size >= len(piece):
                return
            rest = piece[after * self._entry_size :]
            result = self._rules.check(rest, result.bad_index + 1, False)

    def walk(self) -> Walk:
        segments = tuple(merge(results) if results else None for results in self._segments)
        merged = [segment for segment in segments if segment is not None]
        total = merge(merged) if merged else None
        first_bad = tuple(sorted(self._first_bad.values(), key=lambda bad: bad.index))
        return Walk(self._next_index, segments, total, first_bad)


class TableWalk:
    """Scan consumer for one table: checks whole entries as they come (``rules`` given: the
    file's size is known), or holds the bytes for :meth:`result` (``rules`` None: a stream)."""

    def __init__(self, entry_size: int, rules: Rules | None, hold_limit: int) -> None:
        self._entry_size = entry_size
        self._tally = _Tally(entry_size, rules) if rules is not None else None
        self._hold_limit = hold_limit
        self._pending = bytearray()  # a partial entry, or a stream's held bytes
        self._cache: dict[Hashable, Walk] = {}
        self.fed = 0
        self.overflow = False

    def feed(self, offset: int, data: bytes) -> None:
        self.fed += len(data)
        if self._tally is None:
            room = max(0, self._hold_limit - len(self._pending))
            self.overflow = self.overflow or len(data) > room
            self._pending += data[:room]
            return
        if not self._pending and len(data) % self._entry_size == 0:
            self._tally.add(memoryview(data))
            return
        self._pending += data
        whole = len(self._pending) - len(self._pending) % self._entry_size
        if whole:
            self._tally.add(memoryview(bytes(self._pending[:whole])))
            del self._pending[:whole]

    def result(self, rules: Rules, length: int, cache_key: Hashable) -> Walk:
        """The walk over the first ``length`` bytes.  Held bytes are checked here, once per
        ``cache_key`` (a stream's parser runs more than once over the same consumer)."""
        if self._tally is not None:
            return self._tally.walk()
        key = (cache_key, length, rules.boundaries)
        cached = self._cache.get(key)
        if cached is None:
            tally = _Tally(self._entry_size, rules)
            usable = min(len(self._pending), length)
            usable -= usable % self._entry_size
            with memoryview(self._pending) as view:
                for start in range(0, usable, SCAN_WINDOW):
                    with view[start : min(start + SCAN_WINDOW, usable)] as window:
                        tally.add(window)
            cached = self._cache[key] = tally.walk()
        return cached


def hold_for_stream(ctx: Context, key: Hashable, offset: int, length: int, entry_size: int) -> None:
    """Ask a stream to start holding a table whose geometry is not known yet (a VHDX's BAT
    region comes before the metadata that says how much of it is used).  :func:`walk_table`
    with the same ``key`` then finds the bytes held.  A seekable source needs nothing."""
    if not ctx.source.is_stream:
        return
    length = min(length, STREAM_HOLD_LIMIT)
    make = functools.partial(TableWalk, entry_size, None, STREAM_HOLD_LIMIT)
    with contextlib.suppress(StreamGap):  # reported by walk_table, if it comes to that
        ctx.source.scan(key, [(offset, length)], make)


def table_bytes(ctx: Context, offset: int, length: int, entry_size: int) -> int:
    """How many of the ``length`` table bytes at ``offset`` the file holds, in whole entries."""
    available = max(0, min(length, ctx.source.size - offset))
    return available - available % entry_size


def walk_table(
    ctx: Context,
    key: Hashable,
    offset: int,
    length: int,
    entry_size: int,
    rules: Rules,
    *,
    what: str,
) -> Walk | None:
    """Check the table's entries that the file holds (``length`` bytes at ``offset``, cut to
    the file): every entry, in windows.  None when they could not be checked: a stream that
    let them go by, or one whose table is still arriving (a speculative parse)."""
    source = ctx.source
    available = table_bytes(ctx, offset, length, entry_size)
    if available == 0:
        return _Tally(entry_size, rules).walk()
    if source.is_stream and available > STREAM_HOLD_LIMIT:
        ctx.findings.add(
            F.STREAM_UNCHECKED,
            f"{what} at {offset:#x} ({available} bytes) is larger than the "
            f"{STREAM_HOLD_LIMIT} bytes a stream holds for checking: its entries were not checked",
        )
        return None
    if not source.is_stream:
        return _walk_read(ctx, offset, available, entry_size, rules)
    make = functools.partial(TableWalk, entry_size, None, STREAM_HOLD_LIMIT)
    try:
        consumer = source.scan(key, [(offset, available)], make)
    except StreamGap:
        # A scan asked for only at the end of a stream (the table was known too late to be
        # fed) can still be read if the stream kept its bytes (its first 960 KiB always).
        walk = _walk_kept(ctx, offset, available, entry_size, rules)
        if walk is None:
            ctx.findings.add(
                F.STREAM_UNCHECKED, f"{what} at {offset:#x} went by before it could be checked"
            )
        return walk
    if consumer.fed < available or consumer.overflow:
        return None  # a speculative parse of a stream: the table has not all arrived yet
    return consumer.result(rules, available, source.size)


#: A seekable file's table is read into one buffer of this size, window after window: large
#: enough that the per-window Python work (a scanner call and its result) is a few calls
#: per table, small enough to stay in the CPU cache for the scanner (on the 4 MiB tables of
#: the benchmark, 512 KiB beat 256 KiB, 1 MiB and 4 MiB).
READ_WINDOW = 512 * 1024

_spare = threading.local()


@contextlib.contextmanager
def _window(size: int) -> Iterator[memoryview]:
    """A buffer of ``size`` (at most :data:`READ_WINDOW`) bytes, the thread's spare one when
    it is free: a fresh buffer's pages are faulted in by the read, which on a 4 MiB table
    costs a fifth of reading it.  Each thread keeps at most one spare window."""
    buffer: bytearray | None = getattr(_spare, "buffer", None)
    _spare.buffer = None  # taken: a nested walk gets its own
    if buffer is None:
        buffer = bytearray(READ_WINDOW)
    try:
        with memoryview(buffer) as view, view[:size] as window:
            yield window
    finally:
        _spare.buffer = buffer


def _walk_read(ctx: Context, offset: int, length: int, entry_size: int, rules: Rules) -> Walk:
    """Walk a seekable file's table (``length`` bytes, whole entries, all in the file)."""
    tally = _Tally(entry_size, rules)
    with _window(min(length, READ_WINDOW - READ_WINDOW % entry_size)) as window:
        for start in range(offset, offset + length, len(window)):
            wanted = min(len(window), offset + length - start)
            done = ctx.source.read_into(start, window[:wanted])
            tally.add(window[: done - done % entry_size])
            if done < wanted:
                break  # the file ended (it changed under us): the entries it still holds
    return tally.walk()


def _walk_kept(
    ctx: Context, offset: int, length: int, entry_size: int, rules: Rules
) -> Walk | None:
    """Walk the table from what the source still holds; None when it does not hold it all."""
    tally = _Tally(entry_size, rules)
    for start in range(offset, offset + length, SCAN_WINDOW):
        try:
            data = ctx.source.read_at(start, min(SCAN_WINDOW, offset + length - start))
        except StreamGap:
            return None
        tally.add(memoryview(data))
    return tally.walk()


def merge_runs(
    offsets: list[int], length: int, *, gap: int = 0, window: int | None = None
) -> list[tuple[int, int]]:
    """Sorted offsets of ``length``-byte tables merged into ``(offset, length)`` runs: fewer,
    larger reads and scanner calls.  Tables that touch join a run, and so do tables at most
    ``gap`` bytes past its end while the run stays within ``window`` bytes."""
    runs: list[tuple[int, int]] = []
    for offset in offsets:
        if runs:
            start, run = runs[-1]
            end = max(start + run, offset + length)
            if offset <= start + run + gap and (window is None or end - start <= window):
                runs[-1] = (start, end - start)
                continue
        runs.append((offset, length))
    return runs


def overlaps(start: int, end: int, spans: tuple[tuple[int, int, str], ...]) -> str | None:
    """The name of the first ``(start, end, name)`` span that ``[start, end)`` overlaps."""
    for span_start, span_end, name in spans:
        if start < span_end and span_start < end:
            return name
    return None


def bad_entries(count: int, table: str) -> str:
    """``"1 bad BAT entry"``, ``"3 bad BAT entries"``."""
    return f"{count} bad {table} entr{'y' if count == 1 else 'ies'}"


@frozen
class TableSummary(Section):
    """What the deep walk counted in a block table (bad entries are in no other counter)."""

    entries: int  # entries checked
    allocated: int  # blocks stored in the file
    zero: int  # blocks that read as zeros without data in the file
    unallocated: int
    bad: int


class Claims:
    """A claim map of the file (:func:`imageintrospect.scan.claim_map`), made on first use with
    the format's metadata marked, or never when it would exceed :data:`CLAIM_MAP_LIMIT`."""

    def __init__(self, file_size: int, unit: int, metadata: tuple[tuple[int, int, str], ...]):
        self._unit = unit
        self._metadata = metadata
        units = -(-file_size // unit)
        self._bytes = -(-units // 8)
        self._map: bytearray | None = None
        #: False when the file is too large for a map: overlaps are then not checked.
        self.enabled = self._bytes <= CLAIM_MAP_LIMIT

    def map(self) -> bytearray | None:
        if not self.enabled:
            return None
        if self._map is None:
            self._map = bytearray(self._bytes)
            for start, end, _ in self._metadata:
                if end > start:
                    scan.mark_claimed(self._map, start, end - start, self._unit)
        return self._map
