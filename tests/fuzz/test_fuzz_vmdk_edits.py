"""VMDK under mutation: every input ends in Metadata or an ImageIntrospectError, never a crash.

Seeds are real images (qemu-img's monolithicSparse and streamOptimized with data, a
VMware-layout stream, a text descriptor); hypothesis flips header bytes, rewrites descriptor
text and cuts the files short.  Seekable and streamed reads must agree.
"""

from __future__ import annotations

import functools
import io
import json
import struct
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imageintrospect import ImageIntrospectError, InternalParserError, Metadata, introspect
from imageintrospect.formats import vmdk
from imageintrospect.formats.base import QemuRefuses
from tests.support import OnlyRead, needs_qemu, qemu_img, qemu_io
from tests.support import vmware_stream as vs

pytestmark = needs_qemu

FUZZ = settings(
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@functools.cache
def seeds() -> dict[str, bytes]:
    """Seed images, made once per test session."""
    with tempfile.TemporaryDirectory() as tmp:
        out: dict[str, bytes] = {}
        for subformat in ("monolithicSparse", "streamOptimized"):
            path = Path(tmp) / f"{subformat}.vmdk"
            qemu_img("create", "-q", "-f", "vmdk", "-o", f"subformat={subformat}", path, "4M")
            qemu_io(path, "vmdk", "write -P 0x5a 0 128k")
            out[subformat] = path.read_bytes()
        flat = Path(tmp) / "flat.vmdk"
        qemu_img("create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", flat, "1M")
        out["descriptor"] = flat.read_bytes()
    out["vmware"] = vs.build_stream(8192, {0: b"\x01" * 4096, 5: b"abc"}).data
    return out


def outcome(source: Any) -> dict[str, Any] | str:
    """``to_dict()`` (checked JSON-ready, with a working qemu view) or the error's class."""
    try:
        md = introspect(source)
    except InternalParserError:
        raise
    except ImageIntrospectError as exc:
        return type(exc).__name__
    assert isinstance(md, Metadata)
    result = md.to_dict()
    json.dumps(result)
    if md.vmdk is not None and md.vmdk.qemu is not None:
        try:
            json.dumps(vmdk.qemu_info(md, filename="x.vmdk"))
            json.dumps(vmdk.qemu_info(md))
        except QemuRefuses:  # qemu-img cannot open it: neither does the view, and it is unsafe
            assert "qemu-cannot-open" in md.codes()
    return result


def check(data: bytes) -> None:
    seekable = outcome(io.BytesIO(data))
    streamed = outcome(OnlyRead(data))
    assert streamed == seekable


edits = st.lists(st.tuples(st.integers(0, 2047), st.integers(0, 255)), min_size=1, max_size=12)


@FUZZ
@given(name=st.sampled_from(["monolithicSparse", "streamOptimized", "vmware"]), edits=edits)
def test_header_and_descriptor_bytes(name: str, edits: list[tuple[int, int]]) -> None:
    data = bytearray(seeds()[name])
    for offset, value in edits:
        data[offset] = value
    check(bytes(data))


@FUZZ
@given(
    name=st.sampled_from(["streamOptimized", "vmware"]),
    edits=edits,
    cut=st.integers(0, 4096),
)
def test_stream_tail_bytes_and_cuts(name: str, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(seeds()[name])
    for offset, value in edits:
        data[-1 - offset] = value
    check(bytes(data[: len(data) - cut]))


FIELDS = [name for name, _ in vs.HEADER_FIELDS if name != "check_bytes"]
BIG = st.one_of(
    st.integers(0, 16),
    st.sampled_from([0, 1, 2, 512, 513, 0x200000, 1 << 31, (1 << 32) - 1, 1 << 62, (1 << 64) - 1]),
)


@FUZZ
@given(
    name=st.sampled_from(["monolithicSparse", "streamOptimized", "vmware"]),
    values=st.dictionaries(st.sampled_from(FIELDS), BIG, min_size=1, max_size=4),
    footer=st.booleans(),
)
def test_header_fields(name: str, values: dict[str, int], footer: bool) -> None:
    data = bytearray(seeds()[name])
    base = len(data) - 1024 if footer and name == "vmware" else 0
    for field, value in values.items():
        fmt = "<" + dict(vs.HEADER_FIELDS)[field]
        size = struct.calcsize(fmt)
        value &= (1 << (8 * size)) - 1
        offset = base + vs.HEADER_OFFSETS[field]
        data[offset : offset + size] = value.to_bytes(size, "little")
    check(bytes(data))


TOKENS = st.sampled_from(
    [
        "RW",
        "RDONLY",
        "NOACCESS",
        "FLAT",
        "SPARSE",
        "VMFS",
        "ZERO",
        "SESPARSE",
        '"',
        "=",
        " ",
        "  ",
        "\t",
        "\n",
        "\r\n",
        "#",
        "0",
        "2048",
        "-1",
        "99999999999999999999999",
        "createType",
        "parentFileNameHint",
        "parentCID",
        "CID",
        "version=1",
        "encoding",
        '"UTF-8"',
        '"rot13"',
        "ddb.adapterType",
        "/etc/passwd",
        "../x",
        "a.vmdk",
        "monolithicFlat",
        "streamOptimized",
        "\xe9",
        "\x00",
    ]
)


@FUZZ
@given(lines=st.lists(st.lists(TOKENS, max_size=8).map("".join), max_size=30))
def test_text_descriptor(lines: list[str]) -> None:
    text = "# Disk DescriptorFile\n" + "\n".join(lines)
    check(text.encode("utf-8"))


@FUZZ
@given(lines=st.lists(st.lists(TOKENS, max_size=8).map("".join), max_size=20))
def test_embedded_descriptor(lines: list[str]) -> None:
    data = bytearray(seeds()["monolithicSparse"])
    text = ("\n".join(lines)).encode("utf-8")[: 20 * 512]
    data[512 : 512 + 20 * 512] = text.ljust(20 * 512, b"\0")
    check(bytes(data))


@FUZZ
@given(data=st.binary(min_size=0, max_size=3000), magic=st.sampled_from([b"KDMV", b"COWD", b""]))
def test_random_bytes_behind_a_magic(data: bytes, magic: bytes) -> None:
    check(magic + data)


@pytest.mark.parametrize("name", ["monolithicSparse", "streamOptimized", "vmware", "descriptor"])
def test_every_cut_of_the_first_sectors(name: str) -> None:
    data = seeds()[name]
    for cut in range(0, min(len(data), 12 * 512), 97):
        check(data[:cut])
