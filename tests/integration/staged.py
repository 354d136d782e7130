"""The images the integration tests stage in Glance, made by the real tools.

Each :class:`Staged` says what the user declares (``disk_format``, ``container_format``) and
what Glance must end with: ``active`` and these properties, or never active with these
finding codes (or this phrase) in the refusal.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import patch, qemu_img, run
from tests.support.vmware_stream import build_stream, vmware_descriptor

MiB = 1024 * 1024
ADAPTERS = {"buslogic": "busLogic", "lsilogic": "lsiLogic", "ide": "ide"}


@dataclass(frozen=True)
class Staged:
    name: str
    make: Callable[[Path], Path]
    disk_format: str
    container_format: str = "bare"
    #: Properties Glance must end with (the image is ``active``); None: it must be refused.
    expect: dict[str, object] | None = None
    #: For a refusal: what the task message must name (finding codes or a phrase).
    refusal: tuple[str, ...] = ()
    user: dict[str, str] = field(default_factory=dict)


def _guest_data(path: Path) -> Path:
    """A raw disk with a few MiB of non-zero data, the source of the converted disks."""
    with open(path, "wb") as f:
        f.truncate(8 * MiB)
        for at in range(0, 8 * MiB, 2 * MiB):
            f.seek(at)
            f.write(bytes(range(256)) * 256)
    return path


def qemu_stream(adapter: str) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        out = tmp / f"qemu-{adapter}.vmdk"
        options = f"subformat=streamOptimized,adapter_type={adapter}"
        qemu_img("convert", "-f", "raw", "-O", "vmdk", "-o", options, _guest_data(tmp / "g"), out)
        return out

    return make


def vmware_stream(adapter: str) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        capacity = 8 * MiB // 512
        descriptor = vmware_descriptor(capacity=capacity, adapter_type=adapter)
        grains = {0: b"boot" * 1024, 9: bytes(range(256)) * 64}
        layout = build_stream(capacity, grains, descriptor=descriptor)
        out = tmp / f"vmware-{adapter}.vmdk"
        out.write_bytes(layout.data)
        return out

    return make


def qcow2_backing(tmp: Path) -> Path:
    out = tmp / "backing.qcow2"
    qemu_img("create", "-f", "qcow2", "-u", "-b", "/etc/passwd", "-F", "raw", out, "16M")
    return out


def vmdk_host_extent(tmp: Path) -> Path:
    """A VMDK text descriptor whose flat extent is a file on the host."""
    out = tmp / "host-extent.vmdk"
    out.write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="monolithicFlat"\n\n# Extent description\n'
        'RW 2048 FLAT "/etc/passwd" 0\n\n# The Disk Data Base\n#DDB\n\n'
        'ddb.adapterType = "lsilogic"\n'
    )
    return out


def iso_qcow2_polyglot(tmp: Path) -> Path:
    """An ISO whose system area is also a qcow2 header: two readers, two different disks."""
    tree = tmp / "tree"
    tree.mkdir(exist_ok=True)
    (tree / "readme.txt").write_text("a polyglot\n")
    iso = tmp / "polyglot.iso"
    run("xorriso", "-as", "mkisofs", "-quiet", "-V", "POLY", "-o", iso, tree)
    qcow2 = tmp / "head.qcow2"
    qemu_img("create", "-f", "qcow2", qcow2, "16M")
    patch(iso, 0, qcow2.read_bytes()[:4096])
    return iso


def vmdk_cut_short(tmp: Path) -> Path:
    """Six bytes of a sparse VMDK header: nothing can be described."""
    out = tmp / "short.vmdk"
    out.write_bytes(b"KDMV\x01\x00")
    return out


def qcow2_plain(tmp: Path) -> Path:
    out = tmp / "plain.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", _guest_data(tmp / "g"), out)
    return out


OVF = """<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
    xmlns:vmw="http://www.vmware.com/schema/ovf"
    xmlns:cim_pasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ProcessorAllocationSettingData">
  <References>{files}</References>
  <DiskSection><Info>disks</Info>{disks}</DiskSection>
  <VirtualSystem ovf:id="vm">
    <Info>a machine</Info>
    <OperatingSystemSection ovf:id="101" vmw:osType="otherLinux64Guest"><Info>os</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection><Info>hardware</Info>
      <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
        <cim_pasd:InstructionSet>x86:64</cim_pasd:InstructionSet>
        <cim_pasd:ProcessorArchitecture>x86</cim_pasd:ProcessorArchitecture></Item>
      <Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>6</rasd:ResourceType>
        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType></Item>
      {disk_items}
      <Item><rasd:InstanceID>9</rasd:InstanceID><rasd:ResourceType>10</rasd:ResourceType>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:Connection>VM Network</rasd:Connection></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""


def _ova(tmp: Path, name: str, disks: list[Path]) -> Path:
    files, entries, items = [], [], []
    for n, disk in enumerate(disks, 1):
        size = disk.stat().st_size
        files.append(f'<File ovf:href="{disk.name}" ovf:id="f{n}" ovf:size="{size}"/>')
        entries.append(
            f'<Disk ovf:capacity="{8 * MiB}" ovf:diskId="d{n}" ovf:fileRef="f{n}" '
            'ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html'
            '#streamOptimized"/>'
        )
        items.append(
            f"<Item><rasd:InstanceID>{3 + n}</rasd:InstanceID>"
            f"<rasd:ResourceType>17</rasd:ResourceType><rasd:Parent>3</rasd:Parent>"
            f"<rasd:HostResource>ovf:/disk/d{n}</rasd:HostResource></Item>"
        )
    ovf = OVF.format(files="".join(files), disks="".join(entries), disk_items="".join(items))
    out = tmp / f"{name}.ova"
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(f"{name}.ovf")
        info.size = len(ovf.encode())
        tar.addfile(info, io.BytesIO(ovf.encode()))
        for disk in disks:
            tar.add(disk, arcname=disk.name)
    return out


def ova_one_disk(tmp: Path) -> Path:
    # The disk itself says ide; the OVF's controller (lsilogic) is what Glance should get.
    return _ova(tmp, "appliance", [qemu_stream("ide")(tmp)])


def ova_two_disks(tmp: Path) -> Path:
    return _ova(tmp, "pair", [qemu_stream("ide")(tmp), vmware_stream("lsilogic")(tmp)])


def _stream_expect(adapter: str) -> dict[str, object]:
    return {
        "disk_format": "vmdk",
        "container_format": "bare",
        "virtual_size": 8 * MiB,
        "vmware_disktype": "streamOptimized",
        "vmware_adaptertype": ADAPTERS[adapter],
    }


IMAGES: tuple[Staged, ...] = (
    *(
        Staged(f"qemu-stream-{a}", qemu_stream(a), "vmdk", expect=_stream_expect(a))
        for a in ADAPTERS
    ),
    *(
        Staged(f"vmware-stream-{a}", vmware_stream(a), "vmdk", expect=_stream_expect(a))
        for a in ADAPTERS
    ),
    Staged(
        "user-adapter-wins",
        qemu_stream("lsilogic"),
        "vmdk",
        user={"vmware_adaptertype": "ide"},
        expect={**_stream_expect("lsilogic"), "vmware_adaptertype": "ide"},
    ),
    Staged(
        "ova",
        ova_one_disk,
        "vmdk",
        container_format="ova",
        expect={
            **_stream_expect("lsilogic"),
            "vmware_ostype": "otherLinux64Guest",
            "hw_vif_model": "VirtualVmxnet3",
            "cim_pasd_InstructionSet": "x86:64",
            "cim_pasd_ProcessorArchitecture": "x86",
        },
    ),
    Staged("qcow2-backing-file", qcow2_backing, "qcow2", refusal=("backing-file",)),
    Staged("vmdk-host-extent", vmdk_host_extent, "vmdk", refusal=("/etc/passwd",)),
    Staged("iso-qcow2-polyglot", iso_qcow2_polyglot, "iso", refusal=("format-ambiguous",)),
    Staged("vmdk-cut-short", vmdk_cut_short, "vmdk", refusal=("the image cannot be read",)),
    Staged("qcow2-declared-raw", qcow2_plain, "raw", refusal=("disk_format is raw",)),
    Staged("ova-two-disks", ova_two_disks, "vmdk", "ova", refusal=("2 disks",)),
)
