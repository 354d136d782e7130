"""Sphinx configuration: ``sphinx-build -W -b html docs docs/_build/html``."""

from __future__ import annotations

import sys
from pathlib import Path

# Document the source tree itself, installed or not.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import imageintrospect

project = "imageintrospect"
author = "imageintrospect developers"
copyright = "imageintrospect developers"
release = imageintrospect.__version__
version = release

# myst-parser reads the Markdown chapters (format notes, performance, security).
extensions = ["sphinx.ext.autodoc", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
html_theme = "alabaster"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
