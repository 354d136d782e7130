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

from deep_report import DeepResults, deep_table, scan_table, startup_table, stream_table
from images import CASES, ToolMissing
from ratios import MAX_HEADER_READ, TARGET_RATIO, Results, markdown_table

RESULTS_KEY = pytest.StashKey[Results]()
DEEP_RESULTS_KEY = pytest.StashKey[DeepResults]()


@pytest.fixture(scope="session")
def bench_results(pytestconfig: pytest.Config) -> Results:
    return pytestconfig.stash.setdefault(RESULTS_KEY, Results())


@pytest.fixture(scope="session")
def deep_results(pytestconfig: pytest.Config) -> DeepResults:
    """What test_deep.py and test_stream.py measured (their images: deep_images.py)."""
    return pytestconfig.stash.setdefault(DEEP_RESULTS_KEY, DeepResults())


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
    if results is not None and results.rows:
        terminalreporter.section("imageintrospect vs oslo.utils format_inspector (medians)")
        terminalreporter.write_line(
            f"python {platform.python_version()}; target: ratio ≥ {TARGET_RATIO:g}×, "
            f"ours ≤ {MAX_HEADER_READ:,} bytes read"
        )
        for line in markdown_table(results):
            terminalreporter.write_line(line)
    deep = config.stash.get(DEEP_RESULTS_KEY, None)
    if deep is None:
        return
    for title, rows, table in (
        (
            "deep introspect() vs qemu-img, C vs Python, scan vs read (medians)",
            deep.deep,
            deep_table,
        ),
        ("table scanners alone on the real tables (medians)", deep.scans, scan_table),
        (
            "streaming: plain read vs InspectingReader vs oslo InspectWrapper",
            deep.stream,
            stream_table,
        ),
        (
            "process start: python, import, info vs qemu-img info (medians)",
            deep.startup,
            startup_table,
        ),
    ):
        if rows:
            terminalreporter.section(title)
            for line in table(deep):
                terminalreporter.write_line(line)
