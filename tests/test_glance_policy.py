"""The Glance plugin's decisions (imageintrospect.glance_plugin.policy and .staging), on
images made by the real tools.  These need neither Glance nor taskflow: the end-to-end run
through Glance itself is tests/integration."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from imageintrospect import introspect
from imageintrospect.glance_plugin.policy import Settings, Verdict, judge
from imageintrospect.glance_plugin.staging import extract
from tests.integration.staged import ova_one_disk, ova_two_disks, qemu_stream, vmware_stream
from tests.support import needs_qemu, qemu_img, run

pytestmark = needs_qemu

DEFAULT = Settings()


def verdict(
    path: Path,
    disk_format: str,
    container_format: str = "bare",
    user: dict[str, str] | None = None,
    settings: Settings = DEFAULT,
) -> Verdict:
    md = introspect(path, deep=settings.deep)
    return judge(
        md,
        disk_format=disk_format,
        container_format=container_format,
        user_properties=user or {},
        settings=settings,
    )


def test_stream_vmdk_properties_and_virtual_size(tmp_path: Path) -> None:
    v = verdict(vmware_stream("buslogic")(tmp_path), "vmdk")
    assert v.refusal is None and v.extraction is None
    assert v.attributes == {"virtual_size": 8 * 1024 * 1024}
    assert v.properties == {"vmware_disktype": "streamOptimized", "vmware_adaptertype": "busLogic"}


def test_header_only_gives_the_same_answer(tmp_path: Path) -> None:
    path = qemu_stream("lsilogic")(tmp_path)
    assert verdict(path, "vmdk", settings=Settings(deep=False)) == verdict(path, "vmdk")


def test_user_value_wins_unless_configured(tmp_path: Path) -> None:
    path = qemu_stream("lsilogic")(tmp_path)
    user = {"vmware_adaptertype": "ide"}
    kept = verdict(path, "vmdk", user=user)
    assert "vmware_adaptertype" not in kept.properties
    assert kept.kept_user == user
    overridden = verdict(path, "vmdk", user=user, settings=Settings(override_user_properties=True))
    assert overridden.properties["vmware_adaptertype"] == "lsiLogic"
    assert overridden.kept_user == {}


def test_only_the_configured_properties(tmp_path: Path) -> None:
    path = ova_one_disk(tmp_path)
    only = verdict(path, "vmdk", "ova", settings=Settings(properties=("cim_pasd_*",)))
    assert sorted(only.properties) == ["cim_pasd_InstructionSet", "cim_pasd_ProcessorArchitecture"]
    dropped = verdict(path, "vmdk", "ova", settings=Settings(drop=frozenset({"vmware_disktype"})))
    assert "vmware_disktype" not in dropped.properties
    assert dropped.properties["vmware_adaptertype"] == "lsiLogic"


@pytest.mark.parametrize(
    ("allowed", "accepted"),
    [
        (("streamOptimized", "monolithicSparse"), True),
        (("STREAMOPTIMIZED",), True),
        (("monolithicSparse",), False),
        ((), False),
    ],
)
def test_vmdk_allowed_types(tmp_path: Path, allowed: tuple[str, ...], accepted: bool) -> None:
    v = verdict(qemu_stream("ide")(tmp_path), "vmdk", settings=Settings(vmdk_allowed_types=allowed))
    assert (v.refusal is None) is accepted
    if not accepted:
        assert v.refusal is not None and "createType 'streamOptimized' is not allowed" in v.refusal


def test_monolithic_sparse_is_sparse(tmp_path: Path) -> None:
    path = tmp_path / "sparse.vmdk"
    qemu_img("create", "-f", "vmdk", path, "16M")
    assert verdict(path, "vmdk").properties == {
        "vmware_disktype": "sparse",
        "vmware_adaptertype": "ide",
    }


@pytest.mark.parametrize(
    ("declared", "accepted"),
    [("raw", True), ("ami", True), ("aki", True), ("qcow2", False), ("iso", False)],
)
def test_raw_content(tmp_path: Path, declared: str, accepted: bool) -> None:
    """Unrecognised content may be declared raw or as a format nothing inspects (Glance's
    rule); the declared disk_format is never rewritten."""
    path = tmp_path / "disk.img"
    path.write_bytes(b"\xa5" * 65536)
    v = verdict(path, declared)
    assert (v.refusal is None) is accepted
    if accepted:
        assert v.attributes == {"virtual_size": 65536}
    else:
        assert v.refusal == f"disk_format is {declared}, but the content is raw"


@pytest.mark.skipif(shutil.which("sgdisk") is None, reason="sgdisk (gdisk) missing")
def test_gpt_disk_is_raw(tmp_path: Path) -> None:
    path = tmp_path / "gpt.img"
    with open(path, "wb") as f:
        f.truncate(8 * 1024 * 1024)
    run("sgdisk", "-o", "-n", "1:2048:+1M", path)
    assert verdict(path, "raw").refusal is None
    assert verdict(path, "qcow2").refusal == "disk_format is qcow2, but the content is raw"


@pytest.mark.skipif(shutil.which("xorriso") is None, reason="xorriso missing")
def test_iso_only_as_iso(tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a.txt").write_text("a\n")
    iso = tmp_path / "cd.iso"
    run("xorriso", "-as", "mkisofs", "-quiet", "-o", iso, tmp_path / "tree")
    assert verdict(iso, "iso").refusal is None
    assert verdict(iso, "raw").refusal == "disk_format is raw, but the content is iso"


def test_unsafe_refusal_names_every_unsafe_code(tmp_path: Path) -> None:
    path = tmp_path / "b.qcow2"
    qemu_img("create", "-f", "qcow2", "-u", "-b", "/etc/passwd", "-F", "raw", path, "16M")
    v = verdict(path, "qcow2")
    assert v.codes == ("backing-file",)
    assert v.refusal is not None and v.refusal.startswith("the image is unsafe (backing-file)")
    assert v.properties == {} and v.attributes == {}


def test_ova_extraction_is_the_disk_bytes(tmp_path: Path) -> None:
    ova = ova_one_disk(tmp_path)
    disk = (tmp_path / "qemu-ide.vmdk").read_bytes()
    v = verdict(ova, "vmdk", "ova")
    assert v.refusal is None and v.extraction is not None
    assert v.attributes == {
        "disk_format": "vmdk",
        "container_format": "bare",
        "virtual_size": 8 * 1024 * 1024,
        "size": len(disk),
    }
    staged = tmp_path / "staged"
    shutil.copyfile(ova, staged)
    assert extract(str(staged), v.extraction) == len(disk)
    assert staged.read_bytes() == disk
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("staged")] == ["staged"]


def test_ova_cut_short_is_not_extracted(tmp_path: Path) -> None:
    ova = ova_one_disk(tmp_path)
    v = verdict(ova, "vmdk", "ova")
    assert v.extraction is not None
    staged = tmp_path / "staged"
    staged.write_bytes(ova.read_bytes()[: v.extraction.offset + 1000])
    with pytest.raises(ValueError, match="ends inside"):
        extract(str(staged), replace(v.extraction))
    assert not (tmp_path / "staged.imageintrospect-disk").exists()


def test_ova_kept_whole(tmp_path: Path) -> None:
    v = verdict(ova_one_disk(tmp_path), "vmdk", "ova", settings=Settings(extract_ova=False))
    assert v.extraction is None
    assert v.attributes == {"virtual_size": 8 * 1024 * 1024}
    assert v.properties["vmware_ostype"] == "otherLinux64Guest"


def test_ova_refusals(tmp_path: Path) -> None:
    two = verdict(ova_two_disks(tmp_path), "vmdk", "ova")
    assert two.refusal == "the OVA has 2 disks; only an OVA with exactly one disk can be imported"
    not_ova = verdict(qemu_stream("ide")(tmp_path), "vmdk", "ova")
    assert not_ova.refusal == "container_format is ova, but the content is vmdk"
    wrong_disk = verdict(ova_one_disk(tmp_path), "qcow2", "ova")
    assert wrong_disk.refusal == (
        "the OVA's disk 'qemu-ide.vmdk': disk_format is qcow2, but the content is vmdk"
    )
    bare = verdict(ova_one_disk(tmp_path), "vmdk")
    assert bare.refusal == "disk_format is vmdk, but the content is ova"


def test_the_operator_page_sample_is_the_defaults() -> None:
    page = (Path(__file__).parents[1] / "docs" / "glance-plugin.md").read_text()
    sample = page.split("[imageintrospect]\n", 1)[1].split("```", 1)[0]
    parser = configparser.ConfigParser()
    parser.read_string("[imageintrospect]\n" + sample)
    section = parser["imageintrospect"]

    def listed(key: str) -> tuple[str, ...]:
        return tuple(section[key].split(","))

    assert Settings() == Settings(
        deep=section.getboolean("deep"),
        properties=listed("properties"),
        override_user_properties=section.getboolean("override_user_properties"),
        vmdk_allowed_types=listed("vmdk_allowed_types"),
        extract_ova=section.getboolean("extract_ova"),
    )


def test_importing_needs_neither_glance_nor_taskflow() -> None:
    """Only ``get_flow`` (called by Glance) imports the plugin's optional dependencies."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'glance', 'taskflow', 'oslo_config', 'stevedore'}:\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import imageintrospect, imageintrospect.glance_plugin.policy\n"
        "import imageintrospect.glance_plugin.staging\n"
        "try:\n"
        "    imageintrospect.glance_plugin.get_flow(task_id='t', task_type='x')\n"
        "except ImportError as exc:\n"
        "    print('blocked', exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("blocked ")
