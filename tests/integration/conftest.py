"""The integration suite runs the real Glance and the real Nova (``pip install -e
'.[integration]'``).  Without them it skips, unless ``IMAGEINTROSPECT_REQUIRE_INTEGRATION=1``
(set by scripts/test.sh) turns the skip into a failure, so CI can never pass by skipping."""

from __future__ import annotations

import importlib
import os
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
