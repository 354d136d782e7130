"""Shared fixtures: real images made with the real tools, and helpers to edit them."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

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
