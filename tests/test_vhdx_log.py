"""VHDX log replay: log entries built from [MS-VHDX] on qemu-img-made images.

qemu-img writes a clean log, so the dirty ones are made here: the current header gets a log
GUID and the log region an entry (header, descriptors, data sectors, CRC-32C) whose writes
change what the image says.  qemu's reaction is the reference where it has one: it refuses a
read-only open (``qemu-img info`` exits 1) when it finds entries to replay, opens the image
when it finds none, and ``qemu-img check -r all`` replays the log into the file, after which
``qemu-img info`` shows the replayed disk that we describe without writing anything.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from imageintrospect import introspect
from imageintrospect.formats.vhdx import VhdxSection
from tests.support import QEMU_IMG, forward_only, needs_qemu, patch, qemu_img, qemu_info
from tests.test_vhdx import (
    FILE_PARAMETERS,
    VIRTUAL_DISK_SIZE,
    edit_header,
    header,
    item_offset,
    metadata_offset,
    read,
    with_checksum,
)

SECTOR = 4096
MiB = 1024 * 1024


def data_write(offset: int, sector: bytes) -> tuple[int, bytes | int]:
    assert len(sector) == SECTOR and offset % SECTOR == 0
    return offset, sector


def zero_write(offset: int, length: int) -> tuple[int, bytes | int]:
    return offset, length


def log_entry(
    guid: bytes,
    sequence: int,
    writes: list[tuple[int, bytes | int]],
    *,
    tail: int = 0,
    flushed: int = 0,
    last: int = 0,
    data_signature: bytes = b"data",
) -> bytes:
    """One log entry as [MS-VHDX] 2.3.1 lays it out, its CRC-32C filled in."""
    descriptors = b""
    data_sectors = b""
    for offset, what in writes:
        if isinstance(what, int):  # a zero descriptor of ``what`` bytes
            descriptors += struct.pack("<4sIQQQ", b"zero", 0, what, offset, sequence)
            continue
        leading, trailing = struct.unpack("<Q", what[:8])[0], struct.unpack("<I", what[-4:])[0]
        descriptors += struct.pack("<4sIQQQ", b"desc", trailing, leading, offset, sequence)
        data_sectors += (
            data_signature
            + struct.pack("<I", sequence >> 32)
            + what[8:-4]
            + struct.pack("<I", sequence & 0xFFFFFFFF)
        )
    desc_sectors = -(-(len(writes) + 2) // 128)
    length = desc_sectors * SECTOR + len(data_sectors)
    head = struct.pack(
        "<4sIIIQII16sQQ", b"loge", 0, length, tail, sequence, len(writes), 0, guid, flushed, last
    )
    body = (head + descriptors).ljust(desc_sectors * SECTOR, b"\0") + data_sectors
    return with_checksum(body)


def make_dirty(path: Path, entries: list[bytes], guid: bytes | None = None) -> bytes:
    """Give ``path``'s current header a log GUID and write ``entries`` into its log."""
    guid = guid or uuid.uuid4().bytes_le
    first, second = header(path, 0), header(path, 1)
    current = 0 if first["sequence_number"] >= second["sequence_number"] else 1
    edit_header(path, current, log_guid=guid)
    log_offset = header(path, current)["log_offset"]
    position = 0
    for entry in entries:
        patch(path, log_offset + position, entry)
        position += len(entry)
    return guid


def sector_at(path: Path, offset: int) -> tuple[int, bytearray]:
    """The 4 KiB-aligned sector holding ``offset``, and ``offset``'s place in it."""
    start = offset - offset % SECTOR
    return start, bytearray(read(path, start, SECTOR))


def resize_entry(path: Path, guid: bytes, size: int, sequence: int = 1) -> bytes:
    """An entry that rewrites the Virtual Disk Size metadata item."""
    start, sector = sector_at(path, item_offset(path, VIRTUAL_DISK_SIZE))
    at = item_offset(path, VIRTUAL_DISK_SIZE) - start
    sector[at : at + 8] = struct.pack("<Q", size)
    size_now = path.stat().st_size
    return log_entry(
        guid, sequence, [data_write(start, bytes(sector))], flushed=size_now, last=size_now
    )


def qemu_status(path: Path) -> int:
    assert QEMU_IMG is not None
    proc = subprocess.run([QEMU_IMG, "info", "--output=json", str(path)], capture_output=True)
    return proc.returncode


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imageintrospect", *args], capture_output=True, text=True
    )


@pytest.fixture
def vhdx(make_image: object) -> Path:
    return make_image("vhdx", "64M")  # type: ignore[operator, no-any-return]


@needs_qemu
def test_replayed_size_is_what_qemu_sees_after_its_own_replay(vhdx: Path, tmp_path: Path) -> None:
    guid = uuid.uuid4().bytes_le
    make_dirty(vhdx, [resize_entry(vhdx, guid, 128 * MiB)], guid)
    md = introspect(vhdx)
    assert md.virtual_size == 128 * MiB  # not the 64 MiB the file says before replay
    assert md.codes() == {"vhdx-log-replayed"} and md.safe
    section = md.vhdx
    assert isinstance(section, VhdxSection)
    assert section.log_replay == {
        "entries": 1,
        "first_sequence": 1,
        "last_sequence": 1,
        "writes": 1,
    }
    # qemu refuses the read-only open, and so does our qemu-img view, with its status.
    assert qemu_status(vhdx) == 1
    ours = cli("info", "--output", "qemu-json", str(vhdx))
    assert ours.returncode == 1 and ours.stdout == ""
    assert "needs to be replayed" in ours.stderr
    # qemu replays the log into a copy; what it then reads is what we described.
    replayed = tmp_path / "replayed.vhdx"
    shutil.copy(vhdx, replayed)
    qemu_img("check", "-r", "all", replayed)
    assert qemu_info(replayed)["virtual-size"] == md.virtual_size
    assert introspect(replayed).codes() == set()


@needs_qemu
def test_a_log_can_make_a_safe_looking_file_a_differencing_disk(vhdx: Path) -> None:
    offset = item_offset(vhdx, FILE_PARAMETERS)
    start, sector = sector_at(vhdx, offset)
    block_size, flags = struct.unpack_from("<II", sector, offset - start)
    struct.pack_into("<II", sector, offset - start, block_size, flags | 2)
    guid = uuid.uuid4().bytes_le
    size = vhdx.stat().st_size
    make_dirty(vhdx, [log_entry(guid, 7, [data_write(start, bytes(sector))], last=size)], guid)
    md = introspect(vhdx)
    assert "vhdx-differencing" in md.codes() and not md.safe
    assert "vhdx-log-replayed" in md.codes()
    assert qemu_status(vhdx) == 1


@needs_qemu
def test_zero_descriptor_wiping_the_metadata_table(vhdx: Path) -> None:
    guid = uuid.uuid4().bytes_le
    size = vhdx.stat().st_size
    entry = log_entry(guid, 3, [zero_write(metadata_offset(vhdx), 64 * 1024)], last=size)
    make_dirty(vhdx, [entry], guid)
    md = introspect(vhdx)
    assert {"vhdx-log-replayed", "vhdx-bad-metadata"} <= md.codes() and not md.safe
    assert md.virtual_size is None


@needs_qemu
def test_entry_with_a_bad_checksum_is_not_replayed_as_in_qemu(vhdx: Path) -> None:
    guid = uuid.uuid4().bytes_le
    entry = bytearray(resize_entry(vhdx, guid, 128 * MiB))
    entry[100] ^= 1  # inside the descriptor sector: the CRC-32C no longer matches
    make_dirty(vhdx, [bytes(entry)], guid)
    md = introspect(vhdx)
    assert md.codes() == {"vhdx-log-pending"} and md.safe
    assert md.virtual_size == 64 * MiB
    assert qemu_status(vhdx) == 0  # qemu finds nothing to replay either
    assert cli("info", "--output", "qemu-json", str(vhdx)).returncode == 0


@needs_qemu
def test_entry_of_another_log_guid_is_ignored(vhdx: Path) -> None:
    make_dirty(vhdx, [resize_entry(vhdx, uuid.uuid4().bytes_le, 128 * MiB)])
    md = introspect(vhdx)
    assert md.codes() == {"vhdx-log-pending"} and md.virtual_size == 64 * MiB
    assert qemu_status(vhdx) == 0


@needs_qemu
@pytest.mark.parametrize(
    "breakage",
    ["data-signature", "tail-outside", "truncated-file", "write-past-last-offset"],
)
def test_entries_qemu_would_replay_but_the_spec_rejects_are_unsafe(
    vhdx: Path, breakage: str
) -> None:
    guid = uuid.uuid4().bytes_le
    start, sector = sector_at(vhdx, item_offset(vhdx, VIRTUAL_DISK_SIZE))
    size = vhdx.stat().st_size
    writes = [data_write(start, bytes(sector))]
    options: dict[str, object] = {"last": size}
    if breakage == "data-signature":
        options["data_signature"] = b"DATA"
    elif breakage == "tail-outside":
        options["tail"] = 64 * SECTOR  # no entry there
    elif breakage == "truncated-file":
        options["flushed"] = size + MiB
    else:
        writes = [zero_write(size, 2 * MiB)]
    make_dirty(vhdx, [log_entry(guid, 1, writes, **options)], guid)  # type: ignore[arg-type]
    md = introspect(vhdx)
    assert "vhdx-log-unreplayable" in md.codes() and not md.safe
    assert qemu_status(vhdx) == 1  # qemu takes the entry as one to replay


@needs_qemu
def test_active_sequence_is_the_one_with_the_highest_head(vhdx: Path) -> None:
    guid = uuid.uuid4().bytes_le
    first = resize_entry(vhdx, guid, 96 * MiB, sequence=5)
    # A second run of two entries (sequences 10, 11) whose head's tail points at its start.
    second_a = resize_entry(vhdx, guid, 80 * MiB, sequence=10)
    tail = len(first) + SECTOR  # leave one empty sector between the runs
    size = vhdx.stat().st_size
    start, sector = sector_at(vhdx, item_offset(vhdx, VIRTUAL_DISK_SIZE))
    at = item_offset(vhdx, VIRTUAL_DISK_SIZE) - start
    sector[at : at + 8] = struct.pack("<Q", 112 * MiB)
    second_a = log_entry(guid, 10, [data_write(start, bytes(sector))], tail=tail, last=size)
    sector[at : at + 8] = struct.pack("<Q", 120 * MiB)
    second_b = log_entry(guid, 11, [data_write(start, bytes(sector))], tail=tail, last=size)
    make_dirty(vhdx, [first, bytes(SECTOR), second_a, second_b], guid)
    md = introspect(vhdx)
    assert md.virtual_size == 120 * MiB  # both entries of the newer run, in order
    assert isinstance(md.vhdx, VhdxSection) and md.vhdx.log_replay is not None
    assert md.vhdx.log_replay["entries"] == 2


@needs_qemu
def test_header_only_and_streamed(vhdx: Path) -> None:
    guid = uuid.uuid4().bytes_le
    make_dirty(vhdx, [resize_entry(vhdx, guid, 128 * MiB)], guid)
    shallow = introspect(vhdx, deep=False)
    assert "vhdx-log-unreplayable" in shallow.codes() and not shallow.safe
    seekable = introspect(vhdx)
    for chunk in (4096, 65536):
        assert introspect(forward_only(vhdx, chunk)).to_dict() == seekable.to_dict()
