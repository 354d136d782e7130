"""LUKS2's secondary header: what cryptsetup recovers from when the primary is gone.

Containers are made by cryptsetup; the primary binary header is wiped or damaged in a copy,
and ``cryptsetup isLuks`` / ``luksDump`` (which recover from the secondary header, rewriting
the primary) are compared with our reading of the damaged copy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from imageintrospect import introspect
from tests.support import forward_only, patch, run
from tests.test_luks import CRYPTSETUP, cryptsetup_format, needs_cryptsetup

pytestmark = needs_cryptsetup
KiB = 1024


def is_luks(path: Path) -> bool:
    """cryptsetup's verdict, on a throw-away copy (isLuks repairs the primary header)."""
    assert CRYPTSETUP is not None
    copy = path.with_suffix(".probe")
    shutil.copy(path, copy)
    return subprocess.run([CRYPTSETUP, "isLuks", str(copy)], check=False).returncode == 0


def dump(path: Path) -> dict[str, object]:
    copy = path.with_suffix(".dump")
    shutil.copy(path, copy)
    result: dict[str, object] = json.loads(
        run(str(CRYPTSETUP), "luksDump", "--dump-json-metadata", str(copy))
    )
    return result


@pytest.fixture
def container(tmp_path: Path) -> Path:
    path = tmp_path / "c.img"
    cryptsetup_format(path, "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations",
                      "1000", "--label", "backup-test")  # fmt: skip
    return path


def test_wiped_primary_is_described_from_the_secondary(container: Path) -> None:
    intact = introspect(container)
    patch(container, 0, bytes(4 * KiB))  # the primary binary header
    assert is_luks(container)  # cryptsetup recovers from the secondary header
    md = introspect(container)
    assert md.format == "luks" and not md.safe
    assert md.codes() == {"luks-primary-header-invalid", "luks-encrypted", "luks-qemu-unsupported"}
    assert md.luks is not None and intact.luks is not None
    assert md.luks.to_dict() == intact.luks.to_dict()  # the same container
    assert md.virtual_size == intact.virtual_size
    assert dump(container)["segments"] == dump_segments_of(intact)
    assert introspect(forward_only(container.read_bytes())).to_dict() == md.to_dict()


def dump_segments_of(md: object) -> object:
    luks = md.luks
    return {
        "0": {
            "type": "crypt",
            "offset": str(luks.payload_offset),
            "size": "dynamic",
            "iv_tweak": "0",
            "encryption": f"{luks.cipher}-{luks.mode}",
            "sector_size": luks.sector_size,
        }
    }


def test_primary_with_a_bad_checksum_falls_back_to_the_secondary(container: Path) -> None:
    intact = introspect(container)
    patch(container, 4 * KiB + 2, b"#")  # inside the primary's JSON text
    assert is_luks(container)
    md = introspect(container)
    assert "luks-bad-checksum" in md.codes() and not md.safe
    assert "secondary" in next(f.message for f in md.findings if f.code == "luks-bad-checksum")
    assert md.luks is not None and intact.luks is not None
    assert md.luks.to_dict() == intact.luks.to_dict()


def test_both_headers_wiped_is_not_luks(container: Path) -> None:
    patch(container, 0, bytes(32 * KiB))  # primary and secondary (hdr_size 16 KiB)
    assert not is_luks(container)
    assert introspect(container).format == "raw"


def test_secondary_with_a_bad_checksum_is_not_used(container: Path) -> None:
    patch(container, 0, bytes(4 * KiB))
    patch(container, 16 * KiB + 4 * KiB + 2, b"#")  # the secondary's JSON text
    assert not is_luks(container)
    md = introspect(container)
    assert md.format == "luks" and "luks-bad-header" in md.codes() and not md.safe
    assert md.luks is None
