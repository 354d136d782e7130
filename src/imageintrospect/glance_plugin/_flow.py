"""The taskflow task Glance runs: introspect the staged file, then set or refuse.

Imported only by :func:`imageintrospect.glance_plugin.get_flow`, i.e. inside Glance, where
Glance, taskflow and oslo.config are present.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import replace
from typing import Any

from glance.common import exception as glance_exception
from oslo_config import cfg
from taskflow import task
from taskflow.patterns import linear_flow
from taskflow.types import failure

from .. import introspect
from ..errors import ImageIntrospectError
from . import options
from .policy import Verdict, judge
from .staging import extract

LOG = logging.getLogger(__name__)

NAME = "imageintrospect"


class ImportRefused(glance_exception.UploadException):  # type: ignore[misc]
    """Raised to fail the import.  Glance's task executor records the message of an
    ``UploadException`` as the task's message, so the user sees why (with the codes)."""


class _Introspect(task.Task):  # type: ignore[misc]
    default_provides = "file_path"

    def __init__(
        self, task_id: str, task_type: str, action_wrapper: Any, stores: list[str] | None
    ) -> None:
        self.task_id = task_id
        self.action_wrapper = action_wrapper
        self.image_id = action_wrapper.image_id
        self.stores = stores or []
        self.staged_path = ""
        super().__init__(name=f"{task_type}-Introspect-{task_id}")

    def execute(self, file_path: str, **kwargs: Any) -> str:
        if not file_path.startswith("file://"):
            raise self._refused(f"the staged data is not a local file ({file_path})")
        self.staged_path = file_path[len("file://") :]
        with self.action_wrapper as action:
            verdict = self._judge(action)
            if verdict.refusal is not None:
                raise self._refused(verdict.refusal)
            if verdict.extraction is not None:
                try:
                    extract(self.staged_path, verdict.extraction)
                except (OSError, ValueError) as exc:
                    raise self._refused(f"the OVA's disk cannot be extracted: {exc}") from exc
            action.set_image_attribute(**verdict.attributes)
            self._set_properties(action, verdict.properties)
        self._log_accepted(verdict)
        return file_path

    def _judge(self, action: Any) -> Verdict:
        current = replace(options.settings(), drop=later_conversion_drops(cfg.CONF))
        try:
            md = introspect(self.staged_path, deep=current.deep)
        except ImageIntrospectError as exc:
            return Verdict(refusal=f"the image cannot be read: {exc}")
        return judge(
            md,
            disk_format=action.image_disk_format,
            container_format=action.image_container_format,
            user_properties=action.image_extra_properties,
            settings=current,
        )

    def _set_properties(self, action: Any, properties: dict[str, str]) -> None:
        """Set ``properties`` as the importing user.  Glance's property protections raise
        ``ReservedProperty`` for one the user's roles may not create or update; left alone it
        fails the task with only "Internal Error", so refuse with the names instead."""
        forbidden = []
        for key, value in properties.items():
            try:
                action.set_image_extra_properties({key: value})
            except glance_exception.ReservedProperty:
                forbidden.append(key)
        if forbidden:
            raise self._refused(
                f"Glance's property protections forbid the importing user to set "
                f"{', '.join(forbidden)}: allow the importing roles to create and update them, "
                f"or leave them out of [{options.GROUP}] properties"
            )

    def _refused(self, reason: str) -> ImportRefused:
        # The task message is what the user sees; the log is where the operator looks.
        LOG.error("%s refused the import of image %s: %s", NAME, self.image_id, reason)
        return ImportRefused(f"{NAME} refused the image: {reason}")

    def _log_accepted(self, verdict: Verdict) -> None:
        LOG.info(
            "%s: image %s set %s %s", NAME, self.image_id, verdict.attributes, verdict.properties
        )
        for key, value in verdict.kept_user.items():
            LOG.warning(
                "%s: image %s keeps the user's %s=%s (not overridden by configuration)",
                NAME,
                self.image_id,
                key,
                value,
            )

    def revert(self, result: Any, **kwargs: Any) -> None:
        if not isinstance(result, failure.Failure):
            return  # we succeeded and a later task failed: its own revert cleans up
        # As Glance's image_conversion: no store task ran, so move the stores from
        # importing to failed, send the image back to queued and drop the staged data.
        with self.action_wrapper as action:
            action.set_image_attribute(status="queued")
            if self.stores:
                action.remove_importing_stores(self.stores)
                action.add_failed_stores(self.stores)
        if self.staged_path:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.staged_path)


def later_conversion_drops(conf: Any) -> frozenset[str]:
    """``vmware_disktype`` describes the staged file's layout; when image_conversion runs
    after this plugin and writes another format, that layout is gone, so it is not set."""
    plugins = list(conf.image_import_opts.image_import_plugins)
    if NAME not in plugins or "image_conversion" not in plugins[plugins.index(NAME) :]:
        return frozenset()
    try:
        target = conf.image_conversion.output_format
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
        target = "raw"  # image_conversion's default, its options not registered yet
    return frozenset() if target == "vmdk" else frozenset({"vmware_disktype"})


def get_flow(**kwargs: Any) -> Any:
    task_id = kwargs["task_id"]
    task_type = kwargs["task_type"]
    introspect_task = _Introspect(
        task_id, task_type, kwargs["action_wrapper"], kwargs.get("backend")
    )
    return linear_flow.Flow(task_type).add(introspect_task)
