"""Polyglots: bytes that more than one format claims are unsafe; partition tables are no claim.

A polyglot is dangerous because two readers see two different disks: an ISO whose system area
is also a qcow2 header is a qcow2 with a backing file to anyone who probes it.  A hybrid ISO
(MBR/GPT in the system area, an appended EFI partition) or a GPT disk is *not* one: partition
tables are not formats, and every reader sees the same bytes.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from imageintrospect import Metadata, introspect
from imageintrospect.detect import claimants, read_probe
from imageintrospect.errors import FormatMismatch
from imageintrospect.source import open_source
from tests.support import forward_only, needs_qemu, patch, qemu_img, run

XORRISO = shutil.which("xorriso")
pytestmark = [needs_qemu, pytest.mark.skipif(XORRISO is None, reason="xorriso missing")]

MiB = 1024 * 1024
SYSTEM_AREA = 32 * 1024


# --- helpers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("poly")
    tree = root / "tree"
    tree.mkdir()
    (tree / "boot.img").write_bytes(bytes(range(256)) * 16)
    (tree / "readme.txt").write_text("polyglot test\n")
    (root / "mbr.bin").write_bytes(b"\xfa\x31\xc0" + bytes(429))
    if shutil.which("mkfs.vfat") is not None:
        run("mkfs.vfat", "-C", root / "efi.img", "1440")
    return root


MakeIso = Callable[..., Path]


@pytest.fixture(scope="module")
def make_iso(workdir: Path) -> MakeIso:
    counter = iter(range(1000))

    def _make(*args: str) -> Path:
        path = workdir / f"iso{next(counter)}.iso"
        resolved = [a.replace("@MBR@", str(workdir / "mbr.bin")) for a in args]
        resolved = [a.replace("@EFI@", str(workdir / "efi.img")) for a in resolved]
        run(str(XORRISO), "-as", "mkisofs", "-quiet", *resolved, "-o", path, workdir / "tree")
        return path

    return _make


def copy(path: Path, tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copyfile(path, target)
    return target


def claimed_by(path: Path) -> list[str]:
    with open_source(path) as src:
        return [spec.name for spec in claimants(read_probe(src))]


def detected_as(path: Path, fmt: str) -> bool:
    """True once the format's module has landed (its own images are claimed by it alone)."""
    return claimed_by(path) == [fmt]


def stream_agrees(path: Path) -> Metadata:
    md = introspect(path)
    assert introspect(forward_only(path)).to_dict() == md.to_dict()
    return md


def assert_ambiguous(md: Metadata, *names: str) -> None:
    assert not md.safe
    [finding] = [f for f in md.findings if f.code == "format-ambiguous"]
    assert finding.severity == "unsafe"
    for name in names:
        assert name in finding.message


BOOT = ("-b", "boot.img", "-no-emul-boot")


# --- ISO system area carrying another format's header -------------------------------------


def test_qcow2_header_in_iso_system_area(
    make_iso: MakeIso, make_image: Callable[..., Path], tmp_path: Path
) -> None:
    iso = copy(make_iso("-V", "POLY", *BOOT), tmp_path, "poly.iso")
    qcow2 = make_image("qcow2", "64M", "-o", "backing_file=/etc/passwd,backing_fmt=raw")
    patch(iso, 0, qcow2.read_bytes()[:4096])
    assert claimed_by(iso) == ["qcow2", "iso"]
    md = stream_agrees(iso)
    assert md.format == "qcow2"  # what qemu would probe it as
    assert_ambiguous(md, "qcow2", "iso")
    with pytest.raises(FormatMismatch):
        introspect(iso, expected_format="iso")


# Formats whose magic sits at offset 0, each made by qemu-img; a header of each is written over
# an ISO's system area.  A format whose module has not landed yet is skipped.
HEAD_FORMATS = [
    ("qcow2", ()),
    ("qed", ()),
    ("vdi", ()),
    ("vhdx", ()),
    ("vmdk", ()),  # monolithicSparse: "KDMV" at 0
    ("vpc", ("-o", "subformat=dynamic")),  # a dynamic VHD starts with a copy of its footer
]


@pytest.mark.parametrize(("fmt", "options"), HEAD_FORMATS, ids=[f for f, _ in HEAD_FORMATS])
def test_any_header_in_iso_system_area(
    make_iso: MakeIso,
    make_image: Callable[..., Path],
    tmp_path: Path,
    fmt: str,
    options: tuple[str, ...],
) -> None:
    name = {"vpc": "vhd"}.get(fmt, fmt)
    image = make_image(fmt, "16M", *options)
    if not detected_as(image, name):
        pytest.skip(f"the {name} module has not landed yet")
    iso = copy(make_iso(*BOOT), tmp_path, "poly.iso")
    patch(iso, 0, image.read_bytes()[: SYSTEM_AREA // 2])
    assert claimed_by(iso) == [name, "iso"]
    md = stream_agrees(iso)
    assert md.format == name
    assert_ambiguous(md, name, "iso")


# --- other polyglots -----------------------------------------------------------------------


@pytest.fixture
def vmdk_over_gpt_disk(tmp_path: Path) -> Path:
    """A GPT raw disk whose first bytes were overwritten with a VMDK text descriptor."""
    if shutil.which("sgdisk") is None:
        pytest.skip("sgdisk (gdisk) missing")
    path = tmp_path / "disk.img"
    with open(path, "wb") as f:
        f.truncate(8 * MiB)
    run("sgdisk", "-o", "-n", "1:2048:+1M", path)
    descriptor = (
        b"# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        b'createType="monolithicFlat"\n\n# Extent description\n'
        b'RW 2048 FLAT "/etc/shadow" 0\n\nddb.adapterType = "ide"\n'
    )
    patch(path, 0, descriptor)
    return path


def test_vmdk_descriptor_at_the_start_of_a_raw_disk(vmdk_over_gpt_disk: Path) -> None:
    """qemu probes the text as a VMDK and would open /etc/shadow as its flat extent."""
    path = vmdk_over_gpt_disk
    assert claimed_by(path) == ["vmdk"]
    md = stream_agrees(path)
    assert md.format == "vmdk"
    assert not md.safe
    assert any("/etc/shadow" in f.message for f in md.findings)
    with pytest.raises(FormatMismatch):
        introspect(path, expected_format="raw")


def test_vhd_footer_at_the_end_of_a_qcow2(make_image: Callable[..., Path], tmp_path: Path) -> None:
    fixed = make_image("vpc", "4M", "-o", "subformat=fixed")
    assert detected_as(fixed, "vhd")
    qcow2 = make_image("qcow2", "16M")
    with open(qcow2, "ab") as f:
        f.write(fixed.read_bytes()[-512:])
    assert claimed_by(qcow2) == ["qcow2", "vhd"]
    md = stream_agrees(qcow2)
    assert md.format == "qcow2"
    assert_ambiguous(md, "qcow2", "vhd")


def test_fixed_vhd_holding_an_iso(make_iso: MakeIso, tmp_path: Path) -> None:
    """``qemu-img convert -O vpc -o subformat=fixed x.iso``: the ISO is the VHD's guest data.

    Both probes claim these bytes, but the ISO sits exactly where a fixed VHD keeps its disk,
    and neither reading reaches outside the file: no reader is misled (detect.coexisting).
    """
    vhd = tmp_path / "cd.vhd"
    qemu_img("convert", "-O", "vpc", "-o", "subformat=fixed", make_iso(*BOOT), vhd)
    assert claimed_by(vhd) == ["vhd", "iso"]
    md = introspect(vhd)
    assert "format-ambiguous" not in md.codes()
    assert md.format == "vhd"
    assert md.safe


# --- not polyglots -------------------------------------------------------------------------


HYBRIDS = {
    "isohybrid-mbr": (*BOOT, "-isohybrid-mbr", "@MBR@", "-partition_offset", "16"),
    "isohybrid-gpt": (
        *BOOT,
        "-isohybrid-mbr",
        "@MBR@",
        "-partition_offset",
        "16",
        "-isohybrid-gpt-basdat",
    ),
    "appended-efi": (*BOOT, "-append_partition", "2", "0xef", "@EFI@"),
    "appended-efi-as-gpt": (
        *BOOT,
        "-isohybrid-gpt-basdat",
        "-append_partition",
        "2",
        "0xef",
        "@EFI@",
        "-appended_part_as_gpt",
    ),
}


@pytest.mark.parametrize("variant", list(HYBRIDS))
def test_hybrid_isos_are_not_polyglots(make_iso: MakeIso, workdir: Path, variant: str) -> None:
    if "@EFI@" in HYBRIDS[variant] and not (workdir / "efi.img").exists():
        pytest.skip("mkfs.vfat (dosfstools) missing")
    path = make_iso(*HYBRIDS[variant])
    assert claimed_by(path) == ["iso"]
    md = stream_agrees(path)
    assert md.format == "iso"
    assert md.safe
    assert "format-ambiguous" not in md.codes()
    assert md.partition_table in ("mbr", "gpt")
    assert md.iso is not None and md.iso.hybrid
    assert introspect(path, expected_format="iso").format == "iso"


def test_gpt_disk_carrying_an_iso(make_iso: MakeIso, tmp_path: Path) -> None:
    """sgdisk on an ISO file: a GPT disk whose partition holds the ISO = a hybrid ISO."""
    if shutil.which("sgdisk") is None:
        pytest.skip("sgdisk (gdisk) missing")
    path = copy(make_iso("-V", "ONDISK", *BOOT), tmp_path, "disk.iso")
    run("sgdisk", "-o", "-n", "1:64:0", path)
    md = stream_agrees(path)
    assert (md.format, md.partition_table, md.safe) == ("iso", "gpt", True)
    assert md.iso is not None and md.iso.hybrid and md.iso.volume_id == "ONDISK"
    assert md.findings == ()


def test_partition_tables_are_no_claim(tmp_path: Path) -> None:
    disks = []
    if shutil.which("sgdisk"):
        gpt = tmp_path / "gpt.img"
        with open(gpt, "wb") as f:
            f.truncate(8 * MiB)
        run("sgdisk", "-o", "-n", "1:2048:+1M", gpt)
        disks.append(gpt)
    if shutil.which("mkfs.vfat"):
        fat = tmp_path / "fat.img"
        run("mkfs.vfat", "-C", fat, "8192")
        disks.append(fat)
    mbr = tmp_path / "mbr.img"
    with open(mbr, "wb") as f:
        f.truncate(8 * MiB)
        f.seek(446)
        f.write(bytes.fromhex("80000000830000000008000000380000") + bytes(48) + b"\x55\xaa")
    disks.append(mbr)
    for disk in disks:
        assert claimed_by(disk) == []
        md = introspect(disk)
        assert md.format == "raw" and md.safe


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("qcow2", ("-o", "cluster_size=512")),
        ("qcow2", ("-o", "cluster_size=4096")),
        ("qcow2", ("-o", "cluster_size=16384")),
        ("qcow2", ()),
        ("vmdk", ()),
        ("vmdk", ("-o", "subformat=streamOptimized")),
        ("vdi", ()),
        ("vpc", ()),
        ("vhdx", ()),
        ("qed", ()),
    ],
    ids=lambda v: v if isinstance(v, str) else "-".join(v).replace("-o-", ""),
)
def test_iso_converted_into_a_container_is_not_a_polyglot(
    make_iso: MakeIso, tmp_path: Path, fmt: str, options: tuple[str, ...]
) -> None:
    """``qemu-img convert -O fmt x.iso``: the ISO is guest data; only the container claims."""
    name = {"vpc": "vhd"}.get(fmt, fmt)
    path = tmp_path / f"cd.{fmt}"
    qemu_img("convert", "-O", fmt, *options, make_iso(*BOOT), path)
    claims = claimed_by(path)
    if name not in claims:
        pytest.skip(f"the {name} module has not landed yet")
    assert claims == [name]
    assert "format-ambiguous" not in introspect(path).codes()
