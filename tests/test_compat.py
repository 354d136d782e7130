"""The oslo.utils drop-in, through its public API, on real images.

oslo.utils' own suite runs against the drop-in in scripts/test.sh (tests/compat/oslo_plugin.py);
the tests here give the right answer, or the same behaviour, for each test that docs/compat.md
lists as a deliberate difference, and check what Glance and Nova rely on.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from imageintrospect import introspect
from imageintrospect.compat import format_inspector as fi
from tests.compat.oslo_plugin import documented_differences
from tests.support import CountingFile, edit, needs_qemu, qemu_img, qemu_info, run

MiB = 1024 * 1024

pytestmark = needs_qemu


def streamed(path: Path, block: int = 65536, **kwargs: object) -> fi.InspectWrapper:
    """A wrapper read to the end in ``block``-byte reads, as Glance's upload does."""
    with open(path, "rb") as f:
        wrapper = fi.InspectWrapper(f, **kwargs)  # type: ignore[arg-type]
        while wrapper.read(block):
            pass
        wrapper.close()
    return wrapper


def failures(inspector: fi.FileInspector) -> dict[str, str]:
    """The failed checks of ``inspector``, by name ({} when it passes)."""
    try:
        inspector.safety_check()
    except fi.SafetyCheckFailed as exc:
        return {name: str(why) for name, why in exc.failures.items()}
    return {}


# --- qcow2 ----------------------------------------------------------------------------------


def test_qcow2_feature_bits_and_versions(make_image: Callable[..., Path]) -> None:
    """What oslo's feature-flag tests check on its region model, on real headers."""
    clean = make_image("qcow2", "16M")
    assert failures(fi.QcowInspector.from_file(str(clean))) == {}
    dirty = edit(make_image("qcow2", "16M"), 0x48, ">Q", 1)  # bit 0 (dirty) is known
    assert "unknown_features" not in failures(fi.QcowInspector.from_file(str(dirty)))
    unknown = edit(make_image("qcow2", "16M"), 0x48, ">Q", 1 << 7)
    assert (
        "Unknown QCOW2 features"
        in failures(fi.detect_file_format(str(unknown)))["unknown_features"]
    )
    future = edit(make_image("qcow2", "16M"), 4, ">I", 4)
    assert "unknown_features" in failures(fi.detect_file_format(str(future)))


def test_qcow2_backing_file_fails_in_a_stream(
    make_image: Callable[..., Path], tmp_path: Path
) -> None:
    base = make_image("raw", "1M")
    child = tmp_path / "child.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", child)
    fmt = streamed(child, 512).format
    assert fmt is not None and fmt.NAME == "qcow2"
    assert "backing file" in failures(fmt)["backing_file"]


# --- vmdk -----------------------------------------------------------------------------------


def vmdk_descriptor(tmp_path: Path, extent: str) -> Path:
    path = tmp_path / "desc.vmdk"
    path.write_text(
        textwrap.dedent(f"""\
            # Disk DescriptorFile
            version=1
            CID=fffffffe
            parentCID=ffffffff
            createType="monolithicFlat"
            {extent}
            ddb.adapterType = "ide"
            """)
    )
    return path


def test_vmdk_descriptor_naming_other_files(tmp_path: Path) -> None:
    """oslo's descriptor checks (extent lines, absolute paths), on descriptor files."""
    escaping = vmdk_descriptor(tmp_path, 'RW 2048 FLAT "/etc/hosts" 0')
    found = failures(fi.detect_file_format(str(escaping)))  # type: ignore[arg-type]
    assert "/etc/hosts" in found["descriptor"]
    assert "Invalid extent filenames" in found["descriptor"]


def test_vmdk_unknown_create_type_reads_like_qemu(make_image: Callable[..., Path]) -> None:
    path = make_image("vmdk", "8M")
    data = path.read_bytes()
    at = data.index(b'createType="monolithicSparse"')
    edit(path, at, "29s", b'createType="someunknownforma')
    fmt = fi.detect_file_format(str(path))
    assert fmt is not None and fmt.NAME == "vmdk"
    assert fmt.virtual_size == qemu_info(path)["virtual-size"]


@pytest.mark.parametrize("subformat", ["monolithicSparse", "streamOptimized"])
def test_vmdk_descriptor_at_another_sector(make_image: Callable[..., Path], subformat: str) -> None:
    """oslo refuses a descriptor not at sector 1; qemu reads it, and so does the library."""
    path = edit(make_image("vmdk", "5M", "-o", f"subformat={subformat}"), 0x1C, "<Q", 2)
    for block in (17, 65536):
        fmt = streamed(path, block, expected_format="vmdk").format
        assert fmt is not None and fmt.NAME == "vmdk"
        assert fmt.virtual_size == qemu_info(path)["virtual-size"] == 5 * MiB


def test_vmdk_footer_checks(make_image: Callable[..., Path]) -> None:
    """oslo's footer checks, on a qemu-img stream: intact it passes; told to expect a footer
    that is zeros, it fails ``footer``."""
    good = make_image("vmdk", "5M", "-o", "subformat=streamOptimized")
    assert failures(fi.VMDKInspector.from_file(str(good))) == {}
    bad = make_image("vmdk", "5M", "-o", "subformat=streamOptimized")
    edit(bad, 56, "<Q", 0xFFFFFFFFFFFFFFFF)
    with open(bad, "ab") as f:
        f.write(bytes(512 * 3))
    assert "footer" in failures(fi.VMDKInspector.from_file(str(bad)))
    assert "footer" in failures(streamed(bad, 512).format)  # type: ignore[arg-type]


def test_a_partial_vmdk_header_is_not_vmdk() -> None:
    """Fed 512 zero bytes, a VMDK inspector says no match and refuses a safety check."""
    inspector = fi.VMDKInspector()
    inspector.eat_chunk(bytes(512))
    inspector.finish()
    assert inspector.complete and not inspector.format_match
    with pytest.raises(fi.ImageFormatError, match="does not match"):
        inspector.safety_check()


# --- partition tables -----------------------------------------------------------------------


def mbr_disk(tmp_path: Path, *entries: tuple[int, int, int, int]) -> Path:
    """A 4 MiB disk whose MBR holds (status, type, first LBA, sectors) entries."""
    sector = bytearray(512)
    for i, (status, kind, first, count) in enumerate(entries):
        sector[446 + 16 * i : 462 + 16 * i] = struct.pack(
            "<B3sB3sII", status, b"\0\2\0", kind, b"\0\0\0", first, count
        )
    sector[510:512] = b"\x55\xaa"
    path = tmp_path / "disk.raw"
    path.write_bytes(bytes(sector) + bytes(4 * MiB - 512))
    return path


def test_gpt_disk_made_by_sgdisk(tmp_path: Path) -> None:
    if shutil.which("sgdisk") is None:
        pytest.skip("sgdisk (gdisk) missing")
    path = tmp_path / "gpt.raw"
    path.write_bytes(bytes(8 * MiB))
    run("sgdisk", "-n", "1:2048:+2M", path)
    for block in (512, 65536):
        fmt = streamed(path, block).format
        assert fmt is not None and fmt.NAME == "gpt"
        assert fmt.virtual_size == 8 * MiB and failures(fmt) == {}


def test_bad_mbr_fails_the_mbr_check(tmp_path: Path) -> None:
    """Overlapping partitions: ``gpt``, with the check Glance can make non-fatal."""
    path = mbr_disk(tmp_path, (0x80, 0x83, 2048, 4096), (0, 0x83, 4000, 2048))
    fmt = streamed(path).format
    assert fmt is not None and fmt.NAME == "gpt"
    assert list(failures(fmt)) == ["mbr"]


def test_boot_signature_without_entries_is_raw(tmp_path: Path) -> None:
    """Glance's stub GPT with its one entry zeroed: no partitioned disk (Glance's differing
    tests in docs/compat.md); a real MBR is one."""
    assert str(streamed(mbr_disk(tmp_path)).format) == "raw"
    assert str(streamed(mbr_disk(tmp_path, (0x80, 0x83, 2048, 2048))).format) == "gpt"


# --- polyglots, hybrid ISOs -------------------------------------------------------------------


def test_qcow2_with_a_vhd_footer_is_two_formats(make_image: Callable[..., Path]) -> None:
    path = make_image("qcow2", "16M")
    footer = make_image("vpc", "16M", "-o", "subformat=fixed").read_bytes()[-512:]
    with open(path, "ab") as f:
        f.write(footer)
    with open(path, "rb") as f:
        unread = fi.InspectWrapper(f)
        unread.close()  # closed before reading: read at random
    for wrapper in (streamed(path, 4096), unread):
        assert sorted(str(i) for i in wrapper.formats or []) == ["qcow2", "vhd"]
        with pytest.raises(fi.ImageFormatError, match="Multiple formats"):
            wrapper.format  # noqa: B018


def test_hybrid_iso_is_iso_and_gpt(tmp_path: Path) -> None:
    xorriso = shutil.which("xorriso")
    if xorriso is None:
        pytest.skip("xorriso missing")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "boot.img").write_bytes(bytes(range(256)) * 16)
    (tmp_path / "mbr.bin").write_bytes(b"\xfa\x31\xc0" + bytes(429))
    path = tmp_path / "hybrid.iso"
    hybrid = ("-isohybrid-mbr", tmp_path / "mbr.bin", "-partition_offset", "16")
    run(xorriso, "-as", "mkisofs", "-quiet", "-b", "boot.img", "-no-emul-boot", *hybrid,
        "-o", path, tree)  # fmt: skip
    wrapper = streamed(path)
    assert [str(i) for i in wrapper.formats or []] == ["iso", "gpt"]
    with pytest.raises(fi.ImageFormatError):
        wrapper.format  # noqa: B018


# --- the wrapper ------------------------------------------------------------------------------


def test_format_is_decided_early_and_cheaply(make_image: Callable[..., Path]) -> None:
    """At 17-byte reads a qcow2 is decided once 64 KiB have arrived, not at the end."""
    path = make_image("qcow2", "64M")
    with open(path, "rb") as f:
        wrapper = fi.InspectWrapper(f, expected_format="qcow2")
        reads = 0
        while wrapper.format is None:
            assert wrapper.formats is None
            assert wrapper.read(17)
            reads += 1
        assert reads == -(-64 * 1024 // 17)
        wrapper.close()


def test_expected_format_aborts_after_its_signature() -> None:
    source = io.BytesIO(bytes(MiB))
    wrapper = fi.InspectWrapper(source, expected_format="luks")
    assert wrapper.read(4) == bytes(4)  # not yet known
    with pytest.raises(fi.ImageFormatError, match="luks"):
        wrapper.read(4)
    assert source.tell() == 8


def test_a_broken_image_never_breaks_the_stream(make_image: Callable[..., Path]) -> None:
    """What oslo's 'eats error' tests protect: the bytes pass unchanged, nothing raises while
    streaming, and the verdict comes at the end (here: unsafe)."""
    data = make_image("qcow2", "16M").read_bytes()[:40] + bytes(4000)
    wrapper = fi.InspectWrapper(iter([data[:17], data[17:]]))
    assert b"".join(wrapper) == data
    fmt = wrapper.format
    assert fmt is not None and fmt.NAME == "qcow2"
    assert failures(fmt)


def test_closed_early_over_a_file_reads_it_at_random(make_image: Callable[..., Path]) -> None:
    """Nova's get_image_format stops once ``formats`` is known: the verdict is still the
    whole file's, read only where its structures are; ``actual_size`` is the file's size
    (what oslo's ``test_from_file_reads_minimum`` reads as bytes read)."""
    path = make_image("qcow2", "64M", "-o", "preallocation=metadata")
    size = path.stat().st_size
    source = CountingFile(path)
    wrapper = fi.InspectWrapper(io.BufferedReader(source))
    while not wrapper.formats:
        wrapper.read(4096)
    wrapper.close()
    fmt = wrapper.format
    assert fmt is not None and fmt.NAME == "qcow2" and failures(fmt) == {}
    assert fmt.actual_size == size
    assert source.bytes_read < size // 2
    assert fi.QcowInspector.from_file(str(path)).actual_size == size


def test_context_info_stays_under_oslos_bound(make_image: Callable[..., Path]) -> None:
    path = make_image("vhdx", "128M")
    for block in (17, 1 * MiB):
        fmt = streamed(path, block).format
        assert fmt is not None and sum(fmt.context_info.values()) < 512 * 1024


def test_oversized_vhdx_metadata_item_is_bounded_and_unsafe(
    make_image: Callable[..., Path],
) -> None:
    """What oslo's VHDX metadata-table limit tests check on its private lookup, streamed:
    an item claiming 66 KiB is neither read whole nor trusted."""
    from tests.test_vhdx import VIRTUAL_DISK_SIZE, metadata_entries, write_metadata_entries

    path = make_image("vhdx", "64M")
    entries = metadata_entries(path)
    for entry in entries:
        if entry[0] == VIRTUAL_DISK_SIZE:
            entry[2] = 33 * 2048
    write_metadata_entries(path, entries)
    for block in (17, 64 * 1024):
        fmt = streamed(path, block).format
        assert fmt is not None and sum(fmt.context_info.values()) < 512 * 1024
        assert fmt.virtual_size == qemu_info(path)["virtual-size"]
        assert "overlaps virtual_disk_size" in failures(fmt)["vhdx_bad_metadata"]


def test_expected_format_never_raises_at_the_end() -> None:
    """The early abort saves reading; at the end the verdict is ``format``."""
    wrapper = fi.InspectWrapper(iter([b"123", b"456"]), expected_format="vhd")
    assert b"".join(wrapper) == b"123456"
    assert wrapper.format is not None and wrapper.format.NAME == "raw"


def test_a_subclass_gets_its_regions_and_eat_chunk_calls() -> None:
    seen: list[str] = []

    class Counting(fi.RawFileInspector):
        def _initialize(self) -> None:
            super()._initialize()
            self.new_region("middle", fi.CaptureRegion(4, 4))

        def region_complete(self, region_name: str) -> None:
            seen.append(region_name)

    inspector = Counting()
    for i in range(0, 12, 3):
        inspector.eat_chunk(b"abcdefghijkl"[i : i + 3])
    assert inspector.region("middle").data == b"efgh" and seen == ["middle"]
    assert inspector.region("header").data == b"abcdefghijkl"
    with pytest.raises(RuntimeError, match="already"):
        inspector.new_region("middle", fi.CaptureRegion(0, 1))


def test_disallowed_format_is_not_raw(make_image: Callable[..., Path]) -> None:
    """oslo answers ``raw`` for a detected format left out of ``allowed_formats``."""
    wrapper = streamed(make_image("qcow2", "16M"), allowed_formats=["raw", "vmdk"])
    assert wrapper.formats == []
    with pytest.raises(fi.ImageFormatError, match="allowed"):
        wrapper.format  # noqa: B018


# --- luks -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def luks_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One LUKS1 container made by qemu-img (slow to make: shared)."""
    from tests.test_luks import create_in_parallel  # retries qemu's PBKDF2 timing failures

    path = tmp_path_factory.mktemp("luks") / "disk.luks"
    args = ["-f", "luks", "--object", "secret,id=s,data=pw", "-o", "key-secret=s,iter-time={iter}"]
    assert create_in_parallel({path: [*args, str(path), "8M"]})[path], "qemu-img create failed"
    return path


def test_luks_is_never_decrypted(luks_path: Path) -> None:
    path = luks_path
    fmt = streamed(path, allowed_formats=["luks"]).format
    assert isinstance(fmt, fi.LUKSInspector) and fmt.inner_format is None
    assert failures(fmt) == {}
    assert fmt.virtual_size == qemu_info(path)["virtual-size"]
    asked = streamed(path, allowed_formats=["luks"], params={"luks_passphrase": "pw"}).format
    assert list(failures(asked)) == ["passphrase"]  # type: ignore[arg-type]


def test_luks1_header_facts(luks_path: Path) -> None:
    fmt = fi.detect_file_format(str(luks_path))
    assert isinstance(fmt, fi.LUKSInspector) and fmt.header_items is not None
    items = fmt.header_items
    assert items["version"] == 1 and items["cipher_alg"].rstrip(b"\0") == b"aes"
    size = luks_path.stat().st_size
    assert items["payload_offset"] * 512 + fmt.virtual_size == size
    fmt.check_version()  # LUKS1 passes
    asked = fi.detect_file_format(str(luks_path), params={"luks_passphrase": "pw"})
    assert isinstance(asked, fi.LUKSInspector)
    with pytest.raises(fi.SafetyViolation, match="Passphrase is incorrect or cannot be"):
        asked.check_passphrase()
    asked._inner_format = fi.RawFileInspector()  # as a caller that decrypted would set it
    asked.check_passphrase()


def test_luks_payload_past_the_end_is_unsafe(luks_path: Path) -> None:
    """oslo's LUKS virtual-size test expects a negative size for this header."""
    data = luks_path.read_bytes()[:592] + bytes(10 * 1024)
    inspector = fi.LUKSInspector()
    inspector.eat_chunk(data)
    inspector.finish()
    assert inspector.format_match and inspector.virtual_size >= 0
    assert failures(inspector)


def test_luks2_is_read_but_fails_the_version_check(tmp_path: Path) -> None:
    """The drop-in keeps oslo's policy (LUKS1 only); the library itself reads LUKS2."""
    cryptsetup = shutil.which("cryptsetup")
    if cryptsetup is None:
        pytest.skip("cryptsetup missing")
    path = tmp_path / "disk.luks2"
    path.write_bytes(bytes(32 * MiB))
    subprocess.run(
        [cryptsetup, "luksFormat", "--batch-mode", "--key-file", "-", "--type", "luks2",
         "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", str(path)],
        input=b"pw", check=True, capture_output=True,
    )  # fmt: skip
    fmt = fi.detect_file_format(str(path))
    assert fmt is not None and fmt.NAME == "luks"
    assert list(failures(fmt)) == ["version"] and "version 2" in failures(fmt)["version"]
    assert fmt.virtual_size == 16 * MiB  # 32 MiB less cryptsetup's 16 MiB LUKS2 header
    assert isinstance(fmt, fi.LUKSInspector) and fmt.header_items == {"version": 2}
    assert not [f for f in introspect(path).findings if f.severity == "unsafe"]


# --- installing ---------------------------------------------------------------------------------


def test_install_after_oslo_was_imported(tmp_path: Path) -> None:
    """Modules that bound oslo's module (or a name from it) before install() see ours."""
    pytest.importorskip("oslo_utils.imageutils.format_inspector")
    (tmp_path / "user.py").write_text(
        "from oslo_utils.imageutils import format_inspector\n"
        "from oslo_utils.imageutils.format_inspector import InspectWrapper\n"
    )
    script = textwrap.dedent("""\
        import sys, user
        import imageintrospect.compat as compat
        ours = compat.install()
        import oslo_utils.imageutils as package
        from oslo_utils.imageutils import format_inspector
        assert user.format_inspector is ours and user.InspectWrapper is ours.InspectWrapper
        assert package.format_inspector is ours and format_inspector is ours
        assert sys.modules[compat.OSLO_MODULE] is ours
        print("ok")
        """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_install_from_environ() -> None:
    script = (
        "import imageintrospect.compat as c; print(c.install_from_environ()); "
        "from oslo_utils.imageutils import format_inspector as f; print(f is c.format_inspector)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for value, expected in (("1", "True\nTrue"), ("", "False\n")):
        env["IMAGEINTROSPECT_OSLO_COMPAT"] = value
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True
        )
        assert out.stdout.strip().startswith(expected.strip()), out.stderr


def test_listed_differences_are_real_tests() -> None:
    """Every oslo.utils id docs/compat.md lists names a test of the installed release (a
    renamed test would otherwise run again, or a stale line hide nothing).  Glance's and
    Nova's are not imported here (Nova's tests patch the interpreter with eventlet)."""
    import unittest

    pytest.importorskip("oslo_utils.tests.imageutils.test_format_inspector")
    listed = {name for name in documented_differences() if name.startswith("oslo_utils.")}
    assert len(listed) > 10
    suite = unittest.defaultTestLoader.loadTestsFromName(
        "oslo_utils.tests.imageutils.test_format_inspector"
    )
    assert listed <= set(_ids(suite))


def _ids(suite: object) -> list[str]:
    import unittest

    if isinstance(suite, unittest.TestSuite):
        return [i for test in suite for i in _ids(test)]
    return [suite.id()]  # type: ignore[attr-defined]


# --- Nova's own code ------------------------------------------------------------------------


NOVA_SCRIPT = """
import sys
import imageintrospect.compat
imageintrospect.compat.install()
from nova import exception
from nova.virt import images

verdicts = []
for disk_format, path in zip(sys.argv[1::2], sys.argv[2::2]):
    try:
        images.do_image_deep_inspection({"disk_format": disk_format}, "img", path)
        verdicts.append(str(images.get_image_format(path)))
    except exception.ImageUnacceptable as exc:
        verdicts.append("refused: " + str(exc.kwargs["reason"]))
print("|".join(verdicts))
"""


def test_novas_deep_inspection_uses_the_drop_in(
    make_image: Callable[..., Path], tmp_path: Path
) -> None:
    """Nova's real ``do_image_deep_inspection``/``get_image_format`` (in a child process:
    importing Nova patches the interpreter), on real images."""
    import importlib.util

    if importlib.util.find_spec("nova") is None:
        pytest.skip("nova not installed (the integration extra)")
    base = make_image("raw", "1M")
    child = tmp_path / "child.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", child)
    polyglot = make_image("qcow2", "16M")
    with open(polyglot, "ab") as f:
        f.write(make_image("vpc", "16M", "-o", "subformat=fixed").read_bytes()[-512:])
    cases = [
        ("qcow2", make_image("qcow2", "64M")),
        ("qcow2", child),
        ("vmdk", make_image("vmdk", "8M", "-o", "subformat=streamOptimized")),
        ("qcow2", polyglot),
        ("raw", mbr_disk(tmp_path, (0x80, 0x83, 2048, 2048))),
        ("vhd", make_image("vpc", "8M", "-o", "subformat=fixed")),
    ]
    argv = [str(a) for case in cases for a in case]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", NOVA_SCRIPT, *argv], env=env, capture_output=True, text=True
    )
    assert out.stdout.strip().split("|") == [
        "qcow2",
        "refused: Image does not pass safety check",
        "vmdk",
        "refused: Image content does not match disk_format",
        "gpt",
        "vhd",
    ], out.stderr[-2000:]
