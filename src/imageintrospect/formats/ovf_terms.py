"""OVF vocabulary that says what an appliance's parts are: ``ovf:format`` disk-format URIs and
the guest OS names that map to VMware guest IDs.  Data and pure functions only; the OVA
module applies them to the parsed document.
"""

from __future__ import annotations

import re

#: ``ovf:format`` URIs (lowercase, without a fragment) → the disk format they declare.
DISK_FORMAT_URIS = {
    "http://www.vmware.com/interfaces/specifications/vmdk.html": "vmdk",
    "http://www.vmware.com/specifications/vmdk.html": "vmdk",
    "http://technet.microsoft.com/en-us/virtualserver/bb676673.aspx": "vhd",
    "http://www.microsoft.com/technet/virtualserver/downloads/vhdspec.mspx": "vhd",
    "http://go.microsoft.com/fwlink/?linkid=137171": "vhd",
    "http://www.gnome.org/~markmc/qcow-image-format.html": "qcow2",
    "https://people.gnome.org/~markmc/qcow-image-format.html": "qcow2",
}
#: A VMDK URI's fragment → the createTypes it admits (compared case-insensitively).  OVF 0.9
#: exports (VMware's first OVF tools) say ``#sparse`` of what are stream-optimized disks.
VMDK_FRAGMENTS = {
    "streamoptimized": frozenset({"streamoptimized"}),
    "compressed": frozenset({"streamoptimized"}),
    "sparse": frozenset({"monolithicsparse", "streamoptimized"}),
    "monolithicsparse": frozenset({"monolithicsparse"}),
}


def declared_format(uri: str | None) -> tuple[str, frozenset[str] | None] | None:
    """The disk format (and, for a VMDK, the createTypes) an ``ovf:format`` URI declares, or
    None for a URI this library does not know."""
    if not uri:
        return None
    base, _, fragment = uri.strip().partition("#")
    fmt = DISK_FORMAT_URIS.get(base.lower())
    if fmt is None:
        return None
    if fmt == "vmdk":
        return fmt, VMDK_FRAGMENTS.get(fragment.lower())
    return fmt, None


#: VMware's OVF vocabulary (``vmw:osType`` is a vSphere guest ID).
VMWARE_OVF_NS = "http://www.vmware.com/schema/ovf"
#: What a vSphere guest ID looks like (``ubuntu64Guest``, ``windows9_64Guest``, ``otherGuest64``).
VMWARE_GUEST_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*Guest(?:64)?$")
#: VirtualBox ``OSType`` → the vSphere guest ID for the same system, where one exists without
#: a version VirtualBox does not give (there is no versionless Debian or RHEL ID).
VBOX_TO_VMWARE = {
    "Ubuntu": "ubuntuGuest",
    "Ubuntu_64": "ubuntu64Guest",
    "Fedora": "fedoraGuest",
    "Fedora_64": "fedora64Guest",
    "OpenSUSE": "opensuseGuest",
    "OpenSUSE_64": "opensuse64Guest",
    "Oracle": "oracleLinuxGuest",
    "Oracle_64": "oracleLinux64Guest",
    "Mandriva": "mandrivaGuest",
    "Mandriva_64": "mandriva64Guest",
    "Linux26": "other26xLinuxGuest",
    "Linux26_64": "other26xLinux64Guest",
    "Linux": "otherLinuxGuest",
    "FreeBSD": "freebsdGuest",
    "FreeBSD_64": "freebsd64Guest",
    "Solaris11_64": "solaris11_64Guest",
    "WindowsXP": "winXPProGuest",
    "WindowsXP_64": "winXPPro64Guest",
    "Windows2003": "winNetStandardGuest",
    "Windows2003_64": "winNetStandard64Guest",
    "WindowsVista": "winVistaGuest",
    "WindowsVista_64": "winVista64Guest",
    "Windows7": "windows7Guest",
    "Windows7_64": "windows7_64Guest",
    "Windows2008_64": "windows7Server64Guest",
    "Windows8": "windows8Guest",
    "Windows8_64": "windows8_64Guest",
    "Windows81": "windows8Guest",
    "Windows81_64": "windows8_64Guest",
    "Windows2012_64": "windows8Server64Guest",
    "Windows10": "windows9Guest",
    "Windows10_64": "windows9_64Guest",
    "Windows2016_64": "windows9Server64Guest",
    "Windows2019_64": "windows2019srv_64Guest",
    "Other": "otherGuest",
    "Other_64": "otherGuest64",
}
