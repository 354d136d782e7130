"""OVA under hostile input: tar headers (re-sealed), OVF documents built from drawn parts
(hostile capacities, units, hrefs, hardware items, DTDs and entities), manifests, member
names and types, and disks of every format (an OVA inside an OVA too) introspected in place."""

from __future__ import annotations

import hashlib
import io
import tarfile
from xml.sax.saxutils import escape, quoteattr

from hypothesis import given
from hypothesis import strategies as st

from .properties import fuzz_one
from .seeds import Seed, every_seed, ova_seed, small_stream_vmdk
from .strategies import HOSTILE_TEXT, Mutant, mutants, pristine_or_cut

FORMAT = "ova"

NAMESPACES = (
    "http://schemas.dmtf.org/ovf/envelope/1",
    "http://schemas.dmtf.org/ovf/envelope/2",
    "http://www.vmware.com/schema/ovf/1/envelope",
    "urn:not-ovf",
)
RASD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
UNITS = (
    "byte",
    "byte * 2^20",
    "byte * 2^30",
    "byte * 2^64",
    "byte * 1024^64",
    "byte * 2^65",
    "byte * 2^" + "0" * 5000 + "1",  # an exponent past int()'s digit limit
    "byte*2^-1",
    "GB",
    "megabytes",
    "furlongs",
    "",
)
NUMBERS = ("0", "1", "-1", "4096", "1048576", "18446744073709551616", "9" * 5000, "0x10", " 7 ")
TEXT = st.sampled_from(HOSTILE_TEXT + NUMBERS).map(lambda t: t.replace("\0", ""))
PROLOGUES = (
    "",
    '<?xml version="1.0" encoding="UTF-8"?>\n',
    '<?xml version="1.0" encoding="ISO-8859-1"?>\n',
    '<!DOCTYPE Envelope [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>\n',
    '<!DOCTYPE Envelope SYSTEM "file:///etc/passwd">\n',
    '<!DOCTYPE Envelope [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n',
    "<?xml-stylesheet href='http://evil.example/x.xsl'?>\n",
)


@st.composite
def ovf_documents(draw: st.DrawFn, hrefs: list[str]) -> bytes:
    """An OVF envelope assembled from drawn parts; mostly well-formed, sometimes not."""
    ns = draw(st.sampled_from(NAMESPACES))
    files, disks, items = [], [], []
    for index, href in enumerate(draw(st.lists(st.sampled_from(hrefs), min_size=0, max_size=3))):
        size = draw(st.one_of(st.none(), st.sampled_from(NUMBERS)))
        size_attr = f" ovf:size={quoteattr(size)}" if size is not None else ""
        files.append(f"<File ovf:id='f{index}' ovf:href={quoteattr(href)}{size_attr}/>")
    for index in range(draw(st.integers(0, 3))):
        ref = draw(st.sampled_from([f"f{i}" for i in range(len(files))] + ["missing", ""]))
        capacity = draw(st.one_of(st.sampled_from(NUMBERS), TEXT))
        units = draw(st.sampled_from(UNITS))
        populated = draw(st.sampled_from(NUMBERS))
        disks.append(
            f"<Disk ovf:diskId='d{index}' ovf:fileRef={quoteattr(ref)}"
            f" ovf:capacity={quoteattr(capacity)} ovf:capacityAllocationUnits={quoteattr(units)}"
            f" ovf:populatedSize={quoteattr(populated)}"
            f" ovf:format={quoteattr(draw(TEXT))}/>"
        )
    for index in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(("3", "4", "5", "6", "10", "14", "15", "17", "20", "x", "")))
        subtype = draw(st.sampled_from(("lsilogic", "VirtualSCSI", "E1000", "VmxNet3", "")))
        parent = draw(st.sampled_from(("", "0", str(index), str(index + 1), "999")))
        host = draw(st.sampled_from(("ovf:/disk/d0", "ovf:/disk/d1", "ovf:/file/f0", "/dev/sda")))
        items.append(
            f"<Item><rasd:InstanceID>{index}</rasd:InstanceID>"
            f"<rasd:ResourceType>{escape(kind)}</rasd:ResourceType>"
            f"<rasd:ResourceSubType>{escape(subtype)}</rasd:ResourceSubType>"
            f"<rasd:Parent>{escape(parent)}</rasd:Parent>"
            f"<rasd:HostResource>{escape(host)}</rasd:HostResource>"
            f"<rasd:VirtualQuantity>{escape(draw(TEXT))}</rasd:VirtualQuantity>"
            f"<rasd:Connection>{escape(draw(TEXT))}</rasd:Connection></Item>"
        )
    body = (
        f"<References>{''.join(files)}</References>"
        f"<DiskSection><Info>d</Info>{''.join(disks)}</DiskSection>"
        f"<VirtualSystem ovf:id='vm'><Info>v</Info><Name>{escape(draw(TEXT))}</Name>"
        f"<VirtualHardwareSection><Info>h</Info>{''.join(items)}</VirtualHardwareSection>"
        f"</VirtualSystem>"
    )
    root = draw(st.sampled_from(("Envelope", "Envelope", "Envelope", "NotAnEnvelope")))
    text = (
        f"{draw(st.sampled_from(PROLOGUES))}<{root} xmlns={quoteattr(ns)} xmlns:ovf={quoteattr(ns)}"
        f" xmlns:rasd={quoteattr(RASD)}>{body}</{root}>"
    )
    if draw(st.integers(0, 9)) == 0:  # not well-formed
        text = text[: draw(st.integers(0, len(text)))]
    return text.encode("utf-8")


def _small_disks() -> list[bytes]:
    """Disks to put inside: a VMware stream always, and the small seeds of other formats."""
    pool = [small_stream_vmdk()]
    pool += [s.data for s in every_seed() if len(s.data) <= 256 * 1024 and s.name != "ova"]
    return pool


@st.composite
def archives(draw: st.DrawFn, seeds: tuple[Seed, ...]) -> Mutant:
    """A tar of an OVF, maybe a manifest and a certificate, and disks, in a drawn order, with
    drawn member names and types."""
    disks = draw(
        st.lists(st.sampled_from([*_small_disks(), seeds[0].data]), min_size=0, max_size=2)
    )
    names = [
        draw(st.sampled_from(("disk1.vmdk", "disk2.img", "../up.vmdk", "/abs.vmdk", "d" * 150)))
        for _ in disks
    ]
    ovf = draw(ovf_documents([*names, "absent.vmdk", "http://evil.example/x.vmdk"]))
    members: list[tuple[str, bytes, bytes]] = [("fuzz.ovf", ovf, tarfile.REGTYPE)]
    members += [(name, disk, tarfile.REGTYPE) for name, disk in zip(names, disks, strict=True)]
    if draw(st.booleans()):
        algorithm = draw(st.sampled_from(("SHA1", "SHA256", "SHA512", "MD5")))
        lines = b""
        for name, body, _ in members:
            digest = hashlib.new(algorithm.lower() if algorithm != "MD5" else "md5", body)
            value = digest.hexdigest() if draw(st.integers(0, 3)) else "00" * 20
            lines += f"{algorithm}({name})= {value}\n".encode()
        lines += draw(st.sampled_from((b"", b"garbage line\n", b"SHA256(x)= zz\n" * 1000)))
        members.insert(draw(st.integers(1, len(members))), ("fuzz.mf", lines, tarfile.REGTYPE))
    if draw(st.booleans()):
        members.append(("fuzz.cert", b"-----BEGIN CERTIFICATE-----\n", tarfile.REGTYPE))
    if draw(st.integers(0, 4)) == 0:
        link = draw(st.sampled_from((tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE)))
        members.insert(draw(st.integers(0, len(members))), ("disk1.vmdk", b"", link))
    if draw(st.integers(0, 5)) == 0:
        members = list(reversed(members))
    tar_format = draw(
        st.sampled_from((tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT, tarfile.GNU_FORMAT))
    )
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tar_format) as tar:
        for name, body, kind in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.size = len(body) if kind == tarfile.REGTYPE else 0
            info.linkname = "/etc/passwd" if kind != tarfile.REGTYPE else ""
            try:
                tar.addfile(info, io.BytesIO(body) if kind == tarfile.REGTYPE else None)
            except ValueError:  # a name ustar cannot hold: leave that member out
                continue
    return Mutant("ova-built", out.getvalue(), [f"{len(members)} members, format {tar_format}"])


@given(data=st.data())
def test_field_mutants(seeds: tuple[Seed, ...], data: st.DataObject) -> None:
    fuzz_one(data, mutants(seeds))


@given(data=st.data())
def test_cut_short(seeds: tuple[Seed, ...], data: st.DataObject) -> None:
    fuzz_one(data, pristine_or_cut(seeds))


@given(data=st.data())
def test_built_archives(seeds: tuple[Seed, ...], data: st.DataObject) -> None:
    fuzz_one(data, archives(seeds))


@given(data=st.data())
def test_archives_with_hostile_headers(seeds: tuple[Seed, ...], data: st.DataObject) -> None:
    """A built archive, then its tar header fields pushed to the edges (checksums re-sealed)."""
    built = data.draw(archives(seeds), label="archive")
    fuzz_one(data, mutants((ova_seed("ova-built", built.data),)))
