"""The one place that decides an image's format.

Every registered format probes the same few bytes (the first :data:`PROBE_HEAD` bytes and
the last :data:`PROBE_TAIL`).  ``raw`` claims whatever nobody else does.  When two formats
claim the content, the image is a polyglot: the first claimant in the registry's order
(:data:`imageintrospect.formats.FORMATS`, the one whose magic sits where qemu would look
first) becomes ``format`` and a ``format-ambiguous`` finding names them all.
"""

from __future__ import annotations

from . import formats
from .findings import FORMAT_AMBIGUOUS, Findings
from .formats.base import FormatSpec, Probe
from .source import Source, StreamGap

PROBE_HEAD = formats.PROBE_HEAD
PROBE_TAIL = 4096


def read_probe(source: Source) -> Probe:
    head = source.read_at(0, PROBE_HEAD)
    source.remember_head(head)
    tail_start = max(len(head), source.size - PROBE_TAIL)
    try:
        tail = source.read_at(tail_start, source.size - tail_start)
    except StreamGap:
        tail = b""
    if tail_start == len(head):
        tail = (head + tail)[-PROBE_TAIL:]
    return Probe(head=head, tail=tail, size=source.size)


def claimants(probe: Probe) -> list[FormatSpec]:
    """Every format whose probe claims the bytes, in the registry's order.  A format's
    module is imported only when its magic bytes are there (``Format.may_claim``)."""
    claims = []
    for entry in formats.FORMATS:
        if entry.may_claim(probe):
            spec = entry.spec()
            if spec.probe(probe):
                claims.append(spec)
    return claims


#: Formats qemu reads as plain raw data: inside the guest data of a fixed VHD (whose only
#: metadata is its last sector) they mislead no reader, as a hybrid ISO's MBR misleads none.
QEMU_READS_AS_RAW = frozenset({"iso"})


def coexisting(claims: list[FormatSpec], probe: Probe) -> list[FormatSpec]:
    """Drop claims that describe a fixed VHD's guest data rather than compete with it."""
    names = {spec.name for spec in claims}
    fixed_vhd = "vhd" in names and probe.head[:8] != b"conectix"
    if fixed_vhd and names - {"vhd"} <= QEMU_READS_AS_RAW:
        return [spec for spec in claims if spec.name == "vhd"]
    return claims


def detect(probe: Probe, findings: Findings) -> FormatSpec:
    """Choose the format; record ``format-ambiguous`` when several formats claim the bytes."""
    claims = coexisting(claimants(probe), probe)
    if not claims:
        return formats.RAW.spec()
    if len(claims) > 1:
        names = ", ".join(spec.name for spec in claims)
        findings.add(
            FORMAT_AMBIGUOUS,
            f"the content is valid as more than one format ({names}); read as {claims[0].name}",
        )
    return claims[0]


def known_formats() -> list[str]:
    """Every name ``expected_format`` recognises: the formats and their aliases, sorted."""
    return sorted(formats.CANONICAL)


def canonical_format(name: str) -> str:
    """Normalise a caller's format name (``vpc`` → ``vhd``)."""
    lowered = name.strip().lower()
    return formats.CANONICAL.get(lowered, lowered)
