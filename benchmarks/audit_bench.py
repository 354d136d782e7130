"""The fleet audit against downloading every image whole (``bash scripts/bench.sh audit``).

N small images (10,000 by default; ``IMAGEINTROSPECT_BENCH_AUDIT_IMAGES``) of five kinds are
put on moto's S3 server on 127.0.0.1, behind the byte-counting middleware of the audit tests.
Then, on a Dask ``LocalCluster`` of 1 and 2 single-threaded workers:

- **header**: ``imageintrospect.audit.audit(..., deep=False)``, the default for remote stores;
- **deep**: the same with ``deep=True`` (tables read by ranges);
- **download**: each object fetched whole through s3fs in the same batches, which is what an
  audit built on ``qemu-img info`` must do before it can look at an image.

Printed: images per second (wall time of the run, listing included) and bytes served per
image as the server counted them, as a Markdown table (docs/performance.md).  The figures
belong to the machine: the server, the scheduler and the workers share its cores.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "audit"))  # the counting moto server

from audit_services import S3_KEY, S3_SECRET, CountingS3  # noqa: E402

from imageintrospect.audit import audit  # noqa: E402

BUCKET = "bench"
KINDS = {
    "qcow2": ["-f", "qcow2", "64M"],
    "vmdk": ["-f", "vmdk", "64M"],
    "vhd": ["-f", "vpc", "64M"],
    "raw": ["-f", "raw", "256K"],
    "qcow2-backed": ["-f", "qcow2", "-u", "-b", "/nonexistent/base.raw", "-F", "raw", "64M"],
}
BATCH = 64


def make_images(root: Path) -> dict[str, bytes]:
    images = {}
    for kind, args in KINDS.items():
        path = root / kind
        subprocess.run(["qemu-img", "create", "-q", *args[:-1], str(path), args[-1]], check=True)
        images[kind] = path.read_bytes()
    return images


def upload(s3: CountingS3, images: dict[str, bytes], count: int) -> int:
    client = s3.client()
    client.create_bucket(Bucket=BUCKET)
    kinds = sorted(images)

    def put(index: int) -> int:
        kind = kinds[index % len(kinds)]
        client.put_object(Bucket=BUCKET, Key=f"fleet/{index:06d}-{kind}", Body=images[kind])
        return len(images[kind])

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return sum(pool.map(put, range(count)))


def download_batch(urls: list[str], options: dict[str, Any]) -> int:
    """What a qemu-img based audit does first: fetch each image whole."""
    import fsspec

    fs = fsspec.filesystem("s3", **options)
    return sum(len(fs.cat_file(url)) for url in urls)


def download_all(address: str, options: dict[str, Any], urls: list[str]) -> int:
    from distributed import Client

    with Client(address) as client:
        batches = [urls[i : i + BATCH] for i in range(0, len(urls), BATCH)]
        futures = client.map(download_batch, batches, options=options, pure=False)
        return sum(client.gather(futures))


def timed(s3: CountingS3, run: Callable[[], Any]) -> tuple[float, int, int]:
    """Wall seconds of ``run``, and the bytes and requests the server counted for images
    (the listing's requests, on the bucket itself, are not among them)."""
    s3.counter.reset()
    started = time.perf_counter()
    run()
    elapsed = time.perf_counter() - started
    images = f"/{BUCKET}/fleet/"
    served = sum(n for path, n in s3.counter.served.items() if path.startswith(images))
    requests = sum(n for path, n in s3.counter.requests.items() if path.startswith(images))
    return elapsed, served, requests


def main() -> None:
    from distributed import LocalCluster

    count = int(os.environ.get("IMAGEINTROSPECT_BENCH_AUDIT_IMAGES", "10000"))
    s3 = CountingS3()
    options = {"endpoint_url": s3.endpoint, "key": S3_KEY, "secret": S3_SECRET}
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as scratch:
        images = make_images(Path(scratch))
        stored = upload(s3, images, count)
        print(
            f"{count} images, {stored / count / 1024:.1f} KiB each on average, "
            f"kinds: {', '.join(f'{k} {len(v) // 1024} KiB' for k, v in images.items())}"
        )
        out = Path(scratch) / "audit.jsonl"
        urls = [
            f"s3://{BUCKET}/fleet/{i:06d}-{sorted(images)[i % len(images)]}" for i in range(count)
        ]
        rows = []
        for workers in (1, 2):
            # one cluster per worker count, started before the clock: every run pays the same
            with LocalCluster(
                n_workers=workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
            ) as cluster:
                address = cluster.scheduler_address
                for mode, deep in (("header", False), ("deep", True)):

                    def run(deep: bool = deep, address: str = address) -> None:
                        summary = audit(
                            [f"s3://{BUCKET}/fleet/"],
                            str(out),
                            deep=deep,
                            dask=address,
                            batch_size=BATCH,
                            storage_options={"s3": options},
                        )
                        assert summary.images == count, summary.images
                        assert summary.verdicts["unsafe"] == count // len(images), summary

                    rows.append((mode, workers, *timed(s3, run)))
                    print(row(rows[-1], count), flush=True)
                fetch = timed(s3, lambda a=address: download_all(a, options, urls))
                rows.append(("download", workers, *fetch))
                print(row(rows[-1], count), flush=True)
    s3.stop()
    print(
        "\n| run | Dask workers | images/s | bytes read per image | requests per image "
        "| vs download (bytes) |"
    )
    print("|---|--:|--:|--:|--:|--:|")
    downloads = {w: served for mode, w, _, served, _ in rows if mode == "download"}
    for result in rows:
        print(f"{row(result, count)} {result[3] / downloads[result[1]]:.3f} |")


def row(result: tuple[str, int, float, int, int], count: int) -> str:
    """``| run | workers | images/s | bytes per image | requests per image |`` (the ratio
    column is added last)."""
    mode, workers, elapsed, served, requests = result
    return (
        f"| {mode} | {workers} | {count / elapsed:,.1f} | {served / count:,.0f} "
        f"| {requests / count:.2f} |"
    )


if __name__ == "__main__":
    main()
