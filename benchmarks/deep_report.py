"""What the deep and stream benchmarks measured, and the closing tables they print.

The targets are reported in the tables, never asserted: timings belong to a
machine.  What is asserted is correctness: ``allocated_size`` equal to qemu-img's figure
wherever deep validation has landed, and the stream reader handing out the bytes unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Deep introspect() at least this many times faster than qemu-img check / map.
TARGET_VS_QEMU = 80.0
#: The C scanners at least this many times faster than the Python twin (an expectation).
EXPECT_C_VS_PYTHON = 20.0
#: Table bytes scanned per second at least this fraction of plain read speed.
TARGET_VS_READ = 0.5
#: InspectingReader at least this fraction of a plain read loop's throughput.
TARGET_STREAM = 0.9


def median_s(benchmark: Any) -> float | None:
    """The median of a finished benchmark in seconds (None when benchmarks are disabled)."""
    stats = getattr(benchmark, "stats", None)
    return None if stats is None else float(stats.stats.median)


def _fmt(value: float | int | None, spec: str, suffix: str = "") -> str:
    return "—" if value is None else format(value, spec) + suffix


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _verdict(value: float | None, target: float) -> str:
    if value is None:
        return "n/a"
    return "yes" if value >= target else "**no**"


def _target(landed: bool, value: float | None, target: float) -> str:
    return f" ({_verdict(value, target)})" if landed else " (header only)"


# --- deep introspect() vs qemu-img -----------------------------------------------------------


@dataclass
class DeepRow:
    reference: str = "?"  # "check" or "map"
    qemu_s: float | None = None
    qemu_allocated: int | None = None
    allocated_source: str = ""  # "check", "map", or "writes" (qemu-img has no figure)
    c_s: float | None = None
    header_s: float | None = None  # deep=False: the cost before any table is read
    paired_qemu: float | None = None  # qemu / ours-c over alternating rounds
    paired_read: float | None = None  # read / ours-c over alternating rounds
    python_s: float | None = None
    read_s: float | None = None
    allocated: int | None = None  # ours (C); None while deep is not wired for the format
    allocated_python: int | None = None
    table_bytes: int | None = None  # distinct bytes deep introspect() read from the file
    scanner_calls: int | None = None
    findings: str = ""

    @property
    def deep_landed(self) -> bool:
        return self.allocated is not None

    def allocated_verdict(self) -> str:
        if self.allocated is None:
            return "deep not landed"
        if self.qemu_allocated is None:
            return "?"
        return "equal" if self.allocated == self.qemu_allocated else "**DIFFERS**"


@dataclass
class ScanRow:
    """The scanner functions alone on the real tables, both backends, and a memcpy."""

    what: str = ""
    table_bytes: int = 0
    calls: int = 0
    c_s: float | None = None
    python_s: float | None = None
    memcpy_s: float | None = None


@dataclass
class StreamRow:
    plain_s: dict[int, float | None] = field(default_factory=dict)  # by read size
    ours_s: float | None = None  # by iteration
    read_s: dict[int, float | None] = field(default_factory=dict)  # read(n), by n
    # plain / ours over alternating rounds: 0 for iteration, n for read(n); by the wall
    # clock, and by CPU time (which other work on the machine moves far less)
    paired: dict[int, float] = field(default_factory=dict)
    paired_cpu: dict[int, float] = field(default_factory=dict)
    oslo_s: float | None = None
    size: int = 0
    ours_walk: str = ""
    ours_verdict: str = ""
    oslo_verdict: str = ""


@dataclass
class StartupRow:
    """One process-start side: median wall and CPU (user + system) seconds."""

    wall_s: float | None = None
    cpu_s: float | None = None
    #: CPU time over ``python -c pass``'s, the two run alternately (see test_startup)
    paired_cpu: float | None = None


#: Process start targets, seconds, on a machine whose ``python -c pass`` takes about 17 ms.
STARTUP_TARGETS = {"import imageintrospect": 0.040, "info qcow2": 0.060, "info vmdk": 0.060}
QUIET_PYTHON_S = 0.017


@dataclass
class DeepResults:
    deep: dict[str, DeepRow] = field(default_factory=dict)
    scans: dict[str, ScanRow] = field(default_factory=dict)
    stream: dict[str, StreamRow] = field(default_factory=dict)
    startup: dict[str, StartupRow] = field(default_factory=dict)

    def deep_row(self, name: str) -> DeepRow:
        return self.deep.setdefault(name, DeepRow())

    def scan_row(self, name: str) -> ScanRow:
        return self.scans.setdefault(name, ScanRow())

    def stream_row(self, name: str) -> StreamRow:
        return self.stream.setdefault(name, StreamRow())


def deep_table(results: DeepResults) -> list[str]:
    lines = [
        "| image | qemu-img | qemu s | ours C s | ×qemu | paired ×qemu | qemu/read | ours Py s | "
        "Py/C | table MiB | header s | read s | ours MB/s | read MB/s | ours/read | "
        "paired ours/read | allocated ours | allocated qemu | allocated |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for name, row in results.deep.items():
        vs_qemu = _ratio(row.qemu_s, row.c_s)
        py_c = _ratio(row.python_s, row.c_s)
        ours_rate = _ratio(row.table_bytes, row.c_s)
        read_rate = _ratio(row.table_bytes, row.read_s)
        vs_read = _ratio(row.read_s, row.c_s)
        # Without the deep walk ours only read the headers: the ratios say nothing yet.
        landed = row.deep_landed
        cells = [
            name,
            row.reference,
            _fmt(row.qemu_s, ".3f"),
            _fmt(row.c_s, ".3f"),
            _fmt(vs_qemu, ".1f", "×"),
            _fmt(row.paired_qemu, ".1f", "×") + _target(landed, row.paired_qemu, TARGET_VS_QEMU),
            # the best ×qemu any walk that reads the tables can reach
            _fmt(_ratio(row.qemu_s, row.read_s), ".0f", "×"),
            _fmt(row.python_s, ".3f"),
            _fmt(py_c, ".1f", "×"),
            _fmt(None if row.table_bytes is None else row.table_bytes / 2**20, ".1f"),
            _fmt(row.header_s, ".4f"),
            _fmt(row.read_s, ".4f"),
            _fmt(None if ours_rate is None else ours_rate / 1e6, ".0f"),
            _fmt(None if read_rate is None else read_rate / 1e6, ".0f"),
            _fmt(vs_read, ".2f"),
            _fmt(row.paired_read, ".2f") + _target(landed, row.paired_read, TARGET_VS_READ),
            _fmt(row.allocated, ","),
            _fmt(row.qemu_allocated, ",")
            + (f" ({row.allocated_source})" if row.allocated_source != row.reference else ""),
            row.allocated_verdict(),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def scan_table(results: DeepResults) -> list[str]:
    lines = [
        "| tables | calls | MiB | C s | Python s | Py/C | C MB/s | memcpy MB/s | C/memcpy |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, row in results.scans.items():
        mib = row.table_bytes / 2**20
        c_rate = _ratio(row.table_bytes, row.c_s)
        copy_rate = _ratio(row.table_bytes, row.memcpy_s)
        cells = [
            f"{name}: {row.what}",
            f"{row.calls:,}",
            f"{mib:.1f}",
            _fmt(row.c_s, ".4f"),
            _fmt(row.python_s, ".3f"),
            _fmt(_ratio(row.python_s, row.c_s), ".0f", "×"),
            _fmt(None if c_rate is None else c_rate / 1e6, ".0f"),
            _fmt(None if copy_rate is None else copy_rate / 1e6, ".0f"),
            _fmt(_ratio(row.memcpy_s, row.c_s), ".2f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def stream_table(results: DeepResults) -> list[str]:
    lines = [
        "| image | plain MB/s | InspectingReader MB/s | oslo MB/s | ours/plain | paired "
        "| paired CPU | ours/oslo | ours walked | ours | oslo |",
        "|---|--:|--:|--:|--:|--:|--:|--:|---|---|---|",
    ]
    chunk = 64 * 1024
    for name, row in results.stream.items():
        plain_s = row.plain_s.get(chunk)
        ours_plain = _ratio(plain_s, row.ours_s)
        cells = [
            name,
            *(
                _fmt(None if t is None else row.size / t / 1e6, ".0f")
                for t in (plain_s, row.ours_s, row.oslo_s)
            ),
            _fmt(ours_plain, ".2f"),
            _fmt(row.paired.get(0), ".2f") + f" ({_verdict(row.paired.get(0), TARGET_STREAM)})",
            _fmt(row.paired_cpu.get(0), ".2f")
            + f" ({_verdict(row.paired_cpu.get(0), TARGET_STREAM)})",
            _fmt(_ratio(row.oslo_s, row.ours_s), ".2f", "×"),
            row.ours_walk,
            row.ours_verdict,
            row.oslo_verdict,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *read_table(results)]
    return lines


def read_table(results: DeepResults) -> list[str]:
    """``InspectingReader.read(n)`` against the plain ``f.read(n)`` loop, per n."""
    lines = [
        "| image | n | plain f.read(n) MB/s | reader.read(n) MB/s | read(n)/plain | paired "
        "| paired CPU |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for name, row in results.stream.items():
        for size, read_s in row.read_s.items():
            plain_s = row.plain_s.get(size)
            ratio = _ratio(plain_s, read_s)
            pair, cpu = row.paired.get(size), row.paired_cpu.get(size)
            judged = size == 64 * 1024
            target = f" ({_verdict(pair, TARGET_STREAM)})" if judged else ""
            cpu_target = f" ({_verdict(cpu, TARGET_STREAM)})" if judged else ""
            cells = [
                name,
                f"{size // 1024} KiB",
                *(
                    _fmt(None if t is None else row.size / t / 1e6, ".0f")
                    for t in (plain_s, read_s)
                ),
                _fmt(ratio, ".2f"),
                _fmt(pair, ".2f") + target,
                _fmt(cpu, ".2f") + cpu_target,
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def startup_table(results: DeepResults) -> list[str]:
    """Process start, each side against ``python -c pass`` of the same run.  A side's ratios
    are scaled to a 17 ms interpreter start (the issue's quiet machine); the target is judged
    on the paired CPU ratio (the side alternating with ``python -c pass``), which the load and
    the drift of a shared machine move least."""
    base = results.startup.get("python -c pass", StartupRow())
    lines = [
        "| command | wall ms | CPU ms | wall / python | CPU / python | paired CPU / python "
        "| at 17 ms python: wall-, CPU-, paired-scaled ms | target |",
        "|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for side, row in results.startup.items():
        wall = _ratio(row.wall_s, base.wall_s)
        cpu = _ratio(row.cpu_s, base.cpu_s)
        paired = 1.0 if side == "python -c pass" else row.paired_cpu
        scaled = [None if r is None else r * QUIET_PYTHON_S * 1e3 for r in (wall, cpu, paired)]
        target = STARTUP_TARGETS.get(side)
        verdict = "—"
        cpu_scaled = scaled[2] if scaled[2] is not None else scaled[1]
        if target is not None and cpu_scaled is not None:  # CPU: the load moves it least
            verdict = f"≤ {target * 1e3:.0f} ms: " + (
                "yes" if cpu_scaled <= target * 1e3 else "**no**"
            )
        cells = [
            f"`{side}`",
            _fmt(None if row.wall_s is None else row.wall_s * 1e3, ".1f"),
            _fmt(None if row.cpu_s is None else row.cpu_s * 1e3, ".1f"),
            _fmt(wall, ".2f"),
            _fmt(cpu, ".2f"),
            _fmt(paired, ".2f"),
            ", ".join(_fmt(v, ".0f") for v in scaled),
            verdict,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
