"""Benchmark fixtures: the images (built once per session) and the closing ratio table.

Run with ``bash scripts/bench.sh`` (or ``python -m pytest benchmarks --benchmark-only``).
Benchmarks are not part of the test command: ``testpaths`` in pyproject.toml is ``tests``.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from images import CASES, ToolMissing
from ratios import MAX_HEADER_READ, TARGET_RATIO, Results, markdown_table

RESULTS_KEY = pytest.StashKey[Results]()


@pytest.fixture(scope="session")
def bench_results(pytestconfig: pytest.Config) -> Results:
    return pytestconfig.stash.setdefault(RESULTS_KEY, Results())


@pytest.fixture(scope="session")
def bench_image(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``bench_image(name)`` → the image of that case, built on first use and then reused."""
    builders = {case.name: case.build for case in CASES}
    built: dict[str, Path] = {}
    failed: dict[str, str] = {}

    def get(name: str) -> Path:
        if name in failed:
            pytest.skip(failed[name])
        if name not in built:
            try:
                built[name] = builders[name](tmp_path_factory.mktemp(name))
            except ToolMissing as exc:
                failed[name] = f"cannot build {name}: {exc}"
                pytest.skip(failed[name])
        return built[name]

    return get


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run each image's two benchmarks back to back, so that both see the same machine load."""
    order = {name: i for i, name in enumerate(case.name for case in CASES)}

    def key(item: pytest.Item) -> int:
        callspec = getattr(item, "callspec", None)
        name = callspec.params.get("name") if callspec is not None else None
        return order.get(name, len(order)) if isinstance(name, str) else len(order)

    items.sort(key=key)  # stable: within an image, test_ours stays before test_oslo


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    results = config.stash.get(RESULTS_KEY, None)
    if results is None or not results.rows:
        return
    terminalreporter.section("imageintrospect vs oslo.utils format_inspector (medians)")
    terminalreporter.write_line(
        f"python {platform.python_version()}; target: ratio ≥ {TARGET_RATIO:g}×, "
        f"ours ≤ {MAX_HEADER_READ:,} bytes read"
    )
    for line in markdown_table(results):
        terminalreporter.write_line(line)
