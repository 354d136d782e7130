"""docs/security.md cannot drift from the code: every unsafe finding code is named there, and
the commands it gives to run the fuzzers are the real ones."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import settings

from imageintrospect import formats
from imageintrospect.findings import REGISTRY

formats.load_all()  # importing every format module registers its codes

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"


def test_every_unsafe_code_is_in_the_security_page() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = sorted(
        info.code
        for info in REGISTRY.values()
        if info.severity == "unsafe" and f"`{info.code}`" not in text
    )
    assert not missing, f"docs/security.md does not mention: {', '.join(missing)}"


def test_every_code_the_page_names_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    table = text.split("## Finding codes", 1)[1].split("\n## ", 1)[0]
    named = {cell.strip("`") for cell in table.split() if cell.startswith("`") and "-" in cell}
    unknown = sorted(code for code in named if code.strip("`,.") not in REGISTRY)
    assert not unknown, f"docs/security.md names codes that do not exist: {unknown}"


def test_the_documented_profiles_exist() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name in ("ci", "long"):
        settings.get_profile(name)  # raises if not registered
        assert f"HYPOTHESIS_PROFILE={name}" in text or name == "ci"
    assert "HYPOTHESIS_PROFILE=long python -m pytest tests/fuzz" in text
    assert os.environ.get("HYPOTHESIS_PROFILE", "ci") in ("ci", "long")
