"""The ``info`` and ``check`` output meant for people.

The order answers a person's questions in turn: may I use it (the verdict, then each finding),
what is it (format and sizes, the Glance properties a cloud stores), and the few facts of its
format that decide how it is used (backing file, create type, cipher, ...).  Everything else
the library read (header fields, offsets, qemu's view) appears only with ``--verbose``.
Values read as words where a number would mislead: no active key slot is "none", an unset
parent CID is "none", a size is in binary units with the exact bytes beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .findings import Finding
from .metadata import Metadata

#: A VMDK parent CID of all ones means "no parent".
NO_PARENT_CID = "ffffffff"

#: Keys whose numbers are read in hex everywhere else (a VMDK descriptor's CIDs).
HEX_KEYS = frozenset({"cid", "parent_cid"})

Fact = tuple[str, str, Callable[[Any], str | None]]


def _plain(value: Any) -> str | None:
    """A scalar as written, or None (the line is left out) when unset or empty."""
    if value is None or value == "" or value == () or value == []:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _flag(value: Any) -> str | None:
    """Shown only when set (a dirty or lazy-refcounts image): "no" would be noise."""
    return "yes" if value else None


def _size(value: Any) -> str | None:
    return None if value is None else size_text(value)


def _count(value: Any) -> str | None:
    return str(len(value)) if value else None


def _slots(value: Any) -> str:
    """``none``, ``1 (slot 0)``, ``2 (slots 0, 3)``: a bare ``0`` would read as "none"."""
    if not value:
        return "none"
    listed = ", ".join(str(slot) for slot in value)
    return f"{len(value)} (slot{'s' if len(value) > 1 else ''} {listed})"


def _parent_cid(value: Any) -> str | None:
    if value is None:
        return None
    return "none" if str(value).lower() == NO_PARENT_CID else str(value)


def _extents(value: Any) -> str | None:
    if not value:
        return None
    files = [str(e.get("file")) for e in value if isinstance(e, dict) and e.get("file")]
    shown = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
    return f"{len(value)} ({shown})" if shown else str(len(value))


def _vhdx_parent(locator: Any) -> str | None:
    """The parent as a person would look for it: its path, else the linkage GUID."""
    entries = locator or {}
    for key in ("relative_path", "absolute_win32_path", "volume_path", "parent_linkage"):
        if entries.get(key):
            return str(entries[key])
    return None


def _ova_disks(value: Any) -> str | None:
    if not value:
        return "none"
    parts = []
    for disk in value:
        image = disk.get("image") or {}
        parts.append(f"{disk.get('file') or '?'} ({image.get('format') or 'unknown'})")
    return ", ".join(parts)


#: Per format: (section key, label, how to show it); None from the formatter leaves the line
#: out.  These are the facts a person acts on; the rest is in ``--verbose``.
KEY_FACTS: dict[str, tuple[Fact, ...]] = {
    "qcow2": (
        ("version", "version", _plain),
        ("cluster_size", "cluster size", _size),
        ("backing_file", "backing file", _plain),
        ("backing_format", "backing format", _plain),
        ("data_file", "data file", _plain),
        ("encryption", "encryption", lambda v: v or "none"),
        ("compression_type", "compression", _plain),
        ("extended_l2", "extended L2", _flag),
        ("lazy_refcounts", "lazy refcounts", _flag),
        ("dirty", "dirty", _flag),
        ("corrupt", "corrupt", _flag),
        ("snapshots", "snapshots", _count),
        ("bitmaps", "bitmaps", _count),
    ),
    "vmdk": (
        ("create_type", "create type", _plain),
        ("adapter_type", "adapter type", _plain),
        ("cid", "CID", _plain),
        ("parent_cid", "parent CID", _parent_cid),
        ("parent_file", "parent file", _plain),
        ("extents", "extents", _extents),
        ("grain_size", "grain size", _size),
        ("hw_version", "hardware version", _plain),
    ),
    "vhd": (
        ("disk_type", "disk type", _plain),
        ("creator_application", "creator", _plain),
        ("block_size", "block size", _size),
        ("parent_name", "parent", _plain),
    ),
    "vhdx": (
        ("block_size", "block size", _size),
        ("logical_sector_size", "logical sector size", _plain),
        ("fixed", "fixed", _flag),
        ("has_parent", "differencing", _flag),
        ("parent_locator", "parent", _vhdx_parent),
        ("log_pending", "log to replay", _flag),
        ("creator", "creator", _plain),
    ),
    "vdi": (
        ("image_type", "image type", _plain),
        ("version", "version", _plain),
        ("block_size", "block size", _size),
        ("parent_uuid", "parent UUID", _plain),
    ),
    "qed": (
        ("cluster_size", "cluster size", _size),
        ("backing_file", "backing file", _plain),
        ("backing_format", "backing format", _plain),
    ),
    "luks": (
        ("version", "LUKS version", _plain),
        ("cipher", "cipher", _plain),
        ("mode", "cipher mode", _plain),
        ("hash", "hash", _plain),
        ("key_bytes", "key bytes", _plain),
        ("active_key_slots", "active key slots", _slots),
        ("payload_offset", "payload offset", _size),
    ),
    "iso": (
        ("volume_id", "volume ID", _plain),
        ("bootable", "bootable", _plain),
        ("hybrid", "hybrid (MBR/GPT)", _flag),
        ("joliet", "Joliet", _flag),
        ("udf", "UDF", lambda v: _plain((v or {}).get("revision"))),
    ),
    "ova": (
        ("ovf_file", "OVF descriptor", lambda v: v or "none"),
        ("disks", "disks", _ova_disks),
        ("manifest", "manifest", lambda v: _manifest(v or {})),
    ),
}


def _manifest(manifest: dict[str, Any]) -> str:
    if not manifest.get("file"):
        return "none"
    verified = {True: "digests match", False: "digests DO NOT match", None: "not verified"}
    return f"{manifest['file']} ({verified[manifest.get('verified')]})"


def write_info(md: Metadata, name: str, *, verbose: bool, backend: str) -> list[str]:
    """The lines of ``imageintrospect info``: verdict and findings, facts, then details."""
    head = [("image", name), ("verdict", verdict(md))]
    facts = [
        ("format", md.format),
        ("virtual size", size_text(md.virtual_size)),
        ("image size", size_text(md.image_size)),
    ]
    if md.allocated_size is not None:
        facts.append(("allocated size", size_text(md.allocated_size)))
    if md.partition_table is not None:
        facts.append(("partition table", md.partition_table))
    facts += list(format_facts(md))
    if verbose:
        facts.append(("backend", backend))
    width = label_width([*head, *facts])
    lines = aligned(head, width) + findings_block(md.findings, width) + aligned(facts, width)
    lines += glance_block(md)
    if md.partitions:
        lines.append("partitions:")
        lines += [f"  {partition_line(p.to_dict())}" for p in md.partitions]
    section = md.section
    if verbose and section is not None:
        lines.append(f"{md.format} details:")
        lines += nested_lines(section.to_dict(), indent=1)
    return lines


def check_lines(md: Metadata, name: str) -> list[str]:
    """``check``: each finding, then the verdict line."""
    lines = [finding_line(finding) for finding in md.findings]
    if md.safe:
        return [*lines, f"{name}: safe ({md.format})"]
    return [*lines, f"{name}: {verdict(md).replace('UNSAFE (', f'UNSAFE ({md.format}, ')}"]


def verdict(md: Metadata) -> str:
    unsafe = sum(1 for finding in md.findings if finding.severity == "unsafe")
    if md.safe:
        return "safe"
    return f"UNSAFE ({unsafe} unsafe finding{'s' if unsafe != 1 else ''})"


def findings_block(findings: tuple[Finding, ...], width: int) -> list[str]:
    if not findings:
        return aligned([("findings", "none")], width)
    return ["findings:", *(f"  {finding_line(f)}" for f in findings)]


def glance_block(md: Metadata) -> list[str]:
    props = md.glance_properties()
    rows = [(key, scalar_text(value)) for key, value in props.items()]
    return ["glance properties:", *aligned(rows, label_width(rows), indent=1)]


def format_facts(md: Metadata) -> Iterator[tuple[str, str]]:
    section = md.section
    if section is None:
        return
    values = section.to_dict()
    for key, label, show in KEY_FACTS.get(md.format, ()):
        text = show(values.get(key))
        if text is not None:
            yield label, text


def partition_line(part: dict[str, Any]) -> str:
    """``1: start sector 2048, 3 MiB, type c12a7328-..., "EFI"`` (GPT) or MBR's type byte."""
    first = part["first_lba"]
    if "last_lba" in part:
        sectors = part["last_lba"] - first + 1
        kind = part["type_guid"]
    else:
        sectors = part["sectors"]
        kind = f"0x{part['type']:02x}" + (", bootable" if part.get("bootable") else "")
    name = f', "{part["name"]}"' if part.get("name") else ""
    # sizes in 512-byte sectors; a 4 KiB-sector GPT says so in its header (--verbose)
    return f"{part['index']}: start sector {first}, {sectors} sectors, type {kind}{name}"


def label_width(rows: list[tuple[str, str]]) -> int:
    return max((len(label) + 1 for label, _ in rows), default=0)


def aligned(rows: list[tuple[str, str]], width: int, indent: int = 0) -> list[str]:
    pad = "  " * indent
    return [f"{pad}{label + ':':<{width}} {value}" for label, value in rows]


def finding_line(finding: Finding) -> str:
    return f"{finding.severity:<7} {finding.code}: {finding.message}"


def size_text(size: int | None) -> str:
    if size is None:
        return "unknown"
    units = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    value = float(size)
    unit = "bytes"
    for candidate in units:
        if value < 1024:
            break
        value /= 1024
        unit = candidate
    if unit == "bytes":
        return f"{size} bytes"
    # three significant digits, as qemu-img info prints sizes
    return f"{value:.3g} {unit} ({size} bytes)"


def nested_lines(value: Any, indent: int) -> list[str]:
    """A section dict as indented ``key: value`` lines; lists of records as ``-`` items."""
    pad = "  " * indent
    lines: list[str] = []
    for key, item in value.items():
        if isinstance(item, dict):
            if item:
                lines.append(f"{pad}{key}:")
                lines.extend(nested_lines(item, indent + 1))
            else:
                lines.append(f"{pad}{key}: {{}}")
        elif isinstance(item, list) and any(isinstance(entry, dict) for entry in item):
            lines.append(f"{pad}{key}:")
            for entry in item:
                lines.extend(list_entry_lines(entry, indent + 1))
        elif key in HEX_KEYS and isinstance(item, int):
            # qemu's view holds CIDs as numbers: show them in the descriptor's hex form
            lines.append(f"{pad}{key}: {item:08x}")
        else:
            lines.append(f"{pad}{key}: {scalar_text(item)}")
    return lines


def list_entry_lines(entry: Any, indent: int) -> list[str]:
    pad = "  " * indent
    if not isinstance(entry, dict):
        return [f"{pad}- {scalar_text(entry)}"]
    inner = nested_lines(entry, indent + 1)
    if not inner:
        return [f"{pad}- {{}}"]
    # The first key goes on the dash line, the rest align under it.
    return [f"{pad}- {inner[0].lstrip()}", *inner[1:]]


def scalar_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(scalar_text(v) for v in value) if value else "(none)"
    return str(value)
