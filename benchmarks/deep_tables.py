"""The real tables of the benchmark images, and the scanner calls that check them.

The table locations come from a header-only ``introspect(path, deep=False)`` (not timed);
the tables are read into memory once, then :func:`scan_job` returns a function that runs the
scanners over them the way a format module does (one call per table, with a claim map), so
the C backend and the Python twin can be timed on exactly the same bytes.

:func:`use_backend` switches the backend in-process: every public function of
:mod:`imageintrospect.scan` dispatches through the module global ``_impl`` at call time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

from imageintrospect import introspect, scan
from imageintrospect.scan import _python

SECTOR = 512
MIB = 1 << 20


def backend_module(name: str) -> ModuleType:
    if name == "python":
        return _python
    from imageintrospect.scan import _c  # ImportError when the C scanners are not built

    return _c


@contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run the scanners on backend ``name`` ("c" or "python") inside the block."""
    saved = scan._impl, scan.backend
    scan._impl, scan.backend = backend_module(name), name
    try:
        yield
    finally:
        scan._impl, scan.backend = saved


@contextmanager
def counting_scanner_calls() -> Iterator[dict[str, int]]:
    """Count the calls reaching the backend (per scanner) inside the block."""
    counts: dict[str, int] = {}
    inner = scan._impl

    def wrap(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any) -> Any:
            counts[name] = counts.get(name, 0) + 1
            return func(*args)

        return counted

    names = [n for n in dir(inner) if not n.startswith("_") and callable(getattr(inner, n))]
    proxy = SimpleNamespace(**{n: wrap(n, getattr(inner, n)) for n in names})
    scan._impl = proxy  # type: ignore[assignment]
    try:
        yield counts
    finally:
        scan._impl = inner


@dataclass
class ScanJob:
    what: str  # how the tables are scanned, for the table
    table_bytes: int
    calls: int
    run: Callable[[], object]  # the scanner calls (the backend is whatever is in use)
    copy: Callable[[], object]  # a plain copy of the same bytes, the memcpy yardstick


def _pread(fd: int, offset: int, length: int) -> bytes:
    parts: list[bytes] = []
    while length > 0:
        part = os.pread(fd, min(length, 16 * MIB), offset)
        if not part:
            break
        parts.append(part)
        offset += len(part)
        length -= len(part)
    return b"".join(parts)


def _copy_all(tables: list[bytes]) -> Callable[[], object]:
    def copy() -> object:
        for table in tables:
            bytes(memoryview(table))  # one fresh allocation + memcpy per table
        return None

    return copy


def scan_job(path: Path) -> ScanJob | None:
    """The scanner work of a deep walk of ``path``; None for a format without a job here."""
    md = introspect(path, deep=False)
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        maker = {
            "qcow2": _qcow2,
            "vmdk": _vmdk,
            "vhd": _vhd,
            "vhdx": _vhdx,
            "vdi": _vdi,
        }.get(md.format)
        return None if maker is None else maker(md, fd, size, path)
    finally:
        os.close(fd)


def _batches(
    tables: list[tuple[int, bytes]], per_table: int, limit: int = MIB
) -> list[tuple[int, bytes]]:
    """Tables of consecutive indexes joined into batches of at most ``limit`` bytes, as the
    format modules scan them (one scanner call per batch): (first entry index, bytes)."""
    batches: list[tuple[int, bytearray]] = []
    previous = -2
    for index, table in tables:
        if batches and index == previous + 1 and len(batches[-1][1]) + len(table) <= limit:
            batches[-1][1].extend(table)
        else:
            batches.append((index * per_table, bytearray(table)))
        previous = index
    return [(first, bytes(data)) for first, data in batches]


def _qcow2(md: Any, fd: int, size: int, path: Path) -> ScanJob:
    section = md.qcow2
    cluster = section.cluster_size
    bits = cluster.bit_length() - 1
    entry = 16 if section.extended_l2 else 8
    l1 = _pread(fd, section.l1_table_offset, section.l1_size * 8)
    mask = 0x00FF_FFFF_FFFF_FE00
    l2_offsets = [int.from_bytes(l1[i : i + 8], "big") & mask for i in range(0, len(l1), 8)]
    tables = [(i, _pread(fd, o, cluster)) for i, o in enumerate(l2_offsets) if o]
    batches = _batches(tables, cluster // entry)

    def run() -> object:
        claimed = scan.claim_map(size, cluster)
        scan.mark_claimed(claimed, 0, cluster, cluster)
        scan.qcow2_l1(l1, cluster_bits=bits, file_size=size, claimed=claimed)
        for first, batch in batches:
            scan.qcow2_l2(
                batch,
                cluster_bits=bits,
                file_size=size,
                version=section.version,
                extended_l2=section.extended_l2,
                claimed=claimed,
                first_index=first,
            )
        return claimed

    return ScanJob(
        "L1 + qcow2_l2 over the L2 tables in ≤ 1 MiB batches, cluster claim map",
        len(l1) + sum(len(t) for _, t in tables),
        1 + len(batches),
        run,
        _copy_all([l1, *(t for _, t in tables)]),
    )


def _vmdk(md: Any, fd: int, size: int, path: Path) -> ScanJob:
    header = md.vmdk.header.to_dict()
    if md.vmdk.compressed:
        return _vmdk_stream(md, fd, size, path)
    gtes, grain = header["num_gtes_per_gt"], header["grain_size"]
    gd_entries = -(-header["capacity"] // (gtes * grain))
    gd = _pread(fd, header["gd_offset"] * SECTOR, gd_entries * 4)
    gt_bytes = gtes * 4
    gt_sectors = -(-gt_bytes // SECTOR)
    offsets = [int.from_bytes(gd[i : i + 4], "little") for i in range(0, len(gd), 4)]
    tables = [(i, _pread(fd, o * SECTOR, gt_bytes)) for i, o in enumerate(offsets) if o]
    batches = _batches(tables, gtes, 4 * MIB)

    def run() -> object:
        claimed = scan.claim_map(size, SECTOR)
        scan.mark_claimed(claimed, 0, header["overhead"] * SECTOR, SECTOR)
        scan.vmdk_gd(gd, gt_sectors=gt_sectors, file_size=size)
        for first, batch in batches:
            scan.vmdk_gt(
                batch,
                grain_sectors=grain,
                overhead_sectors=header["overhead"],
                file_size=size,
                zeroed_grain_ok=bool(header["flags"] & 4),
                claimed=claimed,
                first_index=first,
            )
        return claimed

    return ScanJob(
        f"GD + vmdk_gt over the {gt_bytes} B grain tables in ≤ 4 MiB batches, sector claim map",
        len(gd) + sum(len(t) for _, t in tables),
        1 + len(batches),
        run,
        _copy_all([gd, *(t for _, t in tables)]),
    )


def _vmdk_stream(md: Any, fd: int, size: int, path: Path) -> ScanJob:
    """The marker walk reads the file itself: for a stream, the stream is the table."""
    header = md.vmdk.header.to_dict()

    def run() -> object:
        walk_fd = os.open(path, os.O_RDONLY)
        try:
            return scan.walk_vmdk_stream(
                lambda offset, length: os.pread(walk_fd, length, offset),
                start=header["overhead"] * SECTOR,
                stream_size=size,
                capacity_sectors=header["capacity"],
                grain_sectors=header["grain_size"],
            )
        finally:
            os.close(walk_fd)

    def copy() -> object:
        buffer = memoryview(bytearray(4 * MIB))
        copy_fd = os.open(path, os.O_RDONLY)
        try:
            for offset in range(0, size, len(buffer)):
                os.preadv(copy_fd, [buffer], offset)
        finally:
            os.close(copy_fd)
        return None

    return ScanJob(
        "walk_vmdk_stream, 4 MiB windows read by pread (yardstick: preadv into one buffer)",
        size,
        -(-size // (4 * MIB)),
        run,
        copy,
    )


def _vhd(md: Any, fd: int, size: int, path: Path) -> ScanJob:
    section = md.vhd
    bat = _pread(fd, section.bat_offset, section.max_table_entries * 4)
    data_start = -(-(section.bat_offset + len(bat)) // SECTOR) * SECTOR

    def run() -> object:
        claimed = scan.claim_map(size, SECTOR)
        scan.mark_claimed(claimed, 0, data_start, SECTOR)
        return scan.vhd_bat(
            bat,
            block_size=section.block_size,
            data_start=data_start,
            file_size=size,
            claimed=claimed,
        )

    return ScanJob("one vhd_bat call, sector claim map", len(bat), 1, run, _copy_all([bat]))


def _vhdx(md: Any, fd: int, size: int, path: Path) -> ScanJob:
    section = md.vhdx
    bat = _pread(fd, section.bat.offset, section.bat.entries * 8)

    def run() -> object:
        claimed = scan.claim_map(size, MIB)
        scan.mark_claimed(claimed, 0, MIB, MIB)
        return scan.vhdx_bat(
            bat,
            block_size=section.block_size,
            logical_sector_size=section.logical_sector_size,
            file_size=size,
            has_parent=bool(section.has_parent),
            claimed=claimed,
        )

    return ScanJob("one vhdx_bat call, MiB claim map", len(bat), 1, run, _copy_all([bat]))


def _vdi(md: Any, fd: int, size: int, path: Path) -> ScanJob:
    section = md.vdi
    bat = _pread(fd, section.block_map_offset, section.blocks * 4)

    def run() -> object:
        return scan.vdi_blockmap(
            bat,
            blocks_allocated=section.blocks_allocated,
            block_size=section.block_size,
            data_offset=section.data_offset,
            file_size=size,
        )

    return ScanJob("one vdi_blockmap call", len(bat), 1, run, _copy_all([bat]))
