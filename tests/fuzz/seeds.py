"""Seed images, made once per session, and where each one's fields lie.

Images come from the tools that write them in the wild (qemu-img, qemu-io, xorriso,
mkudffs, mkfs.vfat, sgdisk) or, where no tool on the machine writes the layout (VMware's
stream, LUKS2 without cryptsetup's slow key derivation, COWD, seSparse, OVA), are built here
from the specification.  Field offsets come from the format modules' construct schemas
plus the seed's own pointers (an L1 table is where the header says it is).

Every seed is kept small (at most a few MiB, mostly zeros) so an example costs milliseconds.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import shutil
import struct
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from imageintrospect.crc32c import crc32c
from imageintrospect.formats import iso, luks, ova, partitions, qcow2, qed, vdi, vhd, vhdx, vmdk
from tests.support import vmware_stream as vs

from .strategies import (
    KIB,
    MIB,
    Field,
    Seed,
    fields_of,
    seal_vhd_dynamic_header,
    seal_vhd_footer,
    table_fields,
)

SECTOR = 512


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


def _run(*args: str | Path) -> None:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{args[0]} failed: {(proc.stderr or proc.stdout).strip()}")


@contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ii-fuzz-") as tmp:
        yield Path(tmp)


def _qemu_img(*args: str | Path) -> None:
    _run(_tool("qemu-img"), *args)


def _qemu_img_timed(*args: str | Path) -> None:
    """``qemu-img create`` of something with a LUKS key slot: qemu times PBKDF2 first, and on
    a busy machine too short an ``{iter}`` fails ("Unable to get accurate CPU usage")."""
    for iter_time in (10, 100, 10, 1000, 10):
        try:
            _qemu_img(*(str(a).format(iter=iter_time) for a in args))
            return
        except AssertionError as exc:
            error = exc
    raise error


def _qemu_write(path: Path, fmt: str, *commands: str) -> None:
    args: list[str | Path] = [_tool("qemu-io"), "-f", fmt]
    for command in commands:
        args += ["-c", command]
    _run(*args, path)


def _u32(data: bytes, at: int, order: str = "big") -> int:
    return int.from_bytes(data[at : at + 4], order)  # type: ignore[arg-type]


def _u64(data: bytes, at: int, order: str = "big") -> int:
    return int.from_bytes(data[at : at + 8], order)  # type: ignore[arg-type]


# --- qcow2 ---------------------------------------------------------------------------------

L2_OFFSET_MASK = 0x00FFFFFFFFFFFE00


def qcow2_seed(name: str, data: bytes) -> Seed:
    fields = fields_of(qcow2.HEADER_V2, 0)
    version = _u32(data, 4)
    header_length = qcow2.V2_HEADER_LENGTH
    if version >= 3:
        fields += fields_of(qcow2.HEADER_V3_TAIL, 72)
        header_length = _u32(data, 100)
        if header_length > 104:
            fields.append(Field("compression_type", 104, 1, "big"))
    cluster_size = 1 << _u32(data, 20)
    boundaries = [72, 104, header_length, cluster_size]
    hot = [(0, min(cluster_size, len(data)))]
    # Header extensions: each one's type and length, and what the known ones hold.
    at, index = header_length, 0
    while at + 8 <= min(len(data), cluster_size) and index < 16:
        kind, length = struct.unpack_from(">II", data, at)
        fields += fields_of(qcow2.EXTENSION_HEADER, at, f"ext[{index}].")
        body = at + 8
        if kind == qcow2.EXT_BITMAPS:
            fields += fields_of(qcow2.BITMAPS_EXTENSION, body, "bitmaps.")
            directory = _u64(data, body + 16)
            fields += fields_of(qcow2.BITMAP_DIRECTORY_ENTRY, directory, "bitmap[0].")
            hot.append((directory, 64))
        elif kind == qcow2.EXT_ENCRYPTION:
            fields += fields_of(qcow2.ENCRYPTION_POINTER, body, "crypto.")
            header_at = _u64(data, body)
            fields += [
                Field(f"crypto.{f.name}", header_at + f.offset, f.size, f.order)
                for f in fields_of(luks.HEADER_V1, 0)
            ]
        elif kind == qcow2.EXT_FEATURE_TABLE:
            fields += fields_of(qcow2.FEATURE_NAME, body, "feature[0].")
        boundaries.append(body + length)
        if kind == qcow2.EXT_END:
            break
        at = body + (length + 7) // 8 * 8
        index += 1
    l1_offset, l1_size = _u64(data, 40), _u32(data, 36)
    fields += table_fields("l1", l1_offset, 8, min(l1_size, 4), "big")
    hot.append((l1_offset, 8 * max(1, min(l1_size, 64))))
    boundaries += [l1_offset, l1_offset + 8 * l1_size]
    l2_offset = _u64(data, l1_offset) & L2_OFFSET_MASK if l1_size else 0
    if l2_offset:
        fields += table_fields("l2", l2_offset, 8, 8, "big")
        hot.append((l2_offset, 256))
    refcount_offset = _u64(data, 48)
    fields += table_fields("reftable", refcount_offset, 8, 2, "big")
    block = _u64(data, refcount_offset) if refcount_offset < len(data) else 0
    if block:
        fields += table_fields("refblock", block, 2, 4, "big")
    boundaries += [refcount_offset, block]
    if _u32(data, 60):
        snapshots = _u64(data, 64)
        fields += fields_of(qcow2.SNAPSHOT_ENTRY, snapshots, "snapshot[0].")
        hot.append((snapshots, 128))
        boundaries.append(snapshots + qcow2.SNAPSHOT_ENTRY_SIZE)
    backing_at, backing_len = _u64(data, 8), _u32(data, 16)
    if backing_at:
        hot.append((backing_at, backing_len))
    return Seed(name, data, tuple(fields), None, tuple(hot), tuple(b for b in boundaries if b))


@functools.cache
def qcow2_seeds() -> tuple[Seed, ...]:
    made = []
    with _workdir() as tmp:
        variants: dict[str, tuple[str, ...]] = {
            "qcow2-v3": (),
            "qcow2-v2-4k": ("-o", "compat=0.10,cluster_size=4096"),
            "qcow2-backing": ("-u", "-b", "base.img", "-F", "raw"),
            "qcow2-extl2-zstd": ("-o", "extended_l2=on,compression_type=zstd,cluster_size=16k"),
            "qcow2-data-file": ("-o", f"data_file={tmp / 'data.raw'}"),
            "qcow2-lazy-512": ("-o", "lazy_refcounts=on,cluster_size=512,refcount_bits=64"),
        }
        for name, options in variants.items():
            path = tmp / f"{name}.qcow2"
            _qemu_img("create", "-q", "-f", "qcow2", *options, path, "4M")
            if name != "qcow2-backing":
                _qemu_write(path, "qcow2", "write -P 0x11 0 64k", "write -P 0x22 1M 4k")
            made.append((name, path))
        snap = tmp / "snap.qcow2"
        _qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", snap, "1M")
        _qemu_write(snap, "qcow2", "write -P 0x33 0 8k")
        _qemu_img("snapshot", "-c", "first", snap)
        _qemu_img("snapshot", "-c", "second snapshot", snap)
        _qemu_img("bitmap", "--add", snap, "dirty0")
        made.append(("qcow2-snapshots-bitmap", snap))
        enc = tmp / "enc.qcow2"
        with contextlib.suppress(AssertionError):  # qemu's PBKDF2 timing is flaky when busy
            _qemu_img_timed(
                "create",
                "-q",
                "--object",
                "secret,id=s0,data=pw",
                "-f",
                "qcow2",
                "-o",
                "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time={iter}",
                enc,
                "1M",
            )
            made.append(("qcow2-luks", enc))
        return tuple(qcow2_seed(name, path.read_bytes()) for name, path in made)


# --- VMDK ----------------------------------------------------------------------------------


def vmdk_sparse_seed(name: str, data: bytes) -> Seed:
    fields = fields_of(vmdk.SPARSE_HEADER, 0)
    desc_at, desc_len = _u64(data, 28, "little") * SECTOR, _u64(data, 36, "little") * SECTOR
    gd_at = _u64(data, 56, "little") * SECTOR
    rgd_at = _u64(data, 48, "little") * SECTOR
    hot = [(0, SECTOR), (desc_at, desc_len)]
    boundaries = [SECTOR, desc_at + desc_len, _u64(data, 64, "little") * SECTOR]
    for label, at in (("gd", gd_at), ("rgd", rgd_at)):
        if 0 < at < len(data):
            fields += table_fields(label, at, 4, 4, "little")
            hot.append((at, 64))
            boundaries.append(at)
            gt_at = _u32(data, at, "little") * SECTOR
            if 0 < gt_at < len(data):
                fields += table_fields(f"{label}.gt", gt_at, 4, 8, "little")
                hot.append((gt_at, 64))
    overhead = _u64(data, 64, "little") * SECTOR
    if _u32(data, 8, "little") & vs.FLAG_MARKERS and overhead < len(data):
        fields += fields_of(vmdk.GRAIN_MARKER, overhead, "grain[0].")
        hot.append((overhead, 64))
    return Seed(name, data, tuple(fields), None, tuple(hot), tuple(boundaries))


def vmware_stream_seed() -> Seed:
    layout = vs.build_stream(8192, {0: b"\x01" * 4096, 5: b"grain five", 300: b"x" * 100})
    data = layout.data
    fields = fields_of(vmdk.SPARSE_HEADER, 0)
    hot = [(0, SECTOR), (layout.descriptor_offset, SECTOR)]
    boundaries = [SECTOR, layout.gd_offset]
    for index, at in layout.grain_offsets.items():
        fields += fields_of(vmdk.GRAIN_MARKER, at, f"grain[{index}].")
        boundaries.append(at)
    for table, at in layout.gt_offsets.items():
        fields += fields_of(vmdk.METADATA_MARKER, at - SECTOR, f"gt[{table}].marker.")
        fields += table_fields(f"gt[{table}]", at, 4, 8, "little")
        hot.append((at - SECTOR, 2 * SECTOR))
    fields += fields_of(vmdk.METADATA_MARKER, layout.gd_offset - SECTOR, "gd.marker.")
    fields += table_fields("gd", layout.gd_offset, 4, 4, "little")
    for label, at in (("footer.marker", layout.footer_marker_offset), ("eos", layout.eos_offset)):
        assert at is not None
        fields += fields_of(vmdk.METADATA_MARKER, at, f"{label}.")
        boundaries.append(at)
    assert layout.footer_offset is not None
    fields += fields_of(vmdk.SPARSE_HEADER, layout.footer_offset, "footer.")
    hot.append((len(data) - 3 * SECTOR, 3 * SECTOR))
    return Seed("vmdk-vmware-stream", data, tuple(fields), None, tuple(hot), tuple(boundaries))


def cowd_seed() -> Seed:
    header = vmdk.COWD_HEADER.schema.build(
        {
            "version": 1,
            "flags": 3,
            "num_sectors": 8192,
            "grain_size": 1,
            "gd_offset": 4,
            "num_gd_entries": 2,
            "free_sector": 6,
            "parent_or_geometry": struct.pack("<III", 8, 16, 63).ljust(1024, b"\0"),
            "parent_generation": 0,
            "generation": 1,
            "name": b"disk".ljust(60, b"\0"),
            "description": b"".ljust(512, b"\0"),
            "saved_generation": 0,
            "reserved": bytes(8),
            "unclean_shutdown": 0,
        }
    )
    data = header.ljust(vmdk.COWD_HEADER_SIZE, b"\0") + bytes(4 * SECTOR)
    fields = fields_of(vmdk.COWD_HEADER, 0)
    return Seed("vmdk-cowd", data, tuple(fields), None, ((0, 2048),), (2048,))


def sesparse_seed() -> Seed:
    values = dict.fromkeys(vmdk.SESPARSE_HEADER.names, 0)
    values.update(
        magic=0xCAFEBABE,
        version=vmdk.SESPARSE_VERSION,
        capacity=8192,
        grain_size=8,
        grain_table_size=64,
        reserved=[0, 0, 0, 0],
        volatile_header_offset=1,
        volatile_header_size=1,
        grain_dir_offset=8,
        grain_dir_size=1,
        grain_tables_offset=16,
        grain_tables_size=64,
        grains_offset=128,
        grains_size=64,
    )
    data = vmdk.SESPARSE_HEADER.schema.build(values).ljust(64 * KIB, b"\0")
    fields = fields_of(vmdk.SESPARSE_HEADER, 0)
    return Seed("vmdk-sesparse", data, tuple(fields), None, ((0, 512),), (512,))


@functools.cache
def vmdk_seeds() -> tuple[Seed, ...]:
    out = []
    with _workdir() as tmp:
        for sub in ("monolithicSparse", "streamOptimized"):
            path = tmp / f"{sub}.vmdk"
            _qemu_img("create", "-q", "-f", "vmdk", "-o", f"subformat={sub}", path, "4M")
            _qemu_write(path, "vmdk", "write -P 0x5a 0 128k", "write -P 0x6b 2M 64k")
            out.append(vmdk_sparse_seed(f"vmdk-{sub}", path.read_bytes()))
        child = tmp / "child.vmdk"
        _qemu_img("create", "-q", "-f", "vmdk", tmp / "parent.vmdk", "4M")
        _qemu_img("create", "-q", "-f", "vmdk", "-b", "parent.vmdk", "-F", "vmdk", child)
        out.append(vmdk_sparse_seed("vmdk-child", child.read_bytes()))
    out += [vmware_stream_seed(), cowd_seed(), sesparse_seed()]
    return tuple(out)


@functools.cache
def vmdk_descriptors() -> tuple[str, ...]:
    """Descriptor texts as producers write them: what the text strategy edits."""
    texts = []
    with _workdir() as tmp:
        for sub in ("monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat"):
            path = tmp / f"{sub}.vmdk"
            _qemu_img("create", "-q", "-f", "vmdk", "-o", f"subformat={sub}", path, "3M")
            texts.append(path.read_text(encoding="utf-8"))
    texts.append(vs.vmware_descriptor(capacity=8192))
    texts.append(vs.virtualbox_descriptor(capacity=8192))
    return tuple(texts)


# --- VHD -----------------------------------------------------------------------------------


def _seal_vhd(data: bytearray) -> None:
    """Re-seal both footer copies and the dynamic header the footer points at."""
    if len(data) >= SECTOR:
        seal_vhd_footer(data, len(data) - SECTOR)
    if data[:8] == b"conectix":
        seal_vhd_footer(data, 0)
        header_at = _u64(bytes(data), 16)
        if header_at + 1024 <= len(data):
            seal_vhd_dynamic_header(data, header_at)


def vhd_seed(name: str, data: bytes) -> Seed:
    end = len(data) - SECTOR
    fields = fields_of(vhd.FOOTER, end, "footer.")
    hot = [(end, SECTOR)]
    boundaries = [end]
    if data[:8] == b"conectix":
        fields += fields_of(vhd.FOOTER, 0, "head.")
        header_at = _u64(data, 16)
        fields += fields_of(vhd.DYNAMIC_HEADER, header_at, "dyn.")
        bat_at = _u64(data, header_at + 16)
        fields += table_fields("bat", bat_at, 4, 4, "big")
        hot += [(0, SECTOR), (header_at, 1024), (bat_at, 64)]
        boundaries += [SECTOR, header_at + 1024, bat_at, bat_at + 4 * _u32(data, header_at + 28)]
    return Seed(name, data, tuple(fields), _seal_vhd, tuple(hot), tuple(boundaries))


def _with_parent(data: bytes) -> bytes:
    """A dynamic VHD turned differencing: type 4, a parent name, and two parent locators
    whose paths sit in a sector inserted before the footer."""
    header_at = _u64(data, 16)
    body, footer = bytearray(data[:-SECTOR]), bytearray(data[-SECTOR:])
    data_at = len(body)
    path_w2ku = "C:\\images\\parent disk.vhd".encode("utf-16-le")
    path_w2ru = ".\\parent disk.vhd".encode("utf-16-le")
    body += (path_w2ku.ljust(256, b"\0") + path_w2ru).ljust(SECTOR, b"\0")
    out = body + footer
    for footer_at in (0, len(out) - SECTOR):
        struct.pack_into(">I", out, footer_at + 60, 4)
    name = "parent disk.vhd".encode("utf-16-be")
    out[header_at + 64 : header_at + 64 + len(name)] = name
    for index, (code, text, at) in enumerate(
        ((b"W2ku", path_w2ku, data_at), (b"W2ru", path_w2ru, data_at + 256))
    ):
        struct.pack_into(">4sIIIQ", out, header_at + 576 + 24 * index, code, 1, len(text), 0, at)
    _seal_vhd(out)
    return bytes(out)


@functools.cache
def vhd_seeds() -> tuple[Seed, ...]:
    out = []
    with _workdir() as tmp:
        dynamic = tmp / "dynamic.vhd"
        _qemu_img("create", "-q", "-f", "vpc", dynamic, "4M")
        _qemu_write(dynamic, "vpc", "write -P 0x44 0 64k")
        out.append(vhd_seed("vhd-dynamic", dynamic.read_bytes()))
        fixed = tmp / "fixed.vhd"
        _qemu_img("create", "-q", "-f", "vpc", "-o", "subformat=fixed", fixed, "512K")
        out.append(vhd_seed("vhd-fixed", fixed.read_bytes()))
    out.append(vhd_seed("vhd-differencing", _with_parent(out[0].data)))
    return tuple(out)


# --- VHDX ----------------------------------------------------------------------------------

VHDX_HEADERS = (64 * KIB, 128 * KIB)
VHDX_REGION_TABLES = (192 * KIB, 256 * KIB)


def _seal_vhdx(data: bytearray) -> None:
    for at, length in [(h, 4 * KIB) for h in VHDX_HEADERS] + [
        (r, 64 * KIB) for r in VHDX_REGION_TABLES
    ]:
        if at + length <= len(data):
            data[at + 4 : at + 8] = bytes(4)
            data[at + 4 : at + 8] = struct.pack("<I", crc32c(bytes(data[at : at + length])))


def vhdx_seed(name: str, data: bytes) -> Seed:
    fields: list[Field] = []
    hot = [(0, 512)]
    boundaries = [64 * KIB, 192 * KIB, 320 * KIB, 1 * MIB]
    for index, at in enumerate(VHDX_HEADERS):
        fields += fields_of(vhdx.HEADER, at, f"header[{index}].")
        hot.append((at, 128))
    regions: dict[bytes, tuple[int, int]] = {}
    for index, at in enumerate(VHDX_REGION_TABLES):
        fields += fields_of(vhdx.REGION_TABLE_HEADER, at, f"regions[{index}].")
        count = _u32(data, at + 8, "little")
        for entry in range(min(count, 4)):
            entry_at = at + 16 + 32 * entry
            fields += fields_of(vhdx.REGION_ENTRY, entry_at, f"regions[{index}][{entry}].")
            guid = data[entry_at : entry_at + 16]
            regions[guid] = (
                _u64(data, entry_at + 16, "little"),
                _u32(data, entry_at + 24, "little"),
            )
        hot.append((at, 16 + 32 * max(count, 1)))
    metadata = regions.get(vhdx.METADATA_REGION.bytes_le)
    if metadata is not None:
        meta_at, meta_len = metadata
        fields += fields_of(vhdx.METADATA_TABLE_HEADER, meta_at, "metadata.")
        count = int.from_bytes(data[meta_at + 10 : meta_at + 12], "little")
        for entry in range(min(count, 8)):
            entry_at = meta_at + 32 + 32 * entry
            fields += fields_of(vhdx.METADATA_ENTRY, entry_at, f"metadata[{entry}].")
            item_at = meta_at + _u32(data, entry_at + 16, "little")
            item_len = _u32(data, entry_at + 20, "little")
            fields += table_fields(f"item[{entry}]", item_at, 4, min(item_len, 16) // 4, "little")
            if item_len == 8:
                fields.append(Field(f"item[{entry}].u64", item_at, 8, "little"))
            hot.append((item_at, min(item_len, 64)))
        hot.append((meta_at, 32 + 32 * max(count, 1)))
        boundaries += [meta_at, meta_at + meta_len]
    bat = regions.get(vhdx.BAT_REGION.bytes_le)
    if bat is not None:
        fields += table_fields("bat", bat[0], 8, 4, "little")
        hot.append((bat[0], 64))
        boundaries += [bat[0], bat[0] + bat[1]]
    return Seed(name, data, tuple(fields), _seal_vhdx, tuple(hot), tuple(boundaries))


@functools.cache
def vhdx_seeds() -> tuple[Seed, ...]:
    out = []
    with _workdir() as tmp:
        for name, options in (
            ("vhdx-1m-blocks", ("-o", "block_size=1M,log_size=1M")),
            ("vhdx-fixed", ("-o", "subformat=fixed,block_size=1M,log_size=1M")),
        ):
            path = tmp / f"{name}.vhdx"
            size = "1M" if "fixed" in name else "3M"
            _qemu_img("create", "-q", "-f", "vhdx", *options, path, size)
            if "fixed" not in name:
                _qemu_write(path, "vhdx", "write -P 0x55 0 64k")
            out.append(vhdx_seed(name, path.read_bytes()))
    return tuple(out)


# --- VDI, QED ------------------------------------------------------------------------------


def vdi_seed(name: str, data: bytes) -> Seed:
    fields = fields_of(vdi.PREHEADER, 0) + fields_of(vdi.HEADER_V1, vdi.PREHEADER_SIZE)
    map_at = _u32(data, 0x154, "little")
    fields += table_fields("blockmap", map_at, 4, 4, "little")
    return Seed(
        name,
        data,
        tuple(fields),
        None,
        ((0x40, 0x1C0), (map_at, 64)),
        (0x48, 0x180, 0x200, map_at, _u32(data, 0x158, "little")),
    )


@functools.cache
def vdi_seeds() -> tuple[Seed, ...]:
    out = []
    with _workdir() as tmp:
        for name, options in (("vdi-dynamic", ()), ("vdi-static", ("-o", "static=on"))):
            path = tmp / f"{name}.vdi"
            _qemu_img("create", "-q", "-f", "vdi", *options, path, "2M")
            _qemu_write(path, "vdi", "write -P 0x66 0 4k")
            out.append(vdi_seed(name, path.read_bytes()))
    return tuple(out)


def qed_seed(name: str, data: bytes) -> Seed:
    fields = fields_of(qed.HEADER, 0)
    l1_at = _u64(data, 40, "little")
    fields += table_fields("l1", l1_at, 8, 4, "little")
    name_at, name_len = _u32(data, 56, "little"), _u32(data, 60, "little")
    hot = [(0, 64), (l1_at, 64)] + ([(name_at, name_len)] if name_at else [])
    return Seed(name, data, tuple(fields), None, tuple(hot), (64, l1_at, name_at + name_len))


@functools.cache
def qed_seeds() -> tuple[Seed, ...]:
    out = []
    with _workdir() as tmp:
        plain = tmp / "plain.qed"
        _qemu_img("create", "-q", "-f", "qed", plain, "4M")
        _qemu_write(plain, "qed", "write -P 0x77 0 64k")
        out.append(qed_seed("qed", plain.read_bytes()))
        child = tmp / "child.qed"
        _qemu_img("create", "-q", "-f", "qed", "-u", "-b", "base.raw", "-F", "raw", child, "4M")
        out.append(qed_seed("qed-backing", child.read_bytes()))
    return tuple(out)


# --- LUKS ----------------------------------------------------------------------------------

LUKS2_HDR_SIZE = 16 * KIB


def luks2_metadata() -> dict[str, object]:
    """A LUKS2 JSON area as cryptsetup writes it (one pbkdf2 key slot, one segment)."""
    salt = "c2FsdHNhbHRzYWx0c2FsdHNhbHRzYWx0c2FsdHNhbHQ="
    return {
        "keyslots": {
            "0": {
                "type": "luks2",
                "key_size": 64,
                "af": {"type": "luks1", "stripes": 4000, "hash": "sha256"},
                "area": {
                    "type": "raw",
                    "offset": "32768",
                    "size": "258048",
                    "encryption": "aes-xts-plain64",
                    "key_size": 64,
                },
                "kdf": {"type": "pbkdf2", "hash": "sha256", "iterations": 1000, "salt": salt},
            }
        },
        "tokens": {},
        "segments": {
            "0": {
                "type": "crypt",
                "offset": "327680",
                "size": "dynamic",
                "iv_tweak": "0",
                "encryption": "aes-xts-plain64",
                "sector_size": 512,
            }
        },
        "digests": {
            "0": {
                "type": "pbkdf2",
                "keyslots": ["0"],
                "segments": ["0"],
                "hash": "sha256",
                "iterations": 1000,
                "salt": salt,
                "digest": salt,
            }
        },
        "config": {"json_size": "12288", "keyslots_size": "294912"},
    }


def luks2_header(json_text: bytes, *, hdr_size: int = LUKS2_HDR_SIZE, offset: int = 0) -> bytes:
    """One LUKS2 header copy (binary header + JSON area) with its checksum sealed."""
    binary = bytearray(4096)
    struct.pack_into(">6sHQQ48s32s", binary, 0, b"LUKS\xba\xbe", 2, hdr_size, 1, b"fuzz", b"sha256")
    binary[168:204] = b"0b6e8f7c-5b7e-4c8e-9d1a-1f2e3d4c5b6a"
    struct.pack_into(">Q", binary, 256, offset)
    whole = bytearray(bytes(binary) + json_text.ljust(hdr_size - 4096, b"\0")[: hdr_size - 4096])
    seal_luks2(whole, 0)
    return bytes(whole)


def seal_luks2(data: bytearray, at: int) -> None:
    """Recompute the SHA-256 checksum of the LUKS2 header copy at ``at``."""
    if at + 4096 > len(data) or data[at : at + 6] != b"LUKS\xba\xbe":
        return
    size = _u64(bytes(data), at + 8)
    if size > 4 * MIB or at + size > len(data):
        return
    data[at + 448 : at + 512] = bytes(64)
    digest = hashlib.sha256(bytes(data[at : at + size])).digest()
    data[at + 448 : at + 448 + 32] = digest


def luks2_image(json_text: bytes) -> bytes:
    """Primary and secondary header, key area, a little payload."""
    primary = luks2_header(json_text)
    secondary = luks2_header(json_text, offset=LUKS2_HDR_SIZE)
    return (primary + secondary).ljust(327680 + 64 * KIB, b"\0")


def _seal_luks(data: bytearray) -> None:
    """Re-seal the primary copy and the secondary one where the primary says it is."""
    seal_luks2(data, 0)
    if len(data) >= 16:
        seal_luks2(data, _u64(bytes(data), 8))


def luks2_seed() -> Seed:
    data = luks2_image(json.dumps(luks2_metadata()).encode())
    fields = fields_of(luks.HEADER_V2, 0, "primary.") + fields_of(
        luks.HEADER_V2, LUKS2_HDR_SIZE, "secondary."
    )
    hot = ((0, 512), (4096, 1024), (LUKS2_HDR_SIZE, 512))
    return Seed(
        "luks2", data, tuple(fields), _seal_luks, hot, (4096, LUKS2_HDR_SIZE, 2 * LUKS2_HDR_SIZE)
    )


def luks1_header() -> bytes:
    """A LUKS1 header as cryptsetup lays it out (aes-xts-plain64, sha256, one active slot),
    for machines where qemu-img cannot time its key derivation."""
    header = bytearray(4096)
    struct.pack_into(
        ">6sH32s32s32sII20s32sI40s",
        header,
        0,
        b"LUKS\xba\xbe",
        1,
        b"aes",
        b"xts-plain64",
        b"sha256",
        4096,  # payload offset, sectors
        64,  # key bytes
        bytes(range(20)),
        bytes(range(32)),
        1000,
        b"0b6e8f7c-5b7e-4c8e-9d1a-1f2e3d4c5b6a",
    )
    for slot in range(8):
        active = slot == 0
        struct.pack_into(
            ">II32sII",
            header,
            208 + 48 * slot,
            0x00AC71F3 if active else 0x0000DEAD,
            1000 if active else 0,
            bytes(32),
            8 + slot * 504,  # key material, sectors (4000 stripes x 64 bytes, aligned)
            4000,
        )
    return bytes(header).ljust(4096 * SECTOR + 64 * KIB, b"\0")


@functools.cache
def luks_seeds() -> tuple[Seed, ...]:
    with _workdir() as tmp:
        path = tmp / "v1.luks"
        try:
            _qemu_img_timed(
                "create",
                "-q",
                "--object",
                "secret,id=s0,data=pw",
                "-f",
                "luks",
                "-o",
                "key-secret=s0,iter-time={iter}",
                path,
                "64K",
            )
            data = path.read_bytes()
        except AssertionError:  # qemu's PBKDF2 timing is flaky on a busy machine
            data = luks1_header()
    fields = fields_of(luks.HEADER_V1, 0)
    payload = _u32(data, 104) * SECTOR
    v1 = Seed("luks1", data, tuple(fields), None, ((0, 592),), (592, 4096, payload))
    return (v1, luks2_seed())


# --- ISO, partition tables -----------------------------------------------------------------

ISO_BLOCK = 2048


def _udf_crc(data: bytes) -> int:
    """CRC-16/CCITT (x^16 + x^12 + x^5 + 1, initial 0), as UDF descriptor tags use."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _seal_udf_tag(data: bytearray, at: int) -> None:
    if at + 16 > len(data):
        return
    length = int.from_bytes(data[at + 10 : at + 12], "little")
    body = bytes(data[at + 16 : at + 16 + length])
    data[at + 8 : at + 10] = _udf_crc(body).to_bytes(2, "little")
    data[at + 4] = (sum(data[at : at + 4]) + sum(data[at + 5 : at + 16])) & 0xFF


def _descriptor_sectors(data: bytes) -> Iterator[tuple[int, int]]:
    """(offset, type) of each ISO 9660 volume descriptor, up to the terminator."""
    at = 16 * ISO_BLOCK
    while at + ISO_BLOCK <= len(data) and data[at + 1 : at + 6] == b"CD001":
        yield at, data[at]
        if data[at] == 255:
            return
        at += ISO_BLOCK


def iso_seed(name: str, data: bytes, block: int = ISO_BLOCK) -> Seed:
    fields: list[Field] = []
    hot = [(446, 66)]
    boundaries = [16 * ISO_BLOCK, 17 * ISO_BLOCK]
    for index in range(4):
        fields += fields_of(partitions.MBR_ENTRY, 446 + 16 * index, f"mbr[{index}].")
    if data[512:520] == b"EFI PART":
        fields += fields_of(partitions.GPT_HEADER, 512, "gpt.")
        hot.append((512, 92))
    for at, kind in _descriptor_sectors(data):
        if kind in (1, 2):
            fields += fields_of(iso.VOLUME_DESCRIPTOR, at, f"vd@{at:#x}.")
            hot.append((at, 200))
        elif kind == 0:
            fields += fields_of(iso.BOOT_RECORD, at, "boot.")
            catalog = _u32(data, at + 71, "little") * ISO_BLOCK
            fields += fields_of(iso.VALIDATION_ENTRY, catalog, "catalog.validation.")
            fields += fields_of(iso.BOOT_ENTRY, catalog + 32, "catalog.default.")
            fields += fields_of(iso.SECTION_HEADER, catalog + 64, "catalog.section.")
            fields += fields_of(iso.BOOT_ENTRY, catalog + 96, "catalog.section[0].")
            hot.append((catalog, 128))
            boundaries.append(catalog)
        else:
            fields += fields_of(iso.DESCRIPTOR_HEADER, at, f"vd@{at:#x}.")
        boundaries.append(at + ISO_BLOCK)
    anchor = 256 * block
    fix = None
    if anchor + 16 <= len(data) and data[anchor] == 2:
        fields += fields_of(iso.UDF_TAG, anchor, "udf.anchor.tag.")
        fields += fields_of(iso.UDF_ANCHOR, anchor + 16, "udf.anchor.")
        main = _u32(data, anchor + 20, "little") * block
        for index in range(6):
            fields += fields_of(iso.UDF_TAG, main + index * block, f"udf.vds[{index}].")
        hot += [(anchor, 32), (main, 6 * block)]
        boundaries += [anchor, main]

        def fix(buf: bytearray, anchor: int = anchor, main: int = main, block: int = block) -> None:
            _seal_udf_tag(buf, anchor)
            for index in range(8):
                _seal_udf_tag(buf, main + index * block)

    return Seed(name, data, tuple(fields), fix, tuple(hot), tuple(boundaries))


@functools.cache
def iso_seeds() -> tuple[Seed, ...]:
    xorriso = _tool("xorriso")
    out = []
    with _workdir() as tmp:
        tree = tmp / "tree"
        tree.mkdir()
        (tree / "readme.txt").write_text("hello\n")
        (tree / "boot.img").write_bytes(bytes(range(256)) * 8)
        (tmp / "mbr.bin").write_bytes(b"\xfa\x31\xc0" + bytes(429))
        variants = {
            "iso-plain": ("-V", "PLAIN"),
            "iso-joliet-boot": ("-J", "-R", "-V", "BOOT", "-b", "boot.img", "-no-emul-boot"),
            "iso-hybrid-gpt": (
                "-b",
                "boot.img",
                "-no-emul-boot",
                "-isohybrid-mbr",
                str(tmp / "mbr.bin"),
                "-partition_offset",
                "16",
                "-isohybrid-gpt-basdat",
            ),
        }
        for name, args in variants.items():
            path = tmp / f"{name}.iso"
            _run(xorriso, "-as", "mkisofs", "-quiet", *args, "-o", path, tree)
            out.append(iso_seed(name, path.read_bytes()))
        if shutil.which("mkudffs"):
            udf = tmp / "udf.img"
            with open(udf, "wb") as f:
                f.truncate(1 * MIB)
            _run("mkudffs", "--media-type=hd", "--blocksize=512", "--label=FUZZ", udf)
            out.append(iso_seed("udf-512", udf.read_bytes(), 512))
    return tuple(out)


def _seal_gpt(data: bytearray) -> None:
    """Re-seal the primary and backup GPT headers (header and entry-array CRC32s)."""
    for at in (512, len(data) - 512):
        if at < 512 or data[at : at + 8] != b"EFI PART":
            continue
        size = min(_u32(bytes(data), at + 12, "little"), 512)
        entries = _u64(bytes(data), at + 72, "little") * 512
        count, entry_size = (_u32(bytes(data), at + o, "little") for o in (80, 84))
        if 0 < count * entry_size <= 64 * KIB and entries + count * entry_size <= len(data):
            crc = zlib.crc32(bytes(data[entries : entries + count * entry_size]))
            data[at + 88 : at + 92] = struct.pack("<I", crc)
        data[at + 16 : at + 20] = bytes(4)
        data[at + 16 : at + 20] = struct.pack("<I", zlib.crc32(bytes(data[at : at + size])))


def gpt_seed(name: str, data: bytes) -> Seed:
    fields = []
    for index in range(4):
        fields += fields_of(partitions.MBR_ENTRY, 446 + 16 * index, f"mbr[{index}].")
    end = len(data) - 512
    for label, at in (("gpt", 512), ("backup", end)):
        if data[at : at + 8] == b"EFI PART":
            fields += fields_of(partitions.GPT_HEADER, at, f"{label}.")
    entries = _u64(data, 512 + 72, "little") * 512
    for index in range(2):
        fields += fields_of(partitions.GPT_ENTRY, entries + 128 * index, f"part[{index}].")
    hot = ((440, 72), (512, 92), (entries, 256), (end, 92))
    return Seed(name, data, tuple(fields), _seal_gpt, hot, (512, 1024, entries, end))


def mbr_seed() -> Seed:
    data = bytearray(1 * MIB)
    struct.pack_into("<B3sB3sII", data, 446, 0x80, b"\0\x02\0", 0x83, b"\0\0\0", 2048, 1024)
    struct.pack_into("<B3sB3sII", data, 462, 0x00, b"\0\0\0", 0x05, b"\0\0\0", 1024, 512)
    data[510:512] = b"\x55\xaa"
    fields = []
    for index in range(4):
        fields += fields_of(partitions.MBR_ENTRY, 446 + 16 * index, f"mbr[{index}].")
    return Seed("mbr", bytes(data), tuple(fields), None, ((440, 72),), (512,))


@functools.cache
def partition_seeds() -> tuple[Seed, ...]:
    out = [mbr_seed()]
    with _workdir() as tmp:
        if shutil.which("sgdisk"):
            path = tmp / "gpt.img"
            with open(path, "wb") as f:
                f.truncate(2 * MIB)
            _run(
                "sgdisk",
                "-o",
                "-n",
                "1:2048:+256K",
                "-c",
                "1:efi",
                "-n",
                "2:0:0",
                "-t",
                "2:8300",
                path,
            )
            out.append(gpt_seed("gpt", path.read_bytes()))
        if shutil.which("mkfs.vfat"):
            fat = tmp / "fat.img"
            _run("mkfs.vfat", "-C", fat, "1024")
            data = fat.read_bytes()
            fields = fields_of(partitions.FAT_BPB, 0, "bpb.")
            out.append(Seed("fat", data, tuple(fields), None, ((0, 512),), (512,)))
    return tuple(out)


# --- OVA -----------------------------------------------------------------------------------

OVF_NS = "http://schemas.dmtf.org/ovf/envelope/1"


def ovf_text(disk_name: str, capacity: int, *, extra: str = "") -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="{OVF_NS}" xmlns:ovf="{OVF_NS}"
 xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
 xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References><File ovf:href="{disk_name}" ovf:id="file1"/></References>
  <DiskSection><Info>disks</Info>
    <Disk ovf:capacity="{capacity}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1"
     ovf:fileRef="file1"
     ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystem ovf:id="vm"><Info>vm</Info><Name>fuzz</Name>
    <OperatingSystemSection ovf:id="94" vmw:osType="ubuntu64Guest"><Info>os</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection><Info>hw</Info>
      <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>1024</rasd:VirtualQuantity></Item>
      <Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>6</rasd:ResourceType>
        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType></Item>
      <Item><rasd:InstanceID>4</rasd:InstanceID><rasd:ResourceType>17</rasd:ResourceType>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:Parent>3</rasd:Parent></Item>
      <Item><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceType>10</rasd:ResourceType>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:Connection>VM Network</rasd:Connection></Item>
    </VirtualHardwareSection>
  </VirtualSystem>{extra}
</Envelope>
"""


def tar_of(members: list[tuple[str, bytes]], *, fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, body in members:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


def ova_members(disk: bytes, ovf: str, *, manifest: bool = True) -> list[tuple[str, bytes]]:
    members = [("fuzz.ovf", ovf.encode())]
    if manifest:
        lines = "".join(
            f"SHA256({name})= {hashlib.sha256(body).hexdigest()}\n"
            for name, body in (("fuzz.ovf", members[0][1]), ("disk1.vmdk", disk))
        )
        members.append(("fuzz.mf", lines.encode()))
    members.append(("disk1.vmdk", disk))
    return members


def _tar_size(raw: bytes) -> int:
    if raw[:1] == b"\x80":  # GNU base-256
        return int.from_bytes(raw[1:], "big")
    try:
        return int(raw.split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        return 0


def _tar_headers(data: bytes) -> Iterator[int]:
    at = 0
    while at + 512 <= len(data) and data[at : at + 512].strip(b"\0"):
        yield at
        size = _tar_size(data[at + 124 : at + 136])
        at += 512 + -(-size // 512) * 512


def seal_tar(data: bytearray) -> None:
    """Recompute the checksum of every tar header that the walk reaches."""
    for at in list(_tar_headers(bytes(data)))[:16]:
        block = data[at : at + 512]
        block[148:156] = b" " * 8
        data[at + 148 : at + 156] = b"%06o\0 " % (sum(block) & 0o777777)


def ova_seed(name: str, data: bytes) -> Seed:
    fields: list[Field] = []
    hot = []
    boundaries = []
    for index, at in enumerate(_tar_headers(data)):
        fields += fields_of(ova.TAR_HEADER, at, f"member[{index}].")
        hot.append((at, 512))
        boundaries += [at, at + 512]
    return Seed(name, data, tuple(fields), seal_tar, tuple(hot), tuple(boundaries))


def small_stream_vmdk() -> bytes:
    return vs.build_stream(2048, {0: b"\x42" * 512}).data


@functools.cache
def ova_seeds() -> tuple[Seed, ...]:
    disk = small_stream_vmdk()
    ovf = ovf_text("disk1.vmdk", 2048 * SECTOR)
    return (
        ova_seed("ova", tar_of(ova_members(disk, ovf))),
        ova_seed("ova-pax", tar_of(ova_members(disk, ovf), fmt=tarfile.PAX_FORMAT)),
        ova_seed("ova-gnu", tar_of(ova_members(disk, ovf, manifest=False), fmt=tarfile.GNU_FORMAT)),
    )


# --- everything ----------------------------------------------------------------------------

ALL: dict[str, Callable[[], tuple[Seed, ...]]] = {
    "qcow2": qcow2_seeds,
    "vmdk": vmdk_seeds,
    "vhd": vhd_seeds,
    "vhdx": vhdx_seeds,
    "vdi": vdi_seeds,
    "qed": qed_seeds,
    "luks": luks_seeds,
    "iso": iso_seeds,
    "partitions": partition_seeds,
    "ova": ova_seeds,
}


@functools.cache
def every_seed() -> tuple[Seed, ...]:
    """Every format's seeds (those whose tools are missing are left out)."""
    out: list[Seed] = []
    for make in ALL.values():
        try:
            out += make()
        except pytest.skip.Exception:
            continue
    return tuple(out)
