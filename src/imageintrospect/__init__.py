"""imageintrospect: tell what a virtual-disk image really is before anything touches it.

>>> from imageintrospect import introspect
>>> md = introspect("disk.vmdk")          # doctest: +SKIP
>>> md.format, md.safe, md.glance_properties()   # doctest: +SKIP

``imageintrospect.backend`` says which table scanners are live: ``"c"`` (the cffi module) or
``"python"`` (the pure-Python twin); ``IMAGEINTROSPECT_BACKEND=c|python`` forces one.

The names below are imported on first use (PEP 562): ``import imageintrospect`` alone costs
next to nothing, so a program that imports it at start-up and describes images now and then
does not pay for the parsers until it does; ``backend`` chooses the scanners when asked.
"""

from __future__ import annotations

import importlib

from .errors import FormatMismatch, ImageIntrospectError, InternalParserError, InvalidImage

# Not typing.TYPE_CHECKING: importing typing is a third of the import's cost (type checkers
# read any constant of this name as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .core import introspect
    from .findings import Finding
    from .metadata import Metadata
    from .reader import InspectingReader
    from .scan import backend

__version__ = "0.1.0"

#: Public name → the module that defines it, imported when the name is first used.
_LAZY = {
    "introspect": "core",
    "Finding": "findings",
    "Metadata": "metadata",
    "InspectingReader": "reader",
    "backend": "scan",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    if name != "backend":  # backend is read again each time, as the scan module holds it
        globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "Finding",
    "FormatMismatch",
    "ImageIntrospectError",
    "InspectingReader",
    "InternalParserError",
    "InvalidImage",
    "Metadata",
    "__version__",
    "backend",
    "introspect",
]
