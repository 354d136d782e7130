"""Turn what the operator named (paths, directories, URLs, prefixes, lists) into targets.

Listing is lazy: a bucket of millions of objects is walked page by page while the first
batches are already being audited, and no more than a page of it is held in memory.  A name
that cannot be listed still yields a target, so the failure is retried and recorded like any
other unreadable image, never silently dropped.
"""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from .reading import Options, describe, filesystem_for, is_local, local_path
from .records import Target

STDIN = "-"


def read_list(name: str) -> Iterator[str]:
    """The paths/URLs in a ``--from-file`` file (``-``: standard input); ``#`` comments."""
    if name == STDIN:
        yield from _entries(sys.stdin)
        return
    with open(name, encoding="utf-8") as stream:
        yield from _entries(stream)


def _entries(lines: Iterable[str]) -> Iterator[str]:
    for line in lines:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            yield entry


def expand(names: Iterable[str], options: Options) -> Iterator[Target]:
    """Every image under each name, in listing order."""
    for name in names:
        if is_local(name):
            yield from local_targets(local_path(name))
        else:
            yield from remote_targets(name, options)


def local_targets(path: str) -> Iterator[Target]:
    if not os.path.isdir(path):
        yield local_target(path)
        return
    for root, dirs, files in os.walk(path):
        dirs.sort()  # a stable order makes two runs' outputs comparable line by line
        for name in sorted(files):
            full = os.path.join(root, name)
            if os.path.isfile(full) and not os.path.islink(full):
                yield local_target(full)


def local_target(path: str) -> Target:
    try:
        st = os.stat(path)
    except OSError:
        return Target(path)
    return Target(path, size=st.st_size, mtime=str(st.st_mtime_ns))


def remote_targets(url: str, options: Options) -> Iterator[Target]:
    try:
        fs, path = filesystem_for(url, options)
        info = fs.info(path)  # an HTTP URL is always one object: web servers have no listing
    except ImportError:  # the audit extra (or the protocol's package) is missing: say so now
        raise
    except Exception:  # perhaps one object: reading it retries, then records the failure
        yield Target(url)
        return
    if info.get("type") != "directory":
        yield remote_target(url, info)
        return
    try:
        for info in listing(fs, path):
            yield remote_target(fs.unstrip_protocol(info["name"]), info)
    except Exception as exc:
        # what was listed so far is being audited; the rest of this name is one error record
        yield Target(url, problem=f"listing failed: {describe(exc)}")


def listing(fs: Any, path: str) -> Iterator[dict[str, Any]]:
    """The files under ``path``, a page at a time, never the whole listing in memory.

    An S3 prefix is listed flat (no delimiter) in the store's own order, which is key order;
    a filesystem that lists itself lazily (``glance://``) says so with ``iter_files``; any
    other is walked one directory at a time, each directory's files in name order.
    """
    if hasattr(fs, "iter_files"):
        yield from fs.iter_files(path)
    elif _is_s3(fs):
        yield from _s3_pages(fs, path)
    else:
        for _root, _dirs, files in fs.walk(path, detail=True):
            for name in sorted(files):
                if files[name].get("type") == "file":
                    yield files[name]


def _is_s3(fs: Any) -> bool:
    try:
        from s3fs import S3FileSystem
    except ImportError:  # no s3fs, so no S3 filesystem either
        return False
    return isinstance(fs, S3FileSystem)


#: Objects taken from an S3 listing per hop onto s3fs' event loop (a listing page is 1,000).
S3_PAGE = 1000


def _s3_pages(fs: Any, path: str) -> Iterator[dict[str, Any]]:
    from fsspec.asyn import sync

    bucket, key, _ = fs.split_path(path)
    prefix = f"{key.rstrip('/')}/" if key else ""
    pages = fs._iterdir(bucket, delimiter="", prefix=prefix)

    async def next_page() -> list[dict[str, Any]]:
        page: list[dict[str, Any]] = []
        try:
            while len(page) < S3_PAGE:
                page.append(await pages.__anext__())
        except StopAsyncIteration:
            pass
        return page

    while page := sync(fs.loop, next_page):
        for info in page:
            # a zero-byte key ending in "/" is a console-made folder marker, not an image
            if info.get("type") == "file" and not str(info["name"]).endswith("/"):
                yield info


def remote_target(url: str, info: dict[str, Any]) -> Target:
    etag = info.get("ETag") or info.get("etag") or info.get("checksum")
    mtime = info.get("LastModified") or info.get("mtime") or info.get("Last-Modified")
    if isinstance(mtime, datetime.datetime):
        mtime = mtime.isoformat()
    size = info.get("size")
    return Target(
        url,
        size=int(size) if size is not None else None,
        etag=str(etag) if etag is not None else None,
        mtime=str(mtime) if mtime is not None else None,
    )
