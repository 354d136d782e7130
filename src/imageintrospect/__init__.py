"""imageintrospect: tell what a virtual-disk image really is before anything touches it.

>>> from imageintrospect import introspect
>>> md = introspect("disk.vmdk")          # doctest: +SKIP
>>> md.format, md.safe, md.glance_properties()   # doctest: +SKIP

``imageintrospect.backend`` says which table scanners are live: ``"c"`` (the cffi module) or
``"python"`` (the pure-Python twin); ``IMAGEINTROSPECT_BACKEND=c|python`` forces one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .core import introspect
from .errors import FormatMismatch, ImageIntrospectError, InternalParserError, InvalidImage
from .findings import Finding
from .metadata import Metadata
from .reader import InspectingReader

if TYPE_CHECKING:
    from .scan import backend

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # ``backend`` means choosing (and importing) the table scanners, which only a deep walk
    # needs: done on first use, so that importing the package stays cheap.
    if name == "backend":
        from .scan import backend

        return backend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
