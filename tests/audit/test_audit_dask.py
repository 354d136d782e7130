"""The same audit on a local process pool, a Dask LocalCluster, and a Dask scheduler with two
workers started as separate processes: identical records."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from imageintrospect.audit import audit
from imageintrospect.audit.records import read_records

from .audit_services import CountingS3, DaskProcesses
from .conftest import BUCKET, Images, comparable, require, s3_options

PREFIX = f"s3://{BUCKET}/fleet"


def records_of(out: Path) -> dict[str, dict]:
    return comparable(list(read_records(str(out))))


@pytest.fixture(scope="module")
def inline_records(images: Images, s3: CountingS3, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("inline") / "inline.jsonl"
    audit([PREFIX], str(out), storage_options=s3_options(s3))
    records = records_of(out)
    assert len(records) == len(images.names)
    return records


@pytest.fixture(scope="module")
def dask_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require("distributed")
    cluster = DaskProcesses(tmp_path_factory.mktemp("dask"), workers=2)
    try:
        yield cluster.address(workers=2)
    finally:
        cluster.stop()


def test_process_pool(inline_records: dict, s3: CountingS3, tmp_path: Path) -> None:
    out = tmp_path / "pool.jsonl"
    audit([PREFIX], str(out), workers=2, batch_size=4, storage_options=s3_options(s3))
    assert records_of(out) == inline_records


def test_dask_local_cluster(inline_records: dict, s3: CountingS3, tmp_path: Path) -> None:
    require("distributed")
    out = tmp_path / "local.jsonl"
    audit([PREFIX], str(out), dask="local:2", batch_size=4, storage_options=s3_options(s3))
    assert records_of(out) == inline_records


def test_dask_scheduler_and_two_worker_processes(
    inline_records: dict, s3: CountingS3, dask_processes: str, tmp_path: Path
) -> None:
    out = tmp_path / "cluster.jsonl"
    summary = audit(
        [PREFIX], str(out), dask=dask_processes, batch_size=4, storage_options=s3_options(s3)
    )
    assert records_of(out) == inline_records
    assert summary.images == len(inline_records)
