"""Run a peer's unittest modules (Nova's: its test base classes need unittest's runner, not
pytest's) with the oslo.utils drop-in installed first, minus the tests ``docs/compat.md``
lists.

    python -m tests.compat.run_unittest nova.tests.unit.virt.test_images

Exits non-zero when a test fails; prints the counts.
"""

from __future__ import annotations

import sys
import unittest
from collections.abc import Iterator

from imageintrospect import compat

from .oslo_plugin import documented_differences


def _flatten(suite: unittest.TestSuite) -> Iterator[unittest.TestCase]:
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            yield from _flatten(test)
        else:
            yield test


def main(modules: list[str]) -> int:
    compat.install()  # before the modules under test import oslo's format_inspector
    differences = documented_differences()
    loaded = unittest.defaultTestLoader.loadTestsFromNames(modules)
    tests = [test for test in _flatten(loaded) if test.id() not in differences]
    result = unittest.TextTestRunner(verbosity=1).run(unittest.TestSuite(tests))
    skipped = len(result.skipped)
    failed = len(result.failures) + len(result.errors)
    print(
        f"{result.testsRun - failed - skipped} passed, {failed} failed, {skipped} skipped, "
        f"{len(list(_flatten(loaded))) - len(tests)} deselected"
    )
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
