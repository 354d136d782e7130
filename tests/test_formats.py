"""The format registry is the one list: Metadata's sections, detection, the command line and
the API page all say what ``imageintrospect.formats`` says."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

from imageintrospect import Metadata, detect, formats
from imageintrospect.formats.base import Section

API_PAGE = Path(__file__).resolve().parents[1] / "docs" / "api.rst"


def test_metadata_has_one_section_field_per_registered_format() -> None:
    fields = {f.name: f.type for f in dataclasses.fields(Metadata)}
    sections = {name: t for name, t in fields.items() if str(t).endswith("Section | None")}
    expected = {e.name: f"{e.section} | None" for e in formats.FORMATS if e.section}
    assert sections == expected
    assert tuple(expected) == formats.SECTION_NAMES


def test_each_entry_names_its_module_format_and_section() -> None:
    for entry in (*formats.FORMATS, formats.RAW):
        spec = entry.spec()
        assert spec.name == entry.name
        module = sys.modules[f"imageintrospect.formats.{entry.module}"]
        if entry.section is not None:
            assert issubclass(getattr(module, entry.section), Section)
    assert formats.NAMES[-1] == "raw"
    assert len(set(formats.NAMES)) == len(formats.NAMES)


def test_aliases_resolve_to_registered_names() -> None:
    assert detect.canonical_format(" VPC ") == "vhd"
    assert detect.canonical_format("qcow") == "qcow2"
    assert detect.canonical_format("nonsense") == "nonsense"
    assert set(formats.CANONICAL.values()) == set(formats.NAMES)


def test_api_page_lists_the_registered_formats() -> None:
    text = API_PAGE.read_text(encoding="utf-8")
    listed = re.search(r"``format``\n((?:      .*\n)+)", text)
    assert listed is not None
    assert re.findall(r"``(\w+)``", listed.group(1))[: len(formats.NAMES)] == list(formats.NAMES)
    sections = re.search(r"^   (``\w+``(?:, ``\w+``)+)\n      The detected format", text, re.M)
    assert sections is not None
    assert re.findall(r"``(\w+)``", sections.group(1)) == list(formats.SECTION_NAMES)


def test_command_line_choices_are_the_registered_names() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "imageintrospect", "check", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert detect.known_formats() == sorted({*formats.NAMES, *formats.ALIASES})
    assert ", ".join(detect.known_formats()) in " ".join(out.split())


def test_the_api_imports_no_format_module_nor_construct() -> None:
    code = (
        "import sys; from imageintrospect import introspect, Metadata, InspectingReader; "
        "print(' '.join(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = out.stdout.split()
    assert "imageintrospect.core" in modules
    assert [m for m in modules if m.startswith("imageintrospect.formats.")] == [
        "imageintrospect.formats.base"
    ]
    assert "construct" not in modules
