"""VHDX under hostile edits: both headers, both region tables, the metadata table and its items,
BAT entries; CRC-32C re-sealed so the edits reach the code behind them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from .properties import fuzz_one
from .seeds import Seed
from .strategies import mutants, pristine_or_cut

FORMAT = "vhdx"


@given(data=st.data())
def test_field_mutants(seeds: tuple[Seed, ...], data: st.DataObject) -> None:
    fuzz_one(data, mutants(seeds))


@given(data=st.data())
def test_cut_short(seeds: tuple[Seed, ...], data: st.DataObject) -> None:
    fuzz_one(data, pristine_or_cut(seeds))
