"""The oslo.utils drop-in's pass-through against oslo's own InspectWrapper, same run.

Each stream image (:data:`deep_images.STREAM_CASE_NAMES`, 1 GiB of random data as qcow2 and
as a streamOptimized VMDK) is read from the page cache in 64 KiB chunks three ways, back to
back in one benchmark group, each as Glance's upload does it (a chunk iterator wrapped, read
to the end, then ``format`` and its ``safety_check()``):

* ``plain``: the chunks alone;
* ``compat``: ``imageintrospect.compat.format_inspector.InspectWrapper``;
* ``oslo``: ``oslo_utils.imageutils.format_inspector.InspectWrapper``.

Neither wrapper is installed over the other (this module imports both). Asserted: the drop-in
hands out the file's bytes and decides the image's format. The closing lines give the time
of each wrapper over the plain read, and the drop-in's time over oslo's; and the plain read
over the drop-in's in alternating rounds, by the wall clock and by CPU time (as the stream
benchmark's "paired" columns).
"""

from __future__ import annotations

import functools
import logging
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from oslo_utils.imageutils import format_inspector as oslo_fi

from deep_images import STREAM_CASE_NAMES, cached_image
from deep_report import median_s
from imageintrospect.compat import format_inspector as compat_fi
from probes import oslo_verdict
from test_deep import paired_clocks, timed

CHUNK = 64 * 1024
SIDES = ("plain", "compat", "oslo")

logging.getLogger(oslo_fi.__name__).setLevel(logging.ERROR)
logging.getLogger(compat_fi.__name__).setLevel(logging.ERROR)

_MEDIANS: dict[str, dict[str, float]] = {}
#: plain / compat over alternating rounds, by the wall clock and by CPU time
_PAIRED: dict[str, tuple[float, float]] = {}


def _chunks(f: Any) -> Iterator[bytes]:
    return iter(functools.partial(f.read, CHUNK), b"")


def plain(path: Path) -> int:
    total = 0
    with open(path, "rb") as f:
        for chunk in _chunks(f):
            total += len(chunk)
    return total


def wrapped(module: Any, path: Path) -> str:
    """Glance's upload: wrap, iterate to the end, close, then format and safety_check()."""
    with open(path, "rb") as f:
        wrapper = module.InspectWrapper(_chunks(f))
        for _chunk in wrapper:
            pass
        wrapper.close()
        try:
            inspector = wrapper.format
        except module.ImageFormatError as exc:
            return f"refused: {exc}"
        return oslo_verdict_of(module, inspector)


def oslo_verdict_of(module: Any, inspector: Any) -> str:
    if module is oslo_fi:
        return oslo_verdict(inspector)
    try:
        inspector.safety_check()
    except compat_fi.SafetyCheckFailed as exc:
        return f"{inspector.NAME} unsafe: {', '.join(sorted(exc.failures))}"
    return f"{inspector.NAME} safe"


def crc_through_compat(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        for chunk in compat_fi.InspectWrapper(_chunks(f)):  # type: ignore[arg-type]
            crc = zlib.crc32(chunk, crc)
    return crc


def crc_of_file(path: Path) -> int:
    with open(path, "rb") as f:
        return functools.reduce(lambda crc, chunk: zlib.crc32(chunk, crc), _chunks(f), 0)


@pytest.fixture(scope="module", autouse=True)
def ratio_lines(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    plugins = request.config.pluginmanager
    reporter, capture = plugins.getplugin("terminalreporter"), plugins.getplugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():  # teardown output is captured otherwise
        reporter.write_line("\ncompat vs oslo InspectWrapper, 64 KiB chunks (median times):")
        for image, sides in _MEDIANS.items():
            if len(sides) < len(SIDES):
                continue
            plain_s, compat_s, oslo_s = (sides[s] for s in SIDES)
            reporter.write_line(
                f"  {image}: plain {plain_s:.3f} s, compat {compat_s:.3f} s "
                f"({compat_s / plain_s:.2f}x plain), oslo {oslo_s:.3f} s "
                f"({oslo_s / plain_s:.2f}x plain); compat/oslo = {compat_s / oslo_s:.2f}"
            )
        for image, (wall, cpu) in _PAIRED.items():
            reporter.write_line(
                f"  {image}: paired plain/compat (alternating rounds) {wall:.2f} by the "
                f"wall clock, {cpu:.2f} by CPU time"
            )


@pytest.mark.parametrize(
    ("image", "side"), [(image, side) for image in STREAM_CASE_NAMES for side in SIDES]
)
def test_compat_stream(benchmark: Any, image: str, side: str) -> None:
    path = cached_image(image)
    benchmark.group = f"compat stream {image}"
    if side == "plain":
        assert timed(benchmark, side, lambda: plain(path)) == path.stat().st_size
    elif side == "compat":
        assert crc_through_compat(path) == crc_of_file(path), "the drop-in changed the bytes"
        verdict = timed(benchmark, side, lambda: wrapped(compat_fi, path))
        assert verdict.split()[0] in ("qcow2", "vmdk"), verdict
        _PAIRED[image] = paired_clocks(lambda: plain(path), lambda: wrapped(compat_fi, path))
    else:
        timed(benchmark, side, lambda: wrapped(oslo_fi, path))
    median = median_s(benchmark)
    if median is not None:
        _MEDIANS.setdefault(image, {})[side] = median
