"""``glance://``: the audit lists and reads images from the real Glance API.

Glance's own functional harness (``SynchronousAPIBase``: the API's WSGI pipeline with a real
database and file stores, its fake-auth filter standing in for keystone's) is served over HTTP
on 127.0.0.1 behind Glance's version-negotiation filter, as in its shipped pipelines.
openstacksdk reaches it through a ``clouds.yaml`` entry (keystoneauth's ``admin_token``
plugin: a fixed token and endpoint; the fake auth turns the token into a request context).
Bytes served are counted at the server, and the token must not appear in the records.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from imageintrospect import introspect
from imageintrospect.audit import audit
from imageintrospect.audit.records import read_records

from ..integration.conftest import require_glance_harness
from .audit_services import CountingMiddleware
from .conftest import agrees, made_images

TOKEN = "auditor:audit-project-7f3a:admin"  # user:project:role, as the fake auth reads it

# skips (or, with IMAGEINTROSPECT_REQUIRE_INTEGRATION=1, fails) without the integration extra
functional = require_glance_harness()
import glance.db.migration  # noqa: E402, F401 - registers the [database] options the harness sets

UNSAFE = "backed.qcow2"
IMAGES = ["plain-1M.qcow2", UNSAFE, "disk-64M.vhd", "stream-64M.vmdk", "raw-1M.img"]


class TestGlanceSource(functional.SynchronousAPIBase):  # type: ignore[misc]
    def setUp(self) -> None:
        # the harness copies its data files by a path relative to Glance's source tree
        here = os.getcwd()
        os.chdir(Path(functional.__file__).parents[3])
        try:
            super().setUp()
            self.start_server(enable_cache=False, use_fake_auth=True)
        finally:
            os.chdir(here)
        from glance.api.middleware.version_negotiation import VersionNegotiationFilter
        from werkzeug.serving import make_server

        # Glance's own first filter, as in its shipped pipelines: it answers the version
        # discovery keystoneauth does at the endpoint's root
        self.counter = CountingMiddleware(VersionNegotiationFilter(self.api))
        self.server = make_server("127.0.0.1", 0, self.counter, threaded=True)
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(thread.join)
        self.addCleanup(self.server.shutdown)
        endpoint = f"http://127.0.0.1:{self.server.server_port}"
        clouds = Path(self.test_dir) / "clouds.yaml"
        clouds.write_text(
            "clouds:\n  harness:\n    auth_type: admin_token\n"
            f"    auth:\n      endpoint: {endpoint}/v2\n      token: {TOKEN}\n"
        )
        self.useFixture(_Env("OS_CLIENT_CONFIG_FILE", str(clouds)))

    def upload(self, path: Path) -> str:
        # Glance inspects what is uploaded into a "bare" container and refuses a qcow2 with a
        # backing file; "ovf" skips that, as every upload did before the inspection existed:
        # the stored unsafe image the audit is there to find
        container = "ovf" if path.name == UNSAFE else "bare"
        headers = {"X-Auth-Token": TOKEN}
        resp = self.api_post(
            "/v2/images",
            headers=headers,
            json={"name": path.name, "disk_format": "raw", "container_format": container},
        )
        image: dict[str, Any] = resp.json
        response = self.api_put(
            f"/v2/images/{image['id']}/file",
            headers={**headers, "Content-Type": "application/octet-stream"},
            data=path.read_bytes(),
        )
        self.assertEqual(204, response.status_code, response.text)
        return str(image["id"])

    def test_lists_and_reads_images_by_ranges(self) -> None:
        root = Path(self.test_dir) / "images"
        made_images(root)
        ids = {self.upload(root / name): name for name in IMAGES}
        # an image with no data is not listed: there is nothing to judge
        self.api_post(
            "/v2/images",
            headers={"X-Auth-Token": TOKEN},
            json={"name": "empty", "disk_format": "raw", "container_format": "bare"},
        )
        out = Path(self.test_dir) / "glance.jsonl"
        summary = audit(["glance://"], str(out), storage_options={"glance": {"cloud": "harness"}})
        records = {r["url"]: r for r in read_records(str(out))}
        self.assertEqual(sorted(f"glance://{i}" for i in ids), sorted(records), out.read_text())
        for image_id, name in ids.items():
            record = records[f"glance://{image_id}"]
            md = introspect(root / name, deep=False)
            agrees(
                record,
                {
                    "format": md.format,
                    "virtual_size": md.virtual_size,
                    "safe": md.safe,
                    "codes": sorted(f.code for f in md.findings),
                    "glance": md.glance_properties(),
                },
            )
            image = self.api_get(f"/v2/images/{image_id}", headers={"X-Auth-Token": TOKEN}).json
            self.assertEqual(image["os_hash_value"], record["etag"])
            served = self.counter.served[f"/v2/images/{image_id}/file"]
            self.assertEqual(served, record["bytes_read"])
            self.assertLessEqual(served, 1 << 20)
        self.assertEqual(
            [f"glance://{i}" for i in ids if ids[i] == UNSAFE], [r["url"] for r in summary.unsafe]
        )
        self.assertNotIn(TOKEN, out.read_text())


class _Env:
    """A fixture that sets one environment variable for the test (testtools' useFixture)."""

    def __init__(self, name: str, value: str) -> None:
        self.name, self.value = name, value

    def setUp(self) -> None:
        self.old = os.environ.get(self.name)
        os.environ[self.name] = self.value

    def cleanUp(self) -> None:
        if self.old is None:
            os.environ.pop(self.name, None)
        else:
            os.environ[self.name] = self.old

    def getDetails(self) -> dict[str, Any]:
        return {}
