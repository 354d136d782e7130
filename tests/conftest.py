"""Shared fixtures: real images made with the real tools, and helpers to edit them."""

from __future__ import annotations

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
