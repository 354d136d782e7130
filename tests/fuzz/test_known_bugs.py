"""Exact reproducers of the open defects in :mod:`.known_bugs`.

``test_still_broken`` is ``xfail(strict=True)``: it passes (and so fails the suite as XPASS)
the day the library is fixed, which is the signal to delete the entry from ``KNOWN_BUGS``.
``test_signature_recognises_it`` proves each entry's signature matches its reproducer, so
the fuzzers really do step over exactly this defect and nothing broader.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable

import pytest

from . import known_bugs
from .properties import KnownBugMet, _check
from .seeds import (
    luks2_header,
    luks2_image,
    luks2_metadata,
    ovf_text,
    qcow2_seeds,
    seal_luks2,
    small_stream_vmdk,
)


def luks2_shake() -> bytes:
    data = bytearray(luks2_image(json.dumps(luks2_metadata()).encode()))
    data[72:104] = b"shake_128".ljust(32, b"\0")
    seal_luks2(data, 0)
    return bytes(data)


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, body in members:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


def ova_unit_digits() -> bytes:
    units = "byte * 2^" + "0" * 5000 + "1"
    ovf = ovf_text("disk1.vmdk", 1024).replace(
        'capacityAllocationUnits="byte"', f'capacityAllocationUnits="{units}"'
    )
    return _tar([("a.ovf", ovf.encode()), ("disk1.vmdk", small_stream_vmdk())])


def luks2_dense_json() -> bytes:
    """A 4 MiB LUKS2 JSON area of 1.4 million empty lists (checksums sealed)."""
    hdr_size = 4 * 1024 * 1024
    count = (hdr_size - 4096 - 40) // 3
    text = b'{"keyslots": {}, "tokens": [' + b"[]," * (count - 1) + b"[]]}"
    primary = luks2_header(text, hdr_size=hdr_size)
    secondary = luks2_header(text, hdr_size=hdr_size, offset=hdr_size)
    return (primary + secondary).ljust(2 * hdr_size + 65536, b"\0")


def qcow2_bad_l2_entry() -> bytes:
    """qemu-img's qcow2 with data, one L2 entry's host offset pushed to 2^48 (past EOF)."""
    seed = next(s for s in qcow2_seeds() if s.name == "qcow2-v3")
    data = bytearray(seed.data)
    l1 = int.from_bytes(data[40:48], "big")
    l2 = int.from_bytes(data[l1 : l1 + 8], "big") & 0x00FFFFFFFFFFFE00
    data[l2 + 25 * 8 + 1] = 0x01
    return bytes(data)


#: Reproducers of the open defects in known_bugs.KNOWN_BUGS (none open now).
REPRODUCERS: dict[str, list[Callable[[], bytes]]] = {}
#: Defects found by the fuzzers and fixed: their reproducers must keep passing.
FIXED: dict[str, list[Callable[[], bytes]]] = {
    "luks2-shake-checksum": [luks2_shake],
    "ova-unit-digits": [ova_unit_digits],
    "luks2-json-memory": [luks2_dense_json],
    "qcow2-stream-misses-l2-entry": [qcow2_bad_l2_entry],
}
CASES = [(key, make) for key, makes in REPRODUCERS.items() for make in makes]
IDS = [f"{key}:{make.__name__}" for key, make in CASES]


def test_every_known_bug_has_a_reproducer() -> None:
    assert {bug.key for bug in known_bugs.KNOWN_BUGS} == set(REPRODUCERS)


@pytest.mark.xfail(strict=True, reason="open library defect (see tests/fuzz/known_bugs.py)")
@pytest.mark.parametrize(("key", "make"), CASES, ids=IDS)
def test_still_broken(key: str, make: Callable[[], bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(known_bugs, "KNOWN_BUGS", ())
    _check(make(), deep=True, chunk=65536, memory=True)


@pytest.mark.parametrize(("key", "make"), CASES, ids=IDS)
def test_signature_recognises_it(key: str, make: Callable[[], bytes]) -> None:
    try:
        _check(make(), deep=True, chunk=65536, memory=True)
    except KnownBugMet as met:
        assert str(met) == key
    # No exception: the defect is fixed, and test_still_broken says so (XPASS).


@pytest.mark.parametrize(
    "make",
    [make for makes in FIXED.values() for make in makes],
    ids=[f"{key}:{make.__name__}" for key, makes in FIXED.items() for make in makes],
)
def test_fixed_defect_stays_fixed(make: Callable[[], bytes]) -> None:
    """Every property holds: no internal error, seekable == streamed, memory bounded."""
    _check(make(), deep=True, chunk=65536, memory=True)


def test_unknown_failures_are_not_swallowed() -> None:
    """A failure of another shape is not matched by any entry."""
    other = known_bugs.Failure("internal", RuntimeError("something else"))
    assert known_bugs.known(other) is None
