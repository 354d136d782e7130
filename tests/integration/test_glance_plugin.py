"""End to end through the real Glance: its v2 API in process, a real sqlite database, real
file stores, the real import flow and taskflow engine (Glance's own functional-test harness,
``glance.tests.functional.SynchronousAPIBase``), with this plugin enabled by name.

Each staged image is created, staged and imported with ``glance-direct`` as an ordinary
project member, then read back.  The import runs synchronously inside the import request
(an inline task pool): the request and the import worker never write the sqlite database at
the same time, so there is no "database is locked" race to retry around.

Then the real Nova reads what Glance ended with: its VMware driver's ``VMwareImage`` must
derive the disk type and adapter type of the original VMDK.
"""

from __future__ import annotations

import concurrent.futures
import configparser
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from .conftest import require, require_glance_harness
from .staged import IMAGES, MiB, Staged

# Skip (or, in CI, fail) before importing what only the integration extra installs.
functional = require_glance_harness()
require("nova.virt.vmwareapi.images")

import glance.async_
import glance.async_.flows.api_image_import  # registers [image_import_opts]
import glance.async_.flows.plugins.image_conversion  # registers [image_conversion]
import glance.tests
from glance.api import common as api_common
from glance.common import property_utils
from nova import objects as nova_objects
from nova.virt.vmwareapi import constants as vmware_constants
from nova.virt.vmwareapi import images as vmware_images
from oslo_config import cfg
from stevedore import named

import imageintrospect.glance_plugin
from imageintrospect import introspect
from imageintrospect.glance_plugin import options
from imageintrospect.glance_plugin._flow import later_conversion_drops

pytestmark = pytest.mark.integration

#: What a user of one project sends: no admin role (imports run as an ordinary member).
MEMBER = {"X-Roles": "reader,member"}
BY_NAME = {staged.name: staged for staged in IMAGES}
SHOWN = ("status", "disk_format", "container_format", "size", "virtual_size")


#: Roles-based protections: only ``creators`` may create or change ``vmware_*``; every role
#: may read them, and every other property is open.
PROTECT_VMWARE_ROLES = """
[^vmware_.*]
create = {creators}
read = @
update = {creators}
delete = {creators}

[.*]
create = @
read = @
update = @
delete = @
"""

#: The same in the policies format, with Glance's own ``context_is_admin`` rule (the admin role).
PROTECT_VMWARE_POLICIES = """
[^vmware_.*]
create = context_is_admin
read = default
update = context_is_admin
delete = context_is_admin

[.*]
create = default
read = default
update = default
delete = default
"""


class _InlineExecutor(concurrent.futures.Executor):
    """Runs each submitted call at once, in the caller's thread."""

    def __init__(self, size: int | None = None) -> None:
        pass

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


class _InlinePool(glance.async_.ThreadPoolModel):  # type: ignore[misc]
    @staticmethod
    def get_threadpool_executor_class() -> type[concurrent.futures.Executor]:
        return _InlineExecutor


@pytest.fixture(scope="module")
def staged_dir() -> Any:
    with tempfile.TemporaryDirectory(prefix="glance-staged-") as tmp:
        yield Path(tmp)


@pytest.fixture
def _attach(
    request: pytest.FixtureRequest, staged_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    request.instance.staged_dir = staged_dir
    # The harness reads its data files (policy, schemas) as glance/tests/etc relative to the
    # working directory, as in Glance's source tree: run it from the installed package's.
    monkeypatch.chdir(Path(glance.tests.__file__).parents[2])


@pytest.mark.usefixtures("_attach")
class GlanceImport(functional.SynchronousAPIBase):  # type: ignore[misc]
    staged_dir: Path

    def setUp(self) -> None:
        super().setUp()
        self.config(image_import_plugins=["imageintrospect"], group="image_import_opts")
        self.start_server(enable_cache=False)
        # Glance spawns the import on its "tasks_pool"; ours runs it inside the request.
        api_common._CACHED_THREAD_POOL["tasks_pool"] = _InlinePool()

    def _headers(self, custom_headers: dict[str, str] | None = None) -> dict[str, str]:
        return dict(super()._headers({**MEMBER, **(custom_headers or {})}))

    def import_staged(self, staged: Staged) -> tuple[dict[str, Any], dict[str, Any]]:
        """Create, stage and import ``staged``; the image and its import task afterwards."""
        path = staged.make(self.staged_dir)
        self.staged_bytes = path.read_bytes()
        body = {
            "name": staged.name,
            "disk_format": staged.disk_format,
            "container_format": staged.container_format,
            **staged.user,
        }
        resp = self.api_post("/v2/images", json=body)
        assert resp.status_code == 201, resp.text
        image_id = resp.json["id"]
        with open(path, "rb") as data:
            resp = self.api_put(
                f"/v2/images/{image_id}/stage",
                headers={"Content-Type": "application/octet-stream"},
                body_file=data,
            )
        assert resp.status_code == 204, resp.text
        resp = self._import_direct(image_id, ["store1"])
        assert resp.status_code == 202, resp.text
        image = self.api_get(f"/v2/images/{image_id}").json
        [task] = self.api_get(f"/v2/images/{image_id}/tasks").json["tasks"]
        shown = {k: image.get(k) for k in SHOWN}
        shown.update({k: v for k, v in image.items() if k.startswith(("vmware_", "hw_", "cim_"))})
        failed = image.get("os_glance_failed_import")
        print(f"\n[glance] {staged.name}: {json.dumps(shown, sort_keys=True)}")
        print(
            f"[glance] {staged.name}: task {task['status']}: {task['message']!r}; "
            f"os_glance_failed_import={failed!r}"
        )
        return image, task

    def stored(self, image: dict[str, Any]) -> bytes:
        resp = self.api_get(f"/v2/images/{image['id']}/file")
        assert resp.status_code == 200, resp.text
        return bytes(resp.body)

    def staging_holds(self, image: dict[str, Any]) -> bool:
        return os.path.exists(os.path.join(self._store_dir("staging"), image["id"]))

    def test_chained_before_image_conversion(self) -> None:
        """Checked first, then converted to raw: the disk type of the VMDK no longer applies,
        its adapter type (the guest's controller) still does."""
        self.config(
            image_import_plugins=["imageintrospect", "image_conversion"],
            group="image_import_opts",
        )
        self.config(output_format="raw", group="image_conversion")
        image, task = self.import_staged(BY_NAME["qemu-stream-lsilogic"])
        assert task["status"] == "success", task["message"]
        assert (image["status"], image["disk_format"]) == ("active", "raw")
        assert image["size"] == image["virtual_size"] == 8 * MiB
        assert "vmware_disktype" not in image
        assert image["vmware_adaptertype"] == "lsiLogic"

    def test_detected_values_override_when_configured(self) -> None:
        self.config(override_user_properties=True, group=options.GROUP)
        image, task = self.import_staged(BY_NAME["user-adapter-wins"])
        assert task["status"] == "success", task["message"]
        assert image["vmware_adaptertype"] == "lsiLogic"

    def test_ova_kept_whole_when_configured(self) -> None:
        self.config(extract_ova=False, group=options.GROUP)
        image, task = self.import_staged(BY_NAME["ova"])
        assert task["status"] == "success", task["message"]
        assert (image["container_format"], image["disk_format"]) == ("ova", "vmdk")
        assert self.stored(image) == self.staged_bytes
        assert image["vmware_ostype"] == "otherLinux64Guest"

    def protect(self, rule_format: str, rules: str) -> None:
        """Restart the API with a property protection file of ``rules``."""
        path = Path(self.test_dir) / f"protections-{rule_format}.conf"
        path.write_text(rules)
        # Glance parses the file into one module-wide parser that keeps what it read before:
        # give this test a fresh one.
        self.addCleanup(setattr, property_utils, "CONFIG", property_utils.CONFIG)
        property_utils.CONFIG = configparser.ConfigParser()
        self.config(property_protection_file=str(path), property_protection_rule_format=rule_format)
        self.start_server(enable_cache=False)
        api_common._CACHED_THREAD_POOL["tasks_pool"] = _InlinePool()

    def assert_refused_by_protections(self, image: dict[str, Any], task: dict[str, Any]) -> None:
        assert task["status"] == "failure"
        assert "property protections forbid the importing user to set" in task["message"]
        named = task["message"].split("to set ", 1)[1].split(":", 1)[0].split(", ")
        assert sorted(named) == ["vmware_adaptertype", "vmware_disktype"]
        # Nothing of the plugin's was saved (not even virtual_size), as for any refusal.
        assert (image["status"], image["virtual_size"]) == ("queued", None)
        assert image.get("os_glance_failed_import") == "store1"
        assert not any(k.startswith("vmware_") for k in image)
        assert not self.staging_holds(image)

    def test_protected_vmware_properties_refuse_a_member_roles(self) -> None:
        """The plugin sets properties as the importing member (Glance elevates only
        copy-image, which runs no plugin): an admin-only ``vmware_*`` refuses the import."""
        self.protect("roles", PROTECT_VMWARE_ROLES.format(creators="admin"))
        image, task = self.import_staged(BY_NAME["qemu-stream-lsilogic"])
        self.assert_refused_by_protections(image, task)

    def test_protected_vmware_properties_refuse_a_member_policies(self) -> None:
        self.protect("policies", PROTECT_VMWARE_POLICIES)
        image, task = self.import_staged(BY_NAME["qemu-stream-lsilogic"])
        self.assert_refused_by_protections(image, task)

    def test_protected_vmware_properties_set_for_an_allowed_role(self) -> None:
        self.protect("roles", PROTECT_VMWARE_ROLES.format(creators="admin,member"))
        image, task = self.import_staged(BY_NAME["qemu-stream-lsilogic"])
        assert task["status"] == "success", task["message"]
        assert image["vmware_disktype"] == "streamOptimized"
        assert image["vmware_adaptertype"] == "lsiLogic"

    def test_protected_vmware_properties_left_out(self) -> None:
        self.protect("roles", PROTECT_VMWARE_ROLES.format(creators="admin"))
        self.config(properties=["hw_vif_model"], group=options.GROUP)
        image, task = self.import_staged(BY_NAME["qemu-stream-lsilogic"])
        assert task["status"] == "success", task["message"]
        assert (image["status"], image["virtual_size"]) == ("active", 8 * MiB)
        assert not any(k.startswith("vmware_") for k in image)

    def test_the_plugin_is_what_glance_loads(self) -> None:
        # Glance only logs a plugin that fails to load and then imports without it.
        manager = named.NamedExtensionManager(
            "glance.image_import.plugins",
            names=list(functional.CONF.image_import_opts.image_import_plugins),
            on_load_failure_callback=_raise,
        )
        assert [e.name for e in manager.extensions] == ["imageintrospect"]
        assert manager.extensions[0].plugin is imageintrospect.glance_plugin.get_flow


def _raise(manager: Any, entry_point: Any, exc: BaseException) -> None:
    raise exc


def _accepted_test(staged: Staged) -> Any:
    def test(self: GlanceImport) -> None:
        image, task = self.import_staged(staged)
        assert task["status"] == "success", task["message"]
        assert image["status"] == "active"
        assert staged.expect is not None
        for key, value in staged.expect.items():
            assert image.get(key) == value, (key, image.get(key))
        # What the store holds is the disk the properties describe (for an OVA: the disk
        # taken out of the archive, whose size Glance records), and the staging is gone.
        data = self.stored(image)
        assert image["size"] == len(data)
        if staged.container_format == "bare":
            assert data == self.staged_bytes
        held = introspect(io.BytesIO(data))
        assert held.format == image["disk_format"] and held.safe
        assert held.virtual_size == image["virtual_size"]
        assert held.glance_properties()["vmware_disktype"] == image["vmware_disktype"]
        assert not self.staging_holds(image)
        assert_nova_reads(image)

    return test


def _refused_test(staged: Staged) -> Any:
    def test(self: GlanceImport) -> None:
        image, task = self.import_staged(staged)
        assert task["status"] == "failure"
        assert image["status"] == "queued"  # as Glance's own plugins leave a refused image
        assert image.get("os_glance_failed_import") == "store1"
        assert image.get("os_glance_importing_to_stores") == ""
        assert "imageintrospect refused the image" in task["message"]
        for needle in staged.refusal:
            assert needle in task["message"]
        assert not any(k.startswith("vmware_") for k in image)
        assert not self.staging_holds(image)  # reverted as image_conversion reverts

    return test


def assert_nova_reads(image: dict[str, Any]) -> None:
    """Nova's VMware driver, given what Glance holds, boots the disk the way it is laid out."""
    nova_objects.register_all()
    meta = {k: image[k] for k in ("disk_format", "container_format", "size")}
    props = {k: v for k, v in image.items() if k.startswith(("vmware_", "hw_"))}
    vmware = vmware_images.VMwareImage.from_image(
        None, None, nova_objects.ImageMeta.from_dict({**meta, "properties": props})
    )
    assert vmware.disk_type == image["vmware_disktype"]
    assert vmware.adapter_type == image["vmware_adaptertype"]
    assert vmware.file_type == "vmdk"
    print(
        f"[nova] {image['name']}: disk_type={vmware.disk_type} "
        f"adapter_type={vmware.adapter_type} container_format={vmware.container_format}"
    )
    # Without the property Nova would have taken the streamOptimized disk for a flat one.
    unset = {k: v for k, v in props.items() if k != "vmware_disktype"}
    bare = vmware_images.VMwareImage.from_image(
        None, None, nova_objects.ImageMeta.from_dict({**meta, "properties": unset})
    )
    assert bare.disk_type == vmware_constants.DEFAULT_DISK_TYPE == "preallocated"


for _staged in IMAGES:
    _make = _accepted_test if _staged.expect is not None else _refused_test
    _test = _make(_staged)
    _test.__name__ = "test_" + _staged.name.replace("-", "_")
    setattr(GlanceImport, _test.__name__, _test)


@pytest.mark.parametrize(
    ("plugins", "output_format", "dropped"),
    [
        (["imageintrospect", "image_conversion"], "raw", {"vmware_disktype"}),
        (["imageintrospect", "image_conversion"], "qcow2", {"vmware_disktype"}),
        (["imageintrospect", "image_conversion"], "vmdk", set()),
        (["imageintrospect", "image_conversion"], None, {"vmware_disktype"}),
        (["image_conversion", "imageintrospect"], "raw", set()),
        (["inject_image_metadata", "imageintrospect"], None, set()),
    ],
)
def test_what_a_later_conversion_drops(
    plugins: list[str], output_format: str | None, dropped: set[str]
) -> None:
    conf = cfg.ConfigOpts()
    conf.register_opt(cfg.ListOpt("image_import_plugins"), group="image_import_opts")
    conf.set_override("image_import_plugins", plugins, group="image_import_opts")
    if output_format is not None:  # None: image_conversion's options are not registered yet
        conf.register_opt(cfg.StrOpt("output_format"), group="image_conversion")
        conf.set_override("output_format", output_format, group="image_conversion")
    assert later_conversion_drops(conf) == dropped
