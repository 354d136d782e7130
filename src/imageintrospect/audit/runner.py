"""``audit()``: list the images, judge them where they run, write each record as it arrives."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import execution
from .reading import Options
from .records import ERROR, Record, RecordWriter, Target, prepare_resume, read_records
from .report import Summary
from .sources import expand


def audit(
    names: Iterable[str],
    output: str | None = None,
    *,
    deep: bool | None = None,
    workers: int = 1,
    dask: str | None = None,
    batch_size: int = execution.BATCH_SIZE,
    resume: bool = False,
    retries: int = 3,
    backoff: float = 0.5,
    storage_options: dict[str, dict[str, Any]] | None = None,
    on_record: Callable[[Record], None] | None = None,
    on_target: Callable[[Target], None] | None = None,
) -> Summary:
    """Judge every image under ``names`` (paths, directories, ``s3://``/``http(s)://``/
    ``file://``/``glance://`` URLs) and append one JSON record per image to ``output``.

    :param output: the JSON Lines file (``None``: standard output).
    :param deep: ``None`` reads tables of local files and headers only (≤ 1 MiB) of remote ones.
    :param workers: local worker processes (1: this process).
    :param dask: a Dask scheduler address, or ``local:N`` for a local cluster of N workers.
    :param resume: keep ``output`` and skip the images it already judged (same URL and
        etag/mtime); earlier errors are tried again.
    :param storage_options: fsspec options per protocol, e.g. ``{"s3": {"endpoint_url": ...}}``.
    :returns: the summary over every image in ``output`` (with ``resume``: old and new).
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    if resume and output is None:
        raise ValueError("resume needs an output file")
    options = Options(
        deep=deep,
        retries=retries,
        backoff=backoff,
        storage_options=dict(storage_options or {}),
    )
    summary = Summary()
    done: set[tuple[str, str | None, str | None]] = set()
    if resume and output is not None:
        done = prepare_resume(output)
        for record in read_records(output):
            if record.get("verdict") != ERROR:
                summary.add(record)
    targets = _todo(expand(names, options), done, on_target)
    records = _execute(targets, options, workers, dask, batch_size)
    if output is None:
        _drain(records, RecordWriter(sys.stdout), summary, on_record)
    else:
        mode = "a" if resume and os.path.exists(output) else "w"
        with open(output, mode, encoding="utf-8") as stream:
            _drain(records, RecordWriter(stream), summary, on_record)
    return summary


def _todo(
    targets: Iterable[Target],
    done: set[tuple[str, str | None, str | None]],
    on_target: Callable[[Target], None] | None,
) -> Iterator[Target]:
    for target in targets:
        if target.key() in done:
            continue
        if on_target is not None:
            on_target(target)
        yield target


def _execute(
    targets: Iterable[Target], options: Options, workers: int, dask: str | None, batch_size: int
) -> Iterator[Record]:
    if dask is not None:
        return execution.run_dask(targets, options, dask, batch_size)
    if workers == 1:
        return execution.run_inline(targets, options, batch_size)
    return execution.run_pool(targets, options, workers, batch_size)


def _drain(
    records: Iterable[Record],
    writer: RecordWriter,
    summary: Summary,
    on_record: Callable[[Record], None] | None,
) -> None:
    for record in records:
        writer.write(record)
        summary.add(record)
        if on_record is not None:
            on_record(record)
