"""Introspecting a forward-only stream: parse until blocked, stream until unblocked.

A stream cannot seek, and an image's structures are not in offset order of need: a qcow2's
snapshot table or an OVA's second member lie far ahead of the header that points at them.
So the format's own ``parse`` is run *speculatively* against what has arrived: every read it
makes of bytes not yet seen raises :class:`NeedBytes`, the :class:`Collector` starts keeping
(or scanning) those ranges, and once the stream has passed them ``parse`` runs again and gets
further.  At the end of the stream ``parse`` runs one last time, for real, against a source
that knows the true size: that run's answer is the answer.  Any range it wants that went by
unkept raises :class:`~imageintrospect.source.StreamGap`, which the format reports as
``stream-unchecked``.

Speculative runs see a size of :data:`UNKNOWN_SIZE` and zeros wherever they read near that
fictitious end (a footer cannot be known before the end), and their findings are discarded.
Memory: the first :data:`HEAD_KEEP` bytes, a rolling :data:`TAIL_KEEP`, and what the parser
asked to keep, at most :data:`KEEP_BUDGET` bytes in all; scans hold only their consumers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ImageIntrospectError
from .source import C, Consumer, Range, Source, StreamGap

#: Head and tail together are the contract's 1 MiB; the tail only has to hold footers.
HEAD_KEEP = 960 * 1024
TAIL_KEEP = 64 * 1024
KEEP_BUDGET = 48 * 1024 * 1024
#: Incoming chunks are fed in pieces of at most this size while the parser still waits.
PIECE = TAIL_KEEP
#: The size a speculative parse sees; reads within TAIL_KEEP of it return zeros.
UNKNOWN_SIZE = 1 << 62
#: After this many speculative runs the parser is left alone until the end of the stream.
MAX_SPECULATIVE_RUNS = 512


class NeedBytes(BaseException):
    """Raised inside a speculative parse: these ranges have not arrived yet.

    A ``BaseException`` on purpose: no ``except Exception`` or ``except StreamGap`` in a
    format module may swallow it; only the stream driver catches it.
    """

    def __init__(self, ranges: Sequence[Range]) -> None:
        super().__init__(f"waiting for {len(ranges)} range(s)")
        self.ranges = list(ranges)


class _Keep:
    """A consumer that holds its range's bytes."""

    def __init__(self, offset: int, length: int) -> None:
        self.offset = offset
        self.length = length
        self.buffer = bytearray()

    def feed(self, offset: int, data: bytes) -> None:
        self.buffer += data


@dataclass
class _Scan:
    """A consumer and the ranges (ascending, disjoint) it is fed, byte by byte, once."""

    consumer: Any
    ranges: list[Range]
    index: int = 0  # the range being fed
    fed: int = 0  # the next offset the consumer expects
    lost: bool = False  # some of its bytes went by unfed

    def __post_init__(self) -> None:
        self.fed = self.ranges[0][0] if self.ranges else 0

    @property
    def done(self) -> bool:
        return self.index >= len(self.ranges)

    def feed(self, start: int, chunk: bytes | bytearray) -> None:
        """Feed the part of ``chunk`` (which begins at ``start``) that the ranges cover."""
        end = start + len(chunk)
        while not self.done and not self.lost:
            offset, length = self.ranges[self.index]
            lo, hi = max(self.fed, start), min(offset + length, end)
            if lo >= hi:
                return  # the chunk does not reach the next byte wanted
            if lo > self.fed:
                self.lost = True  # the bytes before this chunk went by unfed
                return
            self.consumer.feed(lo, bytes(chunk[lo - start : hi - start]))
            self.fed = hi
            if hi < offset + length:
                return
            self.index += 1
            if not self.done:
                self.fed = self.ranges[self.index][0]


@dataclass
class Collector:
    """What a single forward pass keeps: head, rolling tail, asked-for ranges, scans."""

    position: int = 0
    head: bytearray = field(default_factory=bytearray)
    tail: bytearray = field(default_factory=bytearray)
    scans: dict[Hashable, _Scan] = field(default_factory=dict)
    kept_bytes: int = 0

    def feed(self, chunk: bytes) -> None:
        start = self.position
        self.position += len(chunk)
        if len(self.head) < HEAD_KEEP:
            self.head += chunk[: HEAD_KEEP - len(self.head)]
        self.tail += chunk
        if len(self.tail) > 2 * TAIL_KEEP:  # trim in batches, not on every chunk
            del self.tail[: len(self.tail) - TAIL_KEEP]
        for scan in self.scans.values():
            if not scan.done and not scan.lost:
                scan.feed(start, chunk)

    def finish(self) -> None:
        if len(self.tail) > TAIL_KEEP:
            del self.tail[: len(self.tail) - TAIL_KEEP]

    @property
    def tail_start(self) -> int:
        return self.position - len(self.tail)

    def start_scan(self, key: Hashable, ranges: Sequence[Range], make: Callable[[], Any]) -> _Scan:
        """Begin a scan once per key; what already passed is fed from the head and the tail
        that are still held, and a scan some of whose bytes are gone is marked lost."""
        scan = self.scans.get(key)
        if scan is not None:
            return scan
        scan = _Scan(make(), sorted((o, n) for o, n in ranges if n > 0))
        self.scans[key] = scan
        if isinstance(scan.consumer, _Keep):
            if self.kept_bytes + scan.consumer.length > KEEP_BUDGET:
                scan.lost = True
                return scan
            self.kept_bytes += scan.consumer.length
        scan.feed(0, self.head)
        if not scan.lost and scan.fed < self.position:
            scan.feed(self.tail_start, self.tail)
        return scan

    def kept(self, offset: int, length: int) -> bytes | None:
        """Bytes at ``offset`` if some held buffer covers the whole range."""
        end = offset + length
        if end <= len(self.head):
            return bytes(self.head[offset:end])
        if offset >= self.tail_start and end <= self.position:
            start = offset - self.tail_start
            return bytes(self.tail[start : start + length])
        for scan in self.scans.values():
            keep = scan.consumer
            held = isinstance(keep, _Keep) and scan.done and not scan.lost
            if held and keep.offset <= offset and end <= keep.offset + len(keep.buffer):
                start = offset - keep.offset
                return bytes(keep.buffer[start : start + length])
        return None


class CollectedSource(Source):
    """The stream as a parser sees it: speculative (while streaming) or final (at the end)."""

    is_stream = True

    def __init__(self, collector: Collector, final: bool) -> None:
        self._collector = collector
        self._final = final
        super().__init__(collector.position if final else UNKNOWN_SIZE)

    def _read(self, offset: int, length: int) -> bytes:
        data = self._collector.kept(offset, length)
        if data is not None:
            return data
        if self._final:
            raise StreamGap(offset, length)
        if offset >= UNKNOWN_SIZE - TAIL_KEEP:
            return bytes(length)  # the end is unknowable before the end
        if not self._keep([(offset, length)]):
            raise StreamGap(offset, length)  # it went by before anyone asked
        raise NeedBytes([(offset, length)])

    def prefetch(self, ranges: Sequence[Range]) -> None:
        if self._final:
            return
        missing = [
            (o, n)
            for o, n in ranges
            if n > 0 and o < UNKNOWN_SIZE - TAIL_KEEP and self._collector.kept(o, n) is None
        ]
        if missing and self._keep(missing):
            raise NeedBytes(missing)

    def _keep(self, ranges: Sequence[Range]) -> bool:
        """Start keeping ``ranges``; True if any of them can still be caught."""
        catchable = False
        for offset, length in ranges:
            make = functools.partial(_Keep, offset, length)
            scan = self._collector.start_scan(("keep", offset, length), [(offset, length)], make)
            catchable = catchable or not (scan.lost or scan.done)
        return catchable

    def scan(self, key: Hashable, ranges: Sequence[Range], make: Callable[[], C]) -> C:
        if self._final:
            # Every byte has gone by: a scan not lost was fed all of its ranges that exist.
            scan = self._collector.scans.get(("scan", key))
            if scan is None or scan.lost:
                first = ranges[0] if ranges else (0, 0)
                raise StreamGap(*first)
            consumer: C = scan.consumer
            return consumer
        scan = self._collector.start_scan(("scan", key), ranges, make)
        if scan.done or scan.lost:
            consumer = scan.consumer
            return consumer
        raise NeedBytes(ranges)


class StreamInspector:
    """Drives speculative parses while chunks arrive, and the final parse at the end."""

    def __init__(self, parse: Callable[[Source], Any]) -> None:
        self._parse = parse
        self.collector = Collector()
        self._waiting_until = 0  # position at which the last NeedBytes is satisfied
        self._runs = 0
        self._settled = False  # a speculative parse finished without needing more

    def feed(self, chunk: bytes) -> None:
        if self._settled or len(chunk) <= PIECE:
            self._feed_piece(chunk)
            return
        # Large chunks are fed in pieces no larger than the kept tail, so a parser that
        # learns of a range right after the one it waited for still finds it held.
        view = memoryview(chunk)
        for start in range(0, len(chunk), PIECE):
            self._feed_piece(bytes(view[start : start + PIECE]))

    def _feed_piece(self, piece: bytes) -> None:
        self.collector.feed(piece)
        if not self._settled and self.collector.position >= self._waiting_until:
            self._speculate()

    def _speculate(self) -> None:
        while not self._settled and self._runs < MAX_SPECULATIVE_RUNS:
            self._runs += 1
            try:
                self._parse(CollectedSource(self.collector, final=False))
            except NeedBytes as need:
                reachable = UNKNOWN_SIZE - TAIL_KEEP
                ahead = [
                    o + n for o, n in need.ranges if self.collector.position < o + n <= reachable
                ]
                if ahead:
                    self._waiting_until = max(ahead)
                    return
                # Nothing asked for can still arrive: no later run would get further.
            except (ImageIntrospectError, Exception):
                pass  # only the final run's verdict counts
            self._settled = True

    def finish(self) -> Any:
        self.collector.finish()
        return self._parse(CollectedSource(self.collector, final=True))


__all__ = ["CollectedSource", "Collector", "Consumer", "NeedBytes", "StreamInspector"]
