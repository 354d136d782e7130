"""Deep: the refcount, L1 and L2 tables walked, claims and bad entries reported."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Protocol

from ... import findings as F
from ... import scan
from ...source import MAX_READ, Source, StreamGap
from ..base import Context
from ..blocktables import Claims, merge_runs
from .codes import (
    BAD_COMPRESSED,
    BAD_SUBCLUSTER,
    CLUSTER_CLAIMED_TWICE,
    ENTRY_IN_METADATA,
    ENTRY_MISALIGNED,
    ENTRY_OUT_OF_RANGE,
    ENTRY_RESERVED_BITS,
    OVERLAP_UNCHECKED,
)
from .header import V3Fields
from .layout import (
    L2_BATCH,
    L2_STREAM_KEEP,
    MAX_CLUSTER_BITS,
    MAX_L1_BYTES,
    MAX_REFTABLE_BYTES,
    MIN_CLUSTER_BITS,
    MIN_EXTENDED_L2_CLUSTER_BITS,
    Header,
)
from .section import Allocation, Qcow2Section

# --- deep: the refcount, L1 and L2 tables ---------------------------------------------------

_REASON_CODES = {
    scan.Reason.OUT_OF_RANGE: ENTRY_OUT_OF_RANGE,
    scan.Reason.TRUNCATED: ENTRY_OUT_OF_RANGE,
    scan.Reason.MISALIGNED: ENTRY_MISALIGNED,
    scan.Reason.IN_METADATA: ENTRY_IN_METADATA,
    scan.Reason.RESERVED_BITS: ENTRY_RESERVED_BITS,
    scan.Reason.DOUBLE_CLAIM: CLUSTER_CLAIMED_TWICE,
    scan.Reason.BAD_COMPRESSED: BAD_COMPRESSED,
    scan.Reason.BAD_SUBCLUSTER: BAD_SUBCLUSTER,
}


def walkable(hdr: Header, v3: V3Fields, extended_l2: bool) -> bool:
    """Whether the header's numbers are sane enough to walk its tables (else they were
    already reported as bad geometry, and a walk would only read nonsense)."""
    bits = hdr.cluster_bits
    if not MIN_CLUSTER_BITS <= bits <= MAX_CLUSTER_BITS or hdr.version not in (2, 3):
        return False
    if extended_l2 and bits < MIN_EXTENDED_L2_CLUSTER_BITS:
        return False
    cluster = 1 << bits
    return bool(
        hdr.l1_size * 8 <= MAX_L1_BYTES
        and 0 < hdr.refcount_table_clusters * cluster <= MAX_REFTABLE_BYTES
        and hdr.l1_table_offset % cluster == 0
        and hdr.refcount_table_offset % cluster == 0
    )


def walk_tables(
    ctx: Context, hdr: Header, section: Qcow2Section, snapshot_l1s: frozenset[tuple[int, int]]
) -> Allocation | None:
    """Check every refcount table, L1 and L2 entry; count what the active tables map."""
    src = ctx.source
    rehearsal = src.memo(("qcow2-tables", hdr.l1_table_offset))
    if rehearsal:
        return None  # an earlier rehearsal started the L2 walk: nothing more to keep
    bits = hdr.cluster_bits
    cluster = 1 << bits
    claimed = _claim_map(ctx, hdr, section, snapshot_l1s)
    try:
        refcounts = _scan_pointer_table(
            ctx, "refcount table", hdr.refcount_table_offset,
            hdr.refcount_table_clusters * cluster, bits, claimed, scan.qcow2_refcount_table,
        )  # fmt: skip
        l1 = _scan_pointer_table(
            ctx, "L1 table", hdr.l1_table_offset, hdr.l1_size * 8, bits, claimed, scan.qcow2_l1
        )
    except StreamGap as gap:
        ctx.findings.add(F.STREAM_UNCHECKED, f"qcow2 tables at {gap.offset:#x} went by unkept")
        return None
    # A rehearsal starts the L2 walk once the L1 table has arrived, whether or not the
    # refcount table has (it may lie after the L2 tables, which would then go by).
    if l1 is None or (refcounts is None and not src.speculative):
        return None
    tables = sorted(set(l1.offsets))
    make_walker = functools.partial(_L2Walker, section, bits, src.size, claimed, src.is_stream)
    try:
        walker = src.scan(
            ("qcow2-l2", hdr.l1_table_offset, len(tables)), merge_runs(tables, cluster), make_walker
        )
    except StreamGap:
        ctx.findings.add(F.STREAM_UNCHECKED, "L2 tables went by before the L1 table named them")
        return None
    if src.speculative or refcounts is None:
        rehearsal["walk started"] = True  # (the final parse's memo is its own, unused)
        return None  # a stream still arriving: the walker is judged once, at the end
    walker.report(ctx, src.size, claimed)
    return Allocation(
        l2_tables=len(tables),
        allocated_clusters=walker.allocated,
        compressed_clusters=walker.compressed,
        zero_clusters=walker.zero,
        unallocated_clusters=walker.unallocated + (hdr.l1_size - l1.allocated) * walker.per_table,
        bad_entries=walker.bad_count + l1.bad_count + refcounts.bad_count,
        refcount_blocks=refcounts.allocated,
    )


def _claim_map(
    ctx: Context, hdr: Header, section: Qcow2Section, snapshot_l1s: frozenset[tuple[int, int]]
) -> bytearray | None:
    """The cluster claim map with the header's own structures marked, before any table is
    scanned; None (reported) when the map would exceed the claim-map limit."""
    cluster = 1 << hdr.cluster_bits
    claims = Claims(ctx.source.size, cluster, _metadata(hdr, section, cluster, snapshot_l1s))
    if not claims.enabled:
        clusters = -(-ctx.source.size // cluster)
        ctx.findings.add(
            OVERLAP_UNCHECKED, f"{clusters} host clusters: double use of clusters not checked"
        )
    return claims.map()


def _metadata(
    hdr: Header, section: Qcow2Section, cluster: int, snapshot_l1s: frozenset[tuple[int, int]]
) -> tuple[tuple[int, int, str], ...]:
    """(start, end, name) of the clusters the header's own structures occupy."""
    spans = [
        (0, cluster, "header"),
        (hdr.l1_table_offset, hdr.l1_table_offset + hdr.l1_size * 8, "L1 table"),
        (
            hdr.refcount_table_offset,
            hdr.refcount_table_offset + hdr.refcount_table_clusters * cluster,
            "refcount table",
        ),
    ]
    if section.encryption_header is not None:
        header = section.encryption_header
        spans.append((header["offset"], header["offset"] + header["length"], "encryption"))
    if snapshot_l1s:
        spans.append((hdr.snapshots_offset, hdr.snapshots_offset + cluster, "snapshot table"))
    # snapshots' L1 tables; their L2 tables and data may be shared: not marked
    spans += [(offset, offset + size * 8, "snapshot L1 table") for offset, size in snapshot_l1s]
    return tuple(spans)


class _PointerScan(Protocol):
    def __call__(
        self,
        table: bytes,
        *,
        cluster_bits: int,
        file_size: int,
        claimed: bytearray | None = None,
        first_index: int = 0,
    ) -> scan.PointerTableResult: ...


def _scan_pointer_table(
    ctx: Context,
    what: str,
    offset: int,
    length: int,
    bits: int,
    claimed: bytearray | None,
    scanner: _PointerScan,
) -> scan.PointerTableResult | None:
    """Read a table of cluster pointers (L1 or refcount table) and check every entry."""
    if offset + length > ctx.source.size:
        return None  # already reported as truncated by the geometry check
    if ctx.source.pending(offset, length):
        ctx.source.prefetch([(offset, length)])
        return None  # a rehearsal: scanned once it has arrived, not once per run before
    # At most 32 MiB (qemu's L1 limit), read in windows below the per-read limit.
    table = b"".join(
        ctx.source.read_at(start, min(MAX_READ, offset + length - start))
        for start in range(offset, offset + length, MAX_READ)
    )
    result = scanner(table, cluster_bits=bits, file_size=ctx.source.size, claimed=claimed)
    _report(ctx, result, f"{what} at {offset:#x}")
    return result


def _report(ctx: Context, verdict: scan.Verdict, where: str) -> None:
    if verdict.ok:
        return
    reason = scan.Reason(verdict.bad_reason)
    code = _REASON_CODES.get(reason, ENTRY_OUT_OF_RANGE)
    ctx.findings.add(
        code,
        f"{where}: entry {verdict.bad_index} = {verdict.bad_value:#018x} "
        f"({reason.name.lower().replace('_', ' ')}); {verdict.bad_count} bad entr"
        f"{'y' if verdict.bad_count == 1 else 'ies'}",
    )


class _L2Walker:
    """Scan consumer: checks L2 entries in batches, whatever tables and pieces they come in.

    L2 entries are checked one by one, whatever table they sit in, so entries of many tables
    are gathered into one buffer and checked in one scanner call per :data:`L2_BATCH` bytes
    (a preallocated 1 TiB image has 16384 tables: one call each would cost more than the
    scan itself).  Each piece's file offset is remembered to name a bad entry's table.
    """

    def __init__(
        self,
        section: Qcow2Section,
        bits: int,
        file_size: int,
        claimed: bytearray | None,
        deferred: bool = False,
    ) -> None:
        # On a stream the walker is made before the image's size is known: its batches are
        # held (up to L2_STREAM_KEEP) and checked in ``report`` against the true size and
        # a claim map of the true file, so the answer is the seekable one.
        self._deferred = deferred
        self._held: list[tuple[bytes, list[tuple[int, int]]]] = []
        self._held_bytes = 0
        self.unchecked_entries = 0
        self._bits = bits
        self._cluster = 1 << bits
        self._file_size = file_size
        self._claimed = claimed
        self._version = section.version
        self._extended = section.extended_l2
        self._entry = 16 if self._extended else 8
        self._data_file = "external-data-file" in section.incompatible_features
        self.per_table = self._cluster // self._entry
        # One batch buffer, filled in place and checked whenever full.
        self._batch = memoryview(bytearray(L2_BATCH))
        self._filled = 0
        self._pieces: list[tuple[int, int]] = []  # (position in the batch, file offset)
        self.allocated = self.compressed = self.zero = self.unallocated = self.bad_count = 0
        self._first_bad: tuple[int, int] | None = None  # (file offset of the entry, value)
        self._first_reason = scan.Reason.OK

    def feed(self, offset: int, data: bytes) -> None:
        """Take a piece of the tables as a scan hands it over (a stream's path)."""
        piece = memoryview(data)
        while piece:
            space = self._space(offset)
            taken = min(len(space), len(piece))
            space[:taken] = piece[:taken]
            self._advance(taken)
            offset += taken
            piece = piece[taken:]

    def read_from(self, src: Source, runs: Sequence[tuple[int, int]]) -> None:
        """Read the tables of ``runs`` straight into the batch (what a seekable source's
        scan lets a consumer do): no bytes object, no copy per table."""
        for offset, length in runs:
            end = offset + length
            while offset < end:
                got = src.read_into(offset, self._space(offset)[: end - offset])
                if not got:
                    break
                self._advance(got)
                offset += got

    def _space(self, offset: int) -> memoryview:
        """The free part of the batch, for bytes from file ``offset`` on."""
        if not self._pieces or self._batch_end_offset() != offset:
            self._pieces.append((self._filled, offset))  # a new piece starts here
        return self._batch[self._filled :]

    def _advance(self, count: int) -> None:
        self._filled += count
        if self._filled == len(self._batch):
            self._flush()

    def _batch_end_offset(self) -> int:
        position, offset = self._pieces[-1]
        return offset + self._filled - position

    def _flush(self) -> None:
        whole = self._filled - self._filled % self._entry
        if whole and self._deferred and self._held_bytes + whole <= L2_STREAM_KEEP:
            self._held.append((bytes(self._batch[:whole]), list(self._pieces)))
            self._held_bytes += whole
        elif whole:
            if self._deferred:  # over the budget: checked now, without the true size
                self.unchecked_entries += whole // self._entry
            self._check(self._batch[:whole])
        rest = self._filled - whole  # part of an entry: kept for the next batch
        end = self._batch_end_offset() if self._pieces else 0
        self._batch[:rest] = self._batch[whole : self._filled]
        self._filled = rest
        self._pieces = [(0, end - rest)] if rest else []

    def _check(self, entries: bytes | memoryview) -> None:
        result = scan.qcow2_l2(
            entries,
            cluster_bits=self._bits,
            file_size=self._file_size,
            version=self._version,
            extended_l2=self._extended,
            has_data_file=self._data_file,
            claimed=self._claimed,
        )
        self.allocated += result.allocated
        self.compressed += result.compressed
        self.zero += result.zero
        self.unallocated += result.unallocated
        self.bad_count += result.bad_count
        if not result.ok and self._first_bad is None:
            self._first_bad = (self._file_offset(result.bad_index * self._entry), result.bad_value)
            self._first_reason = scan.Reason(result.bad_reason)

    def _file_offset(self, position: int) -> int:
        """The file offset of the byte at ``position`` in the current batch."""
        start, offset = 0, 0
        for piece_start, piece_offset in self._pieces:
            if piece_start > position:
                break
            start, offset = piece_start, piece_offset
        return offset + position - start

    def report(self, ctx: Context, file_size: int, claimed: bytearray | None) -> None:
        self._flush()
        self._file_size, self._claimed = file_size, claimed
        for entries, pieces in self._held:
            self._pieces = pieces
            self._check(entries)
        self._held = []
        if self.unchecked_entries:
            ctx.findings.add(
                F.STREAM_UNCHECKED,
                f"{self.unchecked_entries} L2 entries passed before the image's size was known "
                f"(over {L2_STREAM_KEEP} bytes of L2 tables): not checked against the file's "
                "end nor for clusters used twice",
            )
        if self._first_bad is None:
            return
        at, value = self._first_bad
        table = at - at % self._cluster
        reason = self._first_reason
        ctx.findings.add(
            _REASON_CODES.get(reason, ENTRY_OUT_OF_RANGE),
            f"L2 table at {table:#x}: entry {(at - table) // self._entry} = {value:#018x} "
            f"({reason.name.lower().replace('_', ' ')}); {self.bad_count} bad entr"
            f"{'y' if self.bad_count == 1 else 'ies'} in all L2 tables",
        )
