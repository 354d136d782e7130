"""Table scanners (imageintrospect.scan): every reason code on hand-built tables, counts on
tables taken from real qemu-img images (checked against qemu-img check/map), and the C and
pure-Python backends compared on random and mutated tables."""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imageintrospect import scan
from imageintrospect.scan import Reason, _python
from tests.support import needs_qemu, qemu_img, qemu_io, run

try:
    from imageintrospect.scan import _c
except ImportError:  # built without a compiler: the Python twin alone is tested
    _c = None

C_MISSING = "imageintrospect._scan_c is not built"
BACKENDS = [
    pytest.param(_python, id="python"),
    pytest.param(_c, id="c", marks=pytest.mark.skipif(_c is None, reason=C_MISSING)),
]
ROOT = Path(__file__).resolve().parents[1]
KIB, MIB = 1024, 1 << 20


@pytest.fixture(params=BACKENDS)
def impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Run the test through the public API on each backend in turn."""
    monkeypatch.setattr(scan, "_impl", request.param)
    module: ModuleType = request.param
    return module


def be64(*values: int) -> bytes:
    return struct.pack(f">{len(values)}Q", *values)


def le64(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}Q", *values)


def be32(*values: int) -> bytes:
    return struct.pack(f">{len(values)}I", *values)


def le32(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)


def assert_bad(result: scan.Verdict, index: int, value: int, reason: Reason) -> None:
    assert (result.bad_index, result.bad_value, result.bad_reason) == (index, value, reason)


# ---------------------------------------------------------------------------------------
# qcow2 L1 and refcount table

CB = 16
CLUSTER = 1 << CB


def test_l1_good_entries_are_listed(impl: ModuleType) -> None:
    table = be64(0, 2 * CLUSTER, (1 << 63) | 5 * CLUSTER, 0)
    r = scan.qcow2_l1(table, cluster_bits=CB, file_size=10 * CLUSTER)
    assert (r.count, r.allocated, r.unallocated, r.bad_count) == (4, 2, 2, 0)
    assert list(r.indexes) == [1, 2]
    assert list(r.offsets) == [2 * CLUSTER, 5 * CLUSTER]
    assert r.ok and r.bad_index == -1 and r.bad_reason is Reason.OK


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (2 * CLUSTER | 1, Reason.RESERVED_BITS),  # bit 0
        (2 * CLUSTER | 1 << 8, Reason.RESERVED_BITS),
        (2 * CLUSTER | 1 << 56, Reason.RESERVED_BITS),
        (2 * CLUSTER | 1 << 62, Reason.RESERVED_BITS),
        (2 * CLUSTER + 512, Reason.MISALIGNED),
        (10 * CLUSTER, Reason.OUT_OF_RANGE),  # would end past the file
        (0x00FF_FFFF_FFFF_0000, Reason.OUT_OF_RANGE),
    ],
)
def test_l1_bad_entry(impl: ModuleType, entry: int, reason: Reason) -> None:
    r = scan.qcow2_l1(be64(3 * CLUSTER, entry), cluster_bits=CB, file_size=10 * CLUSTER)
    assert (r.allocated, r.bad_count) == (1, 1)
    assert_bad(r, 1, entry, reason)


def test_l1_last_cluster_must_fit_whole(impl: ModuleType) -> None:
    r = scan.qcow2_l1(be64(9 * CLUSTER), cluster_bits=CB, file_size=10 * CLUSTER - 1)
    assert r.bad_reason is Reason.OUT_OF_RANGE
    r = scan.qcow2_l1(be64(9 * CLUSTER), cluster_bits=CB, file_size=10 * CLUSTER)
    assert r.ok


def test_l1_double_claim_needs_a_map(impl: ModuleType) -> None:
    table = be64(2 * CLUSTER, 3 * CLUSTER, 2 * CLUSTER)
    assert scan.qcow2_l1(table, cluster_bits=CB, file_size=10 * CLUSTER).allocated == 3
    claimed = scan.claim_map(10 * CLUSTER, CLUSTER)
    r = scan.qcow2_l1(table, cluster_bits=CB, file_size=10 * CLUSTER, claimed=claimed)
    assert (r.allocated, r.bad_count) == (2, 1)
    assert_bad(r, 2, 2 * CLUSTER, Reason.DOUBLE_CLAIM)
    assert claimed == bytearray([0b1100, 0])


def test_l1_table_pointing_at_metadata(impl: ModuleType) -> None:
    claimed = scan.claim_map(10 * CLUSTER, CLUSTER)
    assert scan.mark_claimed(claimed, 0, 2 * CLUSTER, CLUSTER)  # header + L1
    r = scan.qcow2_l1(be64(CLUSTER), cluster_bits=CB, file_size=10 * CLUSTER, claimed=claimed)
    assert_bad(r, 0, CLUSTER, Reason.DOUBLE_CLAIM)


def test_first_index_shifts_the_reported_indexes(impl: ModuleType) -> None:
    table = be64(2 * CLUSTER, 7)
    r = scan.qcow2_l1(table, cluster_bits=CB, file_size=10 * CLUSTER, first_index=1000)
    assert list(r.indexes) == [1000]
    assert_bad(r, 1001, 7, Reason.RESERVED_BITS)


def test_only_the_first_bad_entry_is_described(impl: ModuleType) -> None:
    table = be64(3, 2 * CLUSTER + 512, 1 << 60)
    r = scan.qcow2_l1(table, cluster_bits=CB, file_size=10 * CLUSTER)
    assert r.bad_count == 3 and r.allocated == 0
    assert_bad(r, 0, 3, Reason.RESERVED_BITS)


def test_refcount_table(impl: ModuleType) -> None:
    size = 10 * CLUSTER
    table = be64(0, CLUSTER, 1 << 63, 3 * CLUSTER | 0x100, 4 * CLUSTER + 4096)
    r = scan.qcow2_refcount_table(table, cluster_bits=CB, file_size=size)
    assert (r.allocated, r.unallocated, r.bad_count) == (1, 1, 3)
    assert_bad(r, 2, 1 << 63, Reason.OUT_OF_RANGE)  # bits 56-63 are offset bits here
    r = scan.qcow2_refcount_table(be64(3 * CLUSTER | 1), cluster_bits=CB, file_size=size)
    assert r.bad_reason is Reason.RESERVED_BITS
    r = scan.qcow2_refcount_table(be64(4 * CLUSTER + 4096), cluster_bits=CB, file_size=size)
    assert r.bad_reason is Reason.MISALIGNED


# ---------------------------------------------------------------------------------------
# qcow2 L2

COPIED = 1 << 63


def compressed(coffset: int, sectors: int, cluster_bits: int = CB) -> int:
    """A compressed cluster descriptor: host offset, 512-byte sectors used (>= 1)."""
    x = 62 - (cluster_bits - 8)
    return 1 << 62 | (sectors - 1) << x | coffset


def l2(impl: ModuleType, *entries: int, **kw: Any) -> scan.L2Result:
    kw.setdefault("cluster_bits", CB)
    kw.setdefault("file_size", 10 * CLUSTER)
    return scan.qcow2_l2(be64(*entries), **kw)


def test_l2_classifies_clusters(impl: ModuleType) -> None:
    r = l2(
        impl,
        0,  # unallocated
        COPIED | 2 * CLUSTER,  # data
        3 * CLUSTER,  # data, shared (refcount > 1)
        1,  # zero, no host cluster
        COPIED | 4 * CLUSTER | 1,  # preallocated zero: has a host cluster
        compressed(5 * CLUSTER + 100, 2),
    )
    assert (r.count, r.allocated, r.compressed, r.zero, r.unallocated) == (6, 3, 1, 1, 1)
    assert r.allocated_bytes == 3 * CLUSTER
    assert r.compressed_bytes == 2 * 512 - 100
    assert r.ok


@pytest.mark.parametrize(
    ("entry", "reason", "options"),
    [
        (2 * CLUSTER | 2, Reason.RESERVED_BITS, {}),  # bit 1
        (2 * CLUSTER | 1 << 56, Reason.RESERVED_BITS, {}),
        (2 * CLUSTER | 1 << 61, Reason.RESERVED_BITS, {}),
        (1, Reason.RESERVED_BITS, {"version": 2}),  # no zero flag in v2
        (2 * CLUSTER | 1, Reason.RESERVED_BITS, {"version": 2}),
        (2 * CLUSTER + 512, Reason.MISALIGNED, {}),
        (10 * CLUSTER, Reason.OUT_OF_RANGE, {}),
        (COPIED, Reason.IN_METADATA, {}),  # host offset 0 without a data file
        (compressed(5 * CLUSTER, 1), Reason.BAD_COMPRESSED, {"has_data_file": True}),
        (COPIED | compressed(5 * CLUSTER, 1), Reason.BAD_COMPRESSED, {}),
        (compressed(100, 1), Reason.IN_METADATA, {}),
        (compressed(10 * CLUSTER, 1), Reason.OUT_OF_RANGE, {}),
        (compressed(10 * CLUSTER - 512, 2), Reason.OUT_OF_RANGE, {}),
        (compressed(1 << 56 | 4 * 512, 1, 9), Reason.RESERVED_BITS, {"cluster_bits": 9}),
    ],
)
def test_l2_bad_entry(impl: ModuleType, entry: int, reason: Reason, options: Any) -> None:
    r = l2(impl, 0, entry, **options)
    assert r.bad_count == 1 and r.count == 2
    assert_bad(r, 1, entry, reason)


def test_l2_last_data_cluster_may_run_past_the_end(impl: ModuleType) -> None:
    # qemu writes only what it needs of the last cluster (seen with extended L2)
    assert l2(impl, 9 * CLUSTER, file_size=9 * CLUSTER + 4096).allocated == 1
    assert l2(impl, 9 * CLUSTER, file_size=9 * CLUSTER).bad_reason is Reason.OUT_OF_RANGE


def test_l2_last_compressed_cluster_may_end_in_a_partial_sector(impl: ModuleType) -> None:
    # qemu-io "write -c" leaves a file ending 79 bytes into the last sector
    entry = compressed(5 * CLUSTER, 1)
    assert l2(impl, entry, file_size=5 * CLUSTER + 79).compressed == 1
    assert l2(impl, compressed(5 * CLUSTER, 2), file_size=5 * CLUSTER + 79).bad_count == 1


def test_l2_external_data_file(impl: ModuleType) -> None:
    r = l2(impl, COPIED, COPIED | 1000 * CLUSTER, has_data_file=True, file_size=CLUSTER)
    assert (r.allocated, r.bad_count) == (2, 0)  # offsets name the data file: not checked
    assert l2(impl, COPIED | 5 * CLUSTER + 512, has_data_file=True).bad_count == 1


def test_l2_double_claims(impl: ModuleType) -> None:
    claimed = scan.claim_map(10 * CLUSTER, CLUSTER)
    scan.mark_claimed(claimed, 0, CLUSTER, CLUSTER)
    entries = (
        2 * CLUSTER,
        compressed(3 * CLUSTER, 1),
        compressed(3 * CLUSTER + 200, 1),  # compressed clusters share host clusters
        2 * CLUSTER,  # twice the same data cluster
        0x0,
        COPIED,  # header: IN_METADATA, not a double claim
        COPIED | 2 * CLUSTER | 1,
    )
    r = l2(impl, *entries, claimed=claimed)
    assert (r.allocated, r.compressed, r.bad_count) == (1, 2, 3)
    assert_bad(r, 3, 2 * CLUSTER, Reason.DOUBLE_CLAIM)
    assert claimed[0] == 0b101  # header, data; compressed clusters not marked


def test_l2_data_cluster_on_metadata(impl: ModuleType) -> None:
    claimed = scan.claim_map(10 * CLUSTER, CLUSTER)
    scan.mark_claimed(claimed, 3 * CLUSTER, CLUSTER, CLUSTER)  # say, an L2 table
    r = l2(impl, 3 * CLUSTER, claimed=claimed)
    assert_bad(r, 0, 3 * CLUSTER, Reason.DOUBLE_CLAIM)


def ext(impl: ModuleType, *pairs: tuple[int, int], **kw: Any) -> scan.L2Result:
    kw.setdefault("cluster_bits", CB)
    kw.setdefault("file_size", 10 * CLUSTER)
    flat = [value for pair in pairs for value in pair]
    return scan.qcow2_l2(be64(*flat), extended_l2=True, **kw)


def test_extended_l2(impl: ModuleType) -> None:
    all_zero = 0xFFFFFFFF << 32
    r = ext(
        impl,
        (0, 0),
        (0, all_zero),  # reads as zeros
        (0, 0xF << 32),  # some subclusters zero, others from the backing file
        (COPIED | 2 * CLUSTER, 0x3),
        (COPIED | 3 * CLUSTER, all_zero),  # preallocated, reads as zeros
        (compressed(4 * CLUSTER, 1), 0),
    )
    assert (r.count, r.allocated, r.compressed, r.zero, r.unallocated) == (6, 2, 1, 1, 2)
    assert r.ok


@pytest.mark.parametrize(
    ("pair", "reason"),
    [
        ((COPIED | 2 * CLUSTER, 1 | 1 << 32), Reason.BAD_SUBCLUSTER),  # allocated and zero
        ((0, 0x1), Reason.BAD_SUBCLUSTER),  # allocated without a host cluster
        ((compressed(4 * CLUSTER, 1), 1), Reason.BAD_SUBCLUSTER),
        ((1, 0), Reason.RESERVED_BITS),  # no zero flag with extended L2
        ((COPIED | 2 * CLUSTER | 1, 0), Reason.RESERVED_BITS),
    ],
)
def test_extended_l2_bad_entry(impl: ModuleType, pair: tuple[int, int], reason: Reason) -> None:
    r = ext(impl, (0, 0), pair)
    assert_bad(r, 1, pair[0], reason)


# ---------------------------------------------------------------------------------------
# VMDK grain directory and grain tables


def test_vmdk_gd(impl: ModuleType) -> None:
    size = 100 * 512
    r = scan.vmdk_gd(le32(0, 10, 96, 97), gt_sectors=4, file_size=size)
    assert (r.allocated, r.unallocated) == (2, 1)
    assert list(r.offsets) == [10 * 512, 96 * 512]
    assert_bad(r, 3, 97, Reason.OUT_OF_RANGE)
    claimed = scan.claim_map(size, 512)
    r = scan.vmdk_gd(le32(10, 12), gt_sectors=4, file_size=size, claimed=claimed)
    assert_bad(r, 1, 12, Reason.DOUBLE_CLAIM)  # sectors 12-13 overlap the first GT


def test_vmdk_gt(impl: ModuleType) -> None:
    size = 100 * 512
    table = le32(0, 1, 20, 28, 92, 19, 93)
    r = scan.vmdk_gt(table, grain_sectors=8, overhead_sectors=20, file_size=size)
    assert (r.allocated, r.zero, r.unallocated, r.bad_count) == (3, 0, 1, 3)
    assert r.allocated_bytes == 3 * 8 * 512
    assert_bad(r, 1, 1, Reason.IN_METADATA)  # 1 without the zeroed-grain flag
    r = scan.vmdk_gt(
        table, grain_sectors=8, overhead_sectors=20, file_size=size, zeroed_grain_ok=True
    )
    assert (r.zero, r.bad_count) == (1, 2)
    assert_bad(r, 5, 19, Reason.IN_METADATA)
    r = scan.vmdk_gt(le32(93), grain_sectors=8, overhead_sectors=20, file_size=size)
    assert_bad(r, 0, 93, Reason.OUT_OF_RANGE)


def test_vmdk_gt_claims_whole_grains(impl: ModuleType) -> None:
    size = 100 * 512
    claimed = scan.claim_map(size, 512)
    r = scan.vmdk_gt(
        le32(20, 27), grain_sectors=8, overhead_sectors=20, file_size=size, claimed=claimed
    )
    assert_bad(r, 1, 27, Reason.DOUBLE_CLAIM)
    # streamOptimized grains are markers of unknown length: one sector each
    claimed = scan.claim_map(size, 512)
    r = scan.vmdk_gt(
        le32(20, 21, 99),
        grain_sectors=8,
        overhead_sectors=20,
        file_size=size,
        compressed=True,
        claimed=claimed,
    )
    assert (r.allocated, r.bad_count) == (3, 0)


# ---------------------------------------------------------------------------------------
# streamOptimized VMDK

GRAIN = 128  # sectors
CAPACITY = 64 * GRAIN


def grain_marker(lba: int, payload: bytes) -> bytes:
    raw = struct.pack("<QI", lba, len(payload)) + payload
    return raw + bytes(-len(raw) % 512)


def meta_marker(kind: int, sectors: int = 0, payload: bytes = b"") -> bytes:
    body = payload + bytes(sectors * 512 - len(payload))
    return struct.pack("<QII", sectors, 0, kind) + bytes(496) + body


EOS = meta_marker(0)


def vmware_stream() -> bytes:
    """Grains, then GT, GD, footer markers, end-of-stream: VMware's tail layout."""
    return b"".join(
        [
            grain_marker(0, b"x" * 700),
            grain_marker(GRAIN, b"y" * 30),
            grain_marker(5 * GRAIN, bytes(GRAIN * 512 + 1000)),  # incompressible grain
            meta_marker(1, 4, le32(1, 2, 3)),
            meta_marker(2, 1, le32(7)),
            meta_marker(3, 1, b"KDMV"),
            EOS,
        ]
    )


def stream(impl: ModuleType, data: bytes, **kw: Any) -> scan.StreamResult:
    kw.setdefault("base_offset", 0)
    kw.setdefault("capacity_sectors", CAPACITY)
    kw.setdefault("grain_sectors", GRAIN)
    kw.setdefault("final", True)
    return scan.vmdk_stream(data, **kw)


def test_stream_counts_markers(impl: ModuleType) -> None:
    data = vmware_stream()
    r = stream(impl, data + bytes(4096))  # zero padding after EOS is fine
    assert (r.grains, r.grain_bytes) == (3, 700 + 30 + GRAIN * 512 + 1000)
    assert (r.gt_markers, r.gd_markers, r.footer_markers, r.other_markers) == (1, 1, 1, 0)
    assert r.count == 7 and r.ok and not r.stopped
    assert r.eos_offset == len(data) - 512
    assert r.next_offset == len(data) + 4096


def test_stream_at_an_offset(impl: ModuleType) -> None:
    r = stream(impl, grain_marker(0, b"z") + meta_marker(4, 2) + EOS, base_offset=64 * KIB)
    assert (r.grains, r.other_markers, r.eos_offset) == (1, 1, 64 * KIB + 512 * 4)


def test_stream_without_eos(impl: ModuleType) -> None:
    # qemu-img writes no end-of-stream marker for an empty disk
    r = stream(impl, b"")
    assert (r.count, r.eos_offset, r.ok) == (0, -1, True)


STREAM_CASES = {
    "lba-past-capacity": (grain_marker(CAPACITY, b"a") + EOS, 0, CAPACITY, Reason.OUT_OF_RANGE),
    "lba-misaligned": (grain_marker(GRAIN + 8, b"a") + EOS, 0, GRAIN + 8, Reason.MISALIGNED),
    "grain-too-big": (grain_marker(0, bytes(GRAIN * 512 + 1025)), 0, 66561, Reason.BAD_MARKER),
    "unknown-type": (meta_marker(5) + EOS, 0, 5, Reason.BAD_MARKER),
    "payload-missing": (meta_marker(1, 1)[:-512], 0, 1024, Reason.TRUNCATED),
    "grain-cut-short": (grain_marker(0, b"a" * 600)[:1000], 0, 1024, Reason.TRUNCATED),
    "partial-sector": (grain_marker(0, b"a") + b"\x01" * 100, 512, 100, Reason.TRUNCATED),
    "huge-payload": (
        meta_marker(1)[:8].replace(bytes(8), le64(1 << 62)) + meta_marker(1)[8:],
        0,
        1 << 62,
        Reason.TRUNCATED,
    ),
    "trailing-data": (EOS + bytes(700) + b"\x07" + bytes(300), 1212, 7, Reason.TRAILING_DATA),
}


@pytest.mark.parametrize("case", STREAM_CASES.values(), ids=STREAM_CASES.keys())
def test_stream_bad_marker(impl: ModuleType, case: tuple[bytes, int, int, Reason]) -> None:
    data, offset, value, reason = case
    r = stream(impl, data)
    assert_bad(r, offset, value, reason)
    # a bad grain address is noted and the walk goes on; a broken structure stops it
    assert r.stopped is (reason not in (Reason.OUT_OF_RANGE, Reason.MISALIGNED))


def test_stream_goes_on_after_a_bad_lba(impl: ModuleType) -> None:
    r = stream(impl, grain_marker(CAPACITY, b"a") + grain_marker(0, b"b") + EOS)
    assert (r.grains, r.bad_count, r.eos_offset) == (1, 1, 1024)


def walk_in_windows(impl: ModuleType, data: bytes, cuts: list[int], **kw: Any) -> scan.StreamResult:
    """Walk ``data`` window by window, each window ending at the next cut."""
    state: scan.StreamResult | None = None
    for cut in [*sorted(cuts), len(data)]:
        stands = 0 if state is None else state.next_offset
        base = min(stands, len(data) - len(data) % 512)
        if base > cut:
            continue  # the walk already skipped past this window
        state = stream(
            impl, data[base:cut], base_offset=base, state=state, final=cut == len(data), **kw
        )
        if state.stopped:
            break
    assert state is not None
    return state


def test_stream_in_windows_equals_one_pass(impl: ModuleType) -> None:
    data = vmware_stream() + bytes(2048)
    whole = stream(impl, data)
    for size in (512, 700, 4096, 65536):
        assert walk_in_windows(impl, data, list(range(size, len(data), size))) == whole


def test_walk_vmdk_stream_reads_bounded_windows(impl: ModuleType) -> None:
    data = bytes(4096) + vmware_stream() + bytes(1536)
    reads: list[tuple[int, int]] = []

    def read(offset: int, length: int) -> bytes:
        reads.append((offset, length))
        return data[offset : offset + length]

    r = scan.walk_vmdk_stream(
        read,
        start=4096,
        stream_size=len(data),
        capacity_sectors=CAPACITY,
        grain_sectors=GRAIN,
        window=1024,
    )
    assert r == stream(impl, data[4096:], base_offset=4096)
    assert max(length for _, length in reads) <= 1024


def test_stream_state_must_not_be_behind_the_window(impl: ModuleType) -> None:
    state = stream(impl, grain_marker(0, b"a"), final=False)
    with pytest.raises(ValueError, match="after where the walk stands"):
        stream(impl, EOS, base_offset=state.next_offset + 512, state=state)


def walk_in_chunks(
    module: ModuleType, data: bytes, cuts: list[int], base: int = 0
) -> tuple[scan.StreamResult, bytes, list[int], bool, list[int]]:
    """Feed ``data`` (the stream from ``base``) chunk by chunk, each ending at the next cut:
    the final state, the last marker's header, where table payloads began, ``lost``, and
    the chunks that began inside a table payload (status 2)."""
    walker = module.StreamWalker(base, CAPACITY, GRAIN)
    payloads, inside = [], []
    begin = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        if cut < begin:
            continue
        chunk, offset = data[begin:cut], base + begin
        status = walker.feed(offset, chunk, len(chunk))
        while status == 1:
            payloads.append(walker.position)
            status = walker.resume(offset, chunk, len(chunk), walker.position - offset)
        if status == 2:
            inside.append(offset)
        begin = cut
    state = walker.finish(base + len(data))
    return state, bytes(walker.header), payloads, walker.lost, inside


def test_stream_walker_in_chunks_equals_one_pass(impl: ModuleType) -> None:
    data = vmware_stream() + bytes(2048)
    whole = stream(impl, data)
    eos = len(data) - 2048 - 512
    # payloads: the GT's 4 sectors after its marker, then the GD's (footer, EOS follow)
    tables = [eos - 8 * 512, eos - 3 * 512]
    for size in (1, 17, 512, 700, 4096, 65536):
        cuts = list(range(size, len(data), size))
        state, _, payloads, lost, inside = walk_in_chunks(impl, data, cuts)
        assert (state, payloads, lost) == (whole, tables, False)
        # every chunk that began inside the GT's or the GD's payload says so
        payloads_at = [(tables[0], tables[0] + 4 * 512), (tables[1], tables[1] + 512)]
        began_inside = [c for c in [0, *cuts] for t, e in payloads_at if t <= c < e]
        assert set(began_inside) <= set(inside) and inside == sorted(inside)


def walk_in_runs(
    module: ModuleType, data: bytes, size: int, count: int
) -> tuple[scan.StreamResult, bytes, list[int], bool, list[int]]:
    """:func:`walk_in_chunks` at ``size`` bytes a chunk, but ``count`` chunks per ``run``
    call (the last chunk, if short, fed alone), going on as the stream collector does."""
    walker = module.StreamWalker(0, CAPACITY, GRAIN)
    payloads: list[int] = []
    inside: list[int] = []

    def handled(offset: int, chunk: bytes, status: int) -> None:
        while status == 1:
            payloads.append(walker.position)
            status = walker.resume(offset, chunk, len(chunk), walker.position - offset)
        if status == 2:
            inside.append(offset)

    whole = len(data) // size * size
    for start in range(0, whole, size * count):
        run = [data[at : at + size] for at in range(start, min(start + size * count, whole), size)]
        code = walker.run(start, size, len(run), *run, *[b""] * (scan.STREAM_RUN - len(run)))
        assert code >= 0
        if code:
            k, status = divmod(code, 4)
            handled(start + k * size, run[k], status)
            for j in range(k + 1, len(run)):
                offset = start + j * size
                handled(offset, run[j], walker.feed(offset, run[j], size))
    if whole < len(data):
        handled(whole, data[whole:], walker.feed(whole, data[whole:], len(data) - whole))
    state = walker.finish(len(data))
    return state, bytes(walker.header), payloads, walker.lost, inside


@pytest.mark.parametrize("count", [1, 3, 8])
@pytest.mark.parametrize("size", [1, 17, 512, 700, 4096])
def test_stream_walker_in_runs_equals_chunk_by_chunk(
    impl: ModuleType, size: int, count: int
) -> None:
    data = vmware_stream() + bytes(2048)
    cuts = list(range(size, len(data), size))
    assert walk_in_runs(impl, data, size, count) == walk_in_chunks(impl, data, cuts)
    bad = grain_marker(0, b"a") + meta_marker(7) + bytes(1024)  # the walk stops inside a run
    cuts = list(range(size, len(bad), size))
    assert walk_in_runs(impl, bad, size, count) == walk_in_chunks(impl, bad, cuts)


def test_stream_walker_run_refuses_bad_parameters(impl: ModuleType) -> None:
    walker = scan.vmdk_stream_walker(start=0, capacity_sectors=CAPACITY, grain_sectors=GRAIN)
    chunks = [b"\0" * 512] * scan.STREAM_RUN
    assert walker.run(0, 512, scan.STREAM_RUN + 1, *chunks) == -1
    assert walker.run(1 << 63, 512, 1, *chunks) == -1
    assert walker.run(0, 1 << 61, 1, *chunks) == -1
    assert walker.position == 0 and not walker.lost
    assert walker.run(0, 512, 2, *chunks) == 0 and walker.position == 1024


def test_stream_walker_keeps_the_header_it_stopped_on(impl: ModuleType) -> None:
    bad = meta_marker(7)
    for size in (1, 5, 512):
        data = grain_marker(0, b"a") + bad
        state, header, *_ = walk_in_chunks(impl, data, list(range(size, len(data), size)))
        assert (state.stopped, state.next_offset, header) == (True, 512, bad[:16])


def walk_hopping(
    module: ModuleType, data: bytes, reads: list[int], base: int = 0
) -> tuple[scan.StreamResult, bytes, list[int], bool]:
    """Walk ``data`` as a seekable file: read the next of ``reads`` (sizes, in turn) where
    the walk stands, then let it jump to its next marker (never past the end).  Gives what
    :func:`walk_in_chunks` gives but the chunks that began inside a payload."""
    walker = module.StreamWalker(base, CAPACITY, GRAIN)
    payloads: list[int] = []
    position, turn = 0, 0
    while position < len(data):
        chunk, offset = data[position : position + reads[turn % len(reads)]], base + position
        turn += 1
        status = walker.feed(offset, chunk, len(chunk))
        while status == 1:
            payloads.append(walker.position)
            status = walker.resume(offset, chunk, len(chunk), walker.position - offset)
        position = walker.skip(base + len(data)) - base
    state = walker.finish(base + len(data))
    return state, bytes(walker.header), payloads, walker.lost


def test_stream_walker_hops_over_grains(impl: ModuleType) -> None:
    data = vmware_stream() + bytes(2048)
    for size in (1, 16, 512, 4096):
        assert walk_hopping(impl, data, [size]) == walk_in_chunks(impl, data, [])[:4]
    walker = scan.vmdk_stream_walker(start=0, capacity_sectors=CAPACITY, grain_sectors=GRAIN)
    walker.feed(0, data[:512], 512)  # the first grain marker: 700 bytes after its head
    assert walker.skip(10_000) == 1024 and walker.skip(600) == 1024  # never backwards
    walker.feed(1024, data[1024:1100], 76)  # inside a marker's first sector: stays
    assert walker.skip(10_000) == 1100


def test_stream_walker_does_not_hop_after_the_end(impl: ModuleType) -> None:
    """Past end-of-stream every byte is checked; a stopped walk stays where it stopped."""
    for data in (EOS + bytes(4096), meta_marker(7) + bytes(4096)):
        walker = scan.vmdk_stream_walker(start=0, capacity_sectors=CAPACITY, grain_sectors=GRAIN)
        walker.feed(0, data[:512], 512)
        assert walker.skip(len(data)) == 512


def test_stream_walker_notes_a_gap(impl: ModuleType) -> None:
    walker = scan.vmdk_stream_walker(start=0, capacity_sectors=CAPACITY, grain_sectors=GRAIN)
    assert walker.feed(0, b"\0" * 100, 100) == 0
    walker.feed(200, b"\0" * 100, 100)
    assert walker.lost and walker.position == 300
    assert walker.resume(0, b"", 0, 1) == -1  # start past the chunk


# ---------------------------------------------------------------------------------------
# VHD, VHDX, VDI


def test_vhd_bat(impl: ModuleType) -> None:
    # 4 KiB blocks: a 1-byte bitmap rounded up to a sector, then 8 sectors of data
    blocks_at = [4, 13, 22]
    size = 22 * 512 + 4608 + 512  # the last block, then the footer
    table = be32(0xFFFFFFFF, *blocks_at)
    r = scan.vhd_bat(table, block_size=4096, data_start=2048, file_size=size)
    assert (r.allocated, r.unallocated, r.allocated_bytes, r.ok) == (3, 1, 3 * 4096, True)
    r = scan.vhd_bat(table, block_size=4096, data_start=2048, file_size=size - 1)
    assert_bad(r, 3, 22, Reason.OUT_OF_RANGE)  # would overlap the footer
    r = scan.vhd_bat(be32(3), block_size=4096, data_start=2048, file_size=size)
    assert_bad(r, 0, 3, Reason.IN_METADATA)
    claimed = scan.claim_map(size, 512)
    r = scan.vhd_bat(be32(4, 12), block_size=4096, data_start=2048, file_size=size, claimed=claimed)
    assert_bad(r, 1, 12, Reason.DOUBLE_CLAIM)


def vhdx_entry(state: int, offset_mb: int = 0, reserved: int = 0) -> int:
    return offset_mb << 20 | reserved << 3 | state


VHDX_BLOCK = 256 * MIB  # with 512-byte sectors: chunk ratio 16


def test_vhdx_chunk_ratio() -> None:
    assert scan.vhdx_chunk_ratio(VHDX_BLOCK, 512) == 16
    assert scan.vhdx_chunk_ratio(32 * MIB, 512) == 128
    assert scan.vhdx_chunk_ratio(MIB, 4096) == 32768


def vhdx(impl: ModuleType, entries: list[int], **kw: Any) -> scan.VhdxBatResult:
    kw.setdefault("block_size", VHDX_BLOCK)
    kw.setdefault("logical_sector_size", 512)
    kw.setdefault("file_size", 4 * 1024 * MIB)
    return scan.vhdx_bat(le64(*entries), **kw)


def test_vhdx_states(impl: ModuleType) -> None:
    payload = [
        vhdx_entry(0),
        vhdx_entry(1),
        vhdx_entry(2, 99),  # a zero block may keep its space
        vhdx_entry(3),
        vhdx_entry(6, 1),
        vhdx_entry(6, 257),
    ]
    entries = payload + [0] * 10 + [vhdx_entry(6, 600)]  # entry 16: sector bitmap
    r = vhdx(impl, entries)
    assert (r.not_present, r.undefined, r.zero, r.unmapped) == (11, 1, 1, 1)
    assert (r.fully_present, r.partially_present) == (2, 0)
    assert (r.bitmaps_present, r.bitmaps_absent, r.ok) == (1, 0, True)
    assert r.allocated_bytes == 2 * VHDX_BLOCK


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (vhdx_entry(4), Reason.BAD_STATE),
        (vhdx_entry(5), Reason.BAD_STATE),
        (vhdx_entry(7, 1), Reason.BAD_STATE),  # partially present needs a parent
        (vhdx_entry(0, 0, 1), Reason.RESERVED_BITS),
        (vhdx_entry(6, 0, 1 << 16), Reason.RESERVED_BITS),
        (vhdx_entry(6, 0), Reason.IN_METADATA),
        (vhdx_entry(6, 4 * 1024 - 255), Reason.OUT_OF_RANGE),
        (vhdx_entry(6, (1 << 44) - 1), Reason.OUT_OF_RANGE),
    ],
)
def test_vhdx_bad_payload(impl: ModuleType, entry: int, reason: Reason) -> None:
    r = vhdx(impl, [0, entry])
    assert_bad(r, 1, entry, reason)


def test_vhdx_bitmap_entries(impl: ModuleType) -> None:
    r = vhdx(impl, [0] * 16 + [vhdx_entry(2)])
    assert_bad(r, 16, 2, Reason.BAD_STATE)
    # scanning a part of the table: first_index places the bitmap entries
    r = vhdx(impl, [0] * 6 + [vhdx_entry(6, 9)] + [0], first_index=10)
    assert (r.bitmaps_present, r.not_present, r.ok) == (1, 7, True)


def test_vhdx_parent_and_overlap(impl: ModuleType) -> None:
    assert vhdx(impl, [vhdx_entry(7, 1)], has_parent=True).partially_present == 1
    claimed = scan.claim_map(4 * 1024 * MIB, MIB)
    scan.mark_claimed(claimed, 0, 4 * MIB, MIB)  # header section, log, BAT
    r = vhdx(impl, [vhdx_entry(6, 4), vhdx_entry(6, 200), vhdx_entry(6, 3)], claimed=claimed)
    assert_bad(r, 1, vhdx_entry(6, 200), Reason.DOUBLE_CLAIM)
    assert r.bad_count == 2  # and the one on the BAT


def test_vdi_blockmap(impl: ModuleType) -> None:
    kw = {"blocks_allocated": 4, "block_size": MIB, "data_offset": 2 * MIB}
    table = le32(0xFFFFFFFF, 0xFFFFFFFE, 0, 3, 1)
    r = scan.vdi_blockmap(table, file_size=6 * MIB, **kw)
    assert (r.allocated, r.zero, r.unallocated, r.ok) == (3, 1, 1, True)
    r = scan.vdi_blockmap(le32(0, 4), file_size=6 * MIB, **kw)
    assert_bad(r, 1, 4, Reason.OUT_OF_RANGE)  # beyond blocks_allocated
    r = scan.vdi_blockmap(le32(3), file_size=6 * MIB - 1, **kw)
    assert_bad(r, 0, 3, Reason.OUT_OF_RANGE)  # block not in the file
    r = scan.vdi_blockmap(le32(2, 1, 2), file_size=6 * MIB, **kw)
    assert_bad(r, 2, 2, Reason.DOUBLE_CLAIM)  # found without a map of our own
    claimed = bytearray(1)
    scan.vdi_blockmap(le32(2), file_size=6 * MIB, claimed=claimed, **kw)
    r = scan.vdi_blockmap(le32(2), file_size=6 * MIB, claimed=claimed, first_index=9, **kw)
    assert_bad(r, 9, 2, Reason.DOUBLE_CLAIM)  # across calls with the caller's map


# ---------------------------------------------------------------------------------------
# CRC-32C

CRC_VECTORS = [  # RFC 3720 B.4 and the usual check value
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (b"", 0),
]


@pytest.mark.parametrize(("data", "expected"), CRC_VECTORS)
def test_crc32c_vectors(impl: ModuleType, data: bytes, expected: int) -> None:
    assert scan.crc32c(data) == expected
    half = len(data) // 2
    assert scan.crc32c(data[half:], scan.crc32c(data[:half])) == expected


@pytest.mark.skipif(_c is None, reason=C_MISSING)
def test_crc32c_software_path_in_c() -> None:
    assert _c is not None
    blob = random.Random(7).randbytes(10_000)
    for start in range(9):  # every alignment
        piece = blob[start:]
        assert _c.crc32c_software(piece, 5) == _c.crc32c(piece, 5) == _python.crc32c(piece, 5)


# ---------------------------------------------------------------------------------------
# argument checks


def test_argument_checks() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        scan.qcow2_l1(bytes(12), cluster_bits=16, file_size=1)
    with pytest.raises(ValueError, match="multiple of 16"):
        scan.qcow2_l2(bytes(8), cluster_bits=16, file_size=1, extended_l2=True)
    with pytest.raises(ValueError, match="cluster_bits"):
        scan.qcow2_l2(b"", cluster_bits=22, file_size=1)
    with pytest.raises(ValueError, match="file_size"):
        scan.qcow2_l1(b"", cluster_bits=16, file_size=-1)
    with pytest.raises(ValueError, match="claimed has 8 bits"):
        scan.qcow2_l1(b"", cluster_bits=9, file_size=9 * 512, claimed=bytearray(1))
    with pytest.raises(TypeError, match="bytearray"):
        scan.qcow2_l1(b"", cluster_bits=9, file_size=512, claimed=bytes(1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="power of two"):
        scan.vhdx_bat(b"", block_size=3 * MIB, logical_sector_size=512, file_size=0)
    with pytest.raises(ValueError, match="multiple of 512"):
        scan.vhd_bat(b"", block_size=1000, data_start=0, file_size=0)
    with pytest.raises(ValueError, match="sector-aligned"):
        scan.vmdk_stream(b"", base_offset=100, capacity_sectors=1, grain_sectors=1)


def test_any_buffer_is_accepted(impl: ModuleType) -> None:
    table = be64(2 * CLUSTER, 0)
    expected = scan.qcow2_l1(table, cluster_bits=CB, file_size=10 * CLUSTER)
    for form in (bytearray(table), memoryview(table), memoryview(table).cast("Q")):
        assert scan.qcow2_l1(form, cluster_bits=CB, file_size=10 * CLUSTER) == expected


def test_mark_claimed() -> None:
    claimed = scan.claim_map(100 * 512, 512)
    assert len(claimed) == 13
    assert scan.mark_claimed(claimed, 512, 3 * 512, 512)
    assert not scan.mark_claimed(claimed, 0, 600, 512)  # sectors 0-1, 1 was taken
    assert claimed[0] == 0b1111
    assert scan.mark_claimed(claimed, 99 * 512, 10 * 512, 512)  # clipped to the map
    assert claimed[12] == 0b1111_1000  # bits 99..103: the last byte, no further


# ---------------------------------------------------------------------------------------
# backend selection


def backend_in_subprocess(value: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != scan.BACKEND_ENV}
    if value is not None:
        env[scan.BACKEND_ENV] = value
    code = "import imageintrospect.scan as s; print(s.backend)"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )


def test_backend_forced_to_python() -> None:
    assert backend_in_subprocess("python").stdout.strip() == "python"


def test_backend_default_and_forced_c() -> None:
    expected = "python" if _c is None else "c"
    assert backend_in_subprocess(None).stdout.strip() == expected
    forced = backend_in_subprocess("c")
    if _c is None:
        assert "IMAGEINTROSPECT_BACKEND=c but the C scanners" in forced.stderr
    else:
        assert forced.stdout.strip() == "c"


def test_backend_unknown_value() -> None:
    proc = backend_in_subprocess("fortran")
    assert proc.returncode != 0 and "expected 'c' or 'python'" in proc.stderr


def test_c_backend_is_built_in_ci() -> None:
    """CI installs with a compiler: there the C backend must exist, not be skipped."""
    if os.environ.get("CI") and _c is None:
        pytest.fail("CI=true but imageintrospect._scan_c was not built")


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc missing")
def test_scan_c_compiles_cleanly_as_strict_c99(tmp_path: Path) -> None:
    run(
        "gcc",
        "-std=c99",
        "-pedantic",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-O2",
        "-c",
        ROOT / "csrc" / "scan.c",
        "-o",
        tmp_path / "scan.o",
    )


# ---------------------------------------------------------------------------------------
# tables from real qemu-img images


def qemu_json(*args: str | Path) -> Any:
    return json.loads(qemu_img(*args, "--output=json"))


def data_bytes(path: Path, fmt: str) -> int:
    """Guest bytes qemu-img map says are backed by data in the image."""
    extents = qemu_json("map", "-f", fmt, path)
    return sum(e["length"] for e in extents if e["data"])


def qcow2_scan(path: Path) -> tuple[scan.L2Result, list[scan.L2Result]]:
    """Scan an image's refcount table, L1 and L2 tables with a claim map, as a format
    module would: returns the summed L2 counts and every L2 result."""
    data = path.read_bytes()
    size = len(data)
    version, cb = struct.unpack_from(">I12xI", data, 4)
    l1_size, l1_offset, rt_offset, rt_clusters = struct.unpack_from(">IQQI", data, 36)
    extended = version == 3 and bool(struct.unpack_from(">Q", data, 72)[0] & 16)
    cluster = 1 << cb
    claimed = scan.claim_map(size, cluster)
    scan.mark_claimed(claimed, 0, cluster, cluster)
    assert scan.mark_claimed(claimed, l1_offset, l1_size * 8, cluster)
    assert scan.mark_claimed(claimed, rt_offset, rt_clusters * cluster, cluster)
    reftable = data[rt_offset : rt_offset + rt_clusters * cluster]
    refblocks = scan.qcow2_refcount_table(
        reftable, cluster_bits=cb, file_size=size, claimed=claimed
    )
    assert refblocks.ok and refblocks.allocated >= 1
    l1 = scan.qcow2_l1(
        data[l1_offset : l1_offset + 8 * l1_size], cluster_bits=cb, file_size=size, claimed=claimed
    )
    assert l1.ok
    results = [
        scan.qcow2_l2(
            data[offset : offset + cluster],
            cluster_bits=cb,
            file_size=size,
            version=version,
            extended_l2=extended,
            claimed=claimed,
            first_index=index * (cluster // (16 if extended else 8)),
        )
        for index, offset in zip(l1.indexes, l1.offsets, strict=True)
    ]
    fields = ("count", "allocated", "compressed", "zero", "unallocated", "bad_count")
    total = {f: sum(getattr(r, f) for r in results) for f in fields}
    summary = scan.L2Result(
        bad_index=-1,
        bad_value=0,
        bad_reason=Reason.OK,
        allocated_bytes=total["allocated"] << cb,
        compressed_bytes=sum(r.compressed_bytes for r in results),
        **total,
    )
    return summary, results


@needs_qemu
@pytest.mark.parametrize(
    "options",
    [
        [],
        ["-o", "cluster_size=4096"],
        ["-o", "compat=0.10"],
        ["-o", "extended_l2=on"],
        ["-o", "cluster_size=2M"],
    ],
    ids=["default", "4k", "v2", "extended", "2M"],
)
def test_qcow2_tables_match_qemu_img_check(
    impl: ModuleType, make_image: Callable[..., Path], options: list[str]
) -> None:
    path = make_image("qcow2", "64M", *options)
    qemu_io(
        path,
        "qcow2",
        "write -P 1 0 1M",
        "write -P 2 10M 4k",
        "write -P 3 33M 64k",
        "write -z 40M 2M",
        "write -c -P 4 48M 2M",
    )
    summary, _ = qcow2_scan(path)
    check = qemu_json("check", path)
    assert summary.ok
    assert summary.allocated + summary.compressed == check["allocated-clusters"]
    assert summary.compressed == check.get("compressed-clusters", 0)


@pytest.fixture(scope="module")
def compressed_qcow2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 MiB of compressible text, converted by qemu-img with -c (8 KiB clusters)."""
    tmp = tmp_path_factory.mktemp("compressed")
    letters = bytes(b"abcdefgh"[i & 7] for i in range(256))
    raw = tmp / "text.raw"
    raw.write_bytes(random.Random(3).randbytes(3 * MIB).translate(letters))
    path = tmp / "c.qcow2"
    qemu_img("convert", "-c", "-O", "qcow2", "-o", "cluster_size=8k", raw, path)
    return path


@needs_qemu
def test_qcow2_compressed_image_matches_qemu_img_check(
    impl: ModuleType, compressed_qcow2: Path
) -> None:
    summary, _ = qcow2_scan(compressed_qcow2)
    check = qemu_json("check", compressed_qcow2)
    assert summary.ok and summary.compressed > 100
    assert summary.compressed == check["compressed-clusters"]
    assert summary.allocated + summary.compressed == check["allocated-clusters"]


@needs_qemu
def test_qcow2_hostile_l2_entry_on_the_l1_table(
    impl: ModuleType, make_image: Callable[..., Path]
) -> None:
    path = make_image("qcow2", "16M")
    qemu_io(path, "qcow2", "write -P 1 0 128k")
    data = path.read_bytes()
    l1_offset = struct.unpack_from(">Q", data, 40)[0]
    l2_offset = struct.unpack_from(">Q", data, l1_offset)[0] & 0x00FF_FFFF_FFFF_FE00
    with open(path, "r+b") as f:  # the second data cluster now points at the L1 table
        f.seek(l2_offset + 8)
        f.write(struct.pack(">Q", COPIED | l1_offset))
    summary, results = qcow2_scan(path)
    assert summary.bad_count == 1 and summary.allocated == 1
    assert_bad(results[0], 1, COPIED | l1_offset, Reason.DOUBLE_CLAIM)


def vmdk_header(data: bytes) -> dict[str, int]:
    fields = struct.unpack_from("<4sIIQQQQIQQQ", data, 0)
    names = ["flags", "capacity", "grain", "desc_off", "desc_size", "gtes", "rgd", "gd", "overhead"]
    return dict(zip(names, fields[2:], strict=True))


def vmdk_gts(path: Path, **kw: Any) -> scan.BlockTableResult:
    """GD and every GT of a hosted sparse extent, summed."""
    data = path.read_bytes()
    h = vmdk_header(data)
    gd_entries = -(-h["capacity"] // (h["gtes"] * h["grain"]))
    gt_sectors = h["gtes"] * 4 // 512
    claimed = scan.claim_map(len(data), 512)
    scan.mark_claimed(claimed, 0, 512 * (1 + h["desc_size"]), 512)
    gd = scan.vmdk_gd(
        data[h["gd"] * 512 :][: gd_entries * 4],
        gt_sectors=gt_sectors,
        file_size=len(data),
        claimed=claimed,
    )
    assert gd.ok
    results = [
        scan.vmdk_gt(
            data[offset : offset + gt_sectors * 512],
            grain_sectors=h["grain"],
            overhead_sectors=h["overhead"],
            file_size=len(data),
            zeroed_grain_ok=bool(h["flags"] & 4),
            compressed=bool(h["flags"] & 0x10000),
            claimed=claimed,
        )
        for offset in gd.offsets
    ]
    return scan.BlockTableResult(
        count=sum(r.count for r in results),
        bad_count=sum(r.bad_count for r in results),
        bad_index=-1,
        bad_value=0,
        bad_reason=Reason.OK,
        allocated=sum(r.allocated for r in results),
        zero=sum(r.zero for r in results),
        unallocated=sum(r.unallocated for r in results),
        allocated_bytes=sum(r.allocated_bytes for r in results),
    )


@needs_qemu
@pytest.mark.parametrize("zeroed", [False, True])
def test_vmdk_sparse_tables_match_qemu_img_map(
    impl: ModuleType, make_image: Callable[..., Path], zeroed: bool
) -> None:
    options = ["-o", "zeroed_grain=on"] if zeroed else []
    path = make_image("vmdk", "32M", *options)
    qemu_io(path, "vmdk", "write -P 1 0 200k", "write -P 2 9M 4k", "write -P 3 31M 1M")
    if zeroed:
        qemu_io(path, "vmdk", "write -z 16M 128k")
    r = vmdk_gts(path)
    assert r.ok
    assert r.allocated_bytes == data_bytes(path, "vmdk")
    assert r.zero == (2 if zeroed else 0)


def stream_vmdk(tmp_path: Path, payload: bytes) -> Path:
    raw = tmp_path / "src.raw"
    raw.write_bytes(payload)
    path = tmp_path / "stream.vmdk"
    qemu_img("convert", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, path)
    return path


@needs_qemu
def test_vmdk_stream_of_qemu_img_matches_qemu_img_map(impl: ModuleType, tmp_path: Path) -> None:
    rng = random.Random(5)
    payload = bytearray(8 * MIB)
    for at in (0, 3 * MIB, 5 * MIB + 300 * KIB):
        payload[at : at + 200 * KIB] = rng.randbytes(200 * KIB)
    path = stream_vmdk(tmp_path, bytes(payload))
    data = path.read_bytes()
    h = vmdk_header(data)

    def read(offset: int, length: int) -> bytes:
        return data[offset : offset + length]

    r = scan.walk_vmdk_stream(
        read,
        start=h["overhead"] * 512,
        stream_size=len(data),
        capacity_sectors=h["capacity"],
        grain_sectors=h["grain"],
        window=64 * KIB,
    )
    assert r.ok and not r.stopped
    assert r.grains * h["grain"] * 512 == data_bytes(path, "vmdk")
    assert (r.gt_markers, r.gd_markers, r.footer_markers) == (0, 0, 0)  # qemu's layout
    assert r.eos_offset > 0 and r.next_offset == len(data)
    # qemu also keeps GD/GTs at the front: they point to the same grain markers
    assert vmdk_gts(path).allocated == r.grains


@needs_qemu
def test_vmdk_stream_of_an_empty_disk(impl: ModuleType, tmp_path: Path) -> None:
    data = stream_vmdk(tmp_path, bytes(MIB)).read_bytes()
    h = vmdk_header(data)
    r = stream(impl, data[h["overhead"] * 512 :], base_offset=h["overhead"] * 512)
    assert (r.count, r.eos_offset, r.ok) == (0, -1, True)


@needs_qemu
def test_vhd_bat_matches_qemu_img_map(impl: ModuleType, make_image: Callable[..., Path]) -> None:
    path = make_image("vpc", "64M", "-o", "subformat=dynamic")
    qemu_io(path, "vpc", "write -P 1 0 4k", "write -P 2 5M 3M", "write -P 3 40M 512")
    data = path.read_bytes()
    bat_offset, entries, block_size = struct.unpack_from(">8xQ4xII", data, 512 + 8)
    data_start = bat_offset + -(-entries * 4 // 512) * 512
    claimed = scan.claim_map(len(data), 512)
    r = scan.vhd_bat(
        data[bat_offset : bat_offset + entries * 4],
        block_size=block_size,
        data_start=data_start,
        file_size=len(data),
        claimed=claimed,
    )
    assert r.ok and r.allocated == 4
    assert r.allocated_bytes == data_bytes(path, "vpc")


BAT_GUID = bytes.fromhex("6677c22d23f600429d64115e9bfd4a08")  # 2DC27766-F623-4200-...


@needs_qemu
def test_vhdx_bat_of_qemu_img(impl: ModuleType, make_image: Callable[..., Path]) -> None:
    path = make_image("vhdx", "64M", "-o", "block_size=1M")
    qemu_io(path, "vhdx", "write -P 1 0 4k", "write -P 2 5M 3M", "write -P 3 40M 512")
    data = path.read_bytes()
    count = struct.unpack_from("<I", data, 192 * KIB + 8)[0]
    regions = [struct.unpack_from("<16sQI", data, 192 * KIB + 16 + 32 * i) for i in range(count)]
    bat_offset, bat_length = next((off, n) for guid, off, n in regions if guid == BAT_GUID)
    claimed = scan.claim_map(len(data), MIB)
    for _, off, length in regions:  # metadata region and BAT
        scan.mark_claimed(claimed, off, length, MIB)
    scan.mark_claimed(claimed, 0, MIB, MIB)  # header section
    entries = 64 + 64 // scan.vhdx_chunk_ratio(MIB, 512)
    r = scan.vhdx_bat(
        data[bat_offset : bat_offset + min(bat_length, entries * 8)],
        block_size=MIB,
        logical_sector_size=512,
        file_size=len(data),
        claimed=claimed,
    )
    assert r.ok
    assert r.fully_present == 1 + 3 + 1  # the blocks written above
    assert r.fully_present + r.not_present + r.zero + r.unmapped + r.undefined == 64


@needs_qemu
def test_vdi_blockmap_matches_qemu_img_map(
    impl: ModuleType, make_image: Callable[..., Path]
) -> None:
    path = make_image("vdi", "64M")
    qemu_io(path, "vdi", "write -P 1 0 4k", "write -P 2 5M 3M", "write -P 3 40M 512")
    data = path.read_bytes()
    map_offset, data_offset = struct.unpack_from("<II", data, 0x154)
    block_size, _extra, blocks, allocated = struct.unpack_from("<IIII", data, 0x178)
    r = scan.vdi_blockmap(
        data[map_offset : map_offset + 4 * blocks],
        blocks_allocated=allocated,
        block_size=block_size,
        data_offset=data_offset,
        file_size=len(data),
    )
    assert r.ok and r.allocated == allocated == 5
    assert r.allocated_bytes == data_bytes(path, "vdi")


# ---------------------------------------------------------------------------------------
# C == Python on random and mutated tables

needs_c = pytest.mark.skipif(_c is None, reason=C_MISSING)
DIFF = settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])


def both(name: str, table: bytes, *args: Any, claimed: bytearray | None) -> None:
    """Run one scanner on both backends (each on its own copy of the claim map) and
    require identical results and identical maps."""
    assert _c is not None
    results, maps = [], []
    for module in (_python, _c):
        copy = bytearray(claimed) if claimed is not None else None
        results.append(getattr(module, name)(table, *args, copy))
        maps.append(copy)
    assert results[0] == results[1]
    assert maps[0] == maps[1]


def entries_near(values: st.SearchStrategy[int], flips: int) -> st.SearchStrategy[int]:
    """Plausible entries with a few random bits flipped: the interesting branches."""
    return st.tuples(values, st.lists(st.integers(0, flips - 1), max_size=2)).map(
        lambda t: t[0] ^ sum(1 << b for b in set(t[1]))
    )


def tables_of(value: st.SearchStrategy[int]) -> st.SearchStrategy[list[int]]:
    """Entries one by one, or runs of repeated entries (the C scanners skip a run of a
    table's "unused" value eight bytes at a time)."""
    runs = st.lists(st.tuples(value, st.integers(1, 40)), max_size=8)
    return st.one_of(
        st.lists(value, max_size=60), runs.map(lambda rs: [v for v, n in rs for _ in range(n)])
    )


def claim_maps(bits: int) -> st.SearchStrategy[bytearray | None]:
    size = -(-bits // 8)
    return st.one_of(st.none(), st.binary(min_size=size, max_size=size).map(bytearray))


@needs_c
@DIFF
@given(
    data=st.data(), cb=st.integers(9, 21), extended=st.booleans(), version=st.sampled_from([2, 3])
)
def test_c_equals_python_qcow2(data: st.DataObject, cb: int, extended: bool, version: int) -> None:
    clusters = data.draw(st.integers(1, 64))
    size = max(clusters * (1 << cb) - data.draw(st.integers(0, 600)), 0)
    offsets = st.integers(0, clusters + 2).map(lambda c: c << cb)
    special = st.sampled_from([0, 1, COPIED, COPIED | 1])  # the offset-0 cases
    plain = st.one_of(offsets, offsets.map(lambda o: o | COPIED), special)
    x = 62 - (cb - 8)
    packed = st.builds(
        lambda o, n: 1 << 62 | n << x | o, st.integers(0, (clusters + 1) << cb), st.integers(0, 3)
    )
    word = st.one_of(entries_near(plain, 64), entries_near(packed, 64), st.integers(0, 2**64 - 1))
    width = 2 if extended else 1
    bitmap = st.one_of(
        st.sampled_from([0, 0xFFFFFFFF << 32, 0xF << 32, 1 | 1 << 32]),
        st.integers(0, 2**64 - 1),
        st.integers(0, 2**32 - 1),
    )
    entry = st.tuples(word, bitmap) if extended else st.tuples(word)
    table = be64(*[v for e in data.draw(st.lists(entry, max_size=40)) for v in e][: 40 * width])
    claimed = data.draw(claim_maps(clusters))
    has_data_file = data.draw(st.booleans())
    first = data.draw(st.integers(0, 1000))
    both("qcow2_l1", table[: len(table) // 8 * 8], first, cb, size, claimed=claimed)
    both("qcow2_refcount_table", table, first, cb, size, claimed=claimed)
    both("qcow2_l2", table, first, cb, extended, version, size, has_data_file, claimed=claimed)


@needs_c
@DIFF
@given(data=st.data(), cb=st.integers(9, 21), version=st.sampled_from([2, 3]))
def test_c_equals_python_qcow2_l2_runs(data: st.DataObject, cb: int, version: int) -> None:
    """Runs of entries one cluster apart, as preallocated images hold: the C scanner takes a
    clean run at once, so runs that end past the file, hit claimed clusters, carry out of the
    offset field or carry flags must still give the entry-by-entry answer."""
    clusters = data.draw(st.integers(1, 300))
    size = max(clusters * (1 << cb) - data.draw(st.integers(0, 600)), 0)
    top = (1 << 56) - (1 << cb)  # the last offset before a carry leaves bits 9-55
    start = st.one_of(
        st.integers(0, clusters + 2).map(lambda c: c << cb),
        st.integers(0, 3).map(lambda c: top - (c << cb)),
        st.integers(0, 2**64 - 1),
    )
    flags = st.sampled_from([0, COPIED, 1, COPIED | 1, 1 << 56, 1 << 62, 0x200])
    run = st.tuples(start, flags, st.integers(1, 80))
    words = [
        (offset | flag) + k * (1 << cb) & (2**64 - 1)
        for offset, flag, length in data.draw(st.lists(run, max_size=6))
        for k in range(length)
    ]
    table = be64(*words)
    few_claimed = st.lists(st.integers(0, clusters - 1), max_size=3).map(
        lambda marks: bytearray(sum(1 << c for c in marks).to_bytes(-(-clusters // 8), "little"))
    )
    claimed = data.draw(st.one_of(claim_maps(clusters), few_claimed))
    has_data_file = data.draw(st.booleans())
    both("qcow2_l2", table, 3, cb, False, version, size, has_data_file, claimed=claimed)


@needs_c
@DIFF
@given(data=st.data())
def test_c_equals_python_vmdk_tables(data: st.DataObject) -> None:
    sectors = data.draw(st.integers(0, 400))
    grain = data.draw(st.sampled_from([1, 8, 16, 128]))
    value = st.one_of(st.integers(0, sectors + 20), st.integers(0, 2**32 - 1), st.just(1))
    table = le32(*data.draw(st.lists(value, max_size=60)))
    claimed = data.draw(claim_maps(sectors))
    size = sectors * 512 + data.draw(st.integers(0, 511))
    overhead = data.draw(st.integers(0, 40))
    flags = data.draw(st.tuples(st.booleans(), st.booleans()))
    both("vmdk_gd", table, 7, data.draw(st.integers(1, 8)), size, claimed=claimed)
    both("vmdk_gt", table, 0, grain, overhead, size, *flags, claimed=claimed)


@needs_c
@DIFF
@given(data=st.data())
def test_c_equals_python_vhd_vdi(data: st.DataObject) -> None:
    block = data.draw(st.sampled_from([512, 4096, 2 * MIB]))
    sectors = data.draw(st.integers(0, 3 * block // 512 + 40))
    value = st.one_of(
        st.integers(0, sectors + 4),
        st.sampled_from([0xFFFFFFFF, 0xFFFFFFFE]),
        st.integers(0, 2**32 - 1),
    )
    table = data.draw(tables_of(value))
    claimed = data.draw(claim_maps(sectors))
    size = sectors * 512 + data.draw(st.integers(0, 511))
    both("vhd_bat", be32(*table), 0, block, data.draw(st.integers(0, 4096)), size, claimed=claimed)
    vdi_block = data.draw(st.sampled_from([512, 4096, MIB]))
    blocks_allocated = data.draw(st.integers(0, 64))
    data_offset = data.draw(st.integers(0, 8192))
    vdi_size = data.draw(st.integers(0, 70 * vdi_block))
    room = max(vdi_size - data_offset, 0) // vdi_block
    vdi_map = data.draw(claim_maps(min(blocks_allocated, room)).filter(lambda m: m is not None))
    both(
        "vdi_blockmap",
        le32(*[v if v > 0xFFFFFFF0 else v % 80 for v in table]),
        0,
        blocks_allocated,
        vdi_block,
        data_offset,
        vdi_size,
        claimed=vdi_map,
    )


#: Where one entry breaks a long run of "unused": around the C scanner's 2048-byte memcmp
#: blocks (entries 510-513 and 1022-1026 of 4 bytes, 254-257 of 8) and at both ends.
RUN_BREAKS = [0, 1, 2, 254, 255, 256, 257, 510, 511, 512, 513, 1022, 1023, 1024, 1025, 2999]


@needs_c
@pytest.mark.parametrize("at", RUN_BREAKS)
def test_c_equals_python_long_runs(at: int) -> None:
    """Runs far longer than the random tables' (the C scanners skip a run of a table's
    "unused" value a block at a time) must stop exactly where the Python twin's do."""
    count = 3000
    vhd = [0xFFFFFFFF] * count
    vhd[at] = 8  # a block right after the BAT's 4 KiB
    both("vhd_bat", be32(*vhd), 0, 4096, 4096, 64 * KIB, claimed=None)
    vdi = [0xFFFFFFFF] * count
    vdi[at] = 0xFFFFFFFE
    both("vdi_blockmap", le32(*vdi), 0, 4, 4096, 4096, 64 * KIB, claimed=bytearray(1))
    vhdx = [0] * count
    vhdx[at] = vhdx_entry(6, 2)  # fully present at 2 MiB (or a bitmap entry: bad)
    both("vhdx_bat", le64(*vhdx), 0, MIB, 512, 8 * MIB, False, claimed=bytearray(1))
    gt = [0] * count
    gt[at] = 128  # a grain at 64 KiB
    both("vmdk_gt", le32(*gt), 0, 8, 128, 64 * KIB + 4096, False, False, claimed=None)
    for table in (vhd, vdi, [0xFFFFFFFF] * count):
        assert _c is not None
        result = _c.vhd_bat(be32(*table), 0, 4096, 4096, 64 * KIB, None)
        assert result.unallocated + result.allocated + result.bad_count == count


@needs_c
@DIFF
@given(data=st.data())
def test_c_equals_python_vhdx(data: st.DataObject) -> None:
    block = data.draw(st.sampled_from([MIB, 32 * MIB, 256 * MIB]))
    sector = data.draw(st.sampled_from([512, 4096]))
    size_mb = data.draw(st.integers(0, 600))
    offset_mb = st.one_of(st.just(0), st.integers(0, size_mb + 2))
    state = st.one_of(st.sampled_from([0, 6]), st.integers(0, 7))
    plain = st.builds(vhdx_entry, state, offset_mb)
    value = st.one_of(entries_near(plain, 64), st.integers(0, 2**64 - 1))
    table = le64(*data.draw(tables_of(st.one_of(value, st.integers(0, 3)))))
    ratio = scan.vhdx_chunk_ratio(block, sector)
    # start a little before a sector-bitmap entry, so short tables contain some
    first = max(
        data.draw(st.integers(0, 3)) * (ratio + 1) + ratio - data.draw(st.integers(0, 30)), 0
    )
    claimed = data.draw(claim_maps(size_mb))
    both(
        "vhdx_bat",
        table,
        first,
        block,
        sector,
        size_mb * MIB,
        data.draw(st.booleans()),
        claimed=claimed,
    )


def random_stream(draw: st.DrawFn) -> bytes:
    pieces = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["grain", "meta", "eos", "junk", "huge", "liar"]))
        if kind == "grain":
            lba = draw(
                st.one_of(
                    st.integers(0, CAPACITY // GRAIN).map(lambda g: g * GRAIN),
                    st.integers(0, 2**64 - 1),
                )
            )
            size = draw(st.one_of(st.integers(1, 2000), st.just(GRAIN * 512 + 1025)))
            pieces.append(grain_marker(lba, bytes(size)))
        elif kind == "meta":
            pieces.append(meta_marker(draw(st.integers(1, 6)), draw(st.integers(0, 3))))
        elif kind == "liar":  # a grain claiming more data than follows
            size = draw(st.integers(1, GRAIN * 512 + 1024))
            pieces.append(struct.pack("<QI", 0, size) + bytes(500))
        elif kind == "huge":  # a payload no offset can address
            sectors = draw(st.integers(1 << 53, 2**64 - 1))
            pieces.append(struct.pack("<QII", sectors, 0, 1) + bytes(496))
        elif kind == "eos":
            pieces.append(EOS)
        else:
            pieces.append(draw(st.binary(max_size=700)))
    data = b"".join(pieces)
    cut = draw(st.integers(0, 600))
    return data[: max(len(data) - cut, 0)] if draw(st.booleans()) else data


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    data = random_stream(draw)
    cuts = draw(st.lists(st.integers(0, max(len(data), 1)), max_size=6))
    return data, cuts


@DIFF
@given(case=streams())
def test_stream_windows_do_not_change_the_result(case: tuple[bytes, list[int]]) -> None:
    data, cuts = case
    whole = _python.vmdk_stream(data, 0, CAPACITY, GRAIN, True, scan.stream_start(0))
    assert walk_in_windows(_python, data, cuts) == whole


@needs_c
@DIFF
@given(case=streams())
def test_c_equals_python_stream(case: tuple[bytes, list[int]]) -> None:
    data, cuts = case

    def walk(module: ModuleType) -> scan.StreamResult:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(scan, "_impl", module)
            return walk_in_windows(module, data, cuts)

    assert walk(_python) == walk(_c)


@DIFF
@given(case=streams())
def test_stream_walker_equals_one_pass(case: tuple[bytes, list[int]]) -> None:
    """Any split of the stream, fed chunk by chunk, ends where one window walked ends."""
    data, cuts = case
    whole = _python.vmdk_stream(data, 0, CAPACITY, GRAIN, True, scan.stream_start(0))
    assert walk_in_chunks(_python, data, cuts)[0] == whole


@needs_c
@DIFF
@given(case=streams(), base=st.sampled_from([0, 512 * 7, ((1 << 63) - 1) // 512 * 512 - 8192]))
def test_c_equals_python_stream_walker(case: tuple[bytes, list[int]], base: int) -> None:
    data, cuts = case
    base = min(base, ((1 << 63) - 1 - len(data)) // 512 * 512)
    assert walk_in_chunks(_python, data, cuts, base) == walk_in_chunks(_c, data, cuts, base)


@DIFF
@given(case=streams(), reads=st.lists(st.integers(1, 2000), min_size=1, max_size=4))
def test_stream_walker_hopping_equals_reading_everything(
    case: tuple[bytes, list[int]], reads: list[int]
) -> None:
    """Jumping over what the walk skips unread gives what feeding every byte gives."""
    data, _ = case
    assert walk_hopping(_python, data, reads) == walk_in_chunks(_python, data, [])[:4]


@needs_c
@DIFF
@given(
    case=streams(),
    reads=st.lists(st.integers(1, 2000), min_size=1, max_size=4),
    base=st.sampled_from([0, 512 * 7, ((1 << 63) - 1) // 512 * 512 - 8192]),
)
def test_c_equals_python_stream_walker_hopping(
    case: tuple[bytes, list[int]], reads: list[int], base: int
) -> None:
    data, _ = case
    base = min(base, ((1 << 63) - 1 - len(data)) // 512 * 512)
    assert walk_hopping(_python, data, reads, base) == walk_hopping(_c, data, reads, base)


@needs_c
@DIFF
@given(case=streams(), sectors_below_limit=st.integers(0, 300))
def test_c_equals_python_stream_near_the_offset_limit(
    case: tuple[bytes, list[int]], sectors_below_limit: int
) -> None:
    """Offsets close to 2^63: where the C code must refuse to wrap."""
    assert _c is not None
    data, _ = case
    base = max(((1 << 63) - 1 - len(data)) // 512 - sectors_below_limit, 0) * 512
    start = scan.stream_start(base)
    for final in (False, True):
        assert _python.vmdk_stream(data, base, CAPACITY, GRAIN, final, start) == _c.vmdk_stream(
            data, base, CAPACITY, GRAIN, final, start
        )


@needs_c
@DIFF
@given(blob=st.binary(max_size=3000), crc=st.integers(0, 0xFFFFFFFF))
def test_c_equals_python_crc32c(blob: bytes, crc: int) -> None:
    assert _c is not None
    assert _c.crc32c(blob, crc) == _c.crc32c_software(blob, crc) == _python.crc32c(blob, crc)


@needs_c
@needs_qemu
def test_c_equals_python_on_mutated_real_l2(make_image: Callable[..., Path]) -> None:
    """Tables of a real image with random bytes overwritten, many times over."""
    path = make_image("qcow2", "64M", "-o", "cluster_size=4096")
    qemu_io(path, "qcow2", "write -P 1 0 300k", "write -c -P 2 1M 64k", "write -z 2M 64k")
    data = path.read_bytes()
    summary, _ = qcow2_scan(path)
    assert summary.ok
    l1_offset = struct.unpack_from(">Q", data, 40)[0]
    l2_offset = struct.unpack_from(">Q", data, l1_offset)[0] & 0x00FF_FFFF_FFFF_FE00
    table = bytearray(data[l2_offset : l2_offset + 4096])
    rng = random.Random(11)
    for _ in range(200):
        mutated = bytearray(table)
        for _ in range(rng.randint(1, 8)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        claimed = scan.claim_map(len(data), 4096)
        both("qcow2_l2", bytes(mutated), 0, 12, False, 3, len(data), False, claimed=claimed)
