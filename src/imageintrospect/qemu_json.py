"""What ``qemu-img info --output=json`` would print for an image, built from our answer.

Callers that today parse qemu-img's output (``oslo_utils.imageutils.QemuImgInfo``) can be fed
ours instead.  The keys every image has ("virtual-size", "filename", "actual-size",
"dirty-flag") are filled in here; the format-dependent ones ("format", "cluster-size",
"format-specific", backing keys, "encrypted", "snapshots" ...) come from the format module's
``qemu_info``, which wins when both name a key, because it knows where its format differs.

qemu-img 7.2 prints a JSON object in the iteration order of qemu's ``QDict``: a hash table of
512 buckets keyed by ``tdb_hash(key) % 512``, each bucket a list with the most recently
inserted entry first.  :func:`qemu_key_order` reproduces that order, so the output matches
qemu's key for key *and* line for line (nested objects included).
"""

from __future__ import annotations

import json
import os
from typing import Any

from . import formats
from .errors import ImageIntrospectError
from .findings import QEMU_CANNOT_OPEN
from .formats.base import FormatSpec, QemuRefuses
from .metadata import Metadata

_QDICT_BUCKETS = 512
_U32 = 0xFFFFFFFF


def qemu_info_dict(md: Metadata, filename: str, actual_size: int | None) -> dict[str, Any]:
    """The ``qemu-img info --output=json`` object for ``md``.

    :param filename: the name to report, as the user wrote it.
    :param actual_size: bytes the image occupies on disk (``st_blocks * 512``), or None when
        unknown (standard input); the key is then left out.
    :raises QemuRefuses: when qemu-img cannot open the image (its message is qemu's reason).
    """
    refusal = next((f.message for f in md.findings if f.code == QEMU_CANNOT_OPEN), None)
    info: dict[str, Any] = {"filename": filename, "format": md.format, "dirty-flag": False}
    if actual_size is not None:
        info["actual-size"] = actual_size
    if md.virtual_size is not None:
        info["virtual-size"] = md.virtual_size
    spec = format_spec(md.format)
    try:
        # The format's own view first: it may know qemu-img's exact exit status.
        if spec is not None and spec.qemu_info is not None:
            info.update(spec.qemu_info(md, filename))
    except QemuRefuses:
        raise
    except ImageIntrospectError:
        if refusal is None:
            raise
    if refusal is not None:
        raise QemuRefuses(refusal)
    info = {key: value for key, value in info.items() if value is not None}
    backing = info.get("backing-filename")
    if isinstance(backing, str) and "full-backing-filename" not in info:
        info["full-backing-filename"] = full_backing_filename(filename, backing)
    ordered: dict[str, Any] = qemu_key_order(info)
    return ordered


def qemu_info_json(md: Metadata, filename: str, actual_size: int | None) -> str:
    """:func:`qemu_info_dict` serialised the way qemu-img prints it (4-space indent)."""
    return json.dumps(qemu_info_dict(md, filename, actual_size), indent=4)


def full_backing_filename(image_path: str, backing: str) -> str:
    """qemu's ``full-backing-filename``: a relative name is taken beside the image.

    Only a string is built; the file is never looked at.  Names with a protocol prefix
    (``nbd:...``) and absolute paths stand as they are, as in qemu's ``path_combine``.
    """
    if os.path.isabs(backing) or ":" in backing.split("/", 1)[0]:
        return backing
    return os.path.join(os.path.dirname(image_path), backing)


def format_spec(name: str) -> FormatSpec | None:
    """The registered :class:`FormatSpec` called ``name`` (``raw`` included), or None."""
    entry = formats.get(name)
    return None if entry is None else entry.spec()


def qemu_key_order(value: Any) -> Any:
    """``value`` with every nested dict's keys in qemu's ``QDict`` iteration order.

    The dict's own order stands for qemu's insertion order, which only matters for two keys
    sharing a bucket (the later one comes first).
    """
    if isinstance(value, dict):
        items = list(value.items())
        positions = {key: index for index, (key, _) in enumerate(items)}
        items.sort(key=lambda item: (qdict_bucket(item[0]), -positions[item[0]]))
        return {key: qemu_key_order(item) for key, item in items}
    if isinstance(value, (list, tuple)):
        return [qemu_key_order(item) for item in value]
    return value


def qdict_bucket(key: str) -> int:
    """qemu's ``tdb_hash(key) % QDICT_BUCKET_MAX`` (qobject/qdict.c), in 32-bit arithmetic."""
    data = key.encode("utf-8")
    value = (0x238F13AF * len(data)) & _U32
    for index, byte in enumerate(data):
        value = (value + (byte << (index * 5 % 24))) & _U32
    return ((1103515243 * value + 12345) & _U32) % _QDICT_BUCKETS
