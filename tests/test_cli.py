"""The command line: output modes, exit codes, standard input, and qemu-img's JSON."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import imageintrospect.scan
from imageintrospect import Finding, Metadata, __version__, cli, introspect
from imageintrospect.qemu_json import qemu_key_order
from tests.support import needs_qemu, qemu_img, qemu_info

pytestmark = needs_qemu

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_VMDK = REPO / "examples" / "buslogic-stream.vmdk"

MakeImage = Callable[..., Path]


class ReadOnly:
    """A forward-only stream: what a pipe looks like to the library."""

    def __init__(self, data: bytes) -> None:
        self._stream = io.BytesIO(data)

    def read(self, size: int = -1, /) -> bytes:
        return self._stream.read(size)


def run_main(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def run_module(
    *argv: str | Path, stdin: Any = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    """``python -m imageintrospect`` in a child process, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "imageintrospect", *map(str, argv)],
        stdin=stdin,
        capture_output=True,
        text=True,
        check=False,
    )


def raw_image(tmp_path: Path, data: bytes, name: str = "disk.raw") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def qcow2_with_backing(tmp_path: Path, make_image: MakeImage) -> Path:
    base = make_image("qcow2", "16M", name="base.qcow2")
    overlay = tmp_path / "overlay.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", base.name, "-F", "qcow2", overlay)
    return overlay


# -- info --------------------------------------------------------------------------------------


def test_info_json_prints_to_dict(
    make_image: MakeImage, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_image("qcow2", "64M")
    status, out, _ = run_main(capsys, "info", "--output", "json", path)
    assert status == 0
    assert json.loads(out) == introspect(path).to_dict()


def test_info_glance_prints_glance_properties(
    make_image: MakeImage, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_image("qcow2", "3G")
    status, out, _ = run_main(capsys, "info", "--output", "glance", path)
    assert status == 0
    props = json.loads(out)
    assert props == introspect(path).glance_properties()
    assert props["disk_format"] == "qcow2"
    assert props["virtual_size"] == qemu_info(path)["virtual-size"]


def test_info_human_puts_the_verdict_first_and_details_under_verbose(
    tmp_path: Path, make_image: MakeImage, capsys: pytest.CaptureFixture[str]
) -> None:
    path = qcow2_with_backing(tmp_path, make_image)
    md = introspect(path)
    status, out, _ = run_main(capsys, "info", path)
    assert status == 0
    lines = out.splitlines()
    assert lines[1].split(":", 1) == ["verdict", "        UNSAFE (1 unsafe finding)"]
    assert md.findings, "a backing file must be reported"
    for finding in md.findings:
        assert f"{finding.code}: {finding.message}" in out
    # the findings come before the facts, the facts before the Glance properties
    findings_at = out.index(md.findings[0].code)
    assert findings_at < out.index("\nformat:") < out.index("glance properties:")
    assert str(qemu_info(path)["virtual-size"]) in out
    assert "backing file:   base.qcow2" in out
    assert "l1_table_offset" not in out and "backend:" not in out
    status, verbose, _ = run_main(capsys, "info", "--verbose", path)
    assert md.section is not None
    for key in md.section.to_dict():
        assert f"  {key}:" in verbose
    assert "backend:" in verbose


def test_info_human_leaves_out_what_is_unknown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run_main(capsys, "info", raw_image(tmp_path, b"\0" * 4096))
    assert status == 0
    lines = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    assert lines["format"].strip() == "raw"
    assert lines["virtual size"].strip() == "4 KiB (4096 bytes)"
    assert "allocated size" not in lines
    assert lines["findings"].strip() == "none"


def test_no_deep_is_passed_to_introspect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[bool] = []

    def fake_introspect(source: Any, *, deep: bool, expected_format: str | None) -> Metadata:
        seen.append(deep)
        return Metadata(format="raw", virtual_size=1, image_size=1)

    monkeypatch.setattr(cli, "introspect", fake_introspect)
    path = raw_image(tmp_path, b"x")
    run_main(capsys, "info", path)
    run_main(capsys, "info", "--no-deep", path)
    assert seen == [True, False]


def test_unknown_output_mode_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["info", "--output", "xml", str(raw_image(tmp_path, b"x"))])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


# -- check -------------------------------------------------------------------------------------


def test_check_safe_image_exits_0(
    make_image: MakeImage, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_image("qcow2", "64M")
    assert introspect(path).safe
    status, out, _ = run_main(capsys, "check", path)
    assert status == cli.EXIT_SAFE
    assert "safe" in out.splitlines()[-1]


def test_check_backing_file_exits_1_and_prints_findings(
    tmp_path: Path, make_image: MakeImage, capsys: pytest.CaptureFixture[str]
) -> None:
    path = qcow2_with_backing(tmp_path, make_image)
    md = introspect(path)
    assert not md.safe, "a backing file is always unsafe"
    status, out, _ = run_main(capsys, "check", path)
    assert status == cli.EXIT_UNSAFE
    for finding in md.findings:
        assert f"{finding.severity:<7} {finding.code}: {finding.message}" in out
    assert "UNSAFE" in out.splitlines()[-1]


def test_check_truncated_qcow2_is_not_safe(
    make_image: MakeImage, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_image("qcow2", "64M")
    with open(path, "r+b") as f:
        f.truncate(40)  # cut inside the 72-byte header
    status, _, err = run_main(capsys, "check", path)
    assert status in (cli.EXIT_UNSAFE, cli.EXIT_UNREADABLE)
    assert "Traceback" not in err


def test_check_exit_code_follows_severity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    verdicts = {
        "unsafe": cli.EXIT_UNSAFE,
        "warning": cli.EXIT_SAFE,
        "info": cli.EXIT_SAFE,
    }
    path = raw_image(tmp_path, b"x")
    for severity, expected in verdicts.items():
        finding = Finding("some-code", severity, f"a {severity} thing")  # type: ignore[arg-type]
        md = Metadata(format="raw", findings=(finding,))
        monkeypatch.setattr(cli, "introspect", lambda *a, md=md, **k: md)
        status, out, _ = run_main(capsys, "check", path)
        assert status == expected, severity
        assert f"some-code: a {severity} thing" in out


def test_check_expected_format(make_image: MakeImage, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_image("qcow2", "64M")
    assert run_main(capsys, "check", "--expected-format", "qcow2", path)[0] == cli.EXIT_SAFE
    status, out, err = run_main(capsys, "check", "--expected-format", "vmdk", path)
    assert status == cli.EXIT_UNREADABLE
    assert "vmdk" in err and "qcow2" in err
    assert out == ""


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_path_exits_2_without_traceback(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "nothing-here" if kind == "missing" else tmp_path
    for command in ("info", "check"):
        proc = run_module(command, path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout == ""
        assert proc.stderr.startswith("imageintrospect: ")
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


# -- standard input ----------------------------------------------------------------------------


def test_stdin_pipe_is_read_as_a_stream(make_image: MakeImage) -> None:
    path = make_image("qcow2", "64M")
    data = path.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "imageintrospect", "info", "--output", "json", "-"],
        input=data,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == introspect(ReadOnly(data)).to_dict()


def test_stdin_redirected_file_gives_the_stream_answer(tmp_path: Path) -> None:
    # 6 MiB: more than the stream keeps, so a seekable read would be told apart.
    path = raw_image(tmp_path, os.urandom(1024) * 6 * 1024)
    with open(path, "rb") as stdin:
        proc = run_module("info", "--output", "json", "-", stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    expected = introspect(ReadOnly(path.read_bytes())).to_dict()
    assert json.loads(proc.stdout) == expected
    assert expected["virtual_size"] == path.stat().st_size


def test_stdin_check(make_image: MakeImage) -> None:
    path = make_image("qcow2", "64M")
    with open(path, "rb") as stdin:
        proc = run_module("check", "--expected-format", "qcow2", "-", stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    assert "<stdin>" in proc.stdout


# -- the program itself ------------------------------------------------------------------------


def test_python_dash_m_is_the_same_program(tmp_path: Path) -> None:
    version = run_module("--version")
    assert version.returncode == 0
    backend = imageintrospect.scan.describe_backend()
    assert version.stdout.strip() == f"imageintrospect {__version__} (backend: {backend})"
    proc = run_module("info", "--output", "glance", raw_image(tmp_path, b"\0" * 1024))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["disk_format"] == "raw"


def test_console_script_points_at_main() -> None:
    from importlib.metadata import entry_points

    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("imageintrospect") == "imageintrospect.cli:main"


def test_example_vmdk_glance_properties(capsys: pytest.CaptureFixture[str]) -> None:
    # examples/README.md: made with subformat=streamOptimized,adapter_type=buslogic.
    status, out, _ = run_main(capsys, "info", "--output", "glance", EXAMPLE_VMDK)
    assert status == 0
    props = json.loads(out)
    assert props["disk_format"] == "vmdk"
    assert props["virtual_size"] == qemu_info(EXAMPLE_VMDK)["virtual-size"]
    assert props["vmware_disktype"] == "streamOptimized"
    assert props["vmware_adaptertype"] == "busLogic"


# -- qemu-json ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def made_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One image of each kind, made once for the qemu-json tests."""
    folder = tmp_path_factory.mktemp("qemu-json")

    def make(name: str, fmt: str, size: str, *options: str) -> Path:
        path = folder / name
        qemu_img("create", "-q", "-f", fmt, *options, path, size)
        return path

    images = {
        "raw": raw_image(folder, b"\1" * 3 * 512 + b"\0" * 5120, name="sectors.raw"),
        "raw-odd": raw_image(folder, b"\1" * 3 * 512 + b"\0" * 5000, name="odd.raw"),
        "raw-empty": raw_image(folder, b"", name="empty.raw"),
        "qcow2": make("plain.qcow2", "qcow2", "1G"),
        "qcow2-v2": make("v2.qcow2", "qcow2", "100M", "-o", "compat=0.10"),
        "qcow2-lazy": make(
            "lazy.qcow2", "qcow2", "64M", "-o", "lazy_refcounts=on,cluster_size=4096"
        ),
        "qcow2-snapshot": make("snap.qcow2", "qcow2", "32M"),
        "vmdk-sparse": make("sparse.vmdk", "vmdk", "200M"),
        "vmdk-stream": make("stream.vmdk", "vmdk", "64M", "-o", "subformat=streamOptimized"),
        "vhd-dynamic": make("dynamic.vhd", "vpc", "64M"),
        "vhdx": make("disk.vhdx", "vhdx", "64M"),
        "vdi": make("disk.vdi", "vdi", "64M"),
        "qed": make("disk.qed", "qed", "64M"),
    }
    qemu_img("snapshot", "-c", "first", images["qcow2-snapshot"])
    make("base.qcow2", "qcow2", "16M")
    images["qcow2-backing"] = make(
        "overlay.qcow2", "qcow2", "16M", "-b", "base.qcow2", "-F", "qcow2"
    )
    return images


IMAGE_KINDS = [
    "raw",
    "raw-odd",
    "raw-empty",
    "qcow2",
    "qcow2-v2",
    "qcow2-lazy",
    "qcow2-backing",
    "qcow2-snapshot",
    "vmdk-sparse",
    "vmdk-stream",
    "vhd-dynamic",
    "vhdx",
    "vdi",
    "qed",
]


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_qemu_json_matches_qemu_img(
    kind: str,
    made_images: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = made_images[kind]
    monkeypatch.chdir(path.parent)  # relative names, as a user would type them
    status, out, err = run_main(capsys, "info", "--output", "qemu-json", path.name)
    assert status == 0, err
    ours = json.loads(out)
    theirs = qemu_info(Path(path.name))
    assert ours == theirs
    assert _key_paths(ours) == _key_paths(theirs), "key order differs from qemu-img's"


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_qemu_json_parses_with_oslo(
    kind: str, made_images: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    imageutils = pytest.importorskip("oslo_utils.imageutils")
    path = made_images[kind]
    status, out, _ = run_main(capsys, "info", "--output", "qemu-json", path)
    assert status == 0
    ours = imageutils.QemuImgInfo(out, format="json")
    theirs = imageutils.QemuImgInfo(json.dumps(qemu_info(path)), format="json")
    for attribute in (
        "image",
        "file_format",
        "virtual_size",
        "cluster_size",
        "disk_size",
        "backing_file",
        "backing_file_format",
        "encrypted",
        "snapshots",
        "format_specific",
    ):
        assert getattr(ours, attribute) == getattr(theirs, attribute), attribute


def test_qemu_json_from_stdin_has_no_actual_size(make_image: MakeImage) -> None:
    path = make_image("qcow2", "64M")
    with open(path, "rb") as stdin:
        proc = run_module("info", "--output", "qemu-json", "-", stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    ours = json.loads(proc.stdout)
    theirs = qemu_info(path)
    assert "actual-size" not in ours
    assert ours["filename"] == "-"
    for key in ("virtual-size", "format", "cluster-size"):
        assert ours[key] == theirs[key]


@pytest.mark.parametrize("where", ["absolute", "subfolder"])
def test_full_backing_filename_is_resolved_beside_the_image(
    where: str,
    made_images: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    overlay = made_images["qcow2-backing"]
    if where == "absolute":
        name = str(overlay)
    else:
        monkeypatch.chdir(overlay.parent.parent)
        name = f"{overlay.parent.name}/{overlay.name}"
    status, out, _ = run_main(capsys, "info", "--output", "qemu-json", name)
    assert status == 0
    ours = json.loads(out)
    theirs = qemu_info(Path(name))
    assert ours["full-backing-filename"] == theirs["full-backing-filename"]
    assert ours["backing-filename"] == theirs["backing-filename"] == "base.qcow2"


def test_qemu_key_order_restores_qemu_output_order(made_images: dict[str, Path]) -> None:
    # Shuffle qemu's own output; putting it back must give qemu's order, at every depth.
    for path in made_images.values():
        theirs = qemu_info(path)
        assert _key_paths(qemu_key_order(_reversed(theirs))) == _key_paths(theirs), path.name


def _reversed(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _reversed(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [_reversed(item) for item in value]
    return value


def _key_paths(value: Any, prefix: str = "") -> list[str]:
    """Every key, depth first, in order: equal lists mean equal key order everywhere."""
    paths: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            paths.append(f"{prefix}/{key}")
            paths.extend(_key_paths(item, f"{prefix}/{key}"))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths.extend(_key_paths(item, f"{prefix}[{index}]"))
    return paths


# -- the progress bar ---------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_shapes() -> None:
    from imageintrospect.cli import progress_line

    assert progress_line(0, 100).startswith("deep scan [" + "-" * 30 + "]")
    assert " 50%" in progress_line(50, 100)
    assert "100%" in progress_line(100, 100)
    assert progress_line(5 << 20, None) == "deep scan: 5.0 MiB read"


class _WatchedTerminal(_Terminal):
    """A terminal that says when the painter has drawn the bar (and not just erased it)."""

    def __init__(self) -> None:
        super().__init__()
        self.drawn = threading.Event()

    def write(self, text: str) -> int:
        if "deep scan" in text:
            self.drawn.set()
        return super().write(text)


def test_progress_bar_only_after_a_delay_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No clock in the test: the delays are set to "never" or "at once", and the scan waits
    for the painter's first drawing instead of sleeping."""
    image = tmp_path / "x.img"
    image.write_bytes(bytes(4096))
    source = cli.Tracked(str(image))
    try:
        monkeypatch.setattr(cli, "PROGRESS_AFTER", 1e9)
        quick = _Terminal()
        with cli.deep_scan_progress(source, quick):
            source.position = 2048
        assert quick.getvalue() == ""  # ended before the delay: nothing drawn
        monkeypatch.setattr(cli, "PROGRESS_AFTER", 0.0)
        monkeypatch.setattr(cli, "PROGRESS_EVERY", 0.0)
        slow = _WatchedTerminal()
        with cli.deep_scan_progress(source, slow):
            slow.drawn.wait()  # a scan still running when the painter looks
        assert " 50%" in slow.getvalue() and slow.getvalue().endswith("\r")
        not_a_terminal = io.StringIO()
        with cli.deep_scan_progress(source, not_a_terminal):
            source.position = 4096
        assert not_a_terminal.getvalue() == ""
    finally:
        source.close()
