"""Streaming pass-through: plain read vs InspectingReader vs oslo's InspectWrapper.

Each image (1 GiB of random data as qcow2 and as a streamOptimized VMDK, cached by
:mod:`deep_images`) is read from the page cache in 64 KiB chunks three ways, back to back in
one benchmark group:

* ``plain``: ``while f.read(65536): pass``.
* ``ours``: ``for chunk in InspectingReader(f): pass`` then ``reader.metadata()`` (deep, the
  default: for the VMDK that walks every stream marker).  The reader reads the file in
  64 KiB chunks itself.
* ``oslo``: ``for chunk in InspectWrapper(chunks): pass`` over the same 64 KiB chunks (oslo's
  wrapper iterates its source with ``next()``, so it gets a chunk iterator, as Glance gives
  it), then ``wrapper.format`` and its ``safety_check()``, Glance's pair.

Every side opens the file inside the timed call.  Asserted: ours hands out exactly the file's
bytes (a CRC over the chunks, checked once outside the timing) and ends with Metadata of the
image's format.  Throughput targets are reported by the closing table, not asserted.
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
from test_deep import summary, timed

CHUNK = 64 * 1024
SIDES = ("plain", "ours", "oslo")

logging.getLogger(fi.__name__).setLevel(logging.ERROR)


def plain(path: Path) -> int:
    total = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            total += len(chunk)
    return total


def ours(path: Path) -> Metadata:
    with open(path, "rb") as f:
        reader = InspectingReader(f)
        for _chunk in reader:
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
    if side == "plain":
        assert timed(benchmark, side, lambda: plain(path)) == row.size
        row.plain_s = median_s(benchmark)
    elif side == "ours":
        assert crc_of_ours(path) == crc_of_file(path), "InspectingReader changed the bytes"
        md = timed(benchmark, side, lambda: ours(path))
        assert md.format in ("qcow2", "vmdk"), md.format
        row.ours_s = median_s(benchmark)
        row.ours_walk = walked(md)
        row.ours_verdict = summary(md)
    else:
        row.oslo_verdict = timed(benchmark, side, lambda: oslo(path))
        row.oslo_s = median_s(benchmark)
