"""OVA: appliances built with tarfile from OVF documents in several producers' styles."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imageintrospect import introspect
from tests.support import introspect_hostile, needs_qemu, qemu_img, qemu_io
from tests.support import streamed as streamed_answer

pytestmark = needs_qemu

MakeImage = Callable[..., Path]

# An OVF in the style of VMware's ovftool (OVF 1.0 namespace, vmw: attributes).
VMWARE_OVF = """<?xml version="1.0" encoding="UTF-8"?>
<Envelope vmw:buildId="build-123" xmlns="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common"
    xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
    xmlns:vmw="http://www.vmware.com/schema/ovf"
    xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
    xmlns:cim_pasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ProcessorAllocationSettingData"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="{disk}" ovf:id="file1" ovf:size="{size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="{capacity_gib}" ovf:capacityAllocationUnits="byte * 2^30"
      ovf:diskId="vmdisk1" ovf:fileRef="file1"
      ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
      ovf:populatedSize="0"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="VM Network"><Description>The VM Network network</Description></Network>
  </NetworkSection>
  <VirtualSystem ovf:id="appliance">
    <Info>A virtual machine</Info>
    <Name>appliance</Name>
    <OperatingSystemSection ovf:id="94" vmw:osType="ubuntu64Guest">
      <Info>The kind of installed guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:ElementName>2 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
        <cim_pasd:InstructionSet>x86:64</cim_pasd:InstructionSet>
        <cim_pasd:ProcessorArchitecture>x86</cim_pasd:ProcessorArchitecture>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:ElementName>2048MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>2048</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:ElementName>SCSI controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>{controller}</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>7</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>VM Network</rasd:Connection>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""

# An OVF in the style of VirtualBox's exporter (OVF 2.0, vbox: elements, SATA controller).
VBOX_OVF = """<?xml version="1.0"?>
<Envelope ovf:version="2.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/2"
    xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/2"
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
    xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xmlns:vbox="http://www.virtualbox.org/ovf/machine"
    xmlns:epasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_EthernetPortAllocationSettingData"
    xmlns:sasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_StorageAllocationSettingData">
  <References>
    <File ovf:id="file1" ovf:href="{disk}"/>
  </References>
  <DiskSection>
    <Info>List of the virtual disks used in the package</Info>
    <Disk ovf:capacity="{capacity}" ovf:diskId="vmdisk1" ovf:fileRef="file1"
      ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
      vbox:uuid="f1b2c3d4-0000-4000-8000-000000000001"/>
  </DiskSection>
  <NetworkSection><Info>Logical networks</Info><Network ovf:name="NAT"/></NetworkSection>
  <VirtualSystem ovf:id="vbox-vm">
    <Info>A virtual machine</Info>
    <OperatingSystemSection ovf:id="96">
      <Info>The kind of installed guest operating system</Info>
      <Description>Debian_64</Description>
      <vbox:OSType ovf:required="false">Debian_64</vbox:OSType>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements for a virtual machine</Info>
      <Item>
        <rasd:Caption>1 virtual CPU</rasd:Caption>
        <rasd:ElementName>1 virtual CPU</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>1</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>
        <rasd:ElementName>1024 MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>1024</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:ElementName>sataController0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>AHCI</rasd:ResourceSubType>
        <rasd:ResourceType>20</rasd:ResourceType>
      </Item>
      <EthernetPortItem>
        <epasd:AutomaticAllocation>true</epasd:AutomaticAllocation>
        <epasd:Connection>NAT</epasd:Connection>
        <epasd:ElementName>Ethernet adapter on 'NAT'</epasd:ElementName>
        <epasd:InstanceID>5</epasd:InstanceID>
        <epasd:ResourceSubType>E1000</epasd:ResourceSubType>
        <epasd:ResourceType>10</epasd:ResourceType>
      </EthernetPortItem>
      <StorageItem>
        <sasd:AddressOnParent>0</sasd:AddressOnParent>
        <sasd:ElementName>disk1</sasd:ElementName>
        <sasd:HostResource>/disk/vmdisk1</sasd:HostResource>
        <sasd:InstanceID>6</sasd:InstanceID>
        <sasd:Parent>3</sasd:Parent>
        <sasd:ResourceType>17</sasd:ResourceType>
      </StorageItem>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""

# The pre-standard OVF 0.9 namespace (early VMware tools).
OVF09 = """<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://www.vmware.com/schema/ovf/1/envelope"
    xmlns:ovf="http://www.vmware.com/schema/ovf/1/envelope"
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References><File ovf:href="{disk}" ovf:id="file1"/></References>
  <Section xsi:type="ovf:DiskSection_Type" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
    <Info>disks</Info>
  </Section>
  <DiskSection>
    <Disk ovf:capacity="{capacity}" ovf:diskId="vmdisk1" ovf:fileRef="file1"
      ovf:format="http://www.vmware.com/specifications/vmdk.html#sparse"/>
  </DiskSection>
  <VirtualSystem ovf:id="old">
    <Info>old</Info>
    <VirtualHardwareSection>
      <Item>
        <rasd:InstanceId>1</rasd:InstanceId>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>4</rasd:VirtualQuantity>
      </Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""


def add_member(tar: tarfile.TarFile, name: str, data: bytes, **attrs: Any) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data))


def build_ova(
    path: Path,
    members: list[tuple[str, bytes]],
    manifest: str | None = "SHA256",
    tar_format: int = tarfile.USTAR_FORMAT,
) -> Path:
    """Write an OVA: members in order, then a manifest over them (ovftool puts it second;
    the standard allows it last)."""
    with tarfile.open(path, "w", format=tar_format) as tar:
        for name, data in members:
            add_member(tar, name, data)
        if manifest:
            lines = "".join(
                f"{manifest}({name})= {hashlib.new(manifest.lower(), data).hexdigest()}\n"
                for name, data in members
            )
            add_member(tar, "appliance.mf", lines.encode())
    return path


@pytest.fixture
def stream_vmdk(make_image: MakeImage) -> bytes:
    path = make_image(
        "vmdk", "64M", "-o", "subformat=streamOptimized,adapter_type=buslogic", name="disk1.vmdk"
    )
    qemu_io(path, "vmdk", "write -P 0x11 0 1M")
    return path.read_bytes()


def vmware_ova(tmp_path: Path, disk: bytes, controller: str = "buslogic", **kw: Any) -> Path:
    ovf = VMWARE_OVF.format(
        disk="disk1.vmdk", size=len(disk), capacity_gib=1, controller=controller
    )
    ovf = ovf.replace('ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^30"',
                      f'ovf:capacity="{64 << 20}" ovf:capacityAllocationUnits="byte"')  # fmt: skip
    return build_ova(
        tmp_path / "vm.ova", [("appliance.ovf", ovf.encode()), ("disk1.vmdk", disk)], **kw
    )


def test_vmware_style_appliance(tmp_path: Path, stream_vmdk: bytes) -> None:
    md = introspect(vmware_ova(tmp_path, stream_vmdk))
    assert md.format == "ova"
    assert md.safe, md.findings
    ova = md.ova
    assert ova is not None
    assert ova.ovf_file == "appliance.ovf" and ova.ovf_version == "1.x"
    assert ova.manifest.verified is True and ova.manifest.algorithm == "SHA256"
    (system,) = ova.virtual_systems
    assert (system.name, system.os_id, system.os_type) == ("appliance", "94", "ubuntu64Guest")
    assert (system.cpus, system.memory_mb) == (2, 2048)
    assert system.controllers[0]["subtype"] == "buslogic"
    assert system.nics == ({"subtype": "VmxNet3", "network": "VM Network"},)
    (disk,) = ova.disks
    assert disk.capacity == 64 << 20 and disk.file == "disk1.vmdk"
    assert disk.image is not None and disk.image.format == "vmdk"
    assert disk.image.virtual_size == 64 << 20
    assert md.virtual_size == 64 << 20
    assert md.glance_properties() == {
        "container_format": "ova",
        "disk_format": "vmdk",
        "virtual_size": 64 << 20,
        "vmware_disktype": "streamOptimized",
        "vmware_adaptertype": "busLogic",
        "vmware_ostype": "ubuntu64Guest",
        "hw_vif_model": "VirtualVmxnet3",
        "cim_pasd_InstructionSet": "x86:64",
        "cim_pasd_ProcessorArchitecture": "x86",
    }
    json.dumps(md.to_dict())


def test_ovf_controller_wins_over_the_vmdk(tmp_path: Path, stream_vmdk: bytes) -> None:
    md = introspect(vmware_ova(tmp_path, stream_vmdk, controller="lsilogic"))
    assert md.glance_properties()["vmware_adaptertype"] == "lsiLogic"
    assert "ova-adapter-type-override" in md.codes()


def test_virtualbox_style_appliance(tmp_path: Path, stream_vmdk: bytes) -> None:
    ovf = VBOX_OVF.format(disk="disk1.vmdk", capacity=64 << 20)
    path = build_ova(
        tmp_path / "vbox.ova",
        [("vbox.ovf", ovf.encode()), ("disk1.vmdk", stream_vmdk)],
        manifest="SHA1",
        tar_format=tarfile.PAX_FORMAT,
    )
    md = introspect(path)
    assert md.safe, md.findings
    assert md.ova is not None and md.ova.ovf_version == "2.x"
    (system,) = md.ova.virtual_systems
    assert (system.os_type, system.cpus, system.memory_mb) == ("Debian_64", 1, 1024)
    assert system.nics[0]["subtype"] == "E1000"
    props = md.glance_properties()
    assert props["hw_vif_model"] == "e1000"
    assert props["vmware_adaptertype"] == "busLogic"  # SATA has no Glance value: the VMDK's
    assert md.ova.manifest.verified is True


def test_ovf_09_namespace(tmp_path: Path, stream_vmdk: bytes) -> None:
    ovf = OVF09.format(disk="disk1.vmdk", capacity=64 << 20)
    path = build_ova(tmp_path / "o.ova", [("old.ovf", ovf.encode()), ("disk1.vmdk", stream_vmdk)])
    md = introspect(path)
    assert md.ova is not None and md.ova.ovf_version == "0.9"
    assert md.ova.virtual_systems[0].cpus == 4
    assert md.safe, md.findings


def test_manifest_mismatch(tmp_path: Path, stream_vmdk: bytes) -> None:
    path = vmware_ova(tmp_path, stream_vmdk)
    blob = bytearray(path.read_bytes())
    at = blob.index(stream_vmdk[:512]) + 1024 * 8  # inside the disk member's data
    blob[at] ^= 0xFF
    path.write_bytes(bytes(blob))
    md = introspect(path)
    assert "ova-manifest-mismatch" in md.codes() and not md.safe
    assert md.ova is not None and md.ova.manifest.mismatches == ("disk1.vmdk",)
    # Header-only: the manifest is read but not verified.
    shallow = introspect(path, deep=False)
    assert "ova-manifest-unverified" in shallow.codes()


def test_missing_and_unreferenced_members(tmp_path: Path, stream_vmdk: bytes) -> None:
    ovf = VMWARE_OVF.format(disk="other.vmdk", size=10, capacity_gib=1, controller="buslogic")
    path = build_ova(
        tmp_path / "m.ova",
        [("a.ovf", ovf.encode()), ("disk1.vmdk", stream_vmdk), ("a.cert", b"cert")],
    )
    md = introspect(path)
    assert {"ova-missing-file", "ova-unreferenced-member", "ova-certificate"} <= md.codes()
    assert not md.safe


@pytest.mark.parametrize(
    "href", ["/etc/passwd", "../../etc/passwd", "http://169.254.169.254/latest", "file:///x"]
)
def test_href_outside_the_archive(tmp_path: Path, href: str) -> None:
    ovf = VMWARE_OVF.format(disk=href, size=10, capacity_gib=1, controller="buslogic")
    md = introspect(build_ova(tmp_path / "h.ova", [("a.ovf", ovf.encode())]))
    assert "ova-external-reference" in md.codes() and not md.safe


@pytest.mark.parametrize(
    ("name", "kind"),
    [("../evil.vmdk", tarfile.REGTYPE), ("/abs.vmdk", tarfile.REGTYPE), ("link", tarfile.SYMTYPE)],
)
def test_unsafe_member_names(tmp_path: Path, name: str, kind: bytes) -> None:
    ovf = VMWARE_OVF.format(disk="disk1.vmdk", size=4, capacity_gib=1, controller="buslogic")
    path = tmp_path / "u.ova"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        add_member(tar, "a.ovf", ovf.encode())
        add_member(tar, name, b"" if kind == tarfile.SYMTYPE else b"data", type=kind,
                   linkname="/etc/passwd" if kind == tarfile.SYMTYPE else "")  # fmt: skip
    md = introspect(path)
    assert "ova-unsafe-member" in md.codes() and not md.safe


def test_xml_entities_are_refused_and_do_not_leak(tmp_path: Path) -> None:
    ovf = (
        '<?xml version="1.0"?>\n<!DOCTYPE Envelope [<!ENTITY secret SYSTEM "file:///etc/passwd">'
        '<!ENTITY boom "BOOMBOOMBOOM">]>\n'
        '<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1">'
        "<VirtualSystem><Name>&secret;&boom;</Name></VirtualSystem></Envelope>"
    )
    md = introspect(build_ova(tmp_path / "x.ova", [("a.ovf", ovf.encode())]))
    assert "ova-xml-dtd" in md.codes() and not md.safe
    text = json.dumps(md.to_dict())
    assert "root:" not in text and "BOOM" not in text


def test_descriptor_not_first_and_no_descriptor(tmp_path: Path, stream_vmdk: bytes) -> None:
    ovf = VMWARE_OVF.format(disk="disk1.vmdk", size=len(stream_vmdk), capacity_gib=1,
                            controller="buslogic")  # fmt: skip
    late = build_ova(tmp_path / "late.ova", [("disk1.vmdk", stream_vmdk), ("a.ovf", ovf.encode())])
    md = introspect(late)
    assert md.format == "ova" and "ova-descriptor-not-first" in md.codes()
    assert md.ova is not None and md.ova.disks[0].image is not None
    bare = build_ova(tmp_path / "bare.ova", [("notes.txt", b"hello")], manifest=None)
    assert introspect(bare).codes() == {"tar-not-ova"}  # not an OVA at all: raw


def test_capacity_mismatch_and_two_disks(tmp_path: Path, stream_vmdk: bytes) -> None:
    ovf = VMWARE_OVF.format(disk="disk1.vmdk", size=len(stream_vmdk), capacity_gib=8,
                            controller="buslogic")  # fmt: skip
    ovf = ovf.replace(
        "</DiskSection>",
        '<Disk ovf:capacity="1" ovf:diskId="vmdisk2" ovf:fileRef="file1"/></DiskSection>',
    )
    path = build_ova(tmp_path / "c.ova", [("a.ovf", ovf.encode()), ("disk1.vmdk", stream_vmdk)])
    md = introspect(path)
    assert {"ova-capacity-mismatch", "ova-multiple-disks"} <= md.codes()


def test_hostile_disk_findings_are_lifted(tmp_path: Path, make_image: MakeImage) -> None:
    disk = make_image("qcow2", "16M", "-u", "-b", "/etc/passwd", "-F", "raw").read_bytes()
    ovf = VMWARE_OVF.format(disk="disk1.vmdk", size=len(disk), capacity_gib=1,
                            controller="buslogic")  # fmt: skip
    md = introspect(build_ova(tmp_path / "q.ova", [("a.ovf", ovf.encode()), ("disk1.vmdk", disk)]))
    lifted = [f for f in md.findings if f.code == "backing-file"]
    assert lifted and lifted[0].message.startswith("disk1.vmdk: ")
    assert not md.safe
    assert md.glance_properties()["disk_format"] == "qcow2"


def test_qcow2_member_deep_walk_as_alone(tmp_path: Path, make_image: MakeImage) -> None:
    """A member's L2 tables are read in place (through the archive) into the walker's
    batch: the member's deep answer is the answer for the file alone."""
    path = make_image("qcow2", "64M", "-o", "cluster_size=4096,preallocation=metadata")
    qemu_io(path, "qcow2", "write -P 7 1M 2M")
    disk = path.read_bytes()
    ovf = VMWARE_OVF.format(disk="disk1.vmdk", size=len(disk), capacity_gib=1,
                            controller="buslogic")  # fmt: skip
    md = introspect(build_ova(tmp_path / "p.ova", [("a.ovf", ovf.encode()), ("disk1.vmdk", disk)]))
    assert md.ova is not None
    image = md.ova.disks[0].image
    alone = introspect(path).to_dict()
    assert image is not None and alone["allocated_size"] == 64 * 1024 * 1024
    member = image.to_dict()
    assert {key: member[key] for key in alone} == alone


def test_nested_ova_is_not_followed(tmp_path: Path, stream_vmdk: bytes) -> None:
    inner = vmware_ova(tmp_path, stream_vmdk).read_bytes()
    ovf = VMWARE_OVF.format(disk="disk1.vmdk", size=len(inner), capacity_gib=1,
                            controller="buslogic")  # fmt: skip
    outer = build_ova(tmp_path / "outer.ova", [("o.ovf", ovf.encode()), ("disk1.vmdk", inner)])
    md = introspect(outer)
    assert "ova-nested" in md.codes() and not md.safe


def test_absurd_member_size(tmp_path: Path) -> None:
    path = build_ova(tmp_path / "a.ova", [("a.ovf", b"<Envelope/>")], manifest=None)
    blob = bytearray(path.read_bytes())
    blob[124:136] = b"77777777777\0"  # 8 GiB claimed
    checksum = sum(blob[:148]) + 8 * 32 + sum(blob[156:512])
    blob[148:156] = b"%06o\0 " % checksum
    path.write_bytes(bytes(blob))
    md = introspect(path)
    assert "truncated" in md.codes() and not md.safe


def test_qemu_sees_raw(tmp_path: Path, stream_vmdk: bytes) -> None:
    from tests.support import qemu_info

    path = vmware_ova(tmp_path, stream_vmdk)
    assert qemu_info(path)["format"] == "raw"
    assert introspect(path).format == "ova"
    qemu_img("info", path)


@pytest.fixture(scope="module")
def seed_ova(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    directory = tmp_path_factory.mktemp("ova-seed")
    disk = directory / "d.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", "-o", "subformat=streamOptimized", disk, "8M")
    return vmware_ova(directory, disk.read_bytes()).read_bytes()


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_ova_never_escapes(seed_ova: bytes, data: st.DataObject) -> None:
    blob = bytearray(seed_ova)
    for _ in range(data.draw(st.integers(1, 10))):
        blob[data.draw(st.integers(0, min(len(blob), 8192) - 1))] = data.draw(st.integers(0, 255))
    md = introspect_hostile(io.BytesIO(bytes(blob)))
    if md is None:
        return


@pytest.mark.parametrize("manifest_last", [False, True])
@pytest.mark.parametrize("chunk", [512, 65536, 4 << 20])
def test_streamed_appliance_is_verified_in_one_pass(
    tmp_path: Path, make_image: MakeImage, manifest_last: bool, chunk: int
) -> None:
    disk_path = make_image("vmdk", "64M", "-o", "subformat=streamOptimized", name="d.vmdk")
    qemu_io(disk_path, "vmdk", "write -P 0x33 0 3M")
    disk = disk_path.read_bytes()
    ovf = VMWARE_OVF.format(disk="disk1.vmdk", size=len(disk), capacity_gib=1,
                            controller="buslogic").encode()  # fmt: skip
    digest = "".join(
        f"SHA256({n})= {hashlib.sha256(d).hexdigest()}\n"
        for n, d in (("a.ovf", ovf), ("disk1.vmdk", disk))
    )
    members = [("a.ovf", ovf), ("a.mf", digest.encode()), ("disk1.vmdk", disk)]
    if manifest_last:
        members = [members[0], members[2], members[1]]
    path = build_ova(tmp_path / "s.ova", members, manifest=None)
    seekable = introspect(path)
    streamed = streamed_answer(path.read_bytes(), chunk)
    assert streamed.to_dict() == seekable.to_dict()
    assert streamed.ova is not None and streamed.ova.manifest.verified is True
