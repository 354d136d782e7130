"""Streaming pass-through: plain read loops vs InspectingReader vs oslo's InspectWrapper.

Each image (1 GiB of random data as qcow2 and as a streamOptimized VMDK, cached by
:mod:`deep_images`) is read from the page cache, side after side in one benchmark group:

* ``plain``: ``while f.read(65536): pass``; ``plain-1M`` and ``plain-4K`` the same at
  1 MiB and 4 KiB.
* ``ours``: ``for chunk in InspectingReader(f): pass`` then ``reader.metadata()`` (deep, the
  default: for the VMDK that walks every stream marker).  The reader reads the file in
  64 KiB chunks itself.
* ``ours-read``, ``ours-read-1M``, ``ours-read-4K``: ``while reader.read(n): pass`` on an
  ``InspectingReader(f)`` at 64 KiB, 1 MiB and 4 KiB (what glance_store, Glance's
  ``CooperativeReader`` and oslo's wrapper do), then ``metadata()``; each is set against the
  plain loop of its read size.
* ``oslo``: ``for chunk in InspectWrapper(chunks): pass`` over the same 64 KiB chunks (oslo's
  wrapper iterates its source with ``next()``, so it gets a chunk iterator, as Glance gives
  it), then ``wrapper.format`` and its ``safety_check()``, Glance's pair.

On a busy machine the sides, run one after the other, see different loads; so each of ours is
also timed *paired* (``test_deep.paired_clocks``): five times, the plain loop of its read size
then ours, alternately, and the ratio of the two medians is the table's "paired" column, by
the wall clock, and "paired CPU", by this process's CPU time (other work on the machine
moves it far less than the wall clock).

Every side opens the file inside the timed call.  Asserted: ours hands out exactly the file's
bytes (a CRC over the chunks, checked once outside the timing, by iteration and by read(n))
and ends with Metadata of the image's format.  Throughput targets are reported by the
closing table, not asserted.
"""

from __future__ import annotations

import functools
import logging
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from oslo_utils.imageutils import format_inspector as fi

from deep_images import STREAM_CASE_NAMES, cached_image
from deep_report import DeepResults, median_s
from imageintrospect import InspectingReader, Metadata
from probes import oslo_verdict
from test_deep import paired_clocks, summary, timed

CHUNK = 64 * 1024
#: read(n) sizes besides the 64 KiB chunk: side suffix -> n
READ_SIZES = {"": CHUNK, "-1M": 1024 * 1024, "-4K": 4096}
SIDES = (
    "plain",
    "ours",
    "ours-read",
    "plain-1M",
    "ours-read-1M",
    "plain-4K",
    "ours-read-4K",
    "oslo",
)

logging.getLogger(fi.__name__).setLevel(logging.ERROR)


def plain(path: Path, size: int = CHUNK) -> int:
    total = 0
    with open(path, "rb") as f:
        while chunk := f.read(size):
            total += len(chunk)
    return total


def ours(path: Path) -> Metadata:
    with open(path, "rb") as f:
        reader = InspectingReader(f)
        for _chunk in reader:
            pass
        return reader.metadata()


def ours_read(path: Path, size: int) -> Metadata:
    with open(path, "rb") as f:
        reader = InspectingReader(f)
        while reader.read(size):
            pass
        return reader.metadata()


def _chunks(f: Any) -> Iterator[bytes]:
    return iter(functools.partial(f.read, CHUNK), b"")


def oslo(path: Path) -> str:
    with open(path, "rb") as f:
        # typed IO[bytes], but it iterates its source with next(): chunks, as Glance gives it
        wrapper = fi.InspectWrapper(_chunks(f))  # type: ignore[arg-type]
        for _chunk in wrapper:
            pass
        try:
            inspector = wrapper.format
        except fi.ImageFormatError as exc:
            return f"refused: {exc}"
        return oslo_verdict(inspector)


def crc_of_ours(path: Path) -> tuple[int, int]:
    crc, total = 0, 0
    with open(path, "rb") as f:
        for chunk in InspectingReader(f):
            crc = zlib.crc32(chunk, crc)
            total += len(chunk)
    return crc, total


def crc_of_ours_read(path: Path, size: int) -> tuple[int, int]:
    crc, total = 0, 0
    with open(path, "rb") as f:
        reader = InspectingReader(f)
        while chunk := reader.read(size):
            crc = zlib.crc32(chunk, crc)
            total += len(chunk)
    return crc, total


def crc_of_file(path: Path) -> tuple[int, int]:
    crc, total = 0, 0
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            crc = zlib.crc32(chunk, crc)
            total += len(chunk)
    return crc, total


def walked(md: Metadata) -> str:
    """What the deep walk reported: the VMDK's marker walk when there is one, and
    allocated_size (None: no deep walk for this format)."""
    parts = []
    markers = getattr(md.vmdk, "markers", None) if md.vmdk is not None else None
    if markers is not None:
        walk = markers.to_dict()
        metadata = sum(walk.get(k, 0) for k in ("gt_markers", "gd_markers", "footer_markers"))
        parts.append(
            f"{walk.get('markers', 0):,} markers ({walk.get('grains', 0):,} grains, "
            f"{metadata} GT/GD/footer), complete={walk.get('complete')}"
        )
    parts.append(f"allocated_size={md.allocated_size}")
    return "; ".join(parts)


@pytest.mark.parametrize(
    ("image", "side"), [(image, side) for image in STREAM_CASE_NAMES for side in SIDES]
)
def test_stream(benchmark: Any, deep_results: DeepResults, image: str, side: str) -> None:
    path = cached_image(image)
    row = deep_results.stream_row(image)
    row.size = path.stat().st_size
    benchmark.group = f"stream {image}"
    if side.startswith("plain"):
        size = READ_SIZES[side.removeprefix("plain")]
        assert timed(benchmark, side, lambda: plain(path, size)) == row.size
        row.plain_s[size] = median_s(benchmark)
    elif side == "ours":
        assert crc_of_ours(path) == crc_of_file(path), "InspectingReader changed the bytes"
        md = timed(benchmark, side, lambda: ours(path))
        assert md.format in ("qcow2", "vmdk"), md.format
        row.ours_s = median_s(benchmark)
        row.paired[0], row.paired_cpu[0] = paired_clocks(lambda: plain(path), lambda: ours(path))
        row.ours_walk = walked(md)
        row.ours_verdict = summary(md)
    elif side.startswith("ours-read"):
        size = READ_SIZES[side.removeprefix("ours-read")]
        crc = crc_of_ours_read(path, size)
        assert crc == crc_of_file(path), f"InspectingReader.read({size}) changed the bytes"
        md = timed(benchmark, side, lambda: ours_read(path, size))
        assert md.format in ("qcow2", "vmdk"), md.format
        row.read_s[size] = median_s(benchmark)
        row.paired[size], row.paired_cpu[size] = paired_clocks(
            lambda: plain(path, size), lambda: ours_read(path, size)
        )
    else:
        row.oslo_verdict = timed(benchmark, side, lambda: oslo(path))
        row.oslo_s = median_s(benchmark)
