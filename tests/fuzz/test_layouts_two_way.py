"""Every generated layout (``imageintrospect._layouts``) parses as its construct schema does,
on the headers of the real seed images and on random bytes: the same values, or the same
error (``InvalidImage`` naming the structure: ``StreamError`` when cut short, ``ConstError``
when a magic differs).  Like construct's own tests, which run each schema interpreted and
compiled and compare.
"""

from __future__ import annotations

from typing import Any

import construct
import pytest
from hypothesis import given
from hypothesis import strategies as st

from imageintrospect import _layouts
from imageintrospect.errors import InvalidImage
from imageintrospect.structs import Layout

from .seeds import ALL
from .test_entry_tables import as_dict

LAYOUTS: dict[str, Layout] = {
    name: value for name, value in vars(_layouts).items() if isinstance(value, Layout)
}
#: The seeds that hold each schema module's structures.
SEEDS = {"partitions": "partitions", "iso": "iso", "ova": "ova"}


def outcome(parse: Any, data: bytes) -> Any:
    try:
        return as_dict(parse(data))
    except InvalidImage as exc:
        return str(exc)


def slow(layout: Layout, data: bytes) -> Any:
    try:
        return as_dict(layout.schema.parse(data))
    except construct.ConstructError as exc:  # what structs' parse raised before the layouts
        return f"x: cannot parse ({type(exc).__name__})"


def assert_same(layout: Layout, data: bytes) -> None:
    assert outcome(lambda raw: layout.parse(raw, "x"), data) == slow(layout, data)


def module_of(layout: Layout) -> str:
    return layout.source.split(":")[0].rsplit(".", 1)[1]


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_real_headers(name: str) -> None:
    layout = LAYOUTS[name]
    seeds = ALL[SEEDS.get(module_of(layout), module_of(layout))]()
    checked = 0
    for seed in seeds:
        offsets = sorted({0, *(f.offset for f in seed.fields)})[:64]
        for offset in offsets:
            assert_same(layout, seed.data[offset : offset + layout.size + 3])
            checked += 1
    if checked == 0:
        pytest.skip(f"no seed image for {name} could be made on this machine")


@pytest.mark.parametrize("name", sorted(LAYOUTS))
@given(data=st.data())
def test_random_bytes(name: str, data: st.DataObject) -> None:
    layout = LAYOUTS[name]
    raw = bytearray(data.draw(st.binary(min_size=0, max_size=layout.size + 8)))
    if layout.consts and data.draw(st.booleans()):  # mostly past the magic, sometimes not
        for _, offset, expected in layout.consts:
            raw[offset : offset + len(expected)] = expected
        if data.draw(st.booleans()):  # and cut short somewhere
            del raw[data.draw(st.integers(0, len(raw))) :]
    assert_same(layout, bytes(raw))
