"""Fixtures of the fuzz suite: each module's seed images, made once per session."""

from __future__ import annotations

import pytest
from hypothesis import settings

from .seeds import ALL, Seed


def pytest_report_header() -> str:
    current = settings.default
    return (
        f"hypothesis profile: {settings._current_profile} "
        f"(max_examples={current.max_examples}, derandomize={current.derandomize})"
    )


@pytest.fixture(scope="module")
def seeds(request: pytest.FixtureRequest) -> tuple[Seed, ...]:
    """The seeds of the format named by the test module's ``FORMAT`` (skipped, not failed,
    when the tool that writes them is missing)."""
    made = ALL[request.module.FORMAT]()
    assert made, f"no {request.module.FORMAT} seed could be made"
    return made
