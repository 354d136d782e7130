"""Table entries decoded by ``struct`` (structs.EntryTable) equal what their construct schema
parses, on the real tables of the seed images and on random bytes (tests/test_layouts.py
does the same for every generated layout).

construct's own tests run each schema two ways (interpreted and compiled) and compare; this
does the same for the precompiled ``struct`` layouts the parsers use for repeated entries,
and for the two headers whose entry table is split off (LUKS1 key slots, VHD locators).
"""

from __future__ import annotations

from typing import Any

import construct
import pytest
from hypothesis import given
from hypothesis import strategies as st

from imageintrospect.errors import InvalidImage
from imageintrospect.formats import luks, ova, partitions, qcow2, vhd, vhdx
from imageintrospect.formats.vmdk import layout as vmdk_layout
from imageintrospect.structs import EntryTable

from .seeds import ALL

# Each table, the seeds that hold it, and the label their seed fields carry ("snapshot[0].").
TABLES: dict[str, tuple[EntryTable, str, str]] = {
    "qcow2-snapshot": (qcow2.SNAPSHOT_TABLE, "qcow2", "snapshot["),
    "qcow2-bitmap": (qcow2.BITMAP_DIRECTORY_TABLE, "qcow2", "bitmap["),
    "qcow2-extension": (qcow2.EXTENSION_HEADERS, "qcow2", "ext["),
    "qcow2-feature-name": (qcow2.FEATURE_NAMES, "qcow2", "feature["),
    "tar-header": (ova.TAR_HEADERS, "ova", "member["),
    "vmdk-marker": (vmdk_layout.MARKERS, "vmdk", "marker."),
    "luks1-key-slot": (luks.KEY_SLOT_TABLE, "luks", "key_slots["),
    "vhd-locator": (vhd.LOCATOR_TABLE, "vhd", "locators["),
    "mbr-entry": (partitions.MBR_ENTRY_TABLE, "partitions", "mbr["),
    "gpt-entry": (partitions.GPT_ENTRY_TABLE, "partitions", "part["),
    "vhdx-region": (vhdx.REGION_TABLE, "vhdx", "regions["),
    "vhdx-metadata": (vhdx.METADATA_TABLE, "vhdx", "metadata["),
}


def as_dict(parsed: Any) -> dict[str, Any]:
    """A construct Container as plain values (nested containers and lists included)."""
    if isinstance(parsed, (construct.Container, dict)):
        return {k: as_dict(v) for k, v in parsed.items() if not k.startswith("_")}
    if isinstance(parsed, (construct.ListContainer, list, tuple)) and not hasattr(
        parsed, "_fields"
    ):
        return [as_dict(v) for v in parsed]  # type: ignore[return-value]
    if hasattr(parsed, "_asdict"):
        return {k: as_dict(v) for k, v in parsed._asdict().items()}
    return parsed  # type: ignore[no-any-return]


def assert_same(table: EntryTable, data: bytes, offset: int = 0) -> None:
    fast = table.decode(data, offset)
    slow = table.schema.parse(data[offset : offset + table.size])
    assert as_dict(fast) == as_dict(slow)
    assert table.decode_all(data[offset : offset + 3 * table.size])[0] == fast


def entry_offsets(fields: Any, label: str, first: str) -> list[int]:
    return [f.offset for f in fields if f.name.split(".")[-1] == first and label in f.name]


@pytest.mark.parametrize("name", sorted(TABLES))
def test_real_tables(name: str) -> None:
    table, fmt, label = TABLES[name]
    first = table.schema.subcons[0].name
    checked = 0
    for seed in ALL[fmt]():
        for offset in entry_offsets(seed.fields, label, first):
            if offset + table.size <= len(seed.data):
                assert_same(table, seed.data, offset)
                checked += 1
    if checked == 0:
        pytest.skip(f"no seed image with a {name} table could be made on this machine")


@pytest.mark.parametrize("name", sorted(TABLES))
@given(data=st.data())
def test_random_entries(name: str, data: st.DataObject) -> None:
    table = TABLES[name][0]
    raw = data.draw(st.binary(min_size=table.size, max_size=3 * table.size + 7))
    offset = data.draw(st.integers(0, len(raw) - table.size))
    assert_same(table, raw, offset)
    whole = len(raw) // table.size
    assert [as_dict(e) for e in table.decode_all(raw)] == [
        as_dict(table.schema.parse(raw[i * table.size : (i + 1) * table.size]))
        for i in range(whole)
    ]


@given(raw=st.binary(max_size=200))
def test_cut_short_is_invalid_image(raw: bytes) -> None:
    table = qcow2.SNAPSHOT_TABLE
    if len(raw) >= table.size:
        return
    with pytest.raises(InvalidImage):
        table.decode(raw)


def test_tables_must_be_flat() -> None:
    with pytest.raises(TypeError):
        EntryTable(vhd.DYNAMIC_HEADER, "x")  # a table of its own: not an entry


def luks1_block(raw: bytes) -> bytes:
    block = bytearray(raw.ljust(luks.HEADER_V1_SIZE, b"\0")[: luks.HEADER_V1_SIZE])
    block[:6] = luks.MAGIC
    block[6:8] = b"\0\x01"
    return bytes(block)


def assert_luks1_same(block: bytes) -> None:
    fast = luks._parse_luks1_header(block)
    assert as_dict(fast) == as_dict(luks.HEADER_V1.schema.parse(block))


def test_luks1_header_real() -> None:
    for seed in ALL["luks"]():
        if seed.data[:6] == luks.MAGIC and seed.data[6:8] == b"\0\x01":
            assert_luks1_same(seed.data[: luks.HEADER_V1_SIZE])


@given(raw=st.binary(min_size=luks.HEADER_V1_SIZE, max_size=luks.HEADER_V1_SIZE))
def test_luks1_header_random(raw: bytes) -> None:
    assert_luks1_same(luks1_block(raw))


def assert_vhd_dynamic_same(raw: bytes) -> None:
    slow = as_dict(vhd.DYNAMIC_HEADER.schema.parse(raw))
    assert as_dict(vhd.DYNAMIC_HEADER_PARSER.parse(raw)) == slow


def test_vhd_dynamic_header_real() -> None:
    checked = 0
    for seed in ALL["vhd"]():
        at = int.from_bytes(seed.data[16:24], "big")
        if seed.data[:8] == vhd.FOOTER_MAGIC and at + vhd.DYNAMIC_HEADER_SIZE <= len(seed.data):
            assert_vhd_dynamic_same(seed.data[at : at + vhd.DYNAMIC_HEADER_SIZE])
            checked += 1
    assert checked


@given(raw=st.binary(min_size=vhd.DYNAMIC_HEADER_SIZE, max_size=vhd.DYNAMIC_HEADER_SIZE))
def test_vhd_dynamic_header_random(raw: bytes) -> None:
    assert_vhd_dynamic_same(raw)


@given(raw=st.binary(max_size=vhd.DYNAMIC_HEADER_SIZE - 1))
def test_vhd_dynamic_header_cut_short(raw: bytes) -> None:
    with pytest.raises(InvalidImage):
        vhd.DYNAMIC_HEADER_PARSER.parse(raw)
