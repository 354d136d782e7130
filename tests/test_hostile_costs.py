"""Hostile images cost what honest ones cost: bounded memory, bounded reads, linear work.

The images (tests/support/hostile_images.py) put absurd counts in small files: qemu's maximum of
65,536 snapshots, an L1 table whose every entry names one L2 table, a refcount table that
points at itself, 10,000 tar members, 256 members of 64 KiB named by the OVF with the
manifest last, pax and GNU headers claiming 8 GiB or 60 KiB names, a
streamOptimized VMDK of 32,768 grain markers, a LUKS2 JSON area nested as deep as it goes.
Each is read seekable, header-only and as a forward-only stream, and the checks are:

* the Python heap grows by at most the documented 64 MiB (tracemalloc);
* header-only introspection reads at most 1 MiB;
* the work is proportional to the image: the parse steps (table entries decoded, tar
  headers read) are counted, never timed; a stream costs a small multiple of a seekable
  read however many times its parse is rehearsed;
* the answer is bounded (lists capped with a ``list-capped`` finding) and the streamed
  answer is the seekable one.

Then a file that shrinks after it was opened is never judged safe, and a stream announced as
a format it cannot be is refused as soon as the bytes that decide it have arrived.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import shutil
import struct
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from imageintrospect import FormatMismatch, ImageIntrospectError, InspectingReader, introspect
from imageintrospect.core import introspect_source
from imageintrospect.findings import MAX_FINDINGS, MAX_PER_CODE, Findings
from imageintrospect.formats import ova, qcow2
from imageintrospect.formats.base import MAX_LISTED
from imageintrospect.source import SeekableSource
from tests.support import QEMU_IMG, CountingFile, hostile_images, needs_qemu, run
from tests.support.hostile_images import read

MiB = 1024 * 1024
#: docs/security.md: at most 64 MiB held for one image, whatever its headers claim.
HEAP_BOUND = 64 * MiB
#: docs/security.md: header-only introspection reads at most 1 MiB.
HEADER_READ_BOUND = 1 * MiB
#: What a JSON answer may grow to: 1,024 listed entries of a few hundred bytes, findings.
ANSWER_BOUND = 2 * MiB

QEMU_CASES = {"qcow2-snapshots", "qcow2-shared-l2", "qcow2-refcount-loop", "ova-disk-named-often"}
CASES = [
    pytest.param(name, marks=needs_qemu) if name in QEMU_CASES else name
    for name in hostile_images.CASES
    if name != "not-qcow2"
]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    directory = tmp_path_factory.mktemp("hostile")
    built: dict[str, Path] = {}

    def image(name: str) -> Path:
        if name not in built:
            built[name] = hostile_images.build(name, directory)
        return built[name]

    return image


def answer(result: Any) -> Any:
    return result.to_dict() if not isinstance(result, str) else result


RSS_RUNNER = r"""
import resource, sys
sys.path.insert(0, sys.argv[2])
import imageintrospect
from pathlib import Path
from tests.support.hostile_images import read

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

base = peak()
for mode in ("seekable", "header", "streamed"):
    read(Path(sys.argv[1]), mode)
print(peak() - base)
"""


@pytest.mark.parametrize("name", CASES)
def test_memory_bounded(images: Callable[[str], Path], name: str) -> None:
    """The peak resident set of a fresh interpreter, after ``import imageintrospect``, grows
    by at most 64 MiB while the image is read seekable, header-only and streamed (a process
    of its own: tracemalloc would multiply the cost of 65,536 snapshots thirtyfold)."""
    here = str(Path(__file__).resolve().parent.parent)
    out = run(sys.executable, "-c", RSS_RUNNER, images(name), here)
    growth = int(out.strip().splitlines()[-1])
    assert growth <= HEAP_BOUND, f"{name}: the resident set grew by {growth / MiB:.1f} MiB"


def test_heap_of_the_tar_walk_is_bounded(images: Callable[[str], Path]) -> None:
    """The Python heap itself (tracemalloc), for the walk that holds the most objects per
    byte: 4,096 tar headers, streamed."""
    tracemalloc.start()
    try:
        read(images("ova-members"), "streamed")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 16 * MiB, f"the heap peaked at {peak / MiB:.1f} MiB"


@pytest.mark.parametrize("name", CASES)
def test_header_only_reads_at_most_1_mib(images: Callable[[str], Path], name: str) -> None:
    with CountingFile(images(name)) as counted, contextlib.suppress(ImageIntrospectError):
        introspect(counted, deep=False)
    assert counted.bytes_read <= HEADER_READ_BOUND


@pytest.mark.parametrize("name", CASES)
def test_stream_answer_is_the_seekable_one(images: Callable[[str], Path], name: str) -> None:
    path = images(name)
    seekable = answer(read(path, "seekable"))
    assert answer(read(path, "streamed")) == seekable
    assert len(json.dumps(seekable)) <= ANSWER_BOUND


@needs_qemu
def test_refcount_table_after_the_l2_tables_streams_like_a_file(tmp_path: Path) -> None:
    """A stream starts the L2 walk once the L1 table has arrived, without waiting for a
    refcount table that lies after the L2 tables (by then they would have gone by)."""
    path = tmp_path / "late-refcounts.qcow2"
    run(QEMU_IMG, "create", "-q", "-f", "qcow2", path, "2G")
    # the second L2 table is written after the first 4 MiB of data: past the stream's head
    run("qemu-io", "-f", "qcow2", "-c", "write -P 7 0 4M", "-c", "write -P 8 1G 1M", path)
    data = bytearray(path.read_bytes())
    (table_at,) = struct.unpack_from(">Q", data, 48)
    cluster = 65536
    moved = len(data) + -len(data) % cluster
    data += bytes(moved - len(data)) + data[table_at : table_at + cluster]
    struct.pack_into(">Q", data, 48, moved)
    path.write_bytes(bytes(data))
    seekable = introspect(path)
    assert seekable.qcow2 is not None and seekable.qcow2.allocation is not None
    assert introspect(hostile_images.FileStream(path)).to_dict() == seekable.to_dict()


def counting(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[int]:
    """Count the calls of ``owner.name`` (a parse step) from here on."""
    calls = [0]
    original = getattr(owner, name)

    @functools.wraps(original)
    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


@needs_qemu
def test_snapshot_table_is_walked_a_bounded_number_of_times(
    images: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """65,536 snapshots: a seekable read takes each entry's four fields once; a stream's
    rehearsals read the table in doubling windows and stop where the bytes have not arrived,
    so all of them together take fewer fields than two more seekable reads."""
    path = images("qcow2-snapshots")
    takes = counting(monkeypatch, qcow2.WindowReader, "take")
    seekable = introspect(path)
    once = takes[0]
    assert once >= 4 * hostile_images.QEMU_MAX_SNAPSHOTS
    takes[0] = 0
    streamed = read(path, "streamed")
    assert takes[0] <= 3 * once
    assert streamed.to_dict() == seekable.to_dict()


@needs_qemu
def test_snapshot_list_is_capped_and_counted(images: Callable[[str], Path]) -> None:
    md = introspect(images("qcow2-snapshots"))
    assert md.qcow2 is not None
    assert len(md.qcow2.snapshots) == MAX_LISTED
    assert md.qcow2.snapshots[-1].name == f"snap-{MAX_LISTED - 1}"
    messages = {f.code: f.message for f in md.findings}
    count = hostile_images.QEMU_MAX_SNAPSHOTS
    assert messages["list-capped"] == f"{count} snapshots: the first {MAX_LISTED} are listed"
    assert messages["internal-snapshots"] == f"{count} internal snapshot(s)"


def test_tar_walk_reads_each_header_once_per_pass(
    images: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """10,000 members: the walk stops at MAX_MEMBERS headers; streamed, the rehearsals resume
    the walk where the last one stopped, so the stream reads each header about twice (the
    rehearsals once, the final parse once), not once per rehearsal."""
    path = images("ova-members")
    steps = counting(monkeypatch, ova.tar, "_next_member")
    seekable = introspect(path)
    assert steps[0] == ova.MAX_MEMBERS
    assert "ova-bad-archive" in seekable.codes()
    assert seekable.ova is not None and len(seekable.ova.members) == MAX_LISTED
    steps[0] = 0
    streamed = read(path, "streamed")
    assert steps[0] <= 2 * ova.MAX_MEMBERS + 64
    assert streamed.to_dict() == seekable.to_dict()


def test_stream_rehearsals_parse_the_ovf_once(
    images: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The OVF comes first and thousands of members follow: the rehearsals parse it once it
    has arrived (and the final parse once more), not once per member that arrives."""
    parses = counting(monkeypatch, ova, "read_ovf")
    rehearsals = counting(monkeypatch, ova, "_members")
    read(images("ova-members"), "streamed")
    assert rehearsals[0] > 8  # the walk did take many rehearsals
    assert parses[0] <= 3


def test_a_spread_out_archive_streams_at_the_cost_of_a_file(
    images: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """256 members of 64 KiB, every one named by the OVF, the manifest last: a tar header
    arrives every 64 KiB and each starts a rehearsal.  The rehearsals keep what they learnt
    (the OVF's disk references, the manifest's lines, which members they started hashing),
    so the stream looks at the OVF's names (every XML name split is counted) about as often
    as a seekable read does, not once per rehearsal, and hashes every member's bytes once,
    as the seekable read does."""
    path = images("ova-spread-members")
    names = counting(monkeypatch, ova.ovf, "_split")
    rehearsals = counting(monkeypatch, ova, "_members")
    hashed = [0]
    feed = ova.manifest._Hasher.feed

    def counted_feed(self: Any, offset: int, data: bytes) -> None:
        hashed[0] += len(data)
        feed(self, offset, data)

    monkeypatch.setattr(ova.manifest._Hasher, "feed", counted_feed)
    seekable = introspect(path)
    assert seekable.ova is not None and len(seekable.ova.files) == 256
    assert seekable.ova.manifest.verified
    once, hashed_once = names[0], hashed[0]
    assert hashed_once == 256 * 64 * 1024
    names[0] = hashed[0] = rehearsals[0] = 0
    streamed = read(path, "streamed")
    assert streamed.to_dict() == seekable.to_dict()
    assert rehearsals[0] >= 256  # one per member: the case is what it claims to be
    assert names[0] <= 2 * once
    assert hashed[0] == hashed_once


@pytest.mark.parametrize("deep", [True, False])
def test_a_manifest_between_large_members_is_kept_from_the_stream(
    tmp_path: Path, deep: bool
) -> None:
    """The rehearsals read a manifest that lies past the stream's head and before its tail,
    deep or header-only, as the final parse will: the streamed answer is the seekable one."""
    tar_header, padded = hostile_images.tar_header, hostile_images._padded
    data = bytes(MiB)
    manifest = b"SHA256(a.bin)= %s\n" % hashlib.sha256(data).hexdigest().encode()
    path = tmp_path / "middle.ova"
    path.write_bytes(
        tar_header(b"vm.ovf", len(hostile_images.OVF)) + padded(hostile_images.OVF)
        + tar_header(b"a.bin", len(data)) + data
        + tar_header(b"vm.mf", len(manifest)) + padded(manifest)
        + tar_header(b"b.bin", len(data)) + data + bytes(1024)
    )  # fmt: skip
    seekable = introspect(path, deep=deep)
    assert seekable.ova is not None and seekable.ova.manifest.algorithm == "SHA256"
    stream = hostile_images.FileStream(path)
    try:
        assert introspect(stream, deep=deep).to_dict() == seekable.to_dict()
    finally:
        stream.close()


def test_header_only_walk_stops_at_its_cap(
    images: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = counting(monkeypatch, ova.tar, "_next_member")
    md = introspect(images("ova-members"), deep=False)
    assert steps[0] == ova.HEADER_ONLY_MEMBERS
    assert "ova-header-only-limit" in md.codes()


def test_pax_size_past_the_end_is_truncation(images: Callable[[str], Path]) -> None:
    for mode in ("seekable", "header", "streamed"):
        md = read(images("ova-pax-8g"), mode)
        assert not md.safe and "truncated" in md.codes(), mode


def test_long_member_names_are_refused_and_cut(images: Callable[[str], Path]) -> None:
    md = introspect(images("ova-gnu-names"))
    assert not md.safe and "ova-bad-archive" in md.codes()
    assert md.ova is not None
    assert max(len(m.name) for m in md.ova.members) == ova.MAX_NAME


@needs_qemu
def test_a_disk_named_by_many_disk_elements_is_read_once(
    images: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 Disk elements name one member: it is introspected once per parse (a stream's
    rehearsals each introspect it at most once too), not once per Disk element."""
    path = images("ova-disk-named-often")
    steps = counting(monkeypatch, ova.disks, "_introspect_member")
    md = introspect(path)
    assert steps[0] == 1
    assert md.ova is not None and len(md.ova.disks) == 1000
    assert "cluster-claimed-twice" in md.codes()
    parses = counting(monkeypatch, ova, "_members")
    steps[0] = 0
    read(path, "streamed")
    assert steps[0] <= parses[0]


def test_a_large_ovf_is_handed_to_expat_in_few_pieces(
    images: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 4 MiB OVF (one comment): expat rescans a token that spans pieces, so the pieces are
    large: a few of them, not 256 of 16 KiB."""
    pieces = counting(monkeypatch, ova.Pieces, "read")
    md = introspect(images("ova-big-descriptor"))
    assert md.ova is not None and md.ova.ovf_version is not None
    assert pieces[0] <= ova.MAX_OVF_BYTES // ova.XML_PIECE + 2


# --- a file that shrinks after it was opened -------------------------------------------------

SHRINKING = [
    ("qcow2", []),
    ("vdi", []),
    ("vhdx", []),
    ("vmdk", ["-o", "subformat=streamOptimized"]),
    ("vpc", []),
]


class PlainWrapper(io.RawIOBase):
    """A caller's file object that is not a plain file: read through seek and read."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("rb")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def readinto(self, buffer: Any) -> int:
        return self._file.readinto(buffer) or 0

    def close(self) -> None:
        self._file.close()
        super().close()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Images with data, by qemu-img and qemu-io, one per format that a cut must not fool."""
    if QEMU_IMG is None or shutil.which("qemu-io") is None:
        pytest.skip("qemu-img and qemu-io are needed")
    directory = tmp_path_factory.mktemp("shrinking")
    made = {}
    for fmt, options in SHRINKING:
        path = directory / f"image.{fmt}"
        run(QEMU_IMG, "create", "-q", "-f", fmt, *options, path, "64M")
        run("qemu-io", "-f", fmt, "-c", "write -P 1 0 4M", "-c", "write -P 2 32M 1M", path)
        made[fmt] = path
    return made


@pytest.mark.parametrize("opener", ["plain", "wrapper"])
@pytest.mark.parametrize("fmt", [fmt for fmt, _ in SHRINKING])
@pytest.mark.parametrize("keep", [0.5, "one sector less"])
def test_a_file_cut_after_it_was_opened_is_never_safe(
    written: dict[str, Path], tmp_path: Path, fmt: str, opener: str, keep: Any
) -> None:
    path = tmp_path / written[fmt].name
    shutil.copy(written[fmt], path)
    size = path.stat().st_size
    cut = size - 512 if keep == "one sector less" else int(size * keep)
    fileobj: Any = path.open("rb") if opener == "plain" else PlainWrapper(path)
    with fileobj:
        source = SeekableSource(fileobj)  # the size is taken here, as introspect() does
        os.truncate(path, cut)
        with pytest.raises(ImageIntrospectError, match="truncated"):
            introspect_source(source, deep=True, expected_format=None)


# --- expected_format on a stream ---------------------------------------------------------------


def zero_chunks(size: int, chunk: int, delivered: list[int]) -> Iterator[bytes]:
    """``size`` zero bytes in ``chunk``-byte pieces, counting what was handed out."""
    for _ in range(size // chunk):
        delivered[0] += chunk
        yield bytes(chunk)


@pytest.mark.parametrize(
    ("expected", "within"),
    [("qcow2", 4096), ("qed", 4096), ("vhdx", 4096), ("vdi", 4096),
     # a wiped primary LUKS header leaves a LUKS2 secondary at 16 or 32 KiB to look for
     ("luks", 36864),
     ("vmdk", 65536), ("iso", 65536), ("ova", 65536)],
)  # fmt: skip
def test_expected_format_refused_as_soon_as_impossible(expected: str, within: int) -> None:
    """64 MiB of zeros announced as ``expected``: refused once the bytes that decide the
    format have arrived (its magic, or detection's 64 KiB head), not at the end."""
    delivered = [0]
    reader = InspectingReader(zero_chunks(64 * MiB, 4096, delivered), expected_format=expected)
    with pytest.raises(FormatMismatch):
        for _ in reader:
            pass
    assert delivered[0] <= within


def test_expected_format_still_accepts_the_format(images: Callable[[str], Path]) -> None:
    path = images("ova-pax-8g")
    data = path.read_bytes()
    reader = InspectingReader(
        (data[at : at + 4096] for at in range(0, len(data), 4096)), expected_format="ova"
    )
    for _ in reader:
        pass
    assert reader.metadata().format == "ova"


def test_expected_format_refused_early_by_introspect_too() -> None:
    counted = CountingStream(64 * MiB)
    with pytest.raises(FormatMismatch):
        introspect(counted, expected_format="qcow2")
    assert counted.delivered <= 256 * 1024  # one read of the stream (core.STREAM_READ)


class CountingStream:
    """``size`` zero bytes, forward-only, counting what was handed out."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.delivered = 0

    def read(self, size: int = -1) -> bytes:
        count = min(self.left, size if size and size > 0 else self.left)
        self.left -= count
        self.delivered += count
        return bytes(count)


# --- findings ----------------------------------------------------------------------------------


def test_findings_are_capped_in_all_and_keep_their_severity() -> None:
    from imageintrospect.findings import REGISTRY

    unsafe = sorted(code for code, info in REGISTRY.items() if info.severity == "unsafe")
    findings = Findings()
    for code in unsafe[:12]:
        for index in range(MAX_PER_CODE + 5):
            findings.add(code, f"{code} {index}")
    frozen = findings.freeze()
    listed = [f for f in frozen if "left out" not in f.message and "more like" not in f.message]
    assert len(listed) == MAX_FINDINGS
    assert {f.code for f in frozen} == set(unsafe[:12])  # every code still shows, as unsafe
    assert all(f.severity == "unsafe" for f in frozen)
