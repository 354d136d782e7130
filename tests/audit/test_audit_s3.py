"""The audit of an S3 bucket (moto's server on 127.0.0.1) through s3fs, measured at the server."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from imageintrospect import cli
from imageintrospect.audit import audit
from imageintrospect.audit.records import read_records

from .audit_services import S3_SECRET, CountingS3
from .conftest import BUCKET, Images, agrees, s3_cli_options, s3_options

MiB = 1 << 20
PREFIX = f"s3://{BUCKET}/fleet"


def by_name(path: Path) -> dict[str, dict]:
    return {r["url"].rsplit("/", 1)[1]: r for r in read_records(str(path))}


def test_header_only_agrees_with_introspect_and_reads_at_most_1_mib(
    images: Images, s3_counts: CountingS3, tmp_path: Path
) -> None:
    out = tmp_path / "audit.jsonl"
    summary = audit([PREFIX], str(out), storage_options=s3_options(s3_counts))
    records = by_name(out)
    assert sorted(records) == images.names
    assert summary.images == len(images.names)
    served = s3_counts.counter.served
    for name, record in records.items():
        fetched = served[f"/{BUCKET}/fleet/{name}"]
        # what the client counted is what the server sent, and never more than 1 MiB
        assert record["bytes_read"] == fetched, name
        assert fetched <= MiB, name
        # one ranged GET per 64 KiB block, nothing else: the listing's size and ETag spare
        # the HEAD a file would send to learn them
        assert s3_counts.counter.requests[f"/{BUCKET}/fleet/{name}"] == -(-fetched // 65536)
        assert record["etag"] and record["mtime"], name
        agrees(record, images.expected(name, deep=False))
    unsafe = [n for n in images.names if not images.expected(n, deep=False)["safe"]]
    assert len(unsafe) >= 3  # backing file, external data file, external extents (and QED)
    assert sorted(r["url"].rsplit("/", 1)[1] for r in summary.unsafe) == unsafe
    assert summary.bytes_read == sum(served[f"/{BUCKET}/fleet/{n}"] for n in images.names)
    assert S3_SECRET not in out.read_text()


def test_deep_reads_tables_by_ranges_and_agrees(
    images: Images, s3_counts: CountingS3, tmp_path: Path
) -> None:
    out = tmp_path / "deep.jsonl"
    audit([PREFIX], str(out), deep=True, storage_options=s3_options(s3_counts))
    for name, record in by_name(out).items():
        agrees(record, images.expected(name, deep=True))
        size = (images.root / name).stat().st_size
        # whole 64 KiB blocks at most, and never a block twice
        assert record["bytes_read"] <= size + 65536, name
        assert record["bytes_read"] == s3_counts.counter.served[f"/{BUCKET}/fleet/{name}"]


@pytest.mark.parametrize(
    ("names", "status"),
    [
        (["plain-1M.qcow2", "disk-1M.vhd"], 0),
        (["plain-1M.qcow2", "backed.qcow2"], 1),
        (["backed.qcow2", "missing.qcow2"], 2),
    ],
)
def test_cli_exit_status_and_html(
    s3: CountingS3,
    tmp_path: Path,
    names: list[str],
    status: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{PREFIX}/{n}\n" for n in names))
    out, page = tmp_path / "out.jsonl", tmp_path / "report.html"
    argv = [
        "audit",
        "--from-file",
        str(listing),
        "--output",
        str(out),
        "--html",
        str(page),
        "--workers",
        "1",
        "--backoff",
        "0",
        *s3_cli_options(s3),
    ]
    assert cli.main(argv) == status
    assert len(list(read_records(str(out)))) == len(names)
    text = capsys.readouterr().out
    assert f"images:   {len(names)}" in text
    html = page.read_text()
    # self-contained: no script, stylesheet, image or font fetched from anywhere
    assert not re.search(r"<(script|link|img|iframe)\b|url\(|@import|src=", html)
    assert f"{len(names)} images" in html
    if status == 1:
        assert "backing-file" in html and "backed.qcow2" in html
    if status == 2:  # a missing object is retried, then recorded; the audit goes on
        missing = next(r for r in read_records(str(out)) if r["url"].endswith("missing.qcow2"))
        assert missing["verdict"] == "error" and missing["attempts"] == 4
        assert "ERROR" in text and "UNSAFE" in text
    for stream in (out.read_text(), text, html):
        assert S3_SECRET not in stream
    json.loads(out.read_text().splitlines()[0])


def test_listing_is_read_a_page_at_a_time(s3_counts: CountingS3) -> None:
    """A prefix of more objects than one listing page: the first target arrives after one
    listing request, the rest page by page, in key order, folder markers left out."""
    from concurrent.futures import ThreadPoolExecutor

    from imageintrospect.audit.reading import Options
    from imageintrospect.audit.sources import expand

    client = s3_counts.client()
    client.create_bucket(Bucket="many")
    keys = [f"objects/{i:05d}" for i in range(2500)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: client.put_object(Bucket="many", Key=key, Body=b"x"), keys))
    client.put_object(Bucket="many", Key="objects/folder/", Body=b"")
    s3_counts.counter.reset()

    def listings() -> int:
        requests = s3_counts.counter.requests
        return sum(n for path, n in requests.items() if path in ("/many", "/many/"))

    targets = expand(["s3://many/objects/"], Options(storage_options=s3_options(s3_counts)))
    first = next(targets)
    assert first.url == "s3://many/objects/00000" and first.size == 1
    pages_for_first = listings()
    rest = list(targets)
    assert [t.url for t in [first, *rest]] == [f"s3://many/{key}" for key in keys]
    # fsspec's info() of the prefix lists once; the listing proper pages 1,000 keys at a time
    assert listings() - pages_for_first == 2
    assert pages_for_first <= 2


def test_an_object_replaced_after_listing_is_a_source_failure(s3_counts: CountingS3) -> None:
    """Reads are conditional on the listed ETag: a new version is not judged as the old one."""
    from imageintrospect.audit.reading import Options, audit_one
    from imageintrospect.audit.sources import expand

    client = s3_counts.client()
    client.create_bucket(Bucket="replaced")
    client.put_object(Bucket="replaced", Key="disk", Body=b"\0" * 70000)
    options = Options(storage_options=s3_options(s3_counts), retries=1, backoff=0.0)
    (target,) = expand(["s3://replaced/"], options)
    assert audit_one(target, options)["format"] == "raw"
    client.put_object(Bucket="replaced", Key="disk", Body=b"QFI\xfb" + b"\0" * 70000)
    record = audit_one(target, options)
    assert record["format"] is None and record["attempts"] == 2
    assert record["error"].startswith("source failed: FileExpired")
