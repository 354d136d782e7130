"""What the audit writes: one JSON record per image, appended and flushed as it arrives.

A record is a plain dict (it crosses process and machine boundaries, and lands in JSON Lines):

``url, size, etag, mtime, format, virtual_size, safe, verdict, findings, glance, bytes_read,
seconds, attempts, error``.  ``verdict`` is ``safe``, ``unsafe`` or ``error`` (the image could
not be read or described).  Only the standard library is used here.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from typing import IO, Any

from ..frozen import frozen
from ..metadata import Metadata

Record = dict[str, Any]

SAFE, UNSAFE, ERROR = "safe", "unsafe", "error"


@frozen
class Target:
    """One image to audit: where it is, and the version stamp ``--resume`` compares."""

    url: str
    size: int | None = None
    etag: str | None = None
    mtime: str | None = None
    #: why this is not an image that can be read (a listing that failed), or None
    problem: str | None = None

    def key(self) -> tuple[str, str | None, str | None]:
        return (redact_url(self.url), self.etag, self.mtime)


def record_for(target: Target) -> Record:
    """The fields every record has, whatever happened to the image."""
    return {
        "url": redact_url(target.url),
        "size": target.size,
        "etag": target.etag,
        "mtime": target.mtime,
        "format": None,
        "virtual_size": None,
        "safe": None,
        "verdict": ERROR,
        "findings": [],
        "glance": {},
        "bytes_read": 0,
        "seconds": 0.0,
        "attempts": 0,
        "error": None,
    }


def fill_metadata(record: Record, md: Metadata) -> None:
    record.update(
        format=md.format,
        virtual_size=md.virtual_size,
        safe=md.safe,
        verdict=SAFE if md.safe else UNSAFE,
        findings=[f.to_dict() for f in md.findings],
        glance=md.glance_properties(),
    )


def record_key(record: Record) -> tuple[str, str | None, str | None]:
    return (record["url"], record.get("etag"), record.get("mtime"))


# -- credentials never leave the process ------------------------------------------------------

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
# query parameters of presigned URLs and tokens in URLs
_SECRET_QUERY = re.compile(
    r"(?i)([?&](?:x-amz-[a-z-]*|signature|sig|token|access_token|"
    r"awsaccesskeyid|key|password|secret)=)[^&\s]*"
)


def redact_url(text: str) -> str:
    """``text`` without the ``user:password@`` of any URL nor signature/token parameters."""
    text = _USERINFO.sub(r"\g<scheme>***@", text)
    return _SECRET_QUERY.sub(r"\1***", text)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``redact_url`` plus every known secret value (storage options, ``OS_PASSWORD``...)."""
    text = redact_url(text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


#: Environment variables whose values must never appear in a record or a log line.
SECRET_ENVIRONMENT = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "OS_PASSWORD",
    "OS_TOKEN",
    "OS_APPLICATION_CREDENTIAL_SECRET",
)


def known_secrets(storage_options: dict[str, Any]) -> tuple[str, ...]:
    values = [os.environ.get(name, "") for name in SECRET_ENVIRONMENT]
    values += [
        str(value)
        for name, value in storage_options.items()
        if any(word in name.lower() for word in ("secret", "password", "token", "key"))
    ]
    return tuple(value for value in values if value)


# -- JSON Lines output --------------------------------------------------------------------------


class RecordWriter:
    """Appends records to a JSON Lines file, one flushed line each: a killed audit loses at most
    the line being written, which ``read_records`` drops and ``prepare_resume`` truncates."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, record: Record) -> None:
        self._stream.write(json.dumps(record, sort_keys=True) + "\n")
        self._stream.flush()


def read_records(path: str) -> Iterator[Record]:
    """The complete records of a JSON Lines file (a torn last line is skipped)."""
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            if not line.endswith("\n"):
                return
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("url"), str):
                yield record


def prepare_resume(path: str) -> set[tuple[str, str | None, str | None]]:
    """Cut a torn last line off ``path`` and return the keys of the images already judged.

    Images recorded with an error are not in the set: a resumed audit tries them again, and the
    newer record supersedes the older one (see :func:`latest_records`).
    """
    if not os.path.exists(path):
        return set()
    with open(path, "rb+") as stream:
        data = stream.read()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            stream.truncate(end)
    return {record_key(r) for r in read_records(path) if r.get("verdict") != ERROR}


def latest_records(records: Iterable[Record]) -> list[Record]:
    """One record per URL, the last written (a resumed audit re-tries earlier errors)."""
    latest: dict[str, Record] = {}
    for record in records:
        latest.pop(record["url"], None)
        latest[record["url"]] = record
    return list(latest.values())
