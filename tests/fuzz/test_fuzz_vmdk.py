"""VMDK under hostile edits: sparse and COWD/seSparse headers, grain directories and tables,
stream markers and footers (qemu's and VMware's layouts), and descriptor text."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.support import vmware_stream as vs

from .properties import fuzz_one
from .seeds import SECTOR, Seed, vmdk_descriptors
from .strategies import Mutant, mutants, pristine_or_cut, text_edits

FORMAT = "vmdk"
ENCODINGS = ("utf-8", "utf-8", "utf-8", "latin-1", "utf-16-le")


@given(data=st.data())
def test_field_mutants(seeds: tuple[Seed, ...], data: st.DataObject) -> None:
    fuzz_one(data, mutants(seeds))


@given(data=st.data())
def test_cut_short(seeds: tuple[Seed, ...], data: st.DataObject) -> None:
    fuzz_one(data, pristine_or_cut(seeds))


@st.composite
def descriptor_files(draw: st.DrawFn) -> Mutant:
    """A text-only VMDK (a descriptor file naming its extents), edited line by line."""
    text = draw(text_edits(draw(st.sampled_from(vmdk_descriptors()))))
    raw = text.encode(draw(st.sampled_from(ENCODINGS)), errors="replace")
    return Mutant("descriptor", raw, [f"{len(text)} characters"])


@given(data=st.data())
def test_descriptor_files(seeds: tuple[Seed, ...], data: st.DataObject) -> None:
    fuzz_one(data, descriptor_files())


@st.composite
def embedded_descriptors(draw: st.DrawFn, seeds: tuple[Seed, ...]) -> Mutant:
    """A sparse extent whose embedded descriptor was edited (and maybe no longer fits)."""
    seed = next(s for s in seeds if s.name == "vmdk-monolithicSparse")
    data = bytearray(seed.data)
    at = int.from_bytes(data[28:36], "little") * SECTOR
    room = int.from_bytes(data[36:44], "little") * SECTOR
    current = bytes(data[at : at + room]).split(b"\0", 1)[0].decode("utf-8")
    text = draw(text_edits(current)).encode(draw(st.sampled_from(ENCODINGS)), errors="replace")
    grow = draw(st.booleans())
    if grow:  # claim the space the new text needs, whatever it overwrites
        sectors = -(-len(text) // SECTOR)
        data[36:44] = sectors.to_bytes(8, "little")
        room = sectors * SECTOR
    body = text[:room].ljust(room, b"\0")
    data[at : at + room] = body
    del data[len(seed.data) :]
    return Mutant(seed.name, bytes(data), [f"descriptor of {len(text)} bytes, grow={grow}"])


@given(data=st.data())
def test_embedded_descriptors(seeds: tuple[Seed, ...], data: st.DataObject) -> None:
    fuzz_one(data, embedded_descriptors(seeds))


HEADER_FIELD_NAMES = [name for name, _ in vs.HEADER_FIELDS if name != "check_bytes"]
BIG = st.sampled_from(
    (0, 1, 0x7F, 0x80, 0xFFFF, 1 << 31, (1 << 32) - 1, 1 << 32, 1 << 62, (1 << 64) - 1)
)


@st.composite
def vmware_streams(draw: st.DrawFn) -> Mutant:
    """VMware-layout streams laid out by the builder from drawn parameters, then headers (head
    or footer copy) claiming what the layout does not hold."""
    grain_size = draw(st.sampled_from((1, 8, 128)))
    gtes = draw(st.sampled_from((1, 4, 512)))
    capacity = draw(st.integers(0, 4096)) * grain_size
    grains = draw(
        st.dictionaries(
            st.integers(0, max(0, capacity // grain_size - 1)),
            st.binary(max_size=64),
            max_size=4 if capacity else 0,
        )
    )
    overrides = {}
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from(HEADER_FIELD_NAMES))
        width = dict(vs.HEADER_FIELDS)[name]
        limit = {"I": 32, "Q": 64, "B": 8, "H": 16}[width]
        overrides[name] = draw(BIG) % (1 << limit)
    where = draw(st.sampled_from(("header", "footer_header")))
    layout = vs.build_stream(
        capacity,
        grains,
        grain_size=grain_size,
        num_gtes_per_gt=gtes,
        gd_at_end=draw(st.booleans()),
        footer=draw(st.booleans()),
        eos=draw(st.booleans()),
        trailing_zeros=draw(st.sampled_from((0, 0, 512, 4096, 100))),
        progress_markers=draw(st.booleans()),
        **{where: overrides},  # type: ignore[arg-type]
    )
    return Mutant("vmware-builder", layout.data, [f"{where}={overrides}"])


@given(data=st.data())
def test_vmware_streams(data: st.DataObject) -> None:
    fuzz_one(data, vmware_streams())
