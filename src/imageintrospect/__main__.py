"""``python -m imageintrospect``: the same program as the ``imageintrospect`` command."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
