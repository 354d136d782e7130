"""OVA verdicts: what is an OVA at all, declared disk formats, Glance's OVF properties.

Archives are built with tarfile around disks made by qemu-img; qemu-img's own reading of the
archive (a raw disk) is the reference for ``--output qemu-json``.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from imageintrospect import introspect
from imageintrospect.errors import FormatMismatch
from tests.support import assert_same_as_qemu, needs_qemu, qemu_info
from tests.test_ova import VBOX_OVF, VMWARE_OVF, build_ova, stream_vmdk, vmware_ova

pytestmark = needs_qemu
MakeImage = Callable[..., Path]
__all__ = ["stream_vmdk"]  # the fixture, imported to be used here

STREAM_URI = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"


def ovf_for(disk: bytes, fmt_uri: str = STREAM_URI) -> bytes:
    ovf = VMWARE_OVF.format(disk="disk1.vmdk", size=len(disk), capacity_gib=1,
                            controller="lsilogic")  # fmt: skip
    return ovf.replace(STREAM_URI, fmt_uri).encode()


# --- a tar is not an OVA without its descriptor ---------------------------------------------


def test_tar_of_a_vhd_is_raw(tmp_path: Path, make_image: MakeImage) -> None:
    vhd = make_image("vpc", "16M")
    path = tmp_path / "disk.tar"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(vhd, arcname="disk.vhd")
    md = assert_same_as_qemu(path)  # qemu: raw, virtual-size the archive's length
    assert md.format == "raw" and md.ova is None
    assert md.codes() == {"tar-not-ova"} and md.safe
    assert "'disk.vhd'" in md.findings[0].message
    assert md.glance_properties()["disk_format"] == "raw"
    with pytest.raises(FormatMismatch):
        introspect(path, expected_format="ova")


# --- the declared disk format must be the disk's -------------------------------------------


def test_declared_stream_optimized_but_four_bytes_of_text(tmp_path: Path) -> None:
    # Glance's own sample appliance has this shape: a 4-byte "disk" declared streamOptimized.
    path = build_ova(tmp_path / "t.ova", [("a.ovf", ovf_for(b"ABCD")), ("disk1.vmdk", b"ABCD")])
    md = introspect(path)
    assert "ova-disk-format-mismatch" in md.codes() and not md.safe
    assert "the bytes are raw" in next(
        f.message for f in md.findings if f.code == "ova-disk-format-mismatch"
    )


@pytest.mark.parametrize(
    ("make", "uri", "mismatch"),
    [
        (("vmdk", "subformat=streamOptimized"), STREAM_URI, False),
        (
            ("vmdk", "subformat=streamOptimized"),
            STREAM_URI.replace("#streamOptimized", "#monolithicSparse"),
            True,
        ),
        (("vmdk", "subformat=monolithicSparse"), STREAM_URI, True),
        (
            ("vmdk", "subformat=monolithicSparse"),
            STREAM_URI.replace("#streamOptimized", "#sparse"),
            False,
        ),
        (("qcow2", "compat=1.1"), STREAM_URI, True),
        (
            ("vpc", "subformat=dynamic"),
            "http://technet.microsoft.com/en-us/virtualserver/bb676673.aspx",
            False,
        ),
        (
            ("qcow2", "compat=1.1"),
            "http://technet.microsoft.com/en-us/virtualserver/bb676673.aspx",
            True,
        ),
        (("qcow2", "compat=1.1"), "http://example.com/some-format-nobody-knows", False),
    ],
)
def test_declared_format_against_qemu_img_disks(
    tmp_path: Path, make_image: MakeImage, make: tuple[str, str], uri: str, mismatch: bool
) -> None:
    fmt, options = make
    disk = make_image(fmt, "16M", "-o", options).read_bytes()
    path = build_ova(tmp_path / "d.ova", [("a.ovf", ovf_for(disk, uri)), ("disk1.vmdk", disk)])
    md = introspect(path)
    assert ("ova-disk-format-mismatch" in md.codes()) is mismatch
    assert md.safe is not mismatch


def test_appliance_without_a_disk_is_unsafe(tmp_path: Path) -> None:
    ovf = ovf_for(b"").decode()
    start, end = ovf.index("<DiskSection>"), ovf.index("</DiskSection>")
    ovf = ovf[:start] + "<DiskSection><Info>none</Info>" + ovf[end:]
    ovf = ovf.replace('<File ovf:href="disk1.vmdk" ovf:id="file1" ovf:size="0"/>', "")
    md = introspect(build_ova(tmp_path / "n.ova", [("a.ovf", ovf.encode())]))
    assert md.format == "ova" and md.codes() == {"ova-no-disk"} and not md.safe


# --- qemu-img's view of an OVA is the archive's -----------------------------------------------


def test_qemu_json_of_an_ova_is_the_archive(tmp_path: Path, stream_vmdk: bytes) -> None:
    path = vmware_ova(tmp_path, stream_vmdk)
    md = assert_same_as_qemu(path)
    assert qemu_info(path)["virtual-size"] == path.stat().st_size
    assert md.virtual_size == 64 << 20  # the appliance's disk, as Glance wants it


# --- Glance's OVF properties ----------------------------------------------------------------

PASD_OUTSIDE_ITEMS = """    <ResourceAllocationSection>
      <ProcessorAllocationSettingData>
        <cim_pasd:InstructionSet>DMTF:x86:64</cim_pasd:InstructionSet>
        <cim_pasd:InstructionSetExtensionName>DMTF:x86:VT-d</cim_pasd:InstructionSetExtensionName>
      </ProcessorAllocationSettingData>
    </ResourceAllocationSection>
  </VirtualSystem>"""


def test_cim_pasd_wherever_glance_finds_it(tmp_path: Path, stream_vmdk: bytes) -> None:
    # As in Glance's sample appliance: the values sit in a section of their own, not in an
    # Item; Glance copies every element of the namespace it is configured for, anywhere.
    ovf = ovf_for(stream_vmdk).decode().replace("  </VirtualSystem>", PASD_OUTSIDE_ITEMS)
    path = build_ova(tmp_path / "p.ova", [("a.ovf", ovf.encode()), ("disk1.vmdk", stream_vmdk)])
    props = introspect(path).glance_properties()
    assert {k: v for k, v in props.items() if k.startswith("cim_pasd_")} == {
        "cim_pasd_ProcessorArchitecture": "x86",  # from the CPU Item
        "cim_pasd_InstructionSet": "DMTF:x86:64",  # the later element replaces the Item's
        "cim_pasd_InstructionSetExtensionName": "DMTF:x86:VT-d",
    }


def vbox_ova(tmp_path: Path, disk: bytes, os_type: str) -> Path:
    ovf = VBOX_OVF.format(disk="disk1.vmdk", capacity=64 << 20).replace("Debian_64", os_type)
    return build_ova(tmp_path / "v.ova", [("v.ovf", ovf.encode()), ("disk1.vmdk", disk)])


@pytest.mark.parametrize(
    ("os_type", "guest_id"),
    [("Ubuntu_64", "ubuntu64Guest"), ("Windows10_64", "windows9_64Guest"), ("Debian_64", None),
     ("ubuntu64Guest", None)],
)  # fmt: skip
def test_virtualbox_os_type_maps_to_a_vmware_guest_id(
    tmp_path: Path, stream_vmdk: bytes, os_type: str, guest_id: str | None
) -> None:
    md = introspect(vbox_ova(tmp_path, stream_vmdk, os_type))
    assert md.ova is not None and md.ova.virtual_systems[0].os_type == os_type
    assert md.glance_properties().get("vmware_ostype") == guest_id


def test_vmware_os_type_must_be_vmware_namespaced(tmp_path: Path, stream_vmdk: bytes) -> None:
    ovf = ovf_for(stream_vmdk).decode()
    assert 'vmw:osType="ubuntu64Guest"' in ovf
    path = build_ova(tmp_path / "a.ova", [("a.ovf", ovf.encode()), ("disk1.vmdk", stream_vmdk)])
    assert introspect(path).glance_properties()["vmware_ostype"] == "ubuntu64Guest"
    foreign = ovf.replace('vmw:osType="ubuntu64Guest"', 'ovf:osType="Ubuntu_64"')
    path = build_ova(tmp_path / "b.ova", [("a.ovf", foreign.encode()), ("disk1.vmdk", stream_vmdk)])
    assert "vmware_ostype" not in introspect(path).glance_properties()
