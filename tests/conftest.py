"""Shared fixtures: real images made with the real tools.  Helpers live in tests/support/."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.support import qemu_img


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
