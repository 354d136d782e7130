"""What the two benchmarks of each image measured, and the ratio table printed at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The bound on header-only introspection (docs/security.md), checked per image.
MAX_HEADER_READ = 1024 * 1024
#: The issue's speed target: ours at least this many times faster than oslo, per image.
TARGET_RATIO = 10.0


@dataclass
class Row:
    """What one image's two benchmarks measured."""

    ours_us: float | None = None
    oslo_us: float | None = None
    ours_bytes: int | None = None
    oslo_bytes: int | None = None
    ours_verdict: str = "?"
    oslo_verdict: str = "?"

    @property
    def ratio(self) -> float | None:
        if self.ours_us is None or self.oslo_us is None or self.ours_us == 0:
            return None
        return self.oslo_us / self.ours_us

    def meets_target(self) -> str:
        if self.ratio is None or self.ours_bytes is None:
            return "n/a"
        fast = self.ratio >= TARGET_RATIO
        small = self.ours_bytes <= MAX_HEADER_READ
        if fast and small:
            return "yes"
        misses = [m for m, ok in (("speed", fast), ("bytes", small)) if not ok]
        return "NO (" + ", ".join(misses) + ")"


@dataclass
class Results:
    """Rows in the order the images were benchmarked."""

    rows: dict[str, Row] = field(default_factory=dict)

    def row(self, name: str) -> Row:
        return self.rows.setdefault(name, Row())


def median_us(benchmark: Any) -> float | None:
    """The median of a finished benchmark in microseconds (None when benchmarks are disabled)."""
    stats = getattr(benchmark, "stats", None)
    if stats is None:
        return None
    return float(stats.stats.median) * 1e6


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def markdown_table(results: Results) -> list[str]:
    lines = [
        "| image | ours | oslo | ours µs | oslo µs | ratio | ours bytes | oslo bytes | target |",
        "|---|---|---|--:|--:|--:|--:|--:|---|",
    ]
    for name, row in results.rows.items():
        cells = [
            name,
            row.ours_verdict,
            row.oslo_verdict,
            _fmt(row.ours_us, ".1f"),
            _fmt(row.oslo_us, ".1f"),
            _fmt(row.ratio, ".1f") + ("×" if row.ratio is not None else ""),
            _fmt(row.ours_bytes, ","),
            _fmt(row.oslo_bytes, ","),
            row.meets_target(),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
