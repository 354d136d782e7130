"""The staged file: replacing an OVA with its single disk."""

from __future__ import annotations

import os

from .policy import Extraction

COPY_CHUNK = 1024 * 1024
#: The disk is written beside the staged archive, then renamed over it.
EXTRACT_SUFFIX = ".imageintrospect-disk"


def extract(path: str, extraction: Extraction) -> int:
    """Replace the staged archive at ``path`` with its disk member; return the new size.

    The bytes copied are the very byte range that was introspected (the member's offset and
    size as our own tar walk found them), not a second reading of the archive by another tar
    parser that might see a different member.  Memory is bounded by :data:`COPY_CHUNK`.

    :raises ValueError: the archive ends before the member does.
    """
    temporary = path + EXTRACT_SUFFIX
    try:
        with open(path, "rb") as archive, open(temporary, "wb") as disk:
            archive.seek(extraction.offset)
            remaining = extraction.size
            while remaining:
                chunk = archive.read(min(COPY_CHUNK, remaining))
                if not chunk:
                    raise ValueError(f"the archive ends inside {extraction.member!r}")
                disk.write(chunk)
                remaining -= len(chunk)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return os.path.getsize(path)
