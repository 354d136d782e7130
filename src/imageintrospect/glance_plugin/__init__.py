"""A Glance image-import plugin: introspect the staged image before it becomes active.

Glance loads it by name (``imageintrospect``) from ``[image_import_opts]
image_import_plugins`` through the ``glance.image_import.plugins`` entry point, which names
:func:`get_flow`.  Glance, taskflow, oslo.config and stevedore are only needed where the
plugin runs (``pip install imageintrospect[glance]`` inside Glance's environment);
``import imageintrospect`` and this package's :mod:`~imageintrospect.glance_plugin.policy`
need none of them, which is why the flow is imported only when Glance asks for it.

Operator documentation: ``docs/glance-plugin.md``.
"""

from __future__ import annotations

from typing import Any


def get_flow(**kwargs: Any) -> Any:
    """Return the taskflow flow Glance runs for this plugin (kwargs as Glance passes them:
    ``task_id``, ``task_type``, ``context``, ``image_repo``, ``image_id``, ``import_req``,
    ``action_wrapper``, ``backend``, ...)."""
    from ._flow import get_flow as build

    return build(**kwargs)
