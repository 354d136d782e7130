"""Header-level introspection of each image: ours against oslo.utils, in the same run.

For every image there are two benchmarks in one group (named after the image):

* ``test_ours``: ``introspect(path, deep=False)``: detection, header parse and findings.
* ``test_oslo``: ``format_inspector.detect_file_format(path)`` then ``safety_check()``, the
  pair Glance and Nova run on an upload.  A failed safety check (``SafetyCheckFailed``) or a
  refused detection (``ImageFormatError``, e.g. several formats matched) is a verdict, so it
  is caught and counted as part of the work.

``test_ours`` also counts the bytes it reads through a counting file object and asserts the
library's bound (≤ 1 MiB for ``deep=False``, docs/security.md): that is a correctness check,
not a timing one.
Speed targets are reported in the closing table, never asserted: timings vary by machine.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from oslo_utils.imageutils import format_inspector as fi

from imageintrospect import Metadata, introspect
from images import CASE_NAMES
from probes import WatchedFile, oslo_verdict
from ratios import MAX_HEADER_READ, Results, median_us

# oslo logs a warning per failed safety check; pytest's log capture would then bill its own
# formatting to oslo.  Silencing it only ever makes oslo look faster, never us.
logging.getLogger(fi.__name__).setLevel(logging.ERROR)


class CountingReader(WatchedFile):
    """A seekable binary file that counts the bytes its reads hand out."""

    count = 0

    def readinto(self, buffer: Any) -> int:
        n = self._file.readinto(buffer)
        self.count += n or 0
        return n or 0

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self.count += len(data)
        return data


def ours(path: Path) -> Metadata:
    return introspect(path, deep=False)


def oslo(path: Path) -> str:
    """oslo's upload check; returns its verdict as a short string for the table."""
    try:
        inspector = fi.detect_file_format(str(path))
    except fi.ImageFormatError as exc:
        return f"refused: {exc}"
    return oslo_verdict(inspector)


def ours_verdict(md: Metadata) -> str:
    name = md.format if md.partition_table is None else f"{md.format} ({md.partition_table})"
    unsafe = Counter(f.code for f in md.findings if f.severity == "unsafe")
    if not unsafe:
        return f"{name} safe"
    codes = [code if n == 1 else f"{code} ×{n}" for code, n in sorted(unsafe.items())]
    return f"{name} unsafe: {', '.join(codes)}"


def bytes_read_by_ours(path: Path) -> tuple[int, Metadata]:
    with CountingReader(path) as reader:
        md = introspect(reader, deep=False)
        return reader.count, md


def bytes_read_by_oslo(path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """Count oslo's reads by handing ``detect_file_format`` a counting file for its ``open``."""
    readers: list[CountingReader] = []

    def counting_open(file: str, mode: str = "r", *args: Any, **kwargs: Any) -> CountingReader:
        assert mode == "rb", mode
        readers.append(CountingReader(Path(file)))
        return readers[-1]

    with monkeypatch.context() as patch:
        patch.setattr(fi, "open", counting_open, raising=False)
        oslo(path)
    return sum(r.count for r in readers)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_ours(
    benchmark: Any, bench_image: Callable[[str], Path], bench_results: Results, name: str
) -> None:
    path = bench_image(name)
    count, md = bytes_read_by_ours(path)
    row = bench_results.row(name)
    row.ours_bytes = count
    row.ours_verdict = ours_verdict(md)
    assert count <= MAX_HEADER_READ, f"deep=False read {count} bytes of {name}"

    benchmark.group = name
    result = benchmark(ours, path)
    assert result == md or result.to_dict() == md.to_dict()
    row.ours_us = median_us(benchmark)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_oslo(
    benchmark: Any,
    bench_image: Callable[[str], Path],
    bench_results: Results,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    path = bench_image(name)
    row = bench_results.row(name)
    row.oslo_bytes = bytes_read_by_oslo(path, monkeypatch)

    benchmark.group = name
    row.oslo_verdict = benchmark(oslo, path)
    row.oslo_us = median_us(benchmark)
