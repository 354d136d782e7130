"""Shared fixtures: real images made with the real tools, and helpers to edit them."""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st

from imageintrospect import ImageIntrospectError, InternalParserError, Metadata, introspect
from imageintrospect.formats.base import QemuRefuses
from imageintrospect.qemu_json import qemu_info_dict

QEMU_IMG = shutil.which("qemu-img")

needs_qemu = pytest.mark.skipif(QEMU_IMG is None, reason="qemu-img (Debian qemu-utils) missing")


def run(*args: str | Path) -> str:
    """Run a tool, fail the test with its stderr if it fails."""
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{args[0]} failed: {proc.stderr.strip()}")
    return proc.stdout


def qemu_img(*args: str | Path) -> str:
    assert QEMU_IMG is not None, "qemu-img is required (apt-get install qemu-utils)"
    return run(QEMU_IMG, *args)


def qemu_info(path: Path, fmt: str | None = None) -> dict[str, Any]:
    """``qemu-img info --output=json`` of ``path`` (``-U``: never wait on a lock)."""
    args: list[str | Path] = ["info", "-U", "--output=json"]
    if fmt:
        args += ["-f", fmt]
    result: dict[str, Any] = json.loads(qemu_img(*args, path))
    return result


def patch(path: Path, offset: int, data: bytes) -> None:
    """Overwrite bytes in place: how the hostile variants are made."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def edit(path: Path, offset: int, fmt: str, *values: Any) -> Path:
    """``patch`` with ``struct.pack(fmt, *values)``; returns ``path`` for chaining."""
    patch(path, offset, struct.pack(fmt, *values))
    return path


def qemu_refuses(path: Path, fmt: str | None = None) -> bool:
    """True if ``qemu-img info`` (as ``fmt``, or probing) cannot open ``path``; then our
    qemu-img view must refuse it too (``--output qemu-json`` fails where qemu-img does)."""
    try:
        qemu_info(path, fmt)
    except AssertionError:
        assert_view_refuses(path)
        return True
    return False


def assert_view_refuses(path: Path) -> None:
    """Our qemu-img view of ``path`` fails (QemuRefuses), or the image cannot be described."""
    try:
        md = introspect(path)
    except ImageIntrospectError:
        return  # nothing to show at all: the CLI fails too
    with pytest.raises(QemuRefuses):
        qemu_info_dict(md, str(path), None)
    assert not md.safe


def ours_as_qemu(path: Path) -> dict[str, Any]:
    """Our ``qemu-img info --output=json`` view of ``path`` (the CLI's qemu-json)."""
    return qemu_info_dict(introspect(path), str(path), None)


def introspect_hostile(source: Any) -> Metadata | None:
    """``introspect()`` of a hostile image, as the never-escape properties want it: the
    Metadata (checked to serialise as JSON), or None when it was refused with an
    ImageIntrospectError.  An InternalParserError is a parser defect (an unexpected
    exception wrapped by the library): the test fails with its cause shown."""
    try:
        md = introspect(source)
    except InternalParserError as exc:
        raise AssertionError(f"parser defect: {exc.__cause__!r}") from exc
    except ImageIntrospectError:
        return None
    json.dumps(md.to_dict())
    return md


def mutate_bytes(data: Any, seed: bytes, offsets: st.SearchStrategy[int]) -> bytearray:
    """``seed`` with 1 to 12 bytes at drawn ``offsets`` overwritten, then maybe cut short."""
    blob = bytearray(seed)
    edits = data.draw(st.lists(st.tuples(offsets, st.integers(0, 255)), min_size=1, max_size=12))
    for offset, value in edits:
        blob[offset] = value
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    return blob


def assert_same_as_qemu(path: Path, fmt: str | None = None) -> Metadata:
    """Our qemu-img view equals qemu-img's, key for key, except the host's actual-size
    (which qemu takes from the host file system). Returns our Metadata."""
    theirs = qemu_info(path, fmt)
    theirs.pop("actual-size", None)
    assert ours_as_qemu(path) == theirs
    return introspect(path)


@pytest.fixture
def make_image(tmp_path: Path) -> Callable[..., Path]:
    """``make_image("qcow2", "64M", "-o", "compat=0.10")`` → path of a fresh qemu-img image."""
    counter = iter(range(10_000))

    def _make(fmt: str, size: str, *options: str, name: str | None = None) -> Path:
        path = tmp_path / (name or f"img{next(counter)}.{fmt}")
        qemu_img("create", "-q", "-f", fmt, *options, path, size)
        return path

    return _make


# --- hypothesis profiles (tests/fuzz and every property test) ------------------------------
# "ci" is what the test command runs: derandomised (the same examples every run, so a red CI
# is reproducible), no deadline (2 shared cores), failures printed with their replay blob;
# FUZZ_EXAMPLES changes its number of examples for a one-off deeper derandomised run.
# "long" is for local hunting: many more, fresh random examples, saved in the example
# database.  HYPOTHESIS_PROFILE=long python -m pytest tests/fuzz -q  (docs/security.md)
import os  # noqa: E402

from hypothesis import HealthCheck, settings  # noqa: E402

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")),
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=_SLOW_OK,
)
settings.register_profile(
    "long",
    max_examples=5000,
    derandomize=False,
    deadline=None,
    print_blob=True,
    suppress_health_check=_SLOW_OK,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


class OnlyRead:
    """A forward-only source: ``read()`` and nothing else (no seek, no tell, no seekable()),
    handing out at most ``chunk`` bytes per call, as a pipe or an HTTP body does."""

    def __init__(self, data: bytes, chunk: int = 65536) -> None:
        self._buf = io.BytesIO(data)
        self._chunk = chunk

    def read(self, size: int = -1) -> bytes:
        return self._buf.read(self._chunk if size is None or size < 0 else min(size, self._chunk))


class _CountsReads:
    """Counts the bytes ``read()`` and ``readinto()`` hand out (to check a read budget: the
    library reads a file object through either); mixed into a file type."""

    bytes_read = 0

    def read(self, size: int | None = -1, /) -> bytes:
        data: bytes = super().read(size)  # type: ignore[misc]
        self.bytes_read += len(data)
        return data

    def readinto(self, buffer: Any, /) -> int:
        count: int | None = super().readinto(buffer)  # type: ignore[misc]
        self.bytes_read += count or 0
        return count or 0


class CountingFile(_CountsReads, io.FileIO):
    """A real file that counts the bytes it hands out."""


class CountingBytes(_CountsReads, io.BytesIO):
    """An in-memory seekable file that counts the bytes it hands out."""


def forward_only(source: Path | bytes, chunk: int = 65536) -> OnlyRead:
    """An image file's (or bytes') content as an :class:`OnlyRead` stream."""
    return OnlyRead(source.read_bytes() if isinstance(source, Path) else source, chunk)


def streamed(data: bytes, chunk: int) -> Any:
    """The answer for ``data`` arriving forward-only in ``chunk``-byte pieces.

    ``introspect()`` asks a stream for at most ``core.STREAM_READ`` bytes at a time, so
    larger pieces go through ``InspectingReader``, which takes them as they come.
    """
    from imageintrospect import InspectingReader, introspect
    from imageintrospect.core import STREAM_READ

    if chunk <= STREAM_READ:
        return introspect(OnlyRead(data, chunk))
    reader = InspectingReader(data[at : at + chunk] for at in range(0, len(data), chunk))
    for _ in reader:
        pass
    return reader.metadata()


def describe(source: Any) -> dict[str, Any] | str:
    """``introspect(source).to_dict()``, or the name of the ImageIntrospectError it ended in
    (an InternalParserError is a bug, never an answer: it propagates)."""
    try:
        return introspect(source).to_dict()
    except InternalParserError:
        raise
    except ImageIntrospectError as exc:
        return type(exc).__name__


def assert_stream_agrees(source: Path | bytes, chunk: int) -> Metadata:
    """Check that ``source`` read forward-only in ``chunk``-byte pieces gives the very answer
    it gives seekable, and return that answer for the caller's own checks."""
    data = source.read_bytes() if isinstance(source, Path) else source
    seekable = introspect(io.BytesIO(data))
    assert introspect(OnlyRead(data, chunk)).to_dict() == seekable.to_dict()
    return seekable


def assert_stream_describes_alike(data: bytes, chunk: int) -> None:
    """Like :func:`assert_stream_agrees` for any bytes, an error's name standing for the answer."""
    assert describe(io.BytesIO(data)) == describe(OnlyRead(data, chunk))
