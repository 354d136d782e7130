"""The format registry's ``may_claim`` never turns away what a format's ``probe`` claims.

Detection imports a format module only where its entry's ``may_claim`` (a few magic bytes)
is true, so a ``may_claim`` stricter than the probe would hide a format.  Checked on every
seed, on producers' VMDK descriptors, and on seeds and text edited near the magic bytes.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from imageintrospect import detect, formats
from imageintrospect.formats.base import Probe
from tests.support import mutate_bytes

from .seeds import every_seed, vmdk_descriptors

#: Where the registry's magic bytes lie (from the start; the VHD footer is at the end).
MAGIC_SPOTS = (0, 8, 0x40, 257, 0x8000, 0x8008)


def probe_of(data: bytes) -> Probe:
    head = data[: detect.PROBE_HEAD]
    return Probe(head=head, tail=data[-detect.PROBE_TAIL :], size=len(data))


def assert_may_claim_covers_probe(data: bytes) -> None:
    probe = probe_of(data)
    for entry in formats.FORMATS:
        if entry.spec().probe(probe):
            assert entry.may_claim(probe), f"{entry.name} probe claims, may_claim says no"


def test_every_seed_and_descriptor() -> None:
    seeds = every_seed()
    assert {seed.name for seed in seeds}
    for data in (*(seed.data for seed in seeds), *(t.encode() for t in vmdk_descriptors())):
        assert_may_claim_covers_probe(data)
        # and detection through the registry claims it as the module's own probe does
        claimed = [e.name for e in formats.FORMATS if e.spec().probe(probe_of(data))]
        assert [spec.name for spec in detect.claimants(probe_of(data))] == claimed


@given(data=st.data())
def test_seeds_edited_near_the_magic(data: st.DataObject) -> None:
    seed = data.draw(st.sampled_from(every_seed()))
    spots = [spot for spot in MAGIC_SPOTS if spot < len(seed.data)]
    near = st.sampled_from(spots).flatmap(
        lambda spot: st.integers(spot, min(spot + 15, len(seed.data) - 1))
    )
    assert_may_claim_covers_probe(bytes(mutate_bytes(data, seed.data, near)))


@given(
    lines=st.lists(
        st.sampled_from(
            [
                "# Disk DescriptorFile",
                "#disk descriptorfile",
                "version=1",
                "   ",
                "# comment",
                'createType="monolithicFlat"',
                "CREATETYPE = twoGbMaxExtentSparse",
                'RW 2048 FLAT "x.vmdk" 0',
                "ddb.adapterType = ide",
            ]
        ),
        max_size=6,
    ),
    newline=st.sampled_from(["\n", "\r\n"]),
)
def test_descriptor_like_text(lines: list[str], newline: str) -> None:
    assert_may_claim_covers_probe(newline.join(lines).encode() + b"\0" * 100)
