"""Introspecting a forward-only stream: the parser tells the stream what to keep.

A stream cannot seek, and an image's structures are not in offset order of need: a qcow2's
snapshot table or an OVA's second member lie far ahead of the header that points at them.
So the format's own ``parse`` is run *speculatively* while the stream arrives: a read of
bytes not yet seen returns zeros and makes the :class:`Collector` keep that range when it
passes; a :meth:`~imageintrospect.source.Source.scan` starts feeding its consumer as its
ranges pass.  Whenever something asked for has arrived, ``parse`` runs again on what is now
known and asks for whatever that reveals.  At the end of the stream ``parse`` runs one last
time, for real, against a source that knows the true size: that run's answer is the answer.
Any range it wants that went by unkept raises :class:`~imageintrospect.source.StreamGap`,
which the format reports as ``stream-unchecked``.

Speculative runs see a size of :data:`UNKNOWN_SIZE` (a footer cannot be known before the
end) and their findings and errors are discarded: they only decide what to keep.
Memory: the first :data:`HEAD_KEEP` bytes, a rolling :data:`TAIL_KEEP`, and what the parser
asked to keep, at most :data:`KEEP_BUDGET` bytes in all; scans hold only their consumers.

The upload path is :meth:`Collector.feed`, a few operations per chunk in the steady state: a
scan waiting far ahead costs one comparison, and a consumer that takes every byte to the end
(a VMDK's marker walk) may offer taps, called with no bookkeeping:
``tap(offset, chunk, size) -> status`` for one chunk, and ``tap_run(offset, size, count,
c0, ..., c7) -> code`` for a run of ``count`` chunks of one size (all
:data:`~imageintrospect.scan.STREAM_RUN` passed, those after ``count`` not read).  A
non-zero status, or a code ``4 * k + status`` for the run's chunk ``k``, goes on in
``after(offset, chunk, status)``; the chunks after ``k`` are then tapped one by one.  In the
steady state, chunks of up to :data:`TAP_RUN_CHUNK` bytes are held (by reference) until a
run is full or anything else happens, then walked in one call: a call into C costs several
times as much as walking a chunk of random data.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import functools
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .scan import STREAM_RUN
from .source import C, Consumer, Range, Source, StreamGap

#: Head and tail together are the 1 MiB a header-only read may take (docs/security.md);
#: the tail only has to hold footers.
HEAD_KEEP = 960 * 1024
TAIL_KEEP = 64 * 1024
KEEP_BUDGET = 48 * 1024 * 1024
#: A large chunk inside which something awaited arrives is fed in pieces of this size.
PIECE = TAIL_KEEP
#: The size a speculative parse sees; reads within TAIL_KEEP of it return zeros.
UNKNOWN_SIZE = 1 << 62
#: After this many speculative runs the parser is left alone until the end of the stream.
MAX_SPECULATIVE_RUNS = 8192
#: ... or once the runs have read more than this many times the bytes the stream delivered,
#: plus REHEARSAL_READ_BASE: a parse's work follows what it reads, so rehearsals cost at
#: most a constant times the stream.  A walk that resumes where the last run stopped
#: (Source.memo, an OVA's tar headers) reads little per run and may run once per piece.
REHEARSAL_READ_FACTOR = 4
REHEARSAL_READ_BASE = 16 * 1024 * 1024

#: A consumer's fast way in: ``tap(offset, chunk, size) -> status`` (see Collector._taps),
#: ``tap_run(offset, size, count, *chunks) -> code`` and ``after(offset, chunk, status)``.
Tap = Callable[[int, bytes, int], int]
TapRun = Callable[..., int]
After = Callable[[int, bytes, int], None]
#: Chunks up to this size are walked by the taps in runs (so a run holds at most
#: ``STREAM_RUN - 1`` such chunks besides the latest).
TAP_RUN_CHUNK = 128 * 1024
_NO_CHUNKS: tuple[bytes, ...] = (b"",) * STREAM_RUN


class _Keep:
    """A consumer that holds its range's bytes."""

    def __init__(self, offset: int, length: int) -> None:
        self.offset = offset
        self.length = length
        self.buffer = bytearray()

    def feed(self, offset: int, data: bytes) -> None:
        self.buffer += data


class _Await:
    """A consumer for a range the head will hold anyway: it only marks when the range has
    arrived (so the parser runs again then), without a second copy of the bytes."""

    def feed(self, offset: int, data: bytes) -> None:
        pass


@dataclass(eq=False, slots=True)
class _Scan:
    """A consumer and the ranges (ascending, disjoint) it is fed, byte by byte, once."""

    consumer: Any
    ranges: list[Range]
    index: int = 0  # the range being fed
    fed: int = 0  # the next offset the consumer expects
    stop: int = 0  # the end of the range being fed
    lost: bool = False  # some of its bytes went by unfed
    take: Callable[[int, bytes], None] = field(init=False)  # the consumer's feed

    def __post_init__(self) -> None:
        self.take = self.consumer.feed
        self._enter(0)

    def _enter(self, index: int) -> None:
        self.index = index
        if index < len(self.ranges):
            self.fed, length = self.ranges[index]
            self.stop = self.fed + length

    @property
    def complete(self) -> bool:
        """Every byte of its ranges was fed."""
        return not self.lost and self.index >= len(self.ranges)

    @property
    def active(self) -> bool:
        """Still to be fed: some ranges left, none of their bytes missed."""
        return not self.lost and self.index < len(self.ranges)

    def feed(self, start: int, chunk: bytes | bytearray) -> None:
        """Feed the part of ``chunk`` (which begins at ``start``) that the ranges cover;
        consumers are always handed ``bytes``."""
        end = start + len(chunk)
        while self.active:
            if end <= self.fed:
                return  # the chunk lies wholly before the next byte wanted
            if start > self.fed:
                self.lost = True  # the bytes before this chunk went by unfed
                return
            hi = min(self.stop, end)
            if self.fed == start and hi == end and isinstance(chunk, bytes):
                self.take(start, chunk)
            else:
                self.take(self.fed, bytes(chunk[self.fed - start : hi - start]))
            self.fed = hi
            if hi < self.stop:
                return
            self._enter(self.index + 1)


@dataclass(slots=True)
class Collector:
    """What a single forward pass keeps: head, rolling tail, asked-for ranges, scans."""

    position: int = 0
    #: How much of the stream's start is always held (a caller with a tighter memory
    #: budget, such as the oslo.utils drop-in, holds less and relies on the parser asking).
    head_keep: int = HEAD_KEEP
    head: bytearray = field(default_factory=bytearray)
    scans: dict[Hashable, _Scan] = field(default_factory=dict)
    kept_bytes: int = 0
    # What the rehearsals' walks keep from one run to the next (Source.memo).
    memos: dict[Hashable, dict[str, Any]] = field(default_factory=dict)
    # The keeps by offset (ascending) and the longest one, so that finding the keep that
    # holds a range looks at the few that can, not at every scan (an OVA of thousands of
    # members keeps thousands of headers).
    _keep_offsets: list[int] = field(default_factory=list)
    _keeps: list[_Keep] = field(default_factory=list)
    _longest_keep: int = 0
    # The scans still being fed, and the lowest offset any of them waits for: a chunk
    # ending at or before it is not shown to the scans at all.
    _active: list[_Scan] = field(default_factory=list)
    _wanted: int = UNKNOWN_SIZE
    # The consumers of scans that take every byte from here to the end of the stream and
    # offer a tap (a VMDK's marker walk): each chunk goes to ``tap(offset, chunk, size)``
    # with no bookkeeping at all, and on a non-zero status to ``after(offset, chunk, status)``.
    _taps: list[tuple[Tap, TapRun, After]] = field(default_factory=list)
    # The latest chunks, not yet walked by the taps: a run, all of one size, ending at
    # ``position`` (see feed).
    _run: list[bytes] = field(default_factory=list)
    # The rolling tail is the last chunks themselves (no copy on the upload path): the
    # latest, and the ones before it still needed to cover TAIL_KEEP (none when the latest
    # does); joined only when a parse asks for it.
    _latest: bytes = b""
    _older: collections.deque[bytes] = field(default_factory=collections.deque)
    _older_bytes: int = 0
    _joined: bytes = b""
    _joined_at: int = 0  # the position at which _joined was made
    # The owner is called once the stream reaches ``alarm`` (it then sets the next one).
    alarm: int = UNKNOWN_SIZE
    on_alarm: Callable[[], None] = lambda: None
    # The calm (see feed): chunks of _calm_size bytes (-1: no calm) ending before
    # _calm_until need no bookkeeping but the position, the latest chunk and the taps' run.
    # None until the first feed has gone the long way.
    _calm_until: int = 0
    _calm_size: int = -1

    def feed(self, chunk: bytes) -> None:
        # The upload hot path: in the calm (the head complete, a chunk of the size of the
        # last one, which was large enough to be the whole tail, nothing awaited before
        # this chunk's end) a chunk costs two comparisons and joins the taps' run; anything
        # else goes the long way.
        start = self.position
        size = len(chunk)
        end = start + size
        if end < self._calm_until and size == self._calm_size:
            self.position = end
            self._latest = chunk
            if self._taps:
                run = self._run
                run.append(chunk)
                if len(run) == STREAM_RUN:
                    self.walk_run()
            return
        self.walk_run()  # the chunks before this one are walked before anything else
        self._feed_busy(chunk, start, size, end)
        self._settle()

    def walk_run(self) -> None:
        """Let the taps walk the chunks held for them (see feed): before the stream goes
        the long way, and at its end, before anyone asks what the taps saw."""
        run = self._run
        if not run:
            return
        self._run = []
        size = len(run[0])
        start = self.position - size * len(run)
        for tap, tap_run, after in self._taps:
            code = tap_run(start, size, len(run), *run, *_NO_CHUNKS[len(run) :])
            if not code:
                continue
            if code < 0:
                raise ValueError(f"a tap refused the chunks from byte {start}")
            k, status = divmod(code, 4)
            offset = start + k * size
            after(offset, run[k], status)
            for later in run[k + 1 :]:
                offset += size
                status = tap(offset, later, size)
                if status:
                    after(offset, later, status)

    def _feed_busy(self, chunk: bytes, start: int, size: int, end: int) -> None:
        if size > PIECE and self.alarm < end:
            self._feed_pieces(chunk)
            return
        self.position = end
        if start < self.head_keep:
            self.head += chunk[: self.head_keep - start]
        if size < TAIL_KEEP:
            self._hold_older(size)
        elif self._older:
            self._older.clear()
            self._older_bytes = 0
        self._latest = chunk
        for tap, _, after in self._taps:  # before the scans, which may become taps
            status = tap(start, chunk, size)
            if status:
                after(start, chunk, status)
        if end > self._wanted:
            self._feed_scans(start, end, chunk)
        if end >= self.alarm:
            self.on_alarm()

    def _settle(self) -> None:
        """Where the calm lies after the long way: up to the alarm or the first byte a scan
        waits for, for chunks of the latest one's size; none while the head is incomplete,
        while earlier small chunks make up the tail, or for a chunk too small to be the
        tail or too large for a run while there are taps.  (The position only grows in the
        calm, and the tail stays the latest chunk.)  The alarm is set by the owner from
        inside ``on_alarm``, and the scans and taps change only in ``_sort_scans`` or inside
        a feed, so this follows every change."""
        self._calm_until = min(self.alarm, self._wanted + 1)
        size = len(self._latest)
        runs = size <= TAP_RUN_CHUNK or not self._taps  # a run holds only smaller chunks
        # (a chunk of TAIL_KEEP or more that went the long way emptied the older ones)
        calm = size >= TAIL_KEEP and runs and self.position >= self.head_keep
        self._calm_size = size if calm else -1

    def _feed_pieces(self, chunk: bytes) -> None:
        """A large chunk in which the alarm goes off (a range the parser waits for arrives,
        or the end of the head): fed in pieces no larger than the kept tail, so that a
        range the parser learns of right after the one it waited for is still held when it
        asks.  Any other chunk is fed whole, without a copy."""
        view = memoryview(chunk)
        for start in range(0, len(chunk), PIECE):
            self.feed(bytes(view[start : start + PIECE]))

    def _hold_older(self, incoming: int) -> None:
        """Keep the latest chunk among the older ones, as many as the tail still needs
        once ``incoming`` more bytes have arrived."""
        older = self._older
        older.append(self._latest)
        self._older_bytes += len(self._latest)
        while older and self._older_bytes + incoming - len(older[0]) >= TAIL_KEEP:
            self._older_bytes -= len(older.popleft())

    def _feed_scans(self, start: int, end: int, chunk: bytes) -> None:
        wanted = UNKNOWN_SIZE
        changed = False
        for scan in self._active:
            scan.feed(start, chunk)
            if not scan.active or self._takes_the_rest(scan):
                changed = True
            elif scan.fed < wanted:
                wanted = scan.fed
        if changed:
            self._sort_scans()
        else:
            self._wanted = wanted

    def _sort_scans(self) -> None:
        """Drop the scans done or lost, make taps of those that take the rest of the stream
        from here on, and note the lowest offset the others wait for."""
        active = [scan for scan in self._active if scan.active]
        taps = [scan.consumer for scan in active if self._takes_the_rest(scan)]
        self._taps += [(consumer.tap, consumer.tap_run, consumer.after) for consumer in taps]
        self._active = [scan for scan in active if scan.consumer not in taps]
        self._wanted = min((scan.fed for scan in self._active), default=UNKNOWN_SIZE)
        self._settle()

    def _takes_the_rest(self, scan: _Scan) -> bool:
        if not hasattr(scan.consumer, "tap"):
            return False
        last = scan.index == len(scan.ranges) - 1
        return last and scan.fed == self.position and scan.stop >= UNKNOWN_SIZE - TAIL_KEEP

    @property
    def tail(self) -> bytes:
        if self._joined_at != self.position:
            self._joined = b"".join([*self._older, self._latest])
            self._joined_at = self.position
        return self._joined

    @property
    def tail_start(self) -> int:
        return self.position - self._older_bytes - len(self._latest)

    def start_scan(self, key: Hashable, ranges: Sequence[Range], make: Callable[[], Any]) -> _Scan:
        """Begin a scan once per key; what already passed is fed from the head and the tail
        that are still held, and a scan some of whose bytes are gone is marked lost."""
        scan = self.scans.get(key)
        if scan is not None:
            return scan
        scan = _Scan(make(), sorted((o, n) for o, n in ranges if n > 0))
        self.scans[key] = scan
        if isinstance(scan.consumer, _Keep):
            keep = scan.consumer
            if self.kept_bytes + keep.length > KEEP_BUDGET:
                scan.lost = True
                return scan
            self.kept_bytes += keep.length
            at = bisect.bisect_right(self._keep_offsets, keep.offset)
            self._keep_offsets.insert(at, keep.offset)
            self._keeps.insert(at, keep)
            self._longest_keep = max(self._longest_keep, keep.length)
        scan.feed(0, self.head)
        if scan.active and scan.fed < self.position:
            scan.feed(self.tail_start, self.tail)
        if scan.active:
            self._active.append(scan)
            self._sort_scans()
        return scan

    def held(self) -> dict[str, int]:
        """Bytes held now: the head, the ranges kept for the parser, and the earlier chunks
        kept for the tail (the latest chunk, and those the taps have yet to walk, are the
        caller's own, held by reference)."""
        kept = (scan.consumer for scan in self.scans.values())
        return {
            "head": len(self.head),
            "kept": sum(len(c.buffer) for c in kept if isinstance(c, _Keep)),
            "tail": self._older_bytes,
        }

    def next_arrival(self) -> int | None:
        """The stream position at which the nearest pending range will be complete."""
        ends = [scan.ranges[-1][0] + scan.ranges[-1][1] for scan in self._active]
        return min(ends) if ends else None

    def kept(self, offset: int, length: int, *, persist: bool = False) -> bytes | None:
        """Bytes at ``offset`` if some held buffer covers the whole range.

        With ``persist``, bytes found only in the rolling tail are kept for good: a parse
        that read them now will read them again on its next run, after the tail has moved on.
        """
        end = offset + length
        if end <= len(self.head):
            return bytes(self.head[offset:end])
        exact = self.scans.get(("keep", offset, length))
        if exact is not None and exact.complete:
            return bytes(exact.consumer.buffer)
        if offset >= self.tail_start and end <= self.position:
            start = offset - self.tail_start
            data = bytes(self.tail[start : start + length])
            if persist and self.kept_bytes + length <= KEEP_BUDGET:
                self.start_scan(("keep", offset, length), [(offset, length)],
                                functools.partial(_Keep, offset, length))  # fmt: skip
            return data
        # What a keep holds is always the bytes from its offset on, in order: a keep the
        # stream ended inside of (a window asked for past the end) holds them too.  Only the
        # keeps starting at most the longest keep's length before ``offset`` can hold it.
        index = bisect.bisect_right(self._keep_offsets, offset) - 1
        while index >= 0 and self._keep_offsets[index] + self._longest_keep >= end:
            keep = self._keeps[index]
            if end <= keep.offset + len(keep.buffer):
                start = offset - keep.offset
                return bytes(keep.buffer[start : start + length])
            index -= 1
        return None


class CollectedSource(Source):
    """The stream as a parser sees it: speculative (while streaming) or final (at the end)."""

    is_stream = True

    def __init__(self, collector: Collector, final: bool) -> None:
        self._collector = collector
        self._final = final
        self.speculative = not final
        super().__init__(collector.position if final else UNKNOWN_SIZE)

    def _read(self, offset: int, length: int) -> bytes:
        data = self._collector.kept(offset, length, persist=not self._final)
        if data is not None:
            return data
        if self._final:
            raise StreamGap(offset, length)
        if offset >= UNKNOWN_SIZE - TAIL_KEEP:
            return bytes(length)  # the end is unknowable before the end
        if not self._keep([(offset, length)]):
            raise StreamGap(offset, length)  # it went by before anyone asked
        return bytes(length)  # not here yet: go on with zeros, run again when it is

    def pending(self, offset: int, length: int) -> bool:
        return not self._final and offset + length > self._collector.position

    def memo(self, key: Hashable) -> dict[str, Any]:
        if self._final:
            return {}  # the answer comes from a walk of its own, start to end
        return self._collector.memos.setdefault(key, {})

    def prefetch(self, ranges: Sequence[Range]) -> None:
        if not self._final:
            reachable = [(o, n) for o, n in ranges if n > 0 and o < UNKNOWN_SIZE - TAIL_KEEP]
            self._keep(reachable)

    def _keep(self, ranges: Sequence[Range]) -> bool:
        """Start keeping ``ranges``; True if any of them can still be caught."""
        catchable = False
        for offset, length in ranges:
            collector = self._collector
            if collector.kept(offset, length) is not None:
                continue
            make: Callable[[], Any] = functools.partial(_Keep, offset, length)
            if offset + length <= collector.head_keep:
                make = _Await  # the head holds it once it arrives
            scan = collector.start_scan(("keep", offset, length), [(offset, length)], make)
            catchable = catchable or not scan.lost
        return catchable

    def scan(
        self, key: Hashable, ranges: Sequence[Range], make: Callable[[], C], *, wait: bool = True
    ) -> C:
        scan = self._collector.scans.get(("scan", key))
        if self._final:
            # Every byte has gone by: a scan not lost was fed all of its ranges that exist;
            # one asked for only now can still be fed from what the head and tail hold.
            if scan is None:
                return self._scan_held(ranges, make)
            if scan.lost:
                first = ranges[0] if ranges else (0, 0)
                raise StreamGap(*first)
            consumer: C = scan.consumer
            return consumer
        reachable = [(o, n) for o, n in ranges if o < UNKNOWN_SIZE - TAIL_KEEP]
        if scan is None:
            scan = self._collector.start_scan(("scan", key), reachable, make)
        if scan.lost:
            first = ranges[0] if ranges else (0, 0)
            raise StreamGap(*first)
        # Done or not, the parse goes on with what the consumer has seen so far.
        consumer = scan.consumer
        return consumer

    def _scan_held(self, ranges: Sequence[Range], make: Callable[[], C]) -> C:
        """A scan first asked for at the end: fed from held bytes, or a gap."""
        consumer = make()
        for offset, length in ranges:
            length = min(length, self.size - offset)
            if length <= 0:
                continue
            data = self._collector.kept(offset, length)
            if data is None:
                raise StreamGap(offset, length)
            consumer.feed(offset, data)
        return consumer


class StreamInspector:
    """Drives speculative parses while chunks arrive, and the final parse at the end."""

    def __init__(
        self,
        parse: Callable[[Source], Any],
        *,
        on_head: Callable[[bytes], None] | None = None,
        head_size: int = 0,
        head_keep: int = HEAD_KEEP,
    ) -> None:
        """``parse`` runs on a source; ``on_head`` is called once with the first
        ``head_size`` bytes (or all of a shorter stream's, at its end); the first
        ``head_keep`` bytes are always held."""
        self._parse = parse
        self._on_head = on_head
        self._head_size = head_size
        self.collector = collector = Collector(head_keep=head_keep)
        self._next_run: int | None = 0  # where something asked for will have arrived
        self._runs = 0
        self._rehearsal_reads = 0
        # The upload path goes straight to the collector, which calls back at its alarm:
        # where a parse is to run or the head is to be handed over.
        collector.alarm = 0
        collector.on_alarm = self._attend
        self.feed: Callable[[bytes], None] = collector.feed

    def _attend(self) -> None:
        collector = self.collector
        if self._next_run is not None and collector.position >= self._next_run:
            self._speculate()
        if self._on_head is not None and collector.position >= self._head_size:
            self._call_on_head()
        next_run = UNKNOWN_SIZE if self._next_run is None else self._next_run
        collector.alarm = next_run if self._on_head is None else min(next_run, self._head_size)

    def _call_on_head(self) -> None:
        on_head, self._on_head = self._on_head, None
        if on_head is not None:
            on_head(bytes(self.collector.head[: self._head_size]))

    def _speculate(self) -> None:
        """Parse what has arrived; then wait for the next thing asked for to arrive."""
        budget = REHEARSAL_READ_BASE + REHEARSAL_READ_FACTOR * self.collector.position
        while self._runs < MAX_SPECULATIVE_RUNS and self._rehearsal_reads <= budget:
            self._runs += 1
            source = CollectedSource(self.collector, final=False)
            with contextlib.suppress(Exception):  # only the final run's verdict counts
                self._parse(source)
            self._rehearsal_reads += source.bytes_read
            self._next_run = self.collector.next_arrival()
            if self._next_run is None or self._next_run > self.collector.position:
                return
        self._next_run = None  # enough: the rest is judged at the end

    def finish(self) -> Any:
        self.collector.walk_run()
        self._call_on_head()
        return self._parse(CollectedSource(self.collector, final=True))


__all__ = ["CollectedSource", "Collector", "Consumer", "StreamInspector"]
