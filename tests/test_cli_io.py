"""What an adopter meets first: the human output, ``check --output json``, pipes of every
kind, closed standard streams, the backend on show, and the caller mistakes refused clearly."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imageintrospect import FormatMismatch, InspectingReader, cli, introspect, scan
from imageintrospect.detect import known_formats
from tests.support import needs_qemu, qemu_img, run

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "buslogic-stream.vmdk"
MiB = 1 << 20

MakeImage = Callable[..., Path]


def cli_run(
    *argv: str | Path, shell: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI in a child process; ``shell`` wraps it in a bash command line (``{cli}`` is
    replaced by the command), for redirections only a shell can make."""
    command = [sys.executable, "-m", "imageintrospect", *map(str, argv)]
    if shell is not None:
        line = shell.replace("{cli}", " ".join(map(shlex.quote, command)))
        command = ["bash", "-c", line]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


# -- pipes of every kind are read as streams -----------------------------------------------


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    """A named pipe with the example image being written into it."""
    path = tmp_path / "image.fifo"
    os.mkfifo(path)

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError), open(path, "wb") as pipe:
            pipe.write(EXAMPLE.read_bytes())

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    yield path
    if writer.is_alive():  # the CLI never opened the pipe: open it, so the writer ends
        with open(path, "rb"):
            pass
    writer.join()


def test_named_pipe_is_read_as_a_stream(fifo: Path) -> None:
    proc = cli_run("check", fifo)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.strip() == f"{fifo}: safe (vmdk)"


@pytest.mark.parametrize(
    "line",
    [
        "cat {image} | {cli} check /dev/stdin",  # /dev/stdin fed by a pipe
        "{cli} check <(cat {image})",  # process substitution: /dev/fd/63
    ],
)
def test_pipes_named_by_path_are_read_as_streams(line: str) -> None:
    proc = cli_run(shell=line.replace("{image}", str(EXAMPLE)))
    assert proc.returncode == 0, proc.stderr
    assert "Illegal seek" not in proc.stderr
    assert proc.stdout.strip().endswith(": safe (vmdk)")


def test_pipe_gives_the_answer_the_file_gives(fifo: Path) -> None:
    from_pipe = json.loads(cli_run("info", "--output", "json", fifo).stdout)
    from_file = json.loads(cli_run("info", "--output", "json", EXAMPLE).stdout)
    assert from_pipe == from_file


# -- closed standard streams: one line, a defined status that is not "unsafe" ---------------


def test_closed_stdin_is_unreadable_not_unsafe() -> None:
    proc = cli_run("check", "-", shell="{cli} <&-")
    assert proc.returncode == cli.EXIT_UNREADABLE == 2
    assert proc.stderr == "imageintrospect: <stdin>: standard input is closed\n"


@pytest.mark.parametrize("command", ["check", "info"])
def test_closed_stdout_exits_74_with_one_line(command: str) -> None:
    proc = cli_run(command, EXAMPLE, shell="{cli} >&-")
    assert proc.returncode == cli.EXIT_OUTPUT_FAILED == 74
    lines = proc.stderr.splitlines()
    assert lines == ["imageintrospect: cannot write the answer to standard output: it is closed"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_full_stdout_exits_74() -> None:
    proc = cli_run("info", EXAMPLE, shell="{cli} > /dev/full")
    assert proc.returncode == 74
    assert "No space left on device" in proc.stderr and "Traceback" not in proc.stderr


# -- --expected-format knows the formats -----------------------------------------------------


def test_expected_format_is_one_of_the_known_names() -> None:
    names = known_formats()
    assert {"qcow2", "vmdk", "vhd", "vpc", "raw", "iso", "ova"} <= set(names)
    proc = cli_run("check", "--expected-format", "qcow3", EXAMPLE)
    assert proc.returncode == 2
    assert "invalid choice: 'qcow3'" in proc.stderr
    assert cli_run("check", "--expected-format", "VMDK", EXAMPLE).returncode == 0


# -- check --output json ----------------------------------------------------------------------


@needs_qemu
def test_check_json_safe_unsafe_and_unreadable(tmp_path: Path, make_image: MakeImage) -> None:
    safe = json.loads(cli_run("check", "--output", "json", EXAMPLE).stdout)
    assert safe == {"image": str(EXAMPLE), "format": "vmdk", "safe": True, "findings": []}

    base = make_image("qcow2", "1M", name="base.qcow2")
    overlay = tmp_path / "overlay.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", base.name, "-F", "qcow2", overlay)
    proc = cli_run("check", "--output", "json", overlay)
    unsafe = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert unsafe["safe"] is False and unsafe["format"] == "qcow2"
    assert [f["code"] for f in unsafe["findings"]] == sorted(introspect(overlay).codes())

    proc = cli_run("check", "--output", "json", "--expected-format", "qcow2", EXAMPLE)
    refused = json.loads(proc.stdout)
    assert proc.returncode == 2
    assert refused["safe"] is False and refused["error_type"] == "FormatMismatch"


# -- the human output -------------------------------------------------------------------------


def info_lines(path: Path, *extra: str) -> list[str]:
    proc = cli_run("info", *extra, path)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def field(lines: list[str], label: str) -> str:
    found = [line.split(":", 1)[1].strip() for line in lines if line.startswith(f"{label}:")]
    assert len(found) == 1, (label, lines)
    return found[0]


def test_example_reads_like_qemu_img_info_and_fits_a_screen() -> None:
    lines = info_lines(EXAMPLE)
    # qemu-img info prints 14 lines for it; ours adds the verdict and the Glance properties
    assert len(lines) <= 24, lines
    assert lines[:3] == [
        f"image:            {EXAMPLE}",
        "verdict:          safe",
        "findings:         none",
    ]
    assert field(lines, "create type") == "streamOptimized"
    assert field(lines, "CID") == "d7894270"
    assert field(lines, "parent CID") == "none"
    assert "  vmware_adaptertype: busLogic" in lines


@needs_qemu
@pytest.mark.parametrize(
    ("fmt", "size"), [("qcow2", "1536M"), ("vmdk", "64M"), ("vdi", "977K"), ("vpc", "64M")]
)
def test_sizes_read_as_qemu_img_prints_them(make_image: MakeImage, fmt: str, size: str) -> None:
    path = make_image(fmt, size)
    qemu = qemu_img("info", "-U", path).splitlines()
    theirs = [line.split(": ", 1)[1] for line in qemu if line.startswith("virtual size: ")]
    assert [field(info_lines(path), "virtual size")] == theirs


def test_verbose_shows_every_cid_in_one_form() -> None:
    verbose = cli_run("info", "--verbose", EXAMPLE).stdout
    cids = [line.split(":", 1)[1].strip() for line in verbose.splitlines() if "cid:" in line]
    # the descriptor's CID and qemu's view of it, both in the descriptor's hex form
    assert set(cids) == {"d7894270", "ffffffff"}
    assert str(int("d7894270", 16)) not in verbose


@pytest.mark.skipif(shutil.which("sgdisk") is None, reason="sgdisk (gdisk) missing")
def test_gpt_partitions_are_listed(tmp_path: Path) -> None:
    disk = tmp_path / "gpt.img"
    disk.write_bytes(b"")
    os.truncate(disk, 16 * MiB)
    run("sgdisk", "-n", "1:2048:8191", "-c", "1:EFI", "-t", "1:ef00", "-n", "2:8192:0", disk)
    lines = info_lines(disk)
    assert field(lines, "partition table") == "gpt"
    at = lines.index("partitions:")
    assert lines[at + 1].startswith("  1: start sector 2048, 6144 sectors, type c12a7328-")
    assert lines[at + 1].endswith('"EFI"')
    assert lines[at + 2].startswith("  2: start sector 8192, ")
    partitions = json.loads(cli_run("info", "--output", "json", disk).stdout)["partitions"]
    assert [p["first_lba"] for p in partitions] == [2048, 8192]


@pytest.mark.skipif(shutil.which("sfdisk") is None, reason="sfdisk (fdisk) missing")
def test_mbr_partitions_are_listed(tmp_path: Path) -> None:
    disk = tmp_path / "mbr.img"
    disk.write_bytes(b"")
    os.truncate(disk, 16 * MiB)
    layout = "label: dos\n2048,4096,83,*\n8192,,7\n"
    proc = subprocess.run(["sfdisk", "-q", disk], input=layout, text=True, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    lines = info_lines(disk)
    assert field(lines, "partition table") == "mbr"
    at = lines.index("partitions:")
    assert lines[at + 1] == "  1: start sector 2048, 4096 sectors, type 0x83, bootable"
    assert lines[at + 2] == "  2: start sector 8192, 24576 sectors, type 0x07"


@pytest.mark.skipif(shutil.which("cryptsetup") is None, reason="cryptsetup missing")
def test_luks_key_slots_read_as_words(tmp_path: Path) -> None:
    disk = tmp_path / "luks.img"
    key = tmp_path / "key"
    key.write_bytes(b"passphrase")
    disk.write_bytes(b"")
    os.truncate(disk, 20 * MiB)
    fast = ("--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000")
    run("cryptsetup", "luksFormat", "-q", "--type", "luks2", *fast, "--key-file", key, disk)
    assert field(info_lines(disk), "active key slots") == "1 (slot 0)"
    run("cryptsetup", "luksKillSlot", "-q", disk, "0")
    assert field(info_lines(disk), "active key slots") == "none"


# -- which backend is live is visible ---------------------------------------------------------

#: The package as it runs when the C module was not built: its import fails.
WITHOUT_C = "import sys; sys.modules['imageintrospect._scan_c'] = None; "


def python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != scan.BACKEND_ENV}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={**environment, **(env or {})},
    )


def test_version_names_the_backend() -> None:
    live = cli_run("--version").stdout.strip()
    assert live == f"imageintrospect 0.1.0 (backend: {scan.describe_backend()})"
    main = "from imageintrospect.cli import main; sys.exit(main(['--version']))"
    fallback = python(WITHOUT_C + main).stdout
    assert "(backend: python: the C scanners did not import (" in fallback
    chosen = python("import sys; " + main, env={scan.BACKEND_ENV: "python"}).stdout
    assert chosen.strip().endswith("(backend: python (chosen by IMAGEINTROSPECT_BACKEND))")


def test_fallback_warns_once_on_the_cli_stderr() -> None:
    main = f"from imageintrospect.cli import main; sys.exit(main(['check', '{EXAMPLE}']))"
    proc = python(WITHOUT_C + main)
    assert proc.returncode == 0
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("imageintrospect: warning: ")
    assert "pure-Python backend" in lines[0] and "docs/backend.md" in lines[0]
    # a header-only look walks no table: nothing to warn about
    shallow = f"from imageintrospect.cli import main; main(['info', '--no-deep', '{EXAMPLE}'])"
    assert python(WITHOUT_C + shallow).stderr == ""
    # choosing the twin is deliberate: no warning
    chosen = python("import sys; " + main, env={scan.BACKEND_ENV: "python"})
    assert (chosen.returncode, chosen.stderr) == (0, "")


def test_fallback_warning_is_issued_once_per_process() -> None:
    code = f"""
import warnings
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    import imageintrospect
    for _ in range(3):
        imageintrospect.introspect({str(EXAMPLE)!r})
        with open({str(EXAMPLE)!r}, "rb") as upload:
            list(imageintrospect.InspectingReader(upload))
print([w.category.__name__ for w in seen])
"""
    proc = python(WITHOUT_C + code)
    assert proc.stdout.strip() == "['SlowBackendWarning']", proc.stderr


def test_live_backend_never_warns() -> None:
    if scan.fallback_reason is not None:
        pytest.skip("the C scanners are not built here")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        introspect(EXAMPLE)


# -- caller mistakes are TypeErrors -----------------------------------------------------------


@pytest.mark.parametrize(
    "data", [b"KDMV", bytearray(b"KDMV"), memoryview(b"KDMV"), "KDMV"], ids=type
)
def test_data_given_as_the_source_is_a_type_error(data: object) -> None:
    with pytest.raises(TypeError, match=r"BytesIO\(data\)"):
        InspectingReader(data)
    with pytest.raises(TypeError):
        introspect(data) if not isinstance(data, str) else introspect(io.StringIO(data))


def test_chunks_must_be_bytes() -> None:
    reader = InspectingReader([EXAMPLE.read_bytes()[:512], 7])
    with pytest.raises(TypeError, match="gave a int, not bytes"):
        list(reader)
    with pytest.raises(TypeError, match="gave a str"):
        InspectingReader(iter(["text"])).read()


def test_bytes_chunks_pass_through_unchanged() -> None:
    data = EXAMPLE.read_bytes()
    reader = InspectingReader([data[:1000], bytearray(data[1000:5000]), memoryview(data[5000:])])
    assert b"".join(reader) == data
    assert reader.metadata().format == "vmdk"


def test_text_mode_file_is_a_type_error() -> None:
    with open(EXAMPLE, encoding="latin-1") as text:
        with pytest.raises(TypeError, match="text mode"):
            introspect(text)
        with pytest.raises(TypeError, match="text mode"):
            InspectingReader(text)


class TextStream:
    """Not a TextIOBase, but read() gives str: a caller's own wrapper gone wrong."""

    def read(self, size: int = -1, /) -> str:
        return "KDMV"


def test_stream_of_str_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="returned str, not bytes"):
        introspect(TextStream())


# -- the file position after introspect(fileobj) ----------------------------------------------


def test_a_seekable_file_is_left_where_it_was() -> None:
    with open(EXAMPLE, "rb") as plain:
        introspect(plain)
        assert plain.tell() == 0
    prefix = b"\0" * 4096
    buffer = io.BytesIO(prefix + EXAMPLE.read_bytes())
    buffer.seek(len(prefix))  # the image starts at the current position
    assert introspect(buffer).format == "vmdk"
    assert buffer.tell() == len(prefix)
    buffer.seek(len(prefix))
    with pytest.raises(FormatMismatch):  # a refusal puts the position back too
        introspect(buffer, expected_format="qcow2")
    assert buffer.tell() == len(prefix)
