"""LUKS under hostile input: LUKS1 header and key slots, both LUKS2 binary headers (checksums
re-sealed), and LUKS2 JSON metadata edited as a document: values of the wrong type or size,
missing and extra keys, deep nests and long lists."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from .properties import fuzz_one
from .seeds import LUKS2_HDR_SIZE, Seed, luks2_header, luks2_metadata
from .strategies import KIB, Mutant, json_edits, json_text, mutants, pristine_or_cut

FORMAT = "luks"


@given(data=st.data())
def test_field_mutants(seeds: tuple[Seed, ...], data: st.DataObject) -> None:
    fuzz_one(data, mutants(seeds))


@given(data=st.data())
def test_cut_short(seeds: tuple[Seed, ...], data: st.DataObject) -> None:
    fuzz_one(data, pristine_or_cut(seeds))


@st.composite
def luks2_documents(draw: st.DrawFn) -> Mutant:
    """A LUKS2 image whose JSON area holds an edited document (sealed, so it is read)."""
    doc = draw(json_edits(luks2_metadata()))
    text = json_text(doc)
    hdr_size = draw(st.sampled_from((LUKS2_HDR_SIZE, 32 * KIB, 64 * KIB, 1024 * KIB)))
    if len(text) > hdr_size - 4096:
        hdr_size = 4096 * KIB
    if draw(st.integers(0, 5)) == 0:  # not JSON any more
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.sampled_from((b"", b"\xff\xfe", b"}}}", b"\0{")))
    primary = luks2_header(text, hdr_size=hdr_size)
    secondary = luks2_header(text, hdr_size=hdr_size, offset=hdr_size)
    image = (primary + secondary).ljust(2 * hdr_size + 512 * KIB, b"\0")
    return Mutant("luks2-json", image, [f"{len(text)} bytes of JSON, hdr_size {hdr_size}"])


@given(data=st.data())
def test_luks2_json_documents(seeds: tuple[Seed, ...], data: st.DataObject) -> None:
    fuzz_one(data, luks2_documents())
