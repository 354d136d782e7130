"""Fixtures of the audit tests: a few dozen real images, and the services that hold them.

The services need the ``audit`` and ``integration`` extras.  Without them these tests skip,
unless ``IMAGEINTROSPECT_REQUIRE_INTEGRATION=1`` (scripts/test.sh sets it): then a missing
package fails the run instead of quietly shrinking it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from imageintrospect import introspect
from tests.support import QEMU_IMG, qemu_img

from .audit_services import S3_KEY, S3_SECRET, CountingS3, RangeServer

REQUIRE = os.environ.get("IMAGEINTROSPECT_REQUIRE_INTEGRATION") == "1"
BUCKET = "images"


def require(*modules: str) -> None:
    """Skip (or, when integration is required, fail) unless every module imports."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            message = f"{name} is not installed (pip install -e '.[audit,integration]'): {exc}"
            if REQUIRE:
                pytest.fail(message)
            pytest.skip(message)
    if QEMU_IMG is None:
        (pytest.fail if REQUIRE else pytest.skip)("qemu-img is required")


@dataclass(frozen=True)
class Images:
    root: Path
    names: list[str]

    def expected(self, name: str, *, deep: bool) -> dict[str, Any]:
        """What ``introspect()`` on the local file says, in the record's terms."""
        md = introspect(self.root / name, deep=deep)
        return {
            "format": md.format,
            "virtual_size": md.virtual_size,
            "safe": md.safe,
            "codes": sorted(f.code for f in md.findings),
            "glance": md.glance_properties(),
        }


def made_images(root: Path) -> list[str]:
    """Safe and unsafe images of every format qemu-img writes, a few sizes each."""
    root.mkdir(parents=True, exist_ok=True)
    backing = root / "base.raw"
    backing.write_bytes(b"\0" * 65536)
    names: list[str] = []

    def make(name: str, *args: str) -> None:
        qemu_img("create", "-q", *args[:-1], root / name, args[-1])
        names.append(name)

    for size in ("1M", "64M", "3G"):
        make(f"plain-{size}.qcow2", "-f", "qcow2", size)
        make(f"plain-{size}.vmdk", "-f", "vmdk", size)
        make(f"stream-{size}.vmdk", "-f", "vmdk", "-o", "subformat=streamOptimized", size)
        make(f"disk-{size}.vhd", "-f", "vpc", size)
        make(f"disk-{size}.vhdx", "-f", "vhdx", size)
        make(f"disk-{size}.vdi", "-f", "vdi", size)
        make(f"disk-{size}.qed", "-f", "qed", size)
    make("raw-1M.img", "-f", "raw", "1M")
    # unsafe: a qcow2 naming a backing file, one naming an external data file
    make("backed.qcow2", "-f", "qcow2", "-b", str(backing), "-F", "raw", "16M")
    make("datafile.qcow2", "-f", "qcow2", "-o", f"data_file={root / 'data.raw'}", "16M")
    (root / "data.raw").unlink()
    backing.unlink()
    # a twoGbMaxExtentFlat VMDK's descriptor names extent files: unsafe on its own
    make("split.vmdk", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentFlat", "4M")
    for extent in root.glob("split-f*.vmdk"):
        extent.unlink()
    (root / "empty.img").write_bytes(b"")  # an empty object: a raw image of size 0
    names.append("empty.img")
    return sorted(names)


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    require()
    root = tmp_path_factory.mktemp("audit-images")
    return Images(root, made_images(root))


@pytest.fixture(scope="session")
def s3(images: Images) -> Iterator[CountingS3]:
    """moto's S3 server on 127.0.0.1 holding ``images`` under ``s3://images/fleet/``."""
    require("moto", "s3fs", "boto3", "werkzeug")
    server = CountingS3()
    client = server.client()
    client.create_bucket(Bucket=BUCKET)
    for name in images.names:
        client.upload_file(str(images.root / name), BUCKET, f"fleet/{name}")
    yield server
    server.stop()


@pytest.fixture
def s3_counts(s3: CountingS3) -> CountingS3:
    s3.counter.reset()
    return s3


def s3_options(s3: CountingS3) -> dict[str, dict[str, Any]]:
    return {"s3": {"endpoint_url": s3.endpoint, "key": S3_KEY, "secret": S3_SECRET}}


def s3_cli_options(s3: CountingS3) -> list[str]:
    return [
        "--s3-endpoint-url",
        s3.endpoint,
        "--storage-option",
        f"s3.key={S3_KEY}",
        "--storage-option",
        f"s3.secret={S3_SECRET}",
    ]


@pytest.fixture
def http(images: Images) -> Iterator[RangeServer]:
    require("fsspec", "aiohttp")
    server = RangeServer(images.root)
    yield server
    server.stop()


def comparable(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Records by URL without what differs between two runs of the same audit (timing)."""
    return {r["url"]: {k: v for k, v in r.items() if k != "seconds"} for r in records}


def agrees(record: dict[str, Any], expected: dict[str, Any]) -> None:
    assert record["error"] is None, record
    assert record["format"] == expected["format"]
    assert record["virtual_size"] == expected["virtual_size"]
    assert record["safe"] == expected["safe"]
    assert record["verdict"] == ("safe" if expected["safe"] else "unsafe")
    assert sorted(f["code"] for f in record["findings"]) == expected["codes"]
    assert record["glance"] == expected["glance"]
