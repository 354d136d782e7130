"""Findings stay bounded whatever an image says: per code, and per message."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from imageintrospect import introspect
from imageintrospect.findings import MAX_MESSAGE, MAX_PER_CODE, TRUNCATED, Findings


def test_a_long_message_is_cut() -> None:
    findings = Findings()
    findings.add(TRUNCATED, "x" * (MAX_MESSAGE + 1))
    findings.add(TRUNCATED, "short")
    long, short = findings.freeze()
    assert long.message == "x" * (MAX_MESSAGE - 3) + "..."
    assert short.message == "short"


def test_findings_of_one_code_are_counted_past_the_limit() -> None:
    findings = Findings()
    for i in range(MAX_PER_CODE + 5):
        findings.add(TRUNCATED, f"structure {i}")
    kept = findings.freeze()
    assert len(kept) == MAX_PER_CODE + 1
    assert kept[-1].message == "... and 5 more like the above"


def test_an_archive_member_named_at_length_reaches_no_message_uncut(tmp_path: Path) -> None:
    name = "n" * 60000  # a pax header carries the whole name (up to 64 KiB are read)
    path = tmp_path / "long.ova"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for member, data in (("a.ovf", b"<Envelope/>"), (name, b"data")):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    md = introspect(path)
    assert md.format == "ova"
    (unreferenced,) = [f for f in md.findings if f.code == "ova-unreferenced-member"]
    assert (
        unreferenced.message == f"{name!r} is not referenced by the OVF"[: MAX_MESSAGE - 3] + "..."
    )
