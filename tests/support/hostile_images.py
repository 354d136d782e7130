"""Hostile images that cost what they claim: absurd counts in small files.

Each builder takes a directory and a ``full`` flag and returns the image's path.  ``full``
is the size the benchmark measures (benchmarks/hostile.py); without it the image is the
smaller one the test suite builds (tests/test_hostile_costs.py: a few MiB, made in well
under a second each).  qcow2 images start from ``qemu-img create`` and have their tables
rewritten as the specification lays them out; the archives, VMDK streams and LUKS2 headers
are built from their specifications (no tool writes these shapes).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imageintrospect import ImageIntrospectError, introspect
from tests.support import vmware_stream as vs

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
BLOCK = 512

#: qemu's own limit on internal snapshots (QCOW_MAX_SNAPSHOTS).
QEMU_MAX_SNAPSHOTS = 65536

Builder = Callable[[Path, bool], Path]


def _qemu_img(*args: str | Path) -> None:
    tool = shutil.which("qemu-img")
    if tool is None:
        raise FileNotFoundError("qemu-img is not installed")
    subprocess.run([tool, *map(str, args)], check=True, capture_output=True)


def _qcow2_base(path: Path, size: str, cluster: int = 65536) -> dict[str, int]:
    """A qcow2 made by qemu-img; returns its header fields that the builders rewrite."""
    _qemu_img("create", "-q", "-f", "qcow2", "-o", f"cluster_size={cluster}", path, size)
    head = path.read_bytes()[:104]
    (l1_size, l1_offset, rt_offset, rt_clusters) = struct.unpack_from(">IQQI", head, 36)
    return {
        "l1_size": l1_size,
        "l1_offset": l1_offset,
        "refcount_table_offset": rt_offset,
        "refcount_table_clusters": rt_clusters,
        "cluster": cluster,
        "file_size": path.stat().st_size,
    }


def _append_aligned(path: Path, data: bytes, align: int) -> int:
    """Append ``data`` at the next multiple of ``align``; returns its offset."""
    with path.open("r+b") as f:
        end = f.seek(0, io.SEEK_END)
        at = -(-end // align) * align
        f.seek(at)
        f.write(data)
    return at


def _patch(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def snapshot_entry(index: int, l1_offset: int, l1_size: int) -> bytes:
    """One qcow2 snapshot table entry as qemu writes it (16 bytes of extra data)."""
    ident = str(index).encode()
    name = b"snap-%d" % index
    extra = struct.pack(">QQ", 0, 1 << 30)  # vm_state_size_large, disk_size
    fixed = struct.pack(
        ">QIHHIIQIIQ", l1_offset, l1_size, len(ident), len(name), 1_700_000_000 + index, 0,
        index, 0, len(extra), 0,
    )  # fmt: skip
    entry = fixed[:40] + extra + ident + name
    return entry + bytes(-len(entry) % 8)


def qcow2_snapshots(directory: Path, full: bool) -> Path:
    """qemu's maximum of 65,536 snapshots (about 5 MB of table), each sharing the active L1.
    The test image has the same count: the count is the point, and it is small."""
    path = directory / "snapshots.qcow2"
    base = _qcow2_base(path, "1G")
    table = b"".join(
        snapshot_entry(i, base["l1_offset"], base["l1_size"]) for i in range(QEMU_MAX_SNAPSHOTS)
    )
    at = _append_aligned(path, table, base["cluster"])
    _patch(path, 60, struct.pack(">IQ", QEMU_MAX_SNAPSHOTS, at))
    return path


def qcow2_shared_l2(directory: Path, full: bool) -> Path:
    """An L1 table of 1 M entries (2^20; 2^16 for the tests) all pointing at one L2 table
    whose every entry points at one data cluster."""
    entries = (1 << 20) if full else (1 << 16)
    cluster = 65536
    path = directory / "shared-l2.qcow2"
    base = _qcow2_base(path, str(entries * (cluster // 8) * cluster), cluster)
    data_at = _append_aligned(path, b"\xa5" * cluster, cluster)
    l2_at = _append_aligned(path, struct.pack(">Q", data_at | 1 << 63) * (cluster // 8), cluster)
    _patch(path, base["l1_offset"], struct.pack(">Q", l2_at | 1 << 63) * base["l1_size"])
    return path


def qcow2_refcount_loop(directory: Path, full: bool) -> Path:
    """Every refcount table entry points back at the refcount table itself."""
    path = directory / "refcount-loop.qcow2"
    base = _qcow2_base(path, "1G")
    clusters = 128 if full else 16
    table_at = _append_aligned(path, bytes(clusters * base["cluster"]), base["cluster"])
    _patch(path, table_at, struct.pack(">Q", table_at) * (clusters * base["cluster"] // 8))
    _patch(path, 48, struct.pack(">QI", table_at, clusters))
    return path


def tar_header(name: bytes, size: int, typeflag: bytes = b"0") -> bytes:
    """A ustar header block; sizes past 11 octal digits in GNU base-256."""
    header = bytearray(BLOCK)
    header[0 : min(len(name), 100)] = name[:100]
    header[100:108] = b"0000644\0"
    header[108:116] = b"0000000\0"
    header[116:124] = b"0000000\0"
    if size < 8**11:
        header[124:136] = b"%011o\0" % size
    else:
        header[124:136] = b"\x80" + size.to_bytes(11, "big")
    header[136:148] = b"00000000000\0"
    header[156:157] = typeflag
    header[257:265] = b"ustar\x0000"
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def _padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode() + body


OVF = (
    b'<?xml version="1.0"?><Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1">'
    b"<References/><DiskSection/></Envelope>"
)


def _ova_start() -> bytes:
    return tar_header(b"vm.ovf", len(OVF)) + _padded(OVF)


def ova_many_members(directory: Path, full: bool) -> Path:
    """An OVA of 10^5 empty members (10^4 for the tests) after its OVF."""
    count = 100_000 if full else 10_000
    path = directory / "members.ova"
    with path.open("wb") as f:
        f.write(_ova_start())
        for i in range(count):
            f.write(tar_header(b"m%06d" % i, 0))
        f.write(bytes(2 * BLOCK))
    return path


def ova_spread_members(directory: Path, full: bool) -> Path:
    """An OVA of 2,048 members of 64 KiB (256 for the tests), all named by the OVF, and the
    manifest of their digests last: 128 MiB in which a tar header arrives every 64 KiB, and
    a stream does not know which members the manifest names until the end."""
    count = 2048 if full else 256
    names = [b"m%06d" % i for i in range(count)]
    ovf = (
        b'<?xml version="1.0"?><Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" '
        b'xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"><References>'
        + b"".join(b'<File ovf:id="f%d" ovf:href="%s"/>' % (i, n) for i, n in enumerate(names))
        + b"</References><DiskSection/></Envelope>"
    )
    digest = hashlib.sha256(bytes(64 * KiB)).hexdigest().encode()
    manifest = b"".join(b"SHA256(%s)= %s\n" % (n, digest) for n in names)
    path = directory / "spread.ova"
    with path.open("wb") as f:
        f.write(tar_header(b"vm.ovf", len(ovf)) + _padded(ovf))
        for name in names:
            f.write(tar_header(name, 64 * KiB))
            f.seek(64 * KiB, os.SEEK_CUR)  # zeros, left sparse
        f.write(tar_header(b"vm.mf", len(manifest)) + _padded(manifest) + bytes(2 * BLOCK))
    return path


def ova_pax_huge(directory: Path, full: bool) -> Path:
    """A pax header whose ``size`` claims 8 GiB for a member whose header claims 0."""
    path = directory / "pax-8g.ova"
    pax = pax_record(b"size", str(8 * GiB).encode()) + pax_record(b"path", b"disk.vmdk")
    body = _ova_start() + tar_header(b"pax", len(pax), b"x") + _padded(pax)
    body += tar_header(b"disk.vmdk", 0) + bytes((64 if full else 8) * MiB) + bytes(2 * BLOCK)
    path.write_bytes(body)
    return path


def ova_gnu_huge(directory: Path, full: bool) -> Path:
    """A GNU long-name header claiming 8 GiB, then members whose names are 60 KiB long."""
    path = directory / "gnu-names.ova"
    long_name = b"n" * (60 * KiB)
    count = 1000 if full else 100
    with path.open("wb") as f:
        f.write(_ova_start())
        for i in range(count):
            name = long_name[:-8] + b"%08d" % i
            f.write(tar_header(b"././@LongLink", len(name) + 1, b"L") + _padded(name + b"\0"))
            f.write(tar_header(b"short", 0))
        f.write(tar_header(b"././@LongLink", 8 * GiB, b"L"))
        f.write(bytes(2 * BLOCK))
    return path


def ova_disk_named_often(directory: Path, full: bool) -> Path:
    """An OVF whose 1,000 Disk elements all name one qcow2 member (the shared-L2 image)."""
    disk = qcow2_shared_l2(directory, full).read_bytes()
    count = 1000
    ovf = (
        b'<?xml version="1.0"?><Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" '
        b'xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"><References>'
        b'<File ovf:id="f" ovf:href="disk.qcow2"/></References><DiskSection>'
        + b"".join(b'<Disk ovf:diskId="d%d" ovf:fileRef="f"/>' % i for i in range(count))
        + b"</DiskSection></Envelope>"
    )
    path = directory / "disk-named-often.ova"
    path.write_bytes(
        tar_header(b"vm.ovf", len(ovf)) + _padded(ovf)
        + tar_header(b"disk.qcow2", len(disk)) + _padded(disk) + bytes(2 * BLOCK)
    )  # fmt: skip
    return path


def ova_big_descriptor(directory: Path, full: bool) -> Path:
    """An OVF of almost 4 MiB (a comment) and a manifest of 1 MiB: the largest read whole."""
    ovf = b'<?xml version="1.0"?><Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1">'
    ovf += b"<!--" + b"x" * (4 * MiB - 200) + b"--></Envelope>"
    line = b"SHA256(m)= " + b"0" * 64 + b"\n"
    manifest = line * (MiB // len(line))
    path = directory / "big-descriptor.ova"
    path.write_bytes(
        tar_header(b"vm.ovf", len(ovf)) + _padded(ovf)
        + tar_header(b"vm.mf", len(manifest)) + _padded(manifest) + bytes(2 * BLOCK)
    )  # fmt: skip
    return path


def vmdk_many_markers(directory: Path, full: bool) -> Path:
    """A streamOptimized VMDK of 10^6 grain markers (2^15 for the tests), each one sector:
    every grain of a 64 GiB disk (4 GiB for the tests) is a compressed zero grain."""
    count = 1_000_000 if full else 1 << 15
    grain = 128  # sectors
    capacity = count * grain
    zero_grain = zlib.compress(bytes(grain * BLOCK), 9)
    layout = vs.build_stream(capacity, {0: b"\0"})  # a valid skeleton for the header
    path = directory / "markers.vmdk"
    per_gt = 512
    gd: list[int] = []
    with path.open("wb") as f:
        head = bytearray(layout.data[: layout.grain_offsets[0]])
        f.write(head)
        for table in range(-(-count // per_gt)):
            gt = []
            for index in range(table * per_gt, min(count, (table + 1) * per_gt)):
                gt.append(f.tell() // BLOCK)
                marker = struct.pack("<QI", index * grain, len(zero_grain)) + zero_grain
                f.write(_padded(marker))
            gt_blob = _padded(struct.pack(f"<{per_gt}I", *gt, *[0] * (per_gt - len(gt))))
            f.write(vs.metadata_marker(vs.MARKER_GT, len(gt_blob) // BLOCK))
            gd.append(f.tell() // BLOCK)
            f.write(gt_blob)
        gd_blob = _padded(struct.pack(f"<{len(gd)}I", *gd))
        f.write(vs.metadata_marker(vs.MARKER_GD, len(gd_blob) // BLOCK))
        gd_at = f.tell() // BLOCK
        f.write(gd_blob)
        f.write(vs.metadata_marker(vs.MARKER_FOOTER, 1))
        footer = bytearray(layout.data[:BLOCK])
        struct.pack_into("<Q", footer, 56, gd_at)  # gdOffset
        f.write(footer)
        f.write(vs.metadata_marker(vs.MARKER_EOS, 0))
    return path


def luks2_deep_json(directory: Path, full: bool) -> Path:
    """A LUKS2 header whose JSON area (4 MiB; 1 MiB for the tests) is one array nested as
    deep as the area allows."""
    hdr_size = (4 if full else 1) * MiB
    depth = (hdr_size - 4096 - 2) // 2
    text = b"[" * depth + b"]" * depth
    binary = bytearray(4096)
    struct.pack_into(">6sHQQ48s32s", binary, 0, b"LUKS\xba\xbe", 2, hdr_size, 1, b"", b"sha256")
    whole = bytearray(bytes(binary) + text.ljust(hdr_size - 4096, b"\0"))
    whole[448:480] = hashlib.sha256(bytes(whole)).digest()
    path = directory / "deep.luks"
    path.write_bytes(bytes(whole) * 2 + bytes(MiB))
    return path


def not_qcow2(directory: Path, full: bool) -> Path:
    """64 MiB (8 MiB for the tests) of bytes that no format claims: the stream a caller
    announced as qcow2."""
    path = directory / "not-qcow2.raw"
    with path.open("wb") as f:
        f.truncate((64 if full else 8) * MiB)
    return path


class FileStream:
    """A forward-only reader of a file (no seek, no tell), that holds none of its bytes."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("rb")

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)

    def close(self) -> None:
        self._file.close()


def read(path: Path, mode: str) -> Any:
    """The answer for ``path`` read in ``mode``, or the error's class name."""
    try:
        if mode == "seekable":
            return introspect(path)
        if mode == "header":
            return introspect(path, deep=False)
        stream = FileStream(path)
        try:
            return introspect(stream)
        finally:
            stream.close()
    except ImageIntrospectError as exc:
        return type(exc).__name__


#: Every case, by name.
CASES: dict[str, Builder] = {
    "qcow2-snapshots": qcow2_snapshots,
    "qcow2-shared-l2": qcow2_shared_l2,
    "qcow2-refcount-loop": qcow2_refcount_loop,
    "ova-members": ova_many_members,
    "ova-spread-members": ova_spread_members,
    "ova-pax-8g": ova_pax_huge,
    "ova-gnu-names": ova_gnu_huge,
    "ova-disk-named-often": ova_disk_named_often,
    "ova-big-descriptor": ova_big_descriptor,
    "vmdk-markers": vmdk_many_markers,
    "luks2-deep-json": luks2_deep_json,
    "not-qcow2": not_qcow2,
}


def build(name: str, directory: Path, full: bool = False) -> Path:
    """Build case ``name`` in ``directory``."""
    os.makedirs(directory, exist_ok=True)
    return CASES[name](directory, full)


__all__ = ["CASES", "FileStream", "build", "read", "snapshot_entry", "tar_header"]
