"""Helpers the tests (and the benchmarks) share: ``from tests.support import ...``.

* :mod:`.qemu`: running qemu-img and qemu-io, and comparing our answer with qemu-img's;
* :mod:`.images`: editing image files in place (how hostile variants are made);
* :mod:`.streams`: forward-only sources, and answers read through them;
* :mod:`.files`: files that count the bytes they hand out (read budgets);
* :mod:`.vmware_stream`: VMware's streamOptimized layout, written byte by byte.

Fixtures stay in ``tests/conftest.py``; nothing here is a fixture.
"""

from .files import CountingBytes, CountingFile
from .images import edit, finding, mutate_bytes, patch, read_at
from .qemu import (
    QEMU_IMG,
    assert_same_as_qemu,
    assert_view_refuses,
    needs_qemu,
    ours_as_qemu,
    qemu_corruptions,
    qemu_img,
    qemu_info,
    qemu_io,
    qemu_map_data,
    qemu_refuses,
    run,
)
from .streams import (
    OnlyRead,
    assert_stream_agrees,
    assert_stream_describes_alike,
    describe,
    forward_only,
    introspect_hostile,
    streamed,
)

__all__ = [
    "QEMU_IMG",
    "CountingBytes",
    "CountingFile",
    "OnlyRead",
    "assert_same_as_qemu",
    "assert_stream_agrees",
    "assert_stream_describes_alike",
    "assert_view_refuses",
    "describe",
    "edit",
    "finding",
    "forward_only",
    "introspect_hostile",
    "mutate_bytes",
    "needs_qemu",
    "ours_as_qemu",
    "patch",
    "qemu_corruptions",
    "qemu_img",
    "qemu_info",
    "qemu_io",
    "qemu_map_data",
    "qemu_refuses",
    "read_at",
    "run",
    "streamed",
]
