"""qcow2 deep validation: every refcount, L1 and L2 entry checked; allocated_size against
``qemu-img check``; hostile tables made with struct edits."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imageintrospect import Metadata, introspect
from imageintrospect.formats.blocktables import CLAIM_MAP_LIMIT
from tests.support import introspect_hostile, needs_qemu, patch, qemu_img, qemu_io
from tests.support import streamed as streamed_answer

pytestmark = needs_qemu

MakeImage = Callable[..., Path]


def qemu_check(path: Path) -> dict[str, int]:
    """``qemu-img check --output=json`` (exit 0, or 2/3 for leaks and corruption)."""
    import subprocess

    proc = subprocess.run(
        ["qemu-img", "check", "-U", "--output=json", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    result: dict[str, int] = json.loads(proc.stdout)
    return result


def assert_allocated_as_qemu(path: Path) -> Metadata:
    md = introspect(path)
    assert md.qcow2 is not None
    check = qemu_check(path)
    assert md.allocated_size == check.get("allocated-clusters", 0) * md.qcow2.cluster_size
    assert md.qcow2.allocation is not None
    assert md.qcow2.allocation.compressed_clusters == check.get("compressed-clusters", 0)
    assert md.safe, md.findings
    return md


def io_write(path: Path, *commands: str) -> None:
    for command in commands:
        qemu_io(path, "qcow2", command)


@pytest.mark.parametrize(
    "options",
    [
        "compat=1.1",
        "compat=0.10",
        "cluster_size=512",
        "cluster_size=4096",
        "cluster_size=2M",
        "extended_l2=on",
        "extended_l2=on,cluster_size=16K",
        "compression_type=zstd",
        "refcount_bits=1",
        "lazy_refcounts=on",
    ],
)
def test_allocated_size_matches_qemu_img_check(make_image: MakeImage, options: str) -> None:
    path = make_image("qcow2", "64M", "-o", options)
    io_write(path, "write -P 1 0 3M", "write -P 2 20M 70k", "write -z 40M 1M", "write 63M 1M")
    md = assert_allocated_as_qemu(path)
    assert md.allocated_size is not None and md.allocated_size > 0


def test_compressed_clusters(make_image: MakeImage, tmp_path: Path) -> None:
    source = make_image("qcow2", "32M")
    io_write(source, "write -P 7 0 5M", "write -P 9 17M 1M")
    for compression in ("zlib", "zstd"):
        packed = tmp_path / f"packed-{compression}.qcow2"
        qemu_img("convert", "-c", "-O", "qcow2", "-o", f"compression_type={compression}",
                 source, packed)  # fmt: skip
        md = assert_allocated_as_qemu(packed)
        assert md.qcow2 is not None and md.qcow2.allocation is not None
        assert md.qcow2.allocation.compressed_clusters > 0


@pytest.mark.parametrize("mode", ["metadata", "falloc", "full"])
def test_preallocation(make_image: MakeImage, mode: str) -> None:
    path = make_image("qcow2", "16M", "-o", f"preallocation={mode}")
    md = assert_allocated_as_qemu(path)
    assert md.allocated_size == 16 << 20


def test_snapshots_share_clusters_legitimately(make_image: MakeImage) -> None:
    path = make_image("qcow2", "32M")
    io_write(path, "write -P 1 0 4M")
    qemu_img("snapshot", "-c", "one", path)
    io_write(path, "write -P 2 1M 1M")  # copy-on-write of clusters the snapshot holds
    qemu_img("snapshot", "-c", "two", path)
    assert_allocated_as_qemu(path)


def test_overlay_counts_only_its_own_clusters(make_image: MakeImage) -> None:
    base = make_image("qcow2", "32M", name="base.qcow2")
    io_write(base, "write -P 1 0 8M")
    overlay = make_image("qcow2", "32M", "-b", base.name, "-F", "qcow2", name="top.qcow2")
    io_write(overlay, "write -P 2 1M 64k")
    md = introspect(overlay)
    assert md.allocated_size == 64 * 1024
    assert "backing-file" in md.codes()


def test_header_only_has_no_allocated_size(make_image: MakeImage) -> None:
    path = make_image("qcow2", "16M")
    io_write(path, "write 0 1M")
    assert introspect(path, deep=False).allocated_size is None


# --- hostile tables ------------------------------------------------------------------------


def layout(path: Path) -> tuple[int, int, int, int]:
    """(cluster size, L1 offset, first L2 offset, refcount table offset) of a real image."""
    blob = path.read_bytes()
    cluster = 1 << struct.unpack_from(">I", blob, 20)[0]
    l1_offset = struct.unpack_from(">Q", blob, 40)[0]
    refcount_offset = struct.unpack_from(">Q", blob, 48)[0]
    l2_offset = struct.unpack_from(">Q", blob, l1_offset)[0] & 0x00FFFFFFFFFFFE00
    return cluster, l1_offset, l2_offset, refcount_offset


@pytest.fixture
def written(make_image: MakeImage) -> Path:
    # 4 KiB clusters: an L2 table maps 2 MiB, so the L1 of this 64 MiB disk has 32 entries.
    path = make_image("qcow2", "64M", "-o", "cluster_size=4096")
    io_write(path, "write -P 1 0 256k")
    return path


def l2_entry(path: Path, index: int) -> int:
    _, _, l2, _ = layout(path)
    value: int = struct.unpack_from(">Q", path.read_bytes(), l2 + 8 * index)[0]
    return value


COPIED = 1 << 63


@pytest.mark.parametrize(
    ("edit", "code"),
    [
        ("l2-past-eof", "entry-out-of-range"),
        ("l2-misaligned", "entry-misaligned"),
        ("l2-into-header", "cluster-claimed-twice"),
        ("l2-into-l1", "cluster-claimed-twice"),
        ("l2-twice", "cluster-claimed-twice"),
        ("l2-reserved", "entry-reserved-bits"),
        ("l1-past-eof", "entry-out-of-range"),
        ("l1-misaligned", "entry-misaligned"),
        ("l1-reserved", "entry-reserved-bits"),
        ("l1-into-refcount", "cluster-claimed-twice"),
        ("refcount-past-eof", "entry-out-of-range"),
        ("compressed-past-eof", "entry-out-of-range"),
    ],
)
def test_hostile_table_entries(written: Path, edit: str, code: str) -> None:
    _, l1, l2, refcount = layout(written)
    first = l2_entry(written, 0)
    far = 1 << 40
    edits = {
        "l2-past-eof": (l2 + 8, COPIED | far),
        "l2-misaligned": (l2 + 8, COPIED | (first & ~COPIED) + 512),
        # host offset 0 with the copied bit: the header cluster (without the bit, offset 0
        # only means "unallocated")
        "l2-into-header": (l2 + 8, COPIED),
        "l2-into-l1": (l2 + 8, COPIED | l1),
        "l2-twice": (l2 + 8, first),
        "l2-reserved": (l2 + 8, first | (1 << 57)),
        "l1-past-eof": (l1 + 8, COPIED | far),
        "l1-misaligned": (l1 + 8, COPIED | (l2 + 512)),
        "l1-reserved": (l1, COPIED | l2 | 0x100),
        "l1-into-refcount": (l1 + 8, COPIED | refcount),
        "refcount-past-eof": (refcount + 8, far),
        "compressed-past-eof": (l2 + 8, (1 << 62) | (far >> 1)),
    }
    offset, value = edits[edit]
    patch(written, offset, struct.pack(">Q", value))
    md = introspect(written)
    assert code in md.codes() or (
        edit == "l2-into-header" and {"entry-in-metadata", "cluster-claimed-twice"} & md.codes()
    ), md.findings
    assert not md.safe
    finding = next(f for f in md.findings if f.code in (code, "entry-in-metadata"))
    assert "entry" in finding.message


def test_extended_l2_subcluster_both_allocated_and_zero(make_image: MakeImage) -> None:
    path = make_image("qcow2", "16M", "-o", "extended_l2=on")
    io_write(path, "write -P 1 0 64k")
    _, _, l2, _ = layout(path)
    bitmap = struct.unpack_from(">Q", path.read_bytes(), l2 + 8)[0]
    patch(path, l2 + 8, struct.pack(">Q", bitmap | (1 << 32)))  # subcluster 0 also "zero"
    md = introspect(path)
    assert "bad-subcluster-bitmap" in md.codes() and not md.safe


def test_huge_l1_claim_is_cheap(make_image: MakeImage) -> None:
    path = make_image("qcow2", "64M")
    patch(path, 36, struct.pack(">I", (32 << 20) // 8))  # 32 MiB of L1 the file does not hold
    md = introspect(path)
    assert "truncated" in md.codes()
    assert md.allocated_size is None


@pytest.mark.parametrize(("extra", "checked"), [(0, True), (1, False), (7, False)])
def test_claim_map_limit(make_image: MakeImage, extra: int, checked: bool) -> None:
    """The shared claim map's limit: a map of exactly CLAIM_MAP_LIMIT bytes is made, one
    cluster more (a map one byte larger) is not, and overlaps go unchecked (info)."""
    path = make_image("qcow2", "1M", "-o", "cluster_size=512")
    clusters = CLAIM_MAP_LIMIT * 8 + extra
    with open(path, "r+b") as f:
        f.truncate(clusters * 512)  # sparse: 128 GiB of trailing zeros
    md = introspect(path)
    assert md.safe, md.findings
    assert ("overlap-check-skipped" not in md.codes()) == checked


@pytest.mark.parametrize("chunk", [4096, 1 << 20])
def test_streamed_deep_walk_agrees(make_image: MakeImage, chunk: int) -> None:
    path = make_image("qcow2", "128M", "-o", "cluster_size=4096")
    io_write(path, "write -P 1 0 3M", "write -P 2 60M 2M", "write -P 3 127M 1M")
    data = path.read_bytes()

    streamed = streamed_answer(data, chunk)
    assert streamed.to_dict() == introspect(path).to_dict()
    assert streamed.allocated_size == qemu_check(path)["allocated-clusters"] * 4096


class SeekOnly:
    """A seekable file object with ``read`` but no ``readinto``: the source must copy."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)
        self.seek, self.tell, self.read = self._buf.seek, self._buf.tell, self._buf.read

    def seekable(self) -> bool:
        return True


class ShortReadinto(io.BytesIO):
    """``readinto`` hands out at most 1000 bytes per call, as a slow device may."""

    def readinto(self, buffer: Any) -> int:
        return super().readinto(memoryview(buffer)[:1000])


def test_seekable_file_objects_agree(make_image: MakeImage) -> None:
    """L2 tables read into the walker's batch (readinto, short reads, no readinto at all,
    a file handed over mid-way) give the path's answer."""
    path = make_image("qcow2", "256M", "-o", "cluster_size=4096,preallocation=metadata")
    io_write(path, "write -P 1 0 3M")
    expected = introspect(path).to_dict()
    data = path.read_bytes()
    shifted = io.BytesIO(b"x" * 1000 + data)
    shifted.seek(1000)
    for fileobj in (SeekOnly(data), ShortReadinto(data), shifted):
        assert introspect(fileobj).to_dict() == expected


@pytest.fixture(scope="module")
def table_seed(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, int, int]:
    path = tmp_path_factory.mktemp("deep-seed") / "seed.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", path, "8M")
    qemu_io(path, "qcow2", "write -P 5 0 300k", "write -c 1M 64k")
    _, l1, l2, _ = layout(path)
    return path.read_bytes(), l1, l2


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_tables_never_escape(
    table_seed: tuple[bytes, int, int], data: st.DataObject
) -> None:
    blob, l1, l2 = table_seed
    image = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 8))):
        base = data.draw(st.sampled_from([l1, l2]))
        at = base + data.draw(st.integers(0, 4095))
        image[at] = data.draw(st.integers(0, 255))
    md = introspect_hostile(io.BytesIO(bytes(image)))
    if md is None:
        return
