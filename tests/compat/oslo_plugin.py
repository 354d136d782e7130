"""A pytest plugin that runs oslo.utils' own format-inspector tests against the drop-in.

    python -m pytest -p tests.compat.oslo_plugin \
        --pyargs oslo_utils.tests.imageutils.test_format_inspector

It installs :mod:`imageintrospect.compat.format_inspector` in place of oslo's module before
the test module is imported, so oslo's tests run unchanged against this library, and it
deselects exactly the tests that ``docs/compat.md`` lists as deliberate differences (that
table is the one list: the docs and the run cannot disagree).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from imageintrospect import compat

DOC = Path(__file__).resolve().parents[2] / "docs" / "compat.md"
#: A row of the differences table: | `test id` | reason | (the id in unittest's dotted form).
_ROW = re.compile(r"^\|\s*`((?:oslo_utils|glance|nova)\.tests\.[\w.]+)`\s*\|")


def documented_differences(doc: Path = DOC) -> set[str]:
    """The test ids that docs/compat.md names as deliberate differences."""
    return {m.group(1) for line in doc.read_text().splitlines() if (m := _ROW.match(line))}


def unittest_id(item: pytest.Item) -> str:
    """``package.module.Class.test`` for a collected test (ddt's generated names included)."""
    module = getattr(item, "module", None)
    cls = getattr(item, "cls", None)
    parts = [module.__name__ if module else item.nodeid]
    if cls is not None:
        parts.append(cls.__name__)
    parts.append(item.name)
    return ".".join(parts)


def pytest_configure(config: pytest.Config) -> None:
    compat.install()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    differences = documented_differences()
    keep, drop = [], []
    for item in items:
        (drop if unittest_id(item) in differences else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
