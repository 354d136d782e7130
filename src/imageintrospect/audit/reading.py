"""Judge one image where it lies: open it as a seekable file and let ``introspect()`` read.

Remote objects are opened through fsspec with a block cache, so only the blocks that
``introspect()`` touches are fetched by range; what was fetched is counted.  A failure of the
*source* (refused connection, timeout, throttling, 404, a short read) is retried with
exponential backoff a bounded number of times; a failure of the *image* (it cannot be
described) is not, since reading the same bytes again gives the same answer.  Either way the
outcome is a record: this module never raises for an image.

Runs in worker processes (local pool or Dask workers): everything here is picklable.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import field
from typing import Any

from ..core import introspect
from ..errors import ImageIntrospectError
from ..frozen import frozen
from ..metadata import Metadata
from .records import Record, Target, fill_metadata, known_secrets, record_for, redact

#: Bytes per ranged request: the header probe (64 KiB) is one request.
BLOCK_SIZE = 64 * 1024
#: Blocks kept per open image; a deep walk re-reads a table block at most this far back.
MAX_BLOCKS = 64
#: The longest pause between two attempts.
MAX_BACKOFF = 30.0


@frozen
class Options:
    """How to read: passed as is to every worker, so it holds plain values only."""

    deep: bool | None = None  # None: deep for local files, header-only for remote objects
    retries: int = 3
    backoff: float = 0.5  # seconds before the first retry; doubled each time
    block_size: int = BLOCK_SIZE
    #: fsspec keyword arguments per protocol, e.g. ``{"s3": {"endpoint_url": ...}}``
    storage_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def secrets(self) -> tuple[str, ...]:
        merged: dict[str, Any] = {}
        for options in self.storage_options.values():
            merged.update(options)
        return known_secrets(merged)


class SourceFailure(Exception):
    """The storage failed us (worth another attempt), as opposed to the image being bad."""


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def local_path(url: str) -> str:
    return url[len("file://") :] if url.startswith("file://") else url


def audit_batch(targets: list[Target], options: Options) -> list[Record]:
    """Audit a batch in this process: the unit of work sent to a pool or a Dask worker."""
    return [audit_one(target, options) for target in targets]


def audit_one(target: Target, options: Options) -> Record:
    """The record for one image, after at most ``options.retries`` retries."""
    record = record_for(target)
    started = time.monotonic()
    deep = options.deep if options.deep is not None else is_local(target.url)
    if target.problem is not None:
        record["error"] = redact(target.problem, options.secrets())
        return record
    for attempt in range(1, options.retries + 2):
        record["attempts"] = attempt
        counter = FetchCounter()
        try:
            md = inspect_target(target, options, deep, counter)
        except SourceFailure as exc:
            record["error"] = f"source failed: {describe(exc.__cause__ or exc)}"
            record["bytes_read"] += counter.fetched
            if attempt <= options.retries:
                time.sleep(min(MAX_BACKOFF, options.backoff * 2 ** (attempt - 1)))
                continue
        except ImageIntrospectError as exc:
            record["error"] = f"unreadable: {exc}"
            record["bytes_read"] += counter.fetched
        else:
            fill_metadata(record, md)
            record["error"] = None
            record["bytes_read"] += counter.fetched
        break
    if record["error"] is not None:
        record["error"] = redact(record["error"], options.secrets())
    record["seconds"] = round(time.monotonic() - started, 6)
    return record


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def inspect_target(target: Target, options: Options, deep: bool, counter: FetchCounter) -> Metadata:
    with open_target(target, options, counter) as fileobj:
        try:
            return introspect(fileobj, deep=deep)
        except ImageIntrospectError as exc:
            if counter.failure is not None:
                raise SourceFailure() from counter.failure
            raise exc


@contextmanager
def open_target(target: Target, options: Options, counter: FetchCounter) -> Iterator[Any]:
    """A seekable binary file for ``target`` whose fetches ``counter`` counts."""
    try:
        if is_local(target.url):
            fileobj: Any = CountingFile(open(local_path(target.url), "rb"), counter)  # noqa: SIM115
        else:
            fileobj = open_remote(target, options, counter)
    except Exception as exc:  # any failure to reach the object is the source's
        raise SourceFailure() from exc
    try:
        yield fileobj
    finally:
        with suppress(Exception):  # a failed close of a read-only handle loses nothing
            fileobj.close()


def filesystem_for(url: str, options: Options) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` (with its protocol's options) and the path in it."""
    import fsspec

    protocol = url.split("://", 1)[0]
    if protocol == "glance":
        from . import glance

        glance.register()
    fs, path = fsspec.core.url_to_fs(url, **options.storage_options.get(protocol, {}))
    return fs, str(path)


def open_remote(target: Target, options: Options, counter: FetchCounter) -> Any:
    import fsspec

    fs, path = filesystem_for(target.url, options)
    fileobj = fs.open(
        path,
        "rb",
        block_size=options.block_size,
        cache_type="blockcache",
        cache_options={"maxblocks": MAX_BLOCKS},
        size=target.size,
    )
    if target.size is not None and target.etag is not None:
        pin_listed_version(fileobj, path, target.size, target.etag)
    if isinstance(getattr(fileobj, "cache", None), fsspec.caching.BlockCache):
        fileobj.cache.fetcher = counter.wrap(fileobj.cache.fetcher, fileobj.size)
        return fileobj
    try:  # a filesystem without fsspec's block cache (memory://...): fine if it can seek
        fileobj.seek(0, io.SEEK_END)
        fileobj.seek(0)
    except (OSError, ValueError):
        # fsspec fell back to streaming (no size, or no range support): reading on would
        # download the whole object, which the audit never does
        fileobj.close()
        if target.size == 0:  # an empty object: nothing to fetch
            return io.BytesIO(b"")
        raise OSError("the server cannot serve byte ranges of this object") from None
    return CountingFile(fileobj, counter)


def pin_listed_version(fileobj: Any, path: str, size: int, etag: str) -> None:
    """Read the object the listing described.

    The file is given what the listing said, so it does not ask the store again (s3fs sends
    a HEAD per file for it otherwise: a third of the requests of a header-only audit), and
    an S3 read is made conditional on the listed ETag, so an object replaced since it was
    listed fails as the source (and is retried as a whole) instead of being judged from two
    versions' bytes.
    """
    from fsspec.spec import AbstractBufferedFile

    if not isinstance(fileobj, AbstractBufferedFile):
        return
    fileobj.details = {"name": path, "type": "file", "size": size, "ETag": etag}
    read_kw = getattr(fileobj, "read_kw", None)  # s3fs' S3File: arguments of each GET
    if isinstance(read_kw, dict):
        fileobj.read_kw = {**read_kw, "IfMatch": etag}


class FetchCounter:
    """Counts bytes fetched from storage and keeps the first transport failure.

    ``introspect()`` turns a failed read into an :class:`ImageIntrospectError`; the failure
    kept here tells the caller that it was the source, not the image.
    """

    def __init__(self) -> None:
        self.fetched = 0
        self.failure: BaseException | None = None

    def wrap(self, fetch: Callable[[int, int], bytes], size: int) -> Callable[[int, int], bytes]:
        def counted(start: int, end: int) -> bytes:
            try:
                data = fetch(start, end)
            except Exception as exc:
                self.failure = self.failure or exc
                raise OSError(f"fetching bytes {start}-{end} failed: {describe(exc)}") from exc
            self.fetched += len(data)
            expected = min(end, size) - start
            if len(data) < expected:
                short = OSError(f"short read: {len(data)} of {expected} bytes at {start}")
                self.failure = self.failure or short
                raise short
            return data

        return counted


class CountingFile(io.RawIOBase):
    """A file whose reads are counted (``bytes_read`` of local images, and of remote ones
    without a block cache)."""

    def __init__(self, raw: Any, counter: FetchCounter) -> None:
        super().__init__()
        self._raw = raw
        self._counter = counter

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return int(self._raw.seek(offset, whence))

    def tell(self) -> int:
        return int(self._raw.tell())

    def readinto(self, buffer: Any) -> int:
        done = int(self._raw.readinto(buffer) or 0)
        self._counter.fetched += done
        return done

    def close(self) -> None:
        self._raw.close()
        super().close()
