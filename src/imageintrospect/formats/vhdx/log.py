"""The VHDX log: find the active sequence of entries and replay it in memory.

Layout and rules: [MS-VHDX] section 2.3.  The log is a circular buffer of 4 KiB sectors.  An
entry is a 64-byte header (``loge``) followed by 32-byte descriptors, filling whole sectors,
then one 4 KiB data sector (``data``) per data descriptor.  A data descriptor (``desc``) says
"write this sector at this file offset" (its first 8 and last 4 bytes travel in the
descriptor, the rest in the data sector); a zero descriptor (``zero``) says "write zeros over
this many bytes".  An entry is valid when its signature, its CRC-32C (over the whole entry,
checksum field taken as zero), its log GUID (the current header's), its length and every
descriptor and data sector (signature, sequence number, 4 KiB alignment) check out.

A *sequence* is a run of valid entries whose sequence numbers go up by one, each starting
where the previous one ends.  It can be replayed when the last entry (the head)'s ``Tail``
points at an entry of the run: the entries from the tail to the head are the ones not yet
applied.  Of the replayable sequences, the one whose head has the largest sequence number
is active.  Replaying it writes its sectors in entry order; the file must have been at least
each entry's ``FlushedFileOffset`` long, and afterwards is at least ``LastFileOffset``.

Nothing is written: :class:`ReplayedSource` is a view of the image with the active sequence's
writes laid over it, and the format module parses that view again.  Memory stays bounded:
only logs up to :data:`MAX_LOG` are read, and the writes held are at most the log's bytes
(zero descriptors are held as ranges).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

from ...frozen import frozen
from ...scan import crc32c
from ...source import C, Range, Source, StreamGap

SECTOR = 4096
#: The largest log this library reads and replays (Hyper-V and qemu make 1 MiB logs).
MAX_LOG = 16 * 1024 * 1024
#: CRC-32C work allowed per byte of log: a hostile log of overlapping entries cannot make the
#: search quadratic.
CRC_BUDGET_FACTOR = 2
ENTRY_HEADER = struct.Struct("<4sIIIQII16sQQ")
DESCRIPTOR = struct.Struct("<4sIQQQ")
DATA_SECTOR_HEAD = struct.Struct("<4sI")
ENTRY_SIGNATURE = b"loge"
DATA_DESCRIPTOR = b"desc"
ZERO_DESCRIPTOR = b"zero"
DATA_SIGNATURE = b"data"
MiB = 1024 * 1024


class Unreplayable(Exception):
    """The log holds what qemu would replay but the specification's rules reject it."""


@frozen
class Write:
    """One replayed write: ``data`` at ``offset``, or ``length`` zero bytes when data is None."""

    offset: int
    length: int
    data: bytes | None


@frozen
class Entry:
    sector: int  # where it starts, in log sectors
    sectors: int
    sequence: int
    tail: int  # byte offset in the log of the sequence's first unapplied entry
    flushed_file_offset: int
    last_file_offset: int
    writes: tuple[Write, ...]


@dataclass
class Replay:
    """The active sequence: the entries replayed, their writes, the file size afterwards."""

    entries: tuple[Entry, ...]
    writes: tuple[Write, ...]
    size: int
    problems: list[str] = field(default_factory=list)


def find_active(log: bytes, log_guid: bytes, file_size: int) -> Replay | None:
    """The active sequence of ``log`` (the log region's bytes), or None when there is none.

    Raises :class:`Unreplayable` when an entry that qemu would take as valid breaks a rule
    of the specification, when no sequence satisfies the tail rule although valid entries
    exist, or when the search would cost more than its budget.
    """
    reader = _LogReader(log, log_guid)
    heads: dict[int, int] = {}  # entry sector -> sector of the head its run reaches
    for start in range(reader.count):
        if reader.entry(start) is not None:
            _run_head(reader, start, heads)
    valid = [start for start in heads if reader.entry(start) is not None]
    if not valid:
        return None
    best: tuple[Entry, ...] | None = None
    for head_sector in sorted(set(heads.values())):
        run = _replayable(reader, heads, head_sector)
        if run is not None and (best is None or run[-1].sequence > best[-1].sequence):
            best = run
    if best is None:
        raise Unreplayable(
            f"{len(valid)} valid log entries, but no sequence whose head's tail points into it"
        )
    return _replay(best, file_size)


class _LogReader:
    """Decodes entries at sector positions once each, within a CRC work budget."""

    def __init__(self, log: bytes, log_guid: bytes) -> None:
        self.log = log
        self.count = len(log) // SECTOR
        self.guid = log_guid
        self._entries: dict[int, Entry | None] = {}
        self._budget = CRC_BUDGET_FACTOR * len(log) + MiB

    def sector(self, index: int) -> bytes:
        start = (index % self.count) * SECTOR
        return self.log[start : start + SECTOR]

    def span(self, index: int, count: int) -> bytes:
        return b"".join(self.sector(index + i) for i in range(count))

    def entry(self, index: int) -> Entry | None:
        if index not in self._entries:
            self._entries[index] = self._decode(index)
        return self._entries[index]

    def _decode(self, index: int) -> Entry | None:
        head = self.sector(index)
        (sig, checksum, length, tail, sequence, count, _, guid, flushed, last) = (
            ENTRY_HEADER.unpack_from(head)
        )
        # qemu's validity test of an entry header, in its order
        if sig != ENTRY_SIGNATURE or length > len(self.log) or length % SECTOR or length == 0:
            return None
        if sequence == 0 or guid != self.guid or count * DESCRIPTOR.size > length:
            return None
        sectors = length // SECTOR
        desc_sectors = -(-(count + 2) // 128)
        if desc_sectors > sectors:
            return None
        self._budget -= length
        if self._budget < 0:
            raise Unreplayable("the log's entries overlap too much to be searched")
        raw = self.span(index, sectors)
        if crc32c(raw[:4] + b"\0\0\0\0" + raw[8:]) != checksum:
            return None
        descriptors = [
            DESCRIPTOR.unpack_from(raw, ENTRY_HEADER.size + i * DESCRIPTOR.size)
            for i in range(count)
        ]
        if not all(_descriptor_ok(d, sequence) for d in descriptors):
            return None
        # From here on qemu would take the entry: what the specification rejects is fatal.
        writes = self._writes(index, descriptors, sectors, desc_sectors, sequence)
        if tail % SECTOR or tail >= len(self.log):
            raise Unreplayable(f"log entry {sequence}: tail {tail:#x} is not a log sector")
        return Entry(index, sectors, sequence, tail, flushed, last, writes)

    def _writes(
        self,
        index: int,
        descriptors: list[tuple[bytes, int, int, int, int]],
        sectors: int,
        desc_sectors: int,
        sequence: int,
    ) -> tuple[Write, ...]:
        data_count = sum(1 for d in descriptors if d[0] == DATA_DESCRIPTOR)
        if desc_sectors + data_count != sectors:
            raise Unreplayable(
                f"log entry {sequence}: {sectors} sectors, but {desc_sectors} of descriptors "
                f"and {data_count} of data"
            )
        writes = []
        data_index = index + desc_sectors
        for sig, trailing, value, offset, _ in descriptors:
            if sig == ZERO_DESCRIPTOR:
                writes.append(Write(offset, value, None))
                continue
            data = self.sector(data_index)
            data_index += 1
            data_sig, high = DATA_SECTOR_HEAD.unpack_from(data)
            (low,) = struct.unpack_from("<I", data, SECTOR - 4)
            if data_sig != DATA_SIGNATURE or (high << 32 | low) != sequence:
                raise Unreplayable(
                    f"log entry {sequence}: the data sector for offset {offset:#x} has "
                    f"signature {data_sig!r} and sequence {high << 32 | low}"
                )
            body = struct.pack("<Q", value) + data[8 : SECTOR - 4] + struct.pack("<I", trailing)
            writes.append(Write(offset, SECTOR, body))
        return tuple(writes)


def _descriptor_ok(descriptor: tuple[bytes, int, int, int, int], sequence: int) -> bool:
    sig, _, value, offset, desc_sequence = descriptor
    if desc_sequence != sequence or offset % SECTOR:
        return False
    if sig == ZERO_DESCRIPTOR:
        return value % SECTOR == 0
    return sig == DATA_DESCRIPTOR


def _run_head(reader: _LogReader, start: int, heads: dict[int, int]) -> int:
    """The head of the run that ``start`` begins, following entries forward (memoised)."""
    path: list[int] = []
    on_path: set[int] = set()
    position = start
    while position not in heads:
        entry = reader.entry(position)
        assert entry is not None
        path.append(position)
        on_path.add(position)
        following = (position + entry.sectors) % reader.count
        successor = reader.entry(following)
        # sequence numbers rise strictly, so a run cannot come back to where it began
        if successor is None or successor.sequence != entry.sequence + 1 or following in on_path:
            heads[position] = position
            path.pop()
            break
        position = following
    head = heads[position]
    for sector in path:
        heads[sector] = head
    return head


def _replayable(
    reader: _LogReader, heads: dict[int, int], head_sector: int
) -> tuple[Entry, ...] | None:
    """The entries from the head's tail to the head, when the tail is an entry of its run."""
    head = reader.entry(head_sector)
    assert head is not None
    tail_sector = head.tail // SECTOR
    if heads.get(tail_sector) != head_sector or reader.entry(tail_sector) is None:
        return None
    run = []
    position = tail_sector
    while True:
        entry = reader.entry(position)
        assert entry is not None
        run.append(entry)
        if position == head_sector:
            return tuple(run)
        position = (position + entry.sectors) % reader.count


def _replay(entries: tuple[Entry, ...], file_size: int) -> Replay:
    size = file_size
    writes: list[Write] = []
    for entry in entries:
        if entry.flushed_file_offset > size:
            raise Unreplayable(
                f"log entry {entry.sequence} needs a file of {entry.flushed_file_offset} bytes; "
                f"it has {size} (truncated)"
            )
        limit = max(size, entry.last_file_offset)
        for write in entry.writes:
            if write.offset + write.length > limit:
                raise Unreplayable(
                    f"log entry {entry.sequence} writes {write.length} bytes at "
                    f"{write.offset:#x}, past its last file offset {entry.last_file_offset:#x}"
                )
            writes.append(write)
        size = max(size, -(-entry.last_file_offset // MiB) * MiB)
    return Replay(entries, tuple(writes), size)


class ReplayedSource(Source):
    """The image as it reads once the log's writes are applied (nothing is written)."""

    def __init__(self, parent: Source, replay: Replay) -> None:
        super().__init__(replay.size)
        self._parent = parent
        self._writes = replay.writes
        self.is_stream = parent.is_stream
        self.speculative = parent.speculative

    def _touched(self, offset: int, length: int) -> bool:
        end = offset + length
        return any(w.offset < end and offset < w.offset + w.length for w in self._writes)

    def _read(self, offset: int, length: int) -> bytes:
        base = self._parent.read_at(offset, length) if offset < self._parent.size else b""
        if not self._touched(offset, length):
            return base + bytes(length - len(base))
        out = bytearray(base)
        out.extend(bytes(length - len(out)))
        end = offset + length
        for write in self._writes:  # in replay order: a later write wins
            lo, hi = max(offset, write.offset), min(end, write.offset + write.length)
            if lo >= hi:
                continue
            if write.data is None:
                out[lo - offset : hi - offset] = bytes(hi - lo)
            else:
                out[lo - offset : hi - offset] = write.data[lo - write.offset : hi - write.offset]
        return bytes(out)

    def prefetch(self, ranges: Sequence[Range]) -> None:
        self._parent.prefetch(ranges)

    def scan(
        self, key: Hashable, ranges: Sequence[Range], make: Callable[[], C], *, wait: bool = True
    ) -> C:
        if not self.is_stream:
            return super().scan(key, ranges, make, wait=wait)
        for offset, length in ranges:
            if self._touched(offset, length):
                # the stream feeds the file's bytes, not the replayed ones: read what it kept
                raise StreamGap(offset, length)
        return self._parent.scan(key, ranges, make, wait=wait)
