"""Audit a whole image store: ``imageintrospect audit`` and :func:`audit` (the ``audit`` extra).

Every image under the given paths and URLs is judged where it lies, reading only what
``introspect()`` asks for (ranged reads through fsspec), on a local process pool or a Dask
cluster; one JSON record per image is appended as results arrive.  See docs/audit.md.
"""

from __future__ import annotations

from typing import Any


def audit(*args: Any, **kwargs: Any) -> Any:
    """See :func:`imageintrospect.audit.runner.audit` (imported on first call)."""
    from .runner import audit as run

    return run(*args, **kwargs)


__all__ = ["audit"]
