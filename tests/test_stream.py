"""Streams: every kind of image, read forward once at many read sizes, gives the seekable
answer; memory stays bounded; InspectingReader passes bytes through unchanged."""

from __future__ import annotations

import io
import random
import shutil
import subprocess
import tarfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imageintrospect import FormatMismatch, InspectingReader, Metadata, introspect, stream
from imageintrospect.stream import HEAD_KEEP, TAIL_KEEP, TAP_RUN_CHUNK
from tests.support import OnlyRead, needs_qemu, qemu_img, qemu_io
from tests.support import streamed as streamed_answer
from tests.support import vmware_stream as vs

pytestmark = needs_qemu

MiB = 1024 * 1024


def _write(path: Path, *commands: str) -> None:
    for command in commands:
        qemu_io(path, path.suffix.lstrip(".").replace("vhd", "vpc"), command)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One image of every kind the library reads, some with tables far from the header."""
    d = tmp_path_factory.mktemp("stream-images")
    made: dict[str, Path] = {}

    def create(name: str, fmt: str, size: str, *options: str) -> Path:
        path = d / name
        qemu_img("create", "-q", "-f", fmt, *options, path, size)
        made[name] = path
        return path

    create("empty.qcow2", "qcow2", "64M")
    snap = create("snap.qcow2", "qcow2", "64M", "-o", "cluster_size=4096")
    _write(snap, "write -P 1 0 6M")
    qemu_img("snapshot", "-c", "late-snapshot", snap)  # the snapshot table lands after data
    qemu_img("bitmap", "--add", snap, "bm")
    create("backing.qcow2", "qcow2", "16M", "-u", "-b", "/etc/passwd", "-F", "raw")
    sparse = create("sparse.vmdk", "vmdk", "64M")
    _write(sparse, "write -P 2 0 2M")
    stream = create("stream.vmdk", "vmdk", "64M", "-o", "subformat=streamOptimized")
    _write(stream, "write -P 3 0 2M")
    dyn = create("dynamic.vhd", "vpc", "64M")
    _write(dyn, "write -P 4 0 2M")
    create("fixed.vhd", "vpc", "8M", "-o", "subformat=fixed")
    create("big.vhdx", "vhdx", "1T", "-o", "log_size=8M")
    create("dynamic.vdi", "vdi", "64M")
    create("plain.qed", "qed", "64M")
    raw = d / "raw.img"
    raw.write_bytes(bytes(range(256)) * 4099)  # not a multiple of 512
    made["raw.img"] = raw
    if shutil.which("xorriso"):
        root = d / "iso-root"
        root.mkdir()
        (root / "hello.txt").write_text("hello")
        iso = d / "plain.iso"
        subprocess.run(
            ["xorriso", "-as", "mkisofs", "-quiet", "-V", "STREAMED", "-o", iso, root],
            check=True,
            capture_output=True,
        )
        made["plain.iso"] = iso
    ova = d / "app.ova"
    with tarfile.open(ova, "w", format=tarfile.USTAR_FORMAT) as tar:
        ovf = (
            b'<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" '
            b'xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">'
            b'<References><File ovf:href="disk.vmdk" ovf:id="f1"/></References>'
            b'<DiskSection><Disk ovf:diskId="d1" ovf:fileRef="f1" ovf:capacity="67108864"/>'
            b"</DiskSection></Envelope>"
        )
        for name, data in (("app.ovf", ovf), ("disk.vmdk", stream.read_bytes())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    made["app.ova"] = ova
    return made


def comparable(md: Metadata) -> dict[str, Any]:
    """``to_dict()`` without the findings that only say what a stream could not check."""
    result = md.to_dict()
    result["findings"] = [f for f in result["findings"] if f["code"] != "stream-unchecked"]
    return result


KINDS = [
    "empty.qcow2",
    "snap.qcow2",
    "backing.qcow2",
    "sparse.vmdk",
    "stream.vmdk",
    "dynamic.vhd",
    "fixed.vhd",
    "big.vhdx",
    "dynamic.vdi",
    "plain.qed",
    "raw.img",
    "plain.iso",
    "app.ova",
]


@pytest.mark.parametrize("chunk", [17, 512, 4096, 65536, MiB, 8 * MiB])
@pytest.mark.parametrize("kind", KINDS)
def test_stream_gives_the_seekable_answer(images: dict[str, Path], kind: str, chunk: int) -> None:
    if kind not in images:
        pytest.skip(f"{kind}: its tool is missing")
    path = images[kind]
    data = path.read_bytes()
    if chunk == 17 and len(data) > 8 * MiB:
        pytest.skip("17-byte reads of a large image only slow the suite down")
    seekable = introspect(path)
    streamed = streamed_answer(data, chunk)
    assert comparable(streamed) == comparable(seekable)
    # Everything these images hold lies where a single pass can catch it.
    assert "stream-unchecked" not in streamed.codes(), streamed.findings


@pytest.mark.parametrize("kind", KINDS)
def test_chunks_of_mixed_sizes_give_the_seekable_answer(images: dict[str, Path], kind: str) -> None:
    """Small chunks between large ones: the tail is then made of several chunks, and the
    collector leaves and re-enters its calm (where a chunk needs no bookkeeping)."""
    if kind not in images:
        pytest.skip(f"{kind}: its tool is missing")
    path = images[kind]
    data = path.read_bytes()
    sizes = [65536, 3000, 70000, 1, 131072, 65535, 512, 65536, 65536]
    pieces, start = [], 0
    while start < len(data):
        size = sizes[len(pieces) % len(sizes)]
        pieces.append(data[start : start + size])
        start += size
    reader = InspectingReader(pieces)
    assert b"".join(reader) == data
    streamed = reader.metadata()
    assert comparable(streamed) == comparable(introspect(path))
    assert "stream-unchecked" not in streamed.codes(), streamed.findings


MIXED_SIZES = [65536, 3000, 70000, 1, 131072, 65535, 512, 65536, 65536, 200, 65536]


@pytest.mark.parametrize("sizes", [MIXED_SIZES, [65536], [100_000, 100_000, 5000]])
@pytest.mark.parametrize("head_keep", [0, 100_000, 300_000])
def test_the_tail_is_the_last_bytes_whatever_the_chunk_sizes(
    head_keep: int, sizes: list[int]
) -> None:
    data = bytes(range(256)) * 4096
    collector = stream.Collector(head_keep=head_keep)
    start, fed = 0, 0
    while start < len(data):
        size = sizes[fed % len(sizes)]
        fed += 1
        collector.feed(data[start : start + size])
        start = min(start + size, len(data))
        assert collector.position == start
        assert collector.tail == data[collector.tail_start : start]
        assert start - collector.tail_start >= min(TAIL_KEEP, start)
        assert collector.head == data[: min(head_keep, start)]


@pytest.mark.parametrize("chunk", [65536, 100_000, TAP_RUN_CHUNK + 1])
def test_runs_of_chunks_meet_grain_table_markers(tmp_path: Path, chunk: int) -> None:
    """A VMware-layout stream (a GT marker after every 512 grains) read in chunks that the
    marker walk takes in runs (the first two sizes) or one by one: runs that stop at a GT or
    GD marker, whose payload is collected, give the seekable answer."""
    rng = random.Random(3)
    grains = {i: rng.randbytes(3000) + bytes(500) for i in range(0, 4096, 2)}
    layout = vs.build_stream(4096 * 128, grains)
    path = tmp_path / "vmware.vmdk"
    path.write_bytes(layout.data)
    assert len(layout.data) > 7 * MiB and len(layout.gt_offsets) == 8
    reader = InspectingReader(chunks(layout.data, chunk))
    assert b"".join(reader) == layout.data
    streamed = reader.metadata()
    assert streamed.to_dict() == introspect(path).to_dict()
    assert streamed.vmdk is not None and streamed.vmdk.markers is not None
    assert streamed.vmdk.markers.gt_markers == 8 and streamed.vmdk.markers.complete


def test_one_byte_reads(images: dict[str, Path]) -> None:
    path = images["empty.qcow2"]
    assert comparable(introspect(OnlyRead(path.read_bytes(), 1))) == comparable(introspect(path))


@pytest.mark.parametrize("kind", ["snap.qcow2", "big.vhdx", "app.ova", "stream.vmdk"])
def test_stream_memory_is_bounded(images: dict[str, Path], kind: str) -> None:
    data = images[kind].read_bytes()
    source = OnlyRead(data, 65536)
    tracemalloc.start()
    try:
        introspect(source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Head and tail (1 MiB), the tables asked for, the read buffer, and interpreter noise.
    assert MiB >= HEAD_KEEP + TAIL_KEEP
    assert peak < 8 * MiB, f"peak {peak / MiB:.1f} MiB"


def test_large_chunks_are_cut_only_where_something_awaited_arrives(
    images: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 1 MiB chunk goes through whole (no 64 KiB copies) unless the parser waits for a
    range that ends inside it, or for the end of the head."""
    data = images["stream.vmdk"].read_bytes() + bytes(32 * MiB)  # grain data follows
    cut: list[int] = []
    feed_pieces = stream.Collector._feed_pieces

    def counted(collector: stream.Collector, chunk: bytes) -> None:
        cut.append(collector.position)
        feed_pieces(collector, chunk)

    monkeypatch.setattr(stream.Collector, "_feed_pieces", counted)
    reader = InspectingReader(chunks(data, MiB))
    assert b"".join(reader) == data
    assert cut == [0]  # the head and the first parses; the grain data after them goes whole


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("kind", KINDS)
def test_inspecting_reader_passes_bytes_unchanged(images: dict[str, Path], kind: str) -> None:
    if kind not in images:
        pytest.skip(f"{kind}: its tool is missing")
    data = images[kind].read_bytes()
    reader = InspectingReader(chunks(data, 65536))
    assert b"".join(reader) == data
    assert comparable(reader.metadata()) == comparable(introspect(images[kind]))


def test_inspecting_reader_read_api(images: dict[str, Path]) -> None:
    data = images["stream.vmdk"].read_bytes()
    reader = InspectingReader(io.BytesIO(data))
    parts = []
    while part := reader.read(10_000):
        parts.append(part)
    assert b"".join(parts) == data
    assert reader.metadata().format == "vmdk"


class Handed:
    """A stream whose ``read(n)`` hands out n bytes (fewer at the end) and remembers each
    object it returned, to tell whether the reader passed it on or copied it."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)
        self.handed: list[bytes] = []

    def read(self, size: int = -1) -> bytes:
        chunk = self._buf.read(size)
        self.handed.append(chunk)
        return chunk


@pytest.mark.parametrize("size", [65536, MiB])
def test_read_at_the_chunk_size_hands_out_the_chunk_itself(
    images: dict[str, Path], size: int
) -> None:
    data = images["stream.vmdk"].read_bytes()
    source = Handed(data)
    reader = InspectingReader(source)
    parts = []
    while part := reader.read(size):
        parts.append(part)
    assert b"".join(parts) == data
    # No copy: every part is an object the source returned.
    assert all(any(part is chunk for chunk in source.handed) for part in parts)
    assert reader.metadata() == introspect(images["stream.vmdk"])


class Odd:
    """A stream whose ``read(n)`` hands out bytearrays, or ``extra`` bytes more than asked
    (a careless source): the reader's direct read must give it back as bytes, n at a time."""

    def __init__(self, data: bytes, extra: int = 0) -> None:
        self._buf = io.BytesIO(data)
        self._extra = extra

    def read(self, size: int = -1) -> bytes | bytearray:
        chunk = self._buf.read(size + self._extra if size >= 0 else size)
        return chunk if self._extra else bytearray(chunk)


@pytest.mark.parametrize(
    "source", ["stream", "odd chunks", "short reads", "bytearray reads", "long reads"]
)
def test_read_sizes_mixed_give_the_bytes_in_order(images: dict[str, Path], source: str) -> None:
    data = images["snap.qcow2"].read_bytes()
    made: Any = {
        "stream": lambda: io.BytesIO(data),
        "odd chunks": lambda: chunks(data, 7_777),
        "short reads": lambda: OnlyRead(data, 3_000),
        "bytearray reads": lambda: Odd(data),
        "long reads": lambda: Odd(data, extra=1_000),
    }[source]()
    reader = InspectingReader(made)
    sizes = [1, 4096, 65536, 100_000, 0, MiB, 17, 65535, 65537]
    asked, parts = [], []
    while True:
        size = sizes[len(parts) % len(sizes)]
        part = reader.read(size)
        if size and not part:
            break
        asked.append(size)
        parts.append(part)
    assert len(parts) > len(sizes)
    # read(n) fills n as a buffered file does: only the last part may be short
    short = [i for i, (n, part) in enumerate(zip(asked, parts, strict=True)) if len(part) != n]
    assert short in ([], [len(parts) - 1])
    assert b"".join(parts) == data
    assert all(type(part) is bytes for part in parts)
    assert reader.read() == b""
    assert reader.metadata() == introspect(images["snap.qcow2"])


def test_read_then_iterate_then_read_all(images: dict[str, Path]) -> None:
    data = images["dynamic.vhd"].read_bytes()
    reader = InspectingReader(chunks(data, 65536))
    first = reader.read(1000)
    second = next(iter(reader))  # the rest of the held chunk
    rest = reader.read()
    assert first + second + rest == data
    assert len(second) == 65536 - 1000
    assert reader.metadata().format == "vhd"


def test_metadata_before_eof_is_an_error(images: dict[str, Path]) -> None:
    reader = InspectingReader(chunks(images["empty.qcow2"].read_bytes(), 4096))
    reader.read(4096)
    with pytest.raises(RuntimeError):
        reader.metadata()


def test_mismatch_aborts_within_the_first_mib(images: dict[str, Path]) -> None:
    data = images["snap.qcow2"].read_bytes()
    assert len(data) > 4 * MiB
    reader = InspectingReader(chunks(data, 4096), expected_format="vmdk")
    passed = 0
    with pytest.raises(FormatMismatch):
        for chunk in reader:
            passed += len(chunk)
    assert passed < MiB


def test_mismatch_from_introspect_on_a_stream(images: dict[str, Path]) -> None:
    data = images["sparse.vmdk"].read_bytes()
    with pytest.raises(FormatMismatch):
        introspect(OnlyRead(data, 65536), expected_format="qcow2")


def test_matching_expected_format_streams_through(images: dict[str, Path]) -> None:
    data = images["dynamic.vhd"].read_bytes()
    reader = InspectingReader(chunks(data, 65536), expected_format="vhd")
    assert b"".join(reader) == data
    assert reader.metadata().format == "vhd"
