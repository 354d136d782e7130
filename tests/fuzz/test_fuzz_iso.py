"""ISO 9660 / UDF under hostile edits: volume descriptors, El Torito boot record and catalog,
the hybrid MBR/GPT in the system area, UDF anchor and descriptor tags (re-sealed)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from .properties import fuzz_one
from .seeds import Seed
from .strategies import mutants, pristine_or_cut

FORMAT = "iso"


@given(data=st.data())
def test_field_mutants(seeds: tuple[Seed, ...], data: st.DataObject) -> None:
    fuzz_one(data, mutants(seeds))


@given(data=st.data())
def test_cut_short(seeds: tuple[Seed, ...], data: st.DataObject) -> None:
    fuzz_one(data, pristine_or_cut(seeds))
