"""LUKS: real containers from qemu-img (and cryptsetup when present), compared with qemu-img's
own view, synthetic LUKS2 headers, and hostile edits."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imageintrospect import introspect
from imageintrospect.errors import FormatMismatch, InvalidImage
from imageintrospect.formats.luks import luks1_qemu_encrypt_info
from tests.support import (
    QEMU_IMG,
    CountingFile,
    assert_same_as_qemu,
    edit,
    forward_only,
    introspect_hostile,
    mutate_bytes,
    needs_qemu,
    qemu_info,
    qemu_refuses,
    run,
)

pytestmark = needs_qemu

MiB = 1024 * 1024
CRYPTSETUP = shutil.which("cryptsetup")
needs_cryptsetup = pytest.mark.skipif(CRYPTSETUP is None, reason="cryptsetup not installed")

# qemu times PBKDF2 with getrusage(); on a busy machine a short iter-time can measure 0 and
# fail ("Unable to get accurate CPU usage"), so each image is retried with longer ones.
ITER_TIMES = (200, 2000, 4000)


def create_in_parallel(jobs: dict[Path, list[str]]) -> dict[Path, bool]:
    """Run several ``qemu-img create`` at once (each spends seconds timing PBKDF2)."""
    assert QEMU_IMG is not None
    done: dict[Path, bool] = {}
    pending = dict(jobs)
    for iter_time in ITER_TIMES:
        procs = {
            path: subprocess.Popen(
                [QEMU_IMG, "create", "-q", *[a.format(iter=iter_time) for a in args]],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for path, args in pending.items()
        }
        for path, proc in procs.items():
            if proc.wait() == 0:
                done[path] = True
                del pending[path]
        if not pending:
            break
    for path in pending:
        done[path] = False
    return done


SECRET = ["--object", "secret,id=s0,data=pw"]


@pytest.fixture(scope="module")
def qemu_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """LUKS containers and a LUKS-encrypted qcow2 made by qemu-img, keyed by a short name."""
    directory = tmp_path_factory.mktemp("luks")
    specs = {
        "default": ["-f", "luks", *SECRET, "-o", "key-secret=s0,iter-time={iter}", "16M"],
        "twofish-cbc-essiv": [
            "-f", "luks", *SECRET, "-o",
            "key-secret=s0,iter-time={iter},cipher-alg=twofish-128,cipher-mode=cbc,"
            "ivgen-alg=essiv,ivgen-hash-alg=sha256,hash-alg=sha512",
            "5M",
        ],
        "qcow2": [
            "-f", "qcow2", *SECRET, "-o",
            "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time={iter},"
            "encrypt.cipher-alg=serpent-256,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=plain64,"
            "encrypt.hash-alg=sha1",
            "16M",
        ],
    }  # fmt: skip
    jobs = {}
    for name, args in specs.items():
        path = directory / f"{name}.img"
        jobs[path] = [*args[:-1], str(path), args[-1]]
    made = create_in_parallel(jobs)
    return {name: directory / f"{name}.img" for name in specs if made[directory / f"{name}.img"]}


def image(qemu_images: dict[str, Path], name: str, tmp_path: Path) -> Path:
    """A private copy of one of the module's images (tests edit them)."""
    if name not in qemu_images:
        pytest.skip("qemu-img could not time PBKDF2 on this machine")
    copy = tmp_path / f"{name}.img"
    shutil.copyfile(qemu_images[name], copy)
    return copy


# --- LUKS1 from qemu-img ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["default", "twofish-cbc-essiv"])
def test_qemu_luks_matches_qemu(qemu_images: dict[str, Path], tmp_path: Path, name: str) -> None:
    path = image(qemu_images, name, tmp_path)
    md = assert_same_as_qemu(path)
    theirs = qemu_info(path)
    assert md.format == "luks"
    # The payload's size, as qemu reports it: the file less the header and key material.
    assert md.virtual_size == theirs["virtual-size"]
    assert md.virtual_size == path.stat().st_size - md.luks.payload_offset  # type: ignore[union-attr]
    assert md.codes() == {"luks-encrypted"}
    assert md.safe
    section = md.luks
    assert section is not None
    data = theirs["format-specific"]["data"]
    assert section.version == 1
    assert section.uuid == data["uuid"]
    assert section.payload_offset == data["payload-offset"]
    assert section.active_key_slots == tuple(
        i for i, slot in enumerate(data["slots"]) if slot["active"]
    )
    assert section.hash == data["hash-alg"]
    assert md.glance_properties() == {
        "disk_format": "luks",
        "container_format": "bare",
        "virtual_size": theirs["virtual-size"],
    }


def test_virtual_size_is_the_payload_not_bytes_read(
    qemu_images: dict[str, Path], tmp_path: Path
) -> None:
    path = image(qemu_images, "default", tmp_path)
    with open(path, "ab") as f:  # a container grown by 3 MiB: the payload grows with it
        f.truncate(path.stat().st_size + 3 * MiB)
    md = assert_same_as_qemu(path)
    assert md.virtual_size == 19 * MiB
    assert md.image_size == path.stat().st_size


def test_luks_inside_qcow2(qemu_images: dict[str, Path], tmp_path: Path) -> None:
    path = image(qemu_images, "qcow2", tmp_path)
    blob = path.read_bytes()
    # Find the encryption header extension with struct, independently of the qcow2 module.
    header_length = struct.unpack_from(">I", blob, 100)[0]
    position = header_length
    while True:
        kind, length = struct.unpack_from(">II", blob, position)
        assert kind != 0, "no LUKS header extension"
        if kind == 0x0537BE77:
            offset, size = struct.unpack_from(">QQ", blob, position + 8)
            break
        position += 8 + (length + 7) // 8 * 8
    encrypt = qemu_info(path)["format-specific"]["data"]["encrypt"]
    assert luks1_qemu_encrypt_info(blob[offset : offset + size]) == encrypt
    assert encrypt["cipher-alg"] == "serpent-256"  # the options did reach the header


def test_luks1_qemu_encrypt_info_refuses_other_bytes() -> None:
    with pytest.raises(InvalidImage):
        luks1_qemu_encrypt_info(b"LUKS\xba\xbe\x00\x01" + bytes(100))
    with pytest.raises(InvalidImage):
        luks1_qemu_encrypt_info(b"LUKS\xba\xbe\x00\x02" + bytes(1000))


# --- LUKS1 hostile edits ------------------------------------------------------------------------

SLOTS = 208

# (offset, struct format, value, finding code, does qemu-img info refuse it too?)
HOSTILE_V1 = [
    (8, "32s", b"a" * 32, "luks-bad-header", True),  # cipher name without a NUL
    (8, "32s", b"camellia", "luks-qemu-unsupported", True),  # dm-crypt knows it, qemu not
    (40, "32s", b"xts-benbi", "luks-qemu-unsupported", True),
    (40, "32s", b"ecb", "luks-qemu-unsupported", True),
    (72, "32s", b"whirlpool", "luks-qemu-unsupported", True),
    (104, ">I", 0, "luks-bad-header", True),  # payload over the header
    (104, ">I", 1 << 30, "truncated", True),  # payload past the end of the file
    (108, ">I", 0, "luks-bad-header", True),  # no master key
    (164, ">I", 0, "luks-bad-header", True),  # master key digest iterations
    (SLOTS, ">I", 0x12345678, "luks-bad-header", True),  # slot state
    (SLOTS + 4, ">I", 0, "luks-bad-header", True),  # active slot without iterations
    (SLOTS + 44, ">I", 1, "luks-bad-header", True),  # stripes
    (SLOTS + 40, ">I", 0, "luks-bad-header", True),  # key material over the header
    (SLOTS + 48 + 40, ">I", 8, "luks-bad-header", True),  # slots 0 and 1 overlap
    (SLOTS + 7 * 48 + 40, ">I", 4000, "luks-bad-header", True),  # slot 7 over the payload
    (SLOTS, ">I", 0xDEAD, "luks-no-active-key-slot", False),  # only slot disabled
    (6, ">H", 3, "luks-unsupported-version", False),  # qemu reads it as raw
]


@pytest.mark.parametrize(("offset", "fmt", "value", "code", "qemu_refuses_too"), HOSTILE_V1)
def test_hostile_luks1_fields(
    qemu_images: dict[str, Path],
    tmp_path: Path,
    offset: int,
    fmt: str,
    value: Any,
    code: str,
    qemu_refuses_too: bool,
) -> None:
    path = edit(image(qemu_images, "default", tmp_path), offset, fmt, value)
    md = introspect(path)
    assert md.format == "luks"
    assert code in md.codes(), md.findings
    assert qemu_refuses(path) == qemu_refuses_too
    if code != "luks-no-active-key-slot" and code != "luks-qemu-unsupported":
        assert not md.safe


def test_smaller_xts_key_is_still_read_like_qemu(
    qemu_images: dict[str, Path], tmp_path: Path
) -> None:
    path = edit(image(qemu_images, "default", tmp_path), 108, ">I", 32)  # aes-128 in XTS
    md = assert_same_as_qemu(path)
    assert md.luks is not None and md.luks.key_bytes == 32
    assert md.codes() == {"luks-encrypted"}


@pytest.mark.parametrize("length", [6, 8, 300, 591])
def test_truncated_luks1(qemu_images: dict[str, Path], tmp_path: Path, length: int) -> None:
    path = image(qemu_images, "default", tmp_path)
    path.write_bytes(path.read_bytes()[:length])
    md = introspect(path)
    assert md.format == "luks" and md.luks is None
    assert "truncated" in md.codes() and not md.safe


def test_expected_format(qemu_images: dict[str, Path], tmp_path: Path) -> None:
    path = image(qemu_images, "default", tmp_path)
    assert introspect(path, expected_format="luks").format == "luks"
    with pytest.raises(FormatMismatch):
        introspect(path, expected_format="raw")


@pytest.mark.parametrize("chunk", [17, 4096, 65536])
def test_stream_and_seekable_agree(
    qemu_images: dict[str, Path], tmp_path: Path, chunk: int
) -> None:
    path = image(qemu_images, "twofish-cbc-essiv", tmp_path)
    data = path.read_bytes()
    assert introspect(forward_only(data, chunk)).to_dict() == introspect(path).to_dict()


# --- LUKS2, built here by the specification ------------------------------------------------------


def luks2_metadata(offset: int = 16 * MiB, size: str = "dynamic") -> dict[str, Any]:
    salt = base64.b64encode(bytes(range(32))).decode()
    return {
        "keyslots": {
            "0": {
                "type": "luks2",
                "key_size": 64,
                "af": {"type": "luks1", "stripes": 4000, "hash": "sha256"},
                "area": {
                    "type": "raw",
                    "offset": "32768",
                    "size": "258048",
                    "encryption": "aes-xts-plain64",
                    "key_size": 64,
                },
                "kdf": {"type": "pbkdf2", "hash": "sha256", "iterations": 1000, "salt": salt},
            },
            "3": {
                "type": "luks2",
                "key_size": 64,
                "af": {"type": "luks1", "stripes": 4000, "hash": "sha256"},
                "area": {
                    "type": "raw",
                    "offset": "290816",
                    "size": "258048",
                    "encryption": "aes-xts-plain64",
                    "key_size": 64,
                },
                "kdf": {"type": "argon2id", "time": 4, "memory": 1024, "cpus": 1, "salt": salt},
            },
        },
        "tokens": {},
        "segments": {
            "0": {
                "type": "crypt",
                "offset": str(offset),
                "size": size,
                "iv_tweak": "0",
                "encryption": "aes-xts-plain64",
                "sector_size": 4096,
            }
        },
        "digests": {
            "0": {
                "type": "pbkdf2",
                "keyslots": ["0", "3"],
                "segments": ["0"],
                "hash": "sha512",
                "iterations": 1234,
                "salt": salt,
                "digest": salt,
            }
        },
        "config": {"json_size": "12288", "keyslots_size": "16744448"},
    }


def luks2_header(
    metadata: Any, *, hdr_size: int = 16384, json_text: bytes | None = None, label: bytes = b""
) -> bytes:
    """A LUKS2 primary header: the 4 KiB binary header, the JSON area, the checksum."""
    text = json_text if json_text is not None else json.dumps(metadata).encode()
    binary = bytearray(4096)
    struct.pack_into(">6sHQQ48s32s", binary, 0, b"LUKS\xba\xbe", 2, hdr_size, 1, label, b"sha256")
    binary[168:204] = b"3f1c8c9a-4b7e-4e0f-9d59-6e1f1b3f7a21"
    whole = bytes(binary) + text.ljust(hdr_size - 4096, b"\0")[: hdr_size - 4096]
    checksum = hashlib.sha256(whole).digest()
    return whole[:448] + checksum.ljust(64, b"\0") + whole[512:]


def luks2_image(tmp_path: Path, header: bytes, size: int = 20 * MiB) -> Path:
    path = tmp_path / "luks2.img"
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(size)
    return path


def test_synthetic_luks2(tmp_path: Path) -> None:
    path = luks2_image(tmp_path, luks2_header(luks2_metadata(), label=b"data"))
    md = introspect(path)
    assert md.format == "luks"
    assert md.codes() == {"luks-encrypted", "luks-qemu-unsupported"}
    assert md.safe
    assert md.virtual_size == 4 * MiB  # 20 MiB less the 16 MiB before the payload
    s = md.luks
    assert s is not None
    assert (s.version, s.cipher, s.mode, s.hash) == (2, "aes", "xts-plain64", "sha512")
    assert s.uuid == "3f1c8c9a-4b7e-4e0f-9d59-6e1f1b3f7a21" and s.label == "data"
    assert s.payload_offset == 16 * MiB and s.sector_size == 4096
    assert s.active_key_slots == (0, 3) and s.key_bytes == 64
    assert [(k.index, k.kdf, k.iterations, k.key_offset) for k in s.slots] == [
        (0, "pbkdf2", 1000, 32768),
        (3, "argon2id", 4, 290816),
    ]
    assert s.master_key_iterations == 1234
    assert s.checksum_valid is True and s.header_size == 16384


def test_luks2_explicit_segment_size(tmp_path: Path) -> None:
    path = luks2_image(tmp_path, luks2_header(luks2_metadata(size="1048576")))
    assert introspect(path).virtual_size == MiB


def test_luks2_segment_past_the_end(tmp_path: Path) -> None:
    path = luks2_image(tmp_path, luks2_header(luks2_metadata(offset=64 * MiB)))
    md = introspect(path)
    assert "truncated" in md.codes() and not md.safe
    assert md.virtual_size is None


@pytest.mark.parametrize(
    ("offset", "area_offset"),
    [(16384, "32768"), (16 * MiB, "4096"), (16 * MiB, str(16 * MiB - 4096))],
)
def test_luks2_layout_overlaps(tmp_path: Path, offset: int, area_offset: str) -> None:
    metadata = luks2_metadata(offset=offset)
    metadata["keyslots"]["0"]["area"]["offset"] = area_offset
    md = introspect(luks2_image(tmp_path, luks2_header(metadata)))
    assert "luks-bad-header" in md.codes() and not md.safe


def test_luks2_qemu_sees_raw(tmp_path: Path) -> None:
    path = luks2_image(tmp_path, luks2_header(luks2_metadata()))
    assert_same_as_qemu(path)  # qemu 7.2 has no LUKS2: "raw", the whole file as its size
    assert qemu_info(path)["format"] == "raw"


def test_luks2_bad_checksum(tmp_path: Path) -> None:
    header = bytearray(luks2_header(luks2_metadata()))
    header[4096 + 20] ^= 0x01  # inside the JSON text, after the checksum was taken
    md = introspect(luks2_image(tmp_path, bytes(header)))
    assert "luks-bad-checksum" in md.codes() and not md.safe
    assert md.luks is not None and md.luks.checksum_valid is False


@pytest.mark.parametrize(
    "json_text",
    [
        b"{not json",
        b"[1, 2, 3]",
        b"\xff\xfe",
        b"[" * 100_000 + b"]" * 100_000,  # deeper than Python's recursion limit
        b'{"segments": {"0": {"type": "crypt", "offset": "x"}}}',
        b'{"segments": 7, "keyslots": [], "digests": "no"}',
        b'{"segments": {"0": {"type": "linear", "offset": "0"}}}',
        b'{"segments": {"0": {"type": "crypt", "offset": "' + b"9" * 5000 + b'"}}}',
        b'{"keyslots": {"\\u00b2": {}, "99999999999": {}}, "segments": {"\\u00b2": {}}}',
    ],
)
def test_luks2_malformed_json(tmp_path: Path, json_text: bytes) -> None:
    hdr_size = 16384 if len(json_text) < 12288 else 256 * 1024
    header = luks2_header(None, json_text=json_text, hdr_size=hdr_size)
    md = introspect(luks2_image(tmp_path, header))
    assert md.format == "luks"
    assert "luks-bad-header" in md.codes() and not md.safe


@pytest.mark.parametrize("hdr_size", [0, 4096, 12345, 8 * MiB, 1 << 63])
def test_luks2_bad_header_size(tmp_path: Path, hdr_size: int) -> None:
    header = bytearray(luks2_header(luks2_metadata()))
    header[8:16] = struct.pack(">Q", hdr_size)
    md = introspect(luks2_image(tmp_path, bytes(header)))
    assert "luks-bad-header" in md.codes() and not md.safe


def test_luks2_without_key_slots(tmp_path: Path) -> None:
    metadata = luks2_metadata()
    metadata["keyslots"] = {}
    md = introspect(luks2_image(tmp_path, luks2_header(metadata)))
    assert "luks-no-active-key-slot" in md.codes()
    assert md.luks is not None and md.luks.active_key_slots == ()


def test_luks2_large_header_and_header_only_mode(tmp_path: Path) -> None:
    path = luks2_image(tmp_path, luks2_header(luks2_metadata(), hdr_size=4 * MiB), 24 * MiB)
    deep = introspect(path)
    assert deep.luks is not None and deep.luks.cipher == "aes"
    assert deep.luks.checksum_valid is True
    shallow = introspect(path, deep=False)
    assert "luks-metadata-not-read" in shallow.codes()
    assert shallow.luks is not None and shallow.luks.cipher is None
    assert introspect(forward_only(path.read_bytes())).to_dict() == deep.to_dict()


def test_header_only_reads_little(tmp_path: Path) -> None:
    path = luks2_image(tmp_path, luks2_header(luks2_metadata(), hdr_size=4 * MiB), 24 * MiB)
    with CountingFile(path) as f:
        introspect(f, deep=False)
        assert f.bytes_read <= MiB


# --- cryptsetup's own containers ------------------------------------------------------------------


def cryptsetup_format(path: Path, *options: str) -> None:
    assert CRYPTSETUP is not None
    with open(path, "wb") as f:
        f.truncate(32 * MiB)
    proc = subprocess.run(
        [CRYPTSETUP, "luksFormat", "--batch-mode", "--key-file", "-", *options, str(path)],
        input=b"pw",
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()


@needs_cryptsetup
def test_cryptsetup_luks1_matches_qemu(tmp_path: Path) -> None:
    path = tmp_path / "c1.img"
    cryptsetup_format(path, "--type", "luks1", "--pbkdf-force-iterations", "1000")
    md = assert_same_as_qemu(path)
    assert md.luks is not None and md.luks.payload_offset == 2 * MiB
    assert md.virtual_size == 30 * MiB and md.safe


@needs_cryptsetup
@pytest.mark.parametrize(
    "options",
    [
        ("--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"),
        (
            "--pbkdf", "argon2id", "--pbkdf-force-iterations", "4", "--pbkdf-memory", "32",
            "--cipher", "aes-cbc-essiv:sha256", "--key-size", "256",
            "--luks2-metadata-size", "64k", "--luks2-keyslots-size", "1m", "--label", "lbl",
        ),
    ],
)  # fmt: skip
def test_cryptsetup_luks2(tmp_path: Path, options: tuple[str, ...]) -> None:
    path = tmp_path / "c2.img"
    cryptsetup_format(path, "--type", "luks2", *options)
    dump = json.loads(run(str(CRYPTSETUP), "luksDump", "--dump-json-metadata", str(path)))
    md = assert_same_as_qemu(path)  # qemu: raw
    s = md.luks
    assert s is not None and s.version == 2 and s.checksum_valid
    segment = dump["segments"]["0"]
    assert f"{s.cipher}-{s.mode}" == segment["encryption"]
    assert s.payload_offset == int(segment["offset"])
    assert md.virtual_size == 32 * MiB - int(segment["offset"])
    assert s.active_key_slots == tuple(sorted(int(k) for k in dump["keyslots"]))
    assert s.key_bytes == dump["keyslots"]["0"]["key_size"]
    assert s.hash == dump["digests"]["0"]["hash"]
    assert md.codes() == {"luks-encrypted", "luks-qemu-unsupported"}
    assert introspect(forward_only(path.read_bytes())).to_dict() == md.to_dict()


# --- mutation fuzzing ---------------------------------------------------------------------------


class Seeds(list[bytes]):
    """Seed headers; a short repr keeps hypothesis' failure reports readable."""

    def __repr__(self) -> str:
        return f"<{len(self)} seed headers>"


@pytest.fixture(scope="module")
def seed_headers(qemu_images: dict[str, Path]) -> Seeds:
    seeds = [luks2_header(luks2_metadata())]
    for name in ("default", "twofish-cbc-essiv"):
        if name in qemu_images:
            seeds.append(qemu_images[name].read_bytes()[:16384])
    return Seeds(seeds)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_headers_never_escape(seed_headers: Seeds, data: st.DataObject) -> None:
    blob = mutate_bytes(data, data.draw(st.sampled_from(seed_headers)), st.integers(6, 6000))
    blob += bytes(data.draw(st.sampled_from([0, 4 * MiB])))
    md = introspect_hostile(io.BytesIO(bytes(blob)))
    if md is None:
        return
