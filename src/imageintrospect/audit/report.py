"""The summary of an audit, as text for the terminal and as a self-contained HTML page.

The page has no external asset (no script, font, stylesheet or image): the charts are CSS bars,
so it can be mailed, attached to a ticket or opened on an air-gapped bastion.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TextIO

from .records import ERROR, SAFE, UNSAFE, Record

EXIT_SAFE, EXIT_UNSAFE, EXIT_UNREADABLE = 0, 1, 2


@dataclass
class Summary:
    images: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    formats: Counter[str] = field(default_factory=Counter)
    findings: Counter[str] = field(default_factory=Counter)
    unsafe: list[Record] = field(default_factory=list)
    errors: list[Record] = field(default_factory=list)
    bytes_read: int = 0
    bytes_stored: int = 0

    @classmethod
    def of(cls, records: Iterable[Record]) -> Summary:
        summary = cls()
        for record in records:
            summary.add(record)
        return summary

    def add(self, record: Record) -> None:
        self.images += 1
        verdict = record.get("verdict", ERROR)
        self.verdicts[verdict] += 1
        self.formats[record.get("format") or "(unreadable)"] += 1
        for finding in record.get("findings") or ():
            self.findings[finding["code"]] += 1
        if verdict == UNSAFE:
            self.unsafe.append(record)
        elif verdict == ERROR:
            self.errors.append(record)
        self.bytes_read += record.get("bytes_read") or 0
        self.bytes_stored += record.get("size") or 0

    def exit_status(self) -> int:
        """0 all safe, 1 some unsafe, 2 some unreadable (which wins: nothing is known of them)."""
        if self.verdicts[ERROR]:
            return EXIT_UNREADABLE
        if self.verdicts[UNSAFE]:
            return EXIT_UNSAFE
        return EXIT_SAFE


def write_text(summary: Summary, out: TextIO) -> None:
    print(f"images:   {summary.images}", file=out)
    verdicts = ", ".join(f"{summary.verdicts[v]} {v}" for v in (SAFE, UNSAFE, ERROR))
    print(f"verdicts: {verdicts}", file=out)
    formats = ", ".join(f"{count} {name}" for name, count in summary.formats.most_common())
    print(f"formats:  {formats or '-'}", file=out)
    print(
        f"read:     {bytes_text(summary.bytes_read)} of {bytes_text(summary.bytes_stored)}"
        f" stored ({ratio_text(summary.bytes_read, summary.bytes_stored)})",
        file=out,
    )
    for record in summary.unsafe:
        codes = ", ".join(f["code"] for f in record["findings"] if f["severity"] == UNSAFE)
        print(f"UNSAFE   {record['url']}  ({record['format']}: {codes})", file=out)
    for record in summary.errors:
        print(f"ERROR    {record['url']}  ({record['error']})", file=out)


def bytes_text(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} bytes"


def ratio_text(part: int, whole: int) -> str:
    return f"{part / whole:.4%}" if whole else "-"


# -- HTML ---------------------------------------------------------------------------------------

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.5em; }
table { border-collapse: collapse; } td, th { padding: .2em .6em; text-align: left; }
tr:nth-child(even) { background: #f4f4f4; }
.bar { background: #4a7ab5; height: 1em; display: inline-block; vertical-align: middle; }
.unsafe .bar, .bar.unsafe { background: #c0392b; } .bar.error { background: #888; }
.bar.safe { background: #2e8b57; } .num { text-align: right; }
code { font-size: 90%; }
"""


def write_html(summary: Summary, out: TextIO, title: str = "imageintrospect audit") -> None:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>',
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<p>{summary.images} images; {bytes_text(summary.bytes_read)} read of "
        f"{bytes_text(summary.bytes_stored)} stored "
        f"({ratio_text(summary.bytes_read, summary.bytes_stored)}).</p>",
        "<h2>Verdicts</h2>",
        chart({v: summary.verdicts[v] for v in (SAFE, UNSAFE, ERROR)}, colour_by_key=True),
        "<h2>Formats</h2>",
        chart(dict(summary.formats.most_common())),
        "<h2>Findings</h2>",
        chart(dict(summary.findings.most_common())) if summary.findings else "<p>none</p>",
        f"<h2>Unsafe images ({len(summary.unsafe)})</h2>",
        unsafe_table(summary.unsafe),
        f"<h2>Unreadable images ({len(summary.errors)})</h2>",
        error_table(summary.errors),
        "</body></html>",
    ]
    out.write("\n".join(parts) + "\n")


def chart(counts: dict[str, int], *, colour_by_key: bool = False) -> str:
    """A horizontal bar chart as a table of CSS bars (widths relative to the largest)."""
    largest = max(counts.values(), default=0) or 1
    rows = []
    for name, count in counts.items():
        width = round(300 * count / largest)
        css = f"bar {html.escape(name)}" if colour_by_key else "bar"
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td class='num'>{count}</td>"
            f"<td><span class='{css}' style='width:{width}px'></span></td></tr>"
        )
    return "<table>" + "".join(rows) + "</table>"


def unsafe_table(records: list[Record]) -> str:
    if not records:
        return "<p>none</p>"
    rows = ["<tr><th>image</th><th>format</th><th>findings</th></tr>"]
    for record in records:
        findings = "<br>".join(
            f"<code>{html.escape(f['code'])}</code> {html.escape(f['message'])}"
            for f in record["findings"]
            if f["severity"] == UNSAFE
        )
        rows.append(
            f"<tr class='unsafe'><td>{html.escape(record['url'])}</td>"
            f"<td>{html.escape(str(record['format']))}</td><td>{findings}</td></tr>"
        )
    return "<table>" + "".join(rows) + "</table>"


def error_table(records: list[Record]) -> str:
    if not records:
        return "<p>none</p>"
    rows = ["<tr><th>image</th><th>attempts</th><th>error</th></tr>"]
    for record in records:
        rows.append(
            f"<tr><td>{html.escape(record['url'])}</td><td class='num'>{record['attempts']}</td>"
            f"<td>{html.escape(str(record['error']))}</td></tr>"
        )
    return "<table>" + "".join(rows) + "</table>"
