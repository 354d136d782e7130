"""Two formats in one file: heads and tails of different images joined, one image's header
planted inside another (at 0, at an ISO's 0x8000, anywhere sector-aligned), a VHD footer
appended to anything.  Detection must still end in one answer, with ``format-ambiguous``
where two formats claim the bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from .properties import fuzz_one
from .seeds import Seed, every_seed
from .strategies import mutants, splices


@pytest.fixture(scope="module")
def seeds() -> tuple[Seed, ...]:
    made = every_seed()
    if len({s.name.split("-")[0] for s in made}) < 2:
        pytest.skip("fewer than two formats could be made on this machine")
    return made


@given(data=st.data())
def test_splices(seeds: tuple[Seed, ...], data: st.DataObject) -> None:
    fuzz_one(data, splices(seeds, seeds))


@given(data=st.data())
def test_mutated_splices(seeds: tuple[Seed, ...], data: st.DataObject) -> None:
    """A splice, then the planted or the host image's fields pushed to the edges."""
    spliced = data.draw(splices(seeds, seeds), label="splice")
    donors = [s for s in seeds if s.name in spliced.seed.split("|")]
    host = Seed(spliced.seed, spliced.data, tuple(f for d in donors for f in d.fields))
    fuzz_one(data, mutants((host,)))
