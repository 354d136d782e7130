"""The public contract that holds whatever the format: types, sources, errors, pass-through."""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import imageintrospect
from imageintrospect import (
    Finding,
    FormatMismatch,
    ImageIntrospectError,
    InspectingReader,
    InternalParserError,
    InvalidImage,
    Metadata,
    introspect,
)
from imageintrospect.findings import REGISTRY, SEVERITIES
from tests.support import needs_qemu, qemu_img, qemu_info

MakeImage = Callable[..., Path]

CONTRACT_KEYS = {
    "format",
    "virtual_size",
    "allocated_size",
    "image_size",
    "safe",
    "findings",
    "partition_table",
}


class ReadOnly:
    """Only ``read()``: a pipe, a socket, an HTTP body."""

    def __init__(self, data: bytes) -> None:
        self._stream = io.BytesIO(data)

    def read(self, size: int = -1, /) -> bytes:
        return self._stream.read(size)


class NotSeekable(io.BytesIO):
    """A complete file object that says it cannot seek."""

    def seekable(self) -> bool:
        return False


def write(tmp_path: Path, data: bytes, name: str = "disk.raw") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# -- the public names --------------------------------------------------------------------------


def test_contract_names_are_exported() -> None:
    for name in ("introspect", "Metadata", "Finding", "InspectingReader", "ImageIntrospectError"):
        assert name in imageintrospect.__all__
        assert hasattr(imageintrospect, name)


def test_errors_are_value_errors() -> None:
    assert issubclass(ImageIntrospectError, ValueError)
    for cls in (InvalidImage, FormatMismatch, InternalParserError):
        assert issubclass(cls, ImageIntrospectError)
    mismatch = FormatMismatch("qcow2", "raw")
    assert (mismatch.expected, mismatch.detected) == ("qcow2", "raw")
    assert "qcow2" in str(mismatch) and "raw" in str(mismatch)


# -- Metadata and Finding ----------------------------------------------------------------------


def test_metadata_is_immutable(tmp_path: Path) -> None:
    md = introspect(write(tmp_path, b"\0" * 4096))
    for attribute, value in (("format", "qcow2"), ("virtual_size", 1), ("safe", False)):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(md, attribute, value)
    assert isinstance(md.findings, tuple)


def test_safe_is_computed_from_severities() -> None:
    def md(*severities: str) -> Metadata:
        found = tuple(Finding(f"code-{s}", s, "m") for s in severities)  # type: ignore[arg-type]
        return Metadata(format="raw", findings=found)

    assert md().safe
    assert md("info", "warning").safe
    assert not md("info", "unsafe").safe
    assert not md("unsafe").safe
    with pytest.raises(TypeError):
        Metadata(format="raw", safe=True)  # type: ignore[call-arg]


def test_finding_is_a_frozen_record() -> None:
    finding = Finding("backing-file", "unsafe", "names base.img")
    assert finding.to_dict() == {
        "code": "backing-file",
        "severity": "unsafe",
        "message": "names base.img",
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        finding.code = "other"  # type: ignore[misc]


def test_to_dict_of_raw_has_exactly_the_contract_keys(tmp_path: Path) -> None:
    md = introspect(write(tmp_path, b"\0" * 8192))
    result = md.to_dict()
    assert set(result) == CONTRACT_KEYS
    assert json.loads(json.dumps(result)) == result
    assert result["format"] == "raw"
    assert result["safe"] is True
    assert result["findings"] == []


@needs_qemu
@pytest.mark.parametrize("fmt", ["qcow2", "vmdk"])
def test_to_dict_adds_the_format_section(make_image: MakeImage, fmt: str) -> None:
    base = make_image(fmt, "16M", name=f"base.{fmt}")
    overlay = base.parent / f"overlay.{fmt}"
    qemu_img("create", "-q", "-f", fmt, "-b", base.name, "-F", fmt, overlay)
    for path in (base, overlay):
        md = introspect(path)
        result = md.to_dict()
        assert set(result) == CONTRACT_KEYS | {fmt}
        section = getattr(md, fmt)
        assert section is not None and md.section is section
        assert result[fmt] == section.to_dict()
        assert json.loads(json.dumps(result)) == result
        assert result["findings"] == [f.to_dict() for f in md.findings]
        assert result["safe"] == md.safe


@needs_qemu
def test_findings_use_registered_codes_and_severities(
    tmp_path: Path, make_image: MakeImage
) -> None:
    base = make_image("qcow2", "16M", name="base.qcow2")
    overlay = tmp_path / "overlay.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", base.name, "-F", "qcow2", overlay)
    md = introspect(overlay)
    assert md.findings and not md.safe
    for finding in md.findings:
        assert finding.severity in SEVERITIES
        assert REGISTRY[finding.code].severity == finding.severity


# -- sources -----------------------------------------------------------------------------------


def _every_kind_of_source(path: Path) -> Iterator[tuple[str, Any]]:
    data = path.read_bytes()
    yield "str path", str(path)
    yield "PathLike", path
    with open(path, "rb") as f:
        yield "open file", f
    yield "BytesIO", io.BytesIO(data)
    yield "not seekable", NotSeekable(data)
    yield "read() only", ReadOnly(data)
    with open(path, "rb", buffering=0) as f:
        yield "unbuffered file", f
    prefixed = path.with_name(path.name + ".prefixed")  # the image starts where f stands
    prefixed.write_bytes(b"\xff" * 4096 + data)
    with open(prefixed, "rb") as f:
        f.seek(4096)
        yield "open file at an offset", f


@needs_qemu
@pytest.mark.parametrize(
    "make",
    [
        lambda mk, tmp: write(tmp, os.urandom(3 * 65536)),
        lambda mk, tmp: mk("qcow2", "64M"),
        lambda mk, tmp: mk("qcow2", "64M", "-o", "compat=0.10"),
        lambda mk, tmp: mk("vmdk", "64M"),
        lambda mk, tmp: mk("vmdk", "64M", "-o", "subformat=streamOptimized"),
    ],
    ids=["raw", "qcow2", "qcow2-v2", "vmdk", "vmdk-stream"],
)
def test_every_kind_of_source_gives_the_same_answer(
    make: Callable[[MakeImage, Path], Path], make_image: MakeImage, tmp_path: Path
) -> None:
    path = make(make_image, tmp_path)
    answers = {kind: introspect(source).to_dict() for kind, source in _every_kind_of_source(path)}
    reference = answers["str path"]
    assert reference["image_size"] == path.stat().st_size
    for kind, answer in answers.items():
        assert answer == reference, kind


def test_a_path_that_cannot_be_opened_is_invalid_image(tmp_path: Path) -> None:
    with pytest.raises(InvalidImage):
        introspect(tmp_path / "missing.img")
    with pytest.raises(InvalidImage):
        introspect(tmp_path)  # a directory


# -- raw ---------------------------------------------------------------------------------------


@needs_qemu
@pytest.mark.parametrize("size", [0, 512, 4096, 1024 * 1024 + 512, 3 * 1024**3])
def test_raw_virtual_size_is_the_file_length(tmp_path: Path, size: int) -> None:
    path = tmp_path / "disk.raw"
    with open(path, "wb") as f:
        f.truncate(size)  # sparse: 3 GiB costs nothing
    md = introspect(path, deep=True)
    assert md.format == "raw"
    assert md.virtual_size == md.image_size == size
    assert md.virtual_size == qemu_info(path)["virtual-size"]


def test_raw_stream_virtual_size_is_the_stream_length() -> None:
    # Longer than the head and tail a stream keeps: the size must still be the whole length.
    data = os.urandom(65536) * 100
    md = introspect(ReadOnly(data))
    assert md.format == "raw"
    assert md.virtual_size == md.image_size == len(data)


def test_glance_properties_of_raw(tmp_path: Path) -> None:
    size = 2 * 1024 * 1024
    props = introspect(write(tmp_path, b"\0" * size)).glance_properties()
    assert props == {"disk_format": "raw", "container_format": "bare", "virtual_size": size}


# -- expected_format ---------------------------------------------------------------------------


@needs_qemu
def test_format_mismatch(tmp_path: Path, make_image: MakeImage) -> None:
    raw = write(tmp_path, b"\0" * 65536)
    qcow2 = make_image("qcow2", "64M")
    for path, wrong in ((raw, "qcow2"), (raw, "vpc"), (qcow2, "raw"), (qcow2, "vmdk")):
        with pytest.raises(FormatMismatch):
            introspect(path, expected_format=wrong)
        with pytest.raises(FormatMismatch):
            introspect(ReadOnly(path.read_bytes()), expected_format=wrong)
    assert introspect(raw, expected_format="raw").format == "raw"
    assert introspect(qcow2, expected_format="qcow2").format == "qcow2"
    assert introspect(qcow2, expected_format=" QCOW2 ").format == "qcow2"


# -- InspectingReader --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qcow2_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("reader") / "disk.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", path, "64M")
    qemu_img("snapshot", "-c", "one", path)
    data = path.read_bytes()
    assert len(data) > 65536, "the mismatch test needs more than the probe head"
    return data


def _chunks(data: bytes, sizes: list[int]) -> Iterator[bytes]:
    offset = 0
    for size in sizes:
        yield data[offset : offset + size]
        offset += size
    if offset < len(data):
        yield data[offset:]


@needs_qemu
@settings(max_examples=60)
@given(sizes=st.lists(st.integers(min_value=0, max_value=70_000), max_size=12))
def test_reader_passes_chunks_through_unchanged(qcow2_bytes: bytes, sizes: list[int]) -> None:
    reader = InspectingReader(_chunks(qcow2_bytes, sizes))
    assert b"".join(reader) == qcow2_bytes
    assert reader.metadata().to_dict() == introspect(ReadOnly(qcow2_bytes)).to_dict()


@needs_qemu
@settings(max_examples=60)
@given(sizes=st.lists(st.integers(min_value=1, max_value=100_000), min_size=1, max_size=20))
def test_reader_read_n_returns_the_bytes_in_order(qcow2_bytes: bytes, sizes: list[int]) -> None:
    reader = InspectingReader(io.BytesIO(qcow2_bytes))
    out = bytearray()
    for size in sizes:
        part = reader.read(size)
        assert len(part) <= size
        out += part
    out += reader.read()
    assert bytes(out) == qcow2_bytes
    assert reader.read(10) == b""
    assert reader.metadata().format == "qcow2"


@needs_qemu
def test_reader_over_a_file_stream(tmp_path: Path, qcow2_bytes: bytes) -> None:
    path = write(tmp_path, qcow2_bytes, "disk.qcow2")
    with open(path, "rb") as f:
        reader = InspectingReader(f, expected_format="qcow2")
        assert b"".join(reader) == qcow2_bytes
    assert reader.metadata().to_dict() == introspect(ReadOnly(qcow2_bytes)).to_dict()


def test_reader_over_raw_keeps_bytes_and_size() -> None:
    data = os.urandom(5 * 1024 * 1024 + 7)  # past the 4 MiB head a stream keeps
    reader = InspectingReader(ReadOnly(data))
    assert b"".join(reader) == data
    md = reader.metadata()
    assert md.format == "raw"
    assert md.virtual_size == len(data)


@needs_qemu
def test_reader_raises_mismatch_before_the_end(qcow2_bytes: bytes) -> None:
    handed_out = 0

    def upload() -> Iterator[bytes]:
        nonlocal handed_out
        for offset in range(0, len(qcow2_bytes), 4096):
            handed_out = offset + 4096
            yield qcow2_bytes[offset : offset + 4096]

    reader = InspectingReader(upload(), expected_format="vmdk")
    with pytest.raises(FormatMismatch):
        for _ in reader:
            pass
    assert handed_out < len(qcow2_bytes)


def test_reader_reports_mismatch_of_raw_content() -> None:
    # No format claims raw content, so the mismatch may only show at the end.
    reader = InspectingReader([b"\0" * 100_000], expected_format="qcow2")
    with pytest.raises(FormatMismatch):
        b"".join(reader)
        reader.metadata()
