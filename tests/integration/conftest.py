"""The integration suite runs the real Glance and the real Nova (``pip install -e
'.[integration]'``).  Without them it skips, unless ``IMAGEINTROSPECT_REQUIRE_INTEGRATION=1``
(set by scripts/test.sh) turns the skip into a failure, so CI can never pass by skipping."""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
from types import ModuleType

import pytest

REQUIRED = os.environ.get("IMAGEINTROSPECT_REQUIRE_INTEGRATION") == "1"


def require(module: str) -> ModuleType:
    """Import ``module`` for an integration test, or skip (fail when it is required)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        message = f"{module} is not importable ({exc}); pip install -e '.[integration]'"
        if REQUIRED:
            pytest.fail(f"IMAGEINTROSPECT_REQUIRE_INTEGRATION=1 but {message}", pytrace=False)
        pytest.skip(message, allow_module_level=True)


def require_glance_harness() -> ModuleType:
    """``glance.tests.functional``, imported without the side effects of ``glance.tests``
    on the rest of the suite: that package opens ``run_tests.log`` in the working directory
    and turns the root logger to DEBUG when imported."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="glance-tests-") as scratch:
        os.chdir(scratch)
        try:
            module = require("glance.tests.functional")
        finally:
            os.chdir(here)
            for handler in [h for h in root.handlers if h not in handlers]:
                root.removeHandler(handler)
                handler.close()
            root.setLevel(level)
    return module
