"""Drop-ins for other projects' image-inspection APIs, answering with this library.

:mod:`imageintrospect.compat.format_inspector` stands in for oslo.utils'
``oslo_utils.imageutils.format_inspector``, which Glance and Nova call.  :func:`install` puts
it in place for the running process; :func:`install_from_environ` does so when the
environment asks (see ``docs/compat.md`` for the one-line ``.pth`` file that calls it).
"""

from __future__ import annotations

import importlib
import os
import sys
import types

from . import format_inspector

#: The module this package stands in for.
OSLO_MODULE = "oslo_utils.imageutils.format_inspector"
#: ``IMAGEINTROSPECT_OSLO_COMPAT=1`` makes :func:`install_from_environ` install.
ENVIRON_KEY = "IMAGEINTROSPECT_OSLO_COMPAT"


def install() -> types.ModuleType:
    """Make ``oslo_utils.imageutils.format_inspector`` this library's drop-in.

    Sets the ``sys.modules`` entry and the ``oslo_utils.imageutils`` attribute, so later
    imports get the drop-in.  When oslo's module was imported already, every loaded module
    that holds it (``from oslo_utils.imageutils import format_inspector``, as Glance and Nova
    do) or one of its names is pointed at the drop-in's.  oslo.utils itself is not needed:
    without it, only the ``sys.modules`` entry is set.  Returns the drop-in module.
    """
    previous = sys.modules.get(OSLO_MODULE)
    sys.modules[OSLO_MODULE] = format_inspector
    try:
        package = importlib.import_module("oslo_utils.imageutils")
    except ImportError:
        package = None
    if package is not None:
        package.format_inspector = format_inspector  # type: ignore[attr-defined]
    if previous is not None and previous is not format_inspector:
        _rebind(previous)
    return format_inspector


def install_from_environ() -> bool:
    """:func:`install` if ``IMAGEINTROSPECT_OSLO_COMPAT`` is ``1``/``true``/``yes``."""
    if os.environ.get(ENVIRON_KEY, "").strip().lower() not in ("1", "true", "yes"):
        return False
    install()
    return True


def _rebind(old: types.ModuleType) -> None:
    """Point every loaded module's references to ``old`` (or to one of its public names)
    at the drop-in's."""
    replacements = {id(old): format_inspector}
    for name, value in vars(old).items():
        new = getattr(format_inspector, name, None)
        if not name.startswith("_") and new is not None and not isinstance(value, (int, str)):
            replacements[id(value)] = new
    for module in list(sys.modules.values()):
        if module is None or module is format_inspector or module is old:
            continue
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for name, value in list(namespace.items()):
            new = replacements.get(id(value))
            if new is not None:
                namespace[name] = new


__all__ = ["ENVIRON_KEY", "OSLO_MODULE", "format_inspector", "install", "install_from_environ"]
