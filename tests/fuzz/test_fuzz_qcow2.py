"""qcow2 under hostile edits: header fields, extensions, L1/L2 and refcount entries,
snapshot and bitmap tables, LUKS header behind the encryption extension; cuts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from .properties import fuzz_one
from .seeds import Seed
from .strategies import mutants, pristine_or_cut

FORMAT = "qcow2"


@given(data=st.data())
def test_field_mutants(seeds: tuple[Seed, ...], data: st.DataObject) -> None:
    fuzz_one(data, mutants(seeds))


@given(data=st.data())
def test_cut_short(seeds: tuple[Seed, ...], data: st.DataObject) -> None:
    fuzz_one(data, pristine_or_cut(seeds))
