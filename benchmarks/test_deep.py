"""Deep introspection: ours against qemu-img, C against Python, scan against read.

For every image of :mod:`deep_images` (built once, cached) eight benchmarks run back to back
in one group named after the image:

* ``qemu``: ``qemu-img check --output=json`` (qcow2) or ``qemu-img map --output=json``
  (vmdk, vhd, vhdx, vdi), the whole process, as an operator would run it.
* ``ours-c``: ``introspect(path, deep=True)`` with the C scanners.
* ``ours-header``: ``introspect(path, deep=False)``: what a deep walk costs before it reads
  a table (opening, detection, headers, the answer); with ``read`` it bounds how close to
  the read floor a deep walk of small tables can come.
* ``ours-python``: the same with the pure-Python twin (switched in-process: the scanners
  dispatch through ``imageintrospect.scan._impl`` at call time).
* ``read``: reading exactly the byte ranges ``ours-c`` read (recorded through a file wrapper,
  merged) with ``os.preadv`` into one preallocated buffer: the memcpy-speed yardstick.
* ``scan-c``, ``scan-python``, ``memcpy``: the scanner functions alone on the image's real
  tables (read into memory beforehand), per backend, and a plain copy of the same bytes.

``qemu`` and ``read`` are also timed *paired* with ``ours-c`` (alternating rounds, see
:func:`paired`): on a busy machine those ratios are the ones to quote.
The closing tables (conftest) hold the ratios and the targets; ``allocated_size`` is compared
with qemu-img's figure there.  Nothing about speed is asserted.  Slow sides get fewer rounds:
each side has a time budget and at least one round after a warm-up.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deep_images import BY_NAME, DEEP_CASE_NAMES, cached_image, scattered_writes
from deep_report import DeepResults, median_s
from deep_tables import ScanJob, counting_scanner_calls, scan_job, use_backend
from imageintrospect import Metadata, introspect
from probes import WatchedFile

SIDES = (
    "qemu",
    "ours-c",
    "ours-header",
    "ours-python",
    "read",
    "scan-c",
    "scan-python",
    "memcpy",
)
#: Seconds of timed rounds per side (at least one round, at most MAX_ROUNDS).
BUDGET_S = {"ours-python": 30.0, "scan-python": 30.0}
DEFAULT_BUDGET_S = 10.0
MAX_ROUNDS = 7
MIB = 1 << 20


def timed(benchmark: Any, side: str, func: Callable[[], Any]) -> Any:
    """One warm-up call (page cache, imports), then as many rounds as the side's budget
    allows; returns the function's result."""
    start = time.perf_counter()
    func()
    once = time.perf_counter() - start
    budget = BUDGET_S.get(side, DEFAULT_BUDGET_S)
    rounds = max(1, min(MAX_ROUNDS, int(budget / max(once, 1e-6))))
    return benchmark.pedantic(func, rounds=rounds, iterations=1)


def paired(reference: Callable[[], Any], ours: Callable[[], Any], rounds: int = 5) -> float:
    """reference median / ours median over ``rounds`` that alternate the two, so that both
    see the same load: on a busy machine, sides run one after the other do not."""
    return paired_clocks(reference, ours, rounds)[0]


def paired_clocks(
    reference: Callable[[], Any], ours: Callable[[], Any], rounds: int = 5
) -> tuple[float, float]:
    """:func:`paired` by the wall clock and by CPU time (``time.process_time``: user and
    system time of this process, which other processes on the machine move far less)."""
    clocks = (time.perf_counter, time.process_time)
    times: list[list[list[float]]] = [[[], []], [[], []]]  # [side][clock]
    for _ in range(rounds):
        for side, out in zip((reference, ours), times, strict=True):
            start = [clock() for clock in clocks]
            side()
            for clock, began, samples in zip(clocks, start, out, strict=True):
                samples.append(clock() - began)
    wall, cpu = (statistics.median(times[0][c]) / statistics.median(times[1][c]) for c in range(2))
    return wall, cpu


# --- qemu-img -----------------------------------------------------------------------------


def qemu_command(name: str, path: Path) -> list[str]:
    case = BY_NAME[name]
    return ["qemu-img", case.reference, "--output=json", "-f", case.qemu_format, str(path)]


def qemu_info(name: str, path: Path) -> dict[str, Any]:
    command = ["qemu-img", "info", "--output=json", "-f", BY_NAME[name].qemu_format, str(path)]
    info: dict[str, Any] = json.loads(subprocess.run(command, capture_output=True).stdout)
    return info


def qemu_allocated(name: str, path: Path, stdout: bytes) -> tuple[int, str]:
    """The bytes of guest data qemu-img says the image stores, and where the figure is from.

    check: allocated-clusters × cluster size.  map: the lengths of the extents with data that
    are present in this file (depth 0: no backing files here).  qemu's VHDX driver has no
    block status (its map says "all data" for any image): there the figure is the blocks our
    qemu-io writes touched × qemu's cluster size."""
    report = json.loads(stdout)
    info = qemu_info(name, path)
    if BY_NAME[name].reference == "check":
        return int(report["allocated-clusters"]) * int(info["cluster-size"]), "check"
    if BY_NAME[name].qemu_format == "vhdx":
        block = int(info["cluster-size"])
        touched = {
            index
            for offset, length in scattered_writes(int(info["virtual-size"]))
            for index in range(offset // block, (offset + length - 1) // block + 1)
        }
        return len(touched) * block, "writes"
    total = sum(
        int(e["length"])
        for e in report
        if e["data"] and e.get("present", True) and e.get("depth", 0) == 0
    )
    return total, "map"


# --- the bytes ours reads -------------------------------------------------------------------


class RecordingFile(WatchedFile):
    """A seekable binary file that records the (offset, length) of every read."""

    buffering = 0  # every read() of ours is one read of the file

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.ranges: list[tuple[int, int]] = []

    def readinto(self, buffer: Any) -> int:
        position = self._file.tell()
        n = self._file.readinto(buffer) or 0
        if n:
            self.ranges.append((position, n))
        return n


def merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for offset, length in sorted(ranges):
        if out and offset <= out[-1][0] + out[-1][1]:
            last_offset, last_length = out[-1]
            out[-1] = (last_offset, max(last_length, offset + length - last_offset))
        else:
            out.append((offset, length))
    return out


def ranges_read_by_ours(path: Path) -> list[tuple[int, int]]:
    with RecordingFile(path) as f:
        introspect(f, deep=True)
        return merged(f.ranges)


def replay(path: Path, ranges: list[tuple[int, int]]) -> Callable[[], int]:
    """Read ``ranges`` into one 4 MiB buffer with preadv: no parsing, no allocation."""
    buffer = memoryview(bytearray(4 * MIB))

    def read_all() -> int:
        fd = os.open(path, os.O_RDONLY)
        total = 0
        try:
            for offset, length in ranges:
                end = offset + length
                while offset < end:
                    n = os.preadv(fd, [buffer[: min(len(buffer), end - offset)]], offset)
                    if n <= 0:
                        break
                    offset += n
                    total += n
        finally:
            os.close(fd)
        return total

    return read_all


def summary(md: Metadata) -> str:
    codes = Counter(f.code for f in md.findings)
    listed = ", ".join(c if n == 1 else f"{c} ×{n}" for c, n in sorted(codes.items()))
    return f"{md.format}, {'safe' if md.safe else 'unsafe'}" + (f": {listed}" if listed else "")


# --- the benchmarks -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def scan_jobs() -> dict[str, ScanJob | None]:
    return {}


@pytest.fixture(scope="session")
def c_answers() -> dict[tuple[str, str], Any]:
    """What the C backend answered, per (image, kind), for the Python twin to match."""
    return {}


@pytest.mark.parametrize(
    ("image", "side"), [(image, side) for image in DEEP_CASE_NAMES for side in SIDES]
)
def test_deep(
    benchmark: Any,
    deep_results: DeepResults,
    scan_jobs: dict[str, ScanJob | None],
    c_answers: dict[tuple[str, str], Any],
    image: str,
    side: str,
) -> None:
    path = cached_image(image)
    row = deep_results.deep_row(image)
    row.reference = f"{BY_NAME[image].reference}"
    benchmark.group = f"deep {image}"
    benchmark.extra_info["side"] = side

    if side == "qemu":
        command = qemu_command(image, path)
        proc = timed(
            benchmark, side, lambda: subprocess.run(command, capture_output=True, check=False)
        )
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        row.qemu_allocated, row.allocated_source = qemu_allocated(image, path, proc.stdout)
        row.qemu_s = median_s(benchmark)
        with use_backend("c"):
            row.paired_qemu = paired(
                lambda: subprocess.run(command, capture_output=True, check=False),
                lambda: introspect(path, deep=True),
                rounds=3,
            )

    elif side == "ours-c":
        with use_backend("c"):
            md = timed(benchmark, side, lambda: introspect(path, deep=True))
            row.c_s = median_s(benchmark)
            with counting_scanner_calls() as calls:
                introspect(path, deep=True)
        c_answers[image, "introspect"] = md.to_dict()
        row.allocated = md.allocated_size
        row.findings = summary(md)
        row.scanner_calls = sum(calls.values())
        benchmark.extra_info["scanner_calls"] = dict(calls)

    elif side == "ours-header":
        with use_backend("c"):
            timed(benchmark, side, lambda: introspect(path, deep=False))
        row.header_s = median_s(benchmark)

    elif side == "ours-python":
        with use_backend("python"):
            md = timed(benchmark, side, lambda: introspect(path, deep=True))
        row.python_s = median_s(benchmark)
        row.allocated_python = md.allocated_size
        if (image, "introspect") in c_answers:
            assert md.to_dict() == c_answers[image, "introspect"], "the backends disagree"

    elif side == "read":
        ranges = ranges_read_by_ours(path)
        row.table_bytes = sum(length for _, length in ranges)
        total = timed(benchmark, side, replay(path, ranges))
        assert total == row.table_bytes
        row.read_s = median_s(benchmark)
        with use_backend("c"):
            row.paired_read = paired(replay(path, ranges), lambda: introspect(path, deep=True))

    else:
        if image not in scan_jobs:
            scan_jobs[image] = scan_job(path)
        job = scan_jobs[image]
        if job is None:
            pytest.skip(f"no scanner job for {image}")
        scan_row = deep_results.scan_row(image)
        scan_row.what, scan_row.table_bytes, scan_row.calls = job.what, job.table_bytes, job.calls
        if side == "memcpy":
            timed(benchmark, side, job.copy)
            scan_row.memcpy_s = median_s(benchmark)
        else:
            backend = side.removeprefix("scan-")
            with use_backend(backend):
                answer = timed(benchmark, side, job.run)
            if backend == "c":
                scan_row.c_s = median_s(benchmark)
                c_answers[image, "scan"] = answer
            else:
                scan_row.python_s = median_s(benchmark)
                if (image, "scan") in c_answers:
                    assert answer == c_answers[image, "scan"], "the backends disagree"
