"""Build streamOptimized VMDKs the way VMware (ovftool, vSphere export) and VirtualBox lay them out.

qemu-img cannot make these: qemu writes the grain directory at the front and no metadata
markers.  VMware's layout is, sector by sector::

    header (gdOffset = all ones: "the grain directory is at the end, read the footer")
    descriptor
    ... zero padding up to overHead ...
    grain marker + deflated grain, padded to a sector      (one per written grain)
    GT marker + grain table                               (after the grains it maps)
    GD marker + grain directory
    footer marker, footer (the header again, with the real gdOffset), end-of-stream marker

The builder returns the bytes and where each structure landed, so tests can damage exactly
one of them.  Only the standard library is used: tests and benchmarks import it freely.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

SECTOR = 512
GD_AT_END = 0xFFFFFFFFFFFFFFFF
MAGIC = b"KDMV"

FLAG_NEWLINE_TEST = 0x1
FLAG_REDUNDANT_GD = 0x2
FLAG_COMPRESSED = 0x10000
FLAG_MARKERS = 0x20000

MARKER_EOS = 0
MARKER_GT = 1
MARKER_GD = 2
MARKER_FOOTER = 3
MARKER_PROGRESS = 4

#: Field order and formats of the 512-byte sparse extent header (after the magic).
HEADER_FIELDS = (
    ("version", "I"),
    ("flags", "I"),
    ("capacity", "Q"),
    ("grain_size", "Q"),
    ("descriptor_offset", "Q"),
    ("descriptor_size", "Q"),
    ("num_gtes_per_gt", "I"),
    ("rgd_offset", "Q"),
    ("gd_offset", "Q"),
    ("overhead", "Q"),
    ("unclean_shutdown", "B"),
    ("check_bytes", "4s"),
    ("compress_algorithm", "H"),
)
HEADER_FORMAT = "<4s" + "".join(fmt for _, fmt in HEADER_FIELDS)
#: Byte offset of each header field, for tests that patch one field in place.
HEADER_OFFSETS: dict[str, int] = {}
_offset = 4
for _name, _fmt in HEADER_FIELDS:
    HEADER_OFFSETS[_name] = _offset
    _offset += struct.calcsize("<" + _fmt)


def header_bytes(**fields: int | bytes) -> bytes:
    """A 512-byte sparse extent header; unnamed fields take streamOptimized defaults."""
    values: dict[str, int | bytes] = {
        "version": 3,
        "flags": FLAG_NEWLINE_TEST | FLAG_COMPRESSED | FLAG_MARKERS,
        "capacity": 0,
        "grain_size": 128,
        "descriptor_offset": 1,
        "descriptor_size": 1,
        "num_gtes_per_gt": 512,
        "rgd_offset": 0,
        "gd_offset": GD_AT_END,
        "overhead": 128,
        "unclean_shutdown": 0,
        "check_bytes": b"\n \r\n",
        "compress_algorithm": 1,
    }
    unknown = set(fields) - set(values)
    if unknown:
        raise TypeError(f"unknown header fields {sorted(unknown)}")
    values.update(fields)
    packed = struct.pack(HEADER_FORMAT, MAGIC, *(values[name] for name, _ in HEADER_FIELDS))
    return packed.ljust(SECTOR, b"\0")


def metadata_marker(kind: int, sectors_following: int) -> bytes:
    """A one-sector metadata marker: sectors that follow, size 0, type."""
    return struct.pack("<QII", sectors_following, 0, kind).ljust(SECTOR, b"\0")


def grain_marker(lba: int, data: bytes, level: int = 6) -> bytes:
    """A grain marker (guest sector, compressed length) and the deflated grain, sector padded."""
    compressed = zlib.compress(data, level)
    raw = struct.pack("<QI", lba, len(compressed)) + compressed
    return pad(raw)


def pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % SECTOR)


def vmware_descriptor(
    *,
    capacity: int,
    extent_name: str = "disk.vmdk",
    create_type: str = "streamOptimized",
    adapter_type: str = "lsilogic",
    access: str = "RDONLY",
    cid: str = "a1b2c3d4",
    parent_cid: str = "ffffffff",
    hw_version: str = "14",
    extra: str = "",
) -> str:
    """A descriptor as ovftool writes it: ``key="value"`` on top, ``key = "value"`` in the DDB."""
    cylinders = min(capacity // (255 * 63), 65535)
    return (
        "# Disk DescriptorFile\n"
        "version=1\n"
        'encoding="UTF-8"\n'
        f"CID={cid}\n"
        f"parentCID={parent_cid}\n"
        'isNativeSnapshot="no"\n'
        f'createType="{create_type}"\n'
        "\n"
        "# Extent description\n"
        f'{access} {capacity} SPARSE "{extent_name}"\n'
        "\n"
        "# The Disk Data Base\n"
        "#DDB\n"
        "\n"
        f'ddb.adapterType = "{adapter_type}"\n'
        f'ddb.geometry.cylinders = "{cylinders}"\n'
        'ddb.geometry.heads = "255"\n'
        'ddb.geometry.sectors = "63"\n'
        'ddb.longContentID = "8f0fd1e3c5f9a8e4b1d2c3a4ffffffff"\n'
        'ddb.thinProvisioned = "1"\n'
        'ddb.toolsInstallType = "4"\n'
        'ddb.toolsVersion = "10346"\n'
        'ddb.uuid = "60 00 C2 9a 3b 1c 4d 5e-6f 70 81 92 a3 b4 c5 d6"\n'
        f'ddb.virtualHWVersion = "{hw_version}"\n'
        f"{extra}"
    )


def virtualbox_descriptor(
    *,
    capacity: int,
    extent_name: str = "disk.vmdk",
    adapter_type: str = "ide",
    access: str = "RDONLY",
    cid: str = "5d1e6f20",
) -> str:
    """A descriptor as VirtualBox writes it: ``key="value"`` everywhere and ``ddb.uuid.*`` keys."""
    cylinders = min(capacity // (16 * 63), 16383)
    return (
        "# Disk DescriptorFile\n"
        "version=1\n"
        f"CID={cid}\n"
        "parentCID=ffffffff\n"
        'createType="streamOptimized"\n'
        "\n"
        "# Extent description\n"
        f'{access} {capacity} SPARSE "{extent_name}"\n'
        "\n"
        "# The disk Data Base \n"
        "#DDB\n"
        "\n"
        'ddb.virtualHWVersion="4"\n'
        f'ddb.adapterType="{adapter_type}"\n'
        'ddb.uuid.image="2f8e2a4c-6b1d-4c3e-9f0a-1b2c3d4e5f60"\n'
        'ddb.uuid.parent="00000000-0000-0000-0000-000000000000"\n'
        'ddb.uuid.modification="00000000-0000-0000-0000-000000000000"\n'
        'ddb.uuid.parentmodification="00000000-0000-0000-0000-000000000000"\n'
        f'ddb.geometry.cylinders="{cylinders}"\n'
        'ddb.geometry.heads="16"\n'
        'ddb.geometry.sectors="63"\n'
    )


@dataclass
class StreamLayout:
    """The built stream and the byte offsets of its structures."""

    data: bytes
    descriptor_offset: int
    gd_offset: int
    gt_offsets: dict[int, int] = field(default_factory=dict)
    grain_offsets: dict[int, int] = field(default_factory=dict)
    footer_marker_offset: int | None = None
    footer_offset: int | None = None
    eos_offset: int | None = None

    @property
    def size(self) -> int:
        return len(self.data)


def build_stream(
    capacity: int = 2 * 1024 * 1024 // SECTOR,
    grains: Mapping[int, bytes] | None = None,
    *,
    grain_size: int = 128,
    num_gtes_per_gt: int = 512,
    gd_at_end: bool = True,
    descriptor: str | None = None,
    descriptor_sectors: int | None = None,
    overhead: int = 128,
    footer: bool = True,
    eos: bool = True,
    trailing_zeros: int = 0,
    progress_markers: bool = False,
    header: Mapping[str, int | bytes] | None = None,
    footer_header: Mapping[str, int | bytes] | None = None,
) -> StreamLayout:
    """Lay out a VMware-style streamOptimized VMDK.

    :param capacity: disk size in sectors.
    :param grains: grain index → guest bytes (shorter data is zero-filled to the grain).
    :param gd_at_end: write gdOffset = all ones in the head header (VMware, VirtualBox);
        False writes the real gdOffset there too (some vSphere exports).
    :param descriptor: the descriptor text; by default :func:`vmware_descriptor`.
    :param header: fields that override the head header only (after layout).
    :param footer_header: fields that override the footer's header copy only.
    :param trailing_zeros: zero bytes appended after the end-of-stream marker (padding).
    :param progress_markers: put a type-4 metadata marker after each grain, as some
        vSphere output does.
    """
    grains = dict(grains or {})
    grain_bytes = grain_size * SECTOR
    text = descriptor if descriptor is not None else vmware_descriptor(capacity=capacity)
    desc_blob = pad(text.encode("utf-8"))
    desc_sectors = descriptor_sectors or max(1, len(desc_blob) // SECTOR)
    desc_blob = desc_blob.ljust(desc_sectors * SECTOR, b"\0")

    body = bytearray(SECTOR)  # the head header goes here at the end
    body += desc_blob
    start = max(overhead, len(body) // SECTOR) * SECTOR
    body += b"\0" * (start - len(body))

    layout = StreamLayout(data=b"", descriptor_offset=SECTOR, gd_offset=0)
    span = num_gtes_per_gt * grain_size
    gd_entries = -(-capacity // span) if span else 0
    gd = [0] * gd_entries
    by_table: dict[int, list[int]] = {}
    for index in sorted(grains):
        by_table.setdefault(index // num_gtes_per_gt, []).append(index)
    for table, indexes in sorted(by_table.items()):
        gt = [0] * num_gtes_per_gt
        for index in indexes:
            data = grains[index].ljust(grain_bytes, b"\0")[:grain_bytes]
            gt[index % num_gtes_per_gt] = len(body) // SECTOR
            layout.grain_offsets[index] = len(body)
            body += grain_marker(index * grain_size, data)
            if progress_markers:
                body += metadata_marker(MARKER_PROGRESS, 0)
        gt_blob = pad(struct.pack(f"<{num_gtes_per_gt}I", *gt))
        body += metadata_marker(MARKER_GT, len(gt_blob) // SECTOR)
        layout.gt_offsets[table] = len(body)
        gd[table] = len(body) // SECTOR
        body += gt_blob
    gd_blob = pad(struct.pack(f"<{gd_entries}I", *gd))
    body += metadata_marker(MARKER_GD, len(gd_blob) // SECTOR)
    layout.gd_offset = len(body)
    gd_sector = len(body) // SECTOR
    body += gd_blob

    common: dict[str, int | bytes] = {
        "capacity": capacity,
        "grain_size": grain_size,
        "descriptor_size": desc_sectors,
        "num_gtes_per_gt": num_gtes_per_gt,
        "overhead": overhead,
    }
    if footer:
        layout.footer_marker_offset = len(body)
        body += metadata_marker(MARKER_FOOTER, 1)
        layout.footer_offset = len(body)
        body += header_bytes(**{**common, "gd_offset": gd_sector, **(footer_header or {})})
    if eos:
        layout.eos_offset = len(body)
        body += metadata_marker(MARKER_EOS, 0)
    body += b"\0" * trailing_zeros

    head_gd = GD_AT_END if gd_at_end else gd_sector
    body[:SECTOR] = header_bytes(**{**common, "gd_offset": head_gd, **(header or {})})
    layout.data = bytes(body)
    return layout
