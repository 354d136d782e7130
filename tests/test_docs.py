"""The docs say what the code does: the findings table and the README's commands."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from imageintrospect import _codes_doc, cli
from imageintrospect.findings import REGISTRY

REPO = Path(__file__).resolve().parent.parent
REGENERATE = "python -m imageintrospect._codes_doc > docs/findings.rst"


def test_findings_page_is_generated_from_the_registry() -> None:
    committed = (REPO / "docs" / "findings.rst").read_text(encoding="utf-8")
    assert committed == _codes_doc.render(), f"docs/findings.rst is stale: run {REGENERATE}"


def test_findings_page_lists_every_code_with_its_severity() -> None:
    page = _codes_doc.render()
    for info in REGISTRY.values():
        row = f"   * - ``{info.code}``\n     - {info.severity}\n"
        assert row in page, info.code


def test_readme_commands_are_real() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    shell_lines = re.findall(r"```sh\n(.*?)```", readme, flags=re.DOTALL)
    commands = [line for block in shell_lines for line in block.splitlines() if line.strip()]
    # Debian 12 refuses pip outside a virtualenv (PEP 668), and a root-only machine has no sudo
    assert commands[0].startswith("apt-get update && apt-get install -y python3-venv gcc")
    assert "python3 -m venv .venv && .venv/bin/pip install . && " in commands[0]
    assert commands[1] == "bash scripts/test.sh"
    assert not any(command.startswith(("sudo", "pip")) for command in commands)
    parser = cli.build_parser()
    for command in commands:
        for part in command.split("&&"):
            words = shlex.split(part.split("#", 1)[0])
            if words[:1] == [".venv/bin/imageintrospect"]:
                words[0] = "imageintrospect"
            if words[:1] == ["imageintrospect"]:
                parser.parse_args(words[1:])  # exits (fails the test) on an unknown option
            for word in words:
                if word.startswith(("examples/", "scripts/", "docs/")):
                    assert (REPO / word).exists(), word


def test_readme_links_point_at_files() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#]+)\)", readme):
        if "://" not in target:
            assert (REPO / target).exists(), target


def test_docs_toctree_pages_exist() -> None:
    index = (REPO / "docs" / "index.rst").read_text(encoding="utf-8")
    toctree = index.split(".. toctree::", 1)[1]
    pages = [
        line.strip()
        for line in toctree.splitlines()[1:]
        if line.startswith("   ") and ":" not in line
    ]
    assert pages
    for page in pages:  # reStructuredText, or Markdown read by myst-parser
        docs = REPO / "docs"
        assert (docs / f"{page}.rst").exists() or (docs / f"{page}.md").exists(), page
