"""The command line on local files: lists on standard input, records on standard output,
usage errors; and an error recorded once is tried again by ``--resume``."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from imageintrospect import cli
from imageintrospect.audit import audit
from imageintrospect.audit.records import latest_records, read_records

from .audit_services import RangeServer
from .conftest import Images, agrees


def test_list_on_stdin_records_on_stdout(
    images: Images, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    names = ["plain-1M.qcow2", "backed.qcow2", "disk-1M.vdi"]
    paths = [f"{images.root / n}" for n in names]
    paths[1] = f"file://{paths[1]}"  # file:// URLs are local files too
    listing = "# the images to judge\n\n" + "".join(f"{p}\n" for p in paths)
    monkeypatch.setattr("sys.stdin", io.StringIO(listing))
    assert cli.main(["audit", "--from-file", "-", "--workers", "1"]) == 1
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [Path(r["url"]).name for r in records] == names
    for record, name in zip(records, names, strict=True):
        agrees(record, images.expected(name, deep=True))  # local files: deep by default
    # the summary goes beside the records, on standard error
    assert "images:   3" in captured.err and "UNSAFE" in captured.err


@pytest.mark.parametrize(
    "argv",
    [
        ["audit"],
        ["audit", "x.qcow2", "--resume"],
        ["audit", "x.qcow2", "--storage-option", "endpoint_url"],
    ],
)
def test_usage_errors_exit_64(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 64
    assert capsys.readouterr().err.startswith("imageintrospect audit: ")


def test_a_recorded_error_is_tried_again_on_resume(
    images: Images, http: RangeServer, tmp_path: Path
) -> None:
    # "flaky" fails its first four requests: the listing's two and the one attempt allowed
    url = http.url("flaky", "disk-1M.vhd")
    out = tmp_path / "flaky.jsonl"
    assert audit([url], str(out), retries=0).verdicts["error"] == 1
    summary = audit([url], str(out), retries=0, resume=True)
    assert summary.verdicts["error"] == 0 and summary.images == 1
    [first, second] = read_records(str(out))
    assert first["verdict"] == "error" and second["verdict"] == "safe"
    assert latest_records([first, second]) == [second]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_only(images: Images, tmp_path: Path) -> None:
    from imageintrospect.audit.cli import progress_bar

    names = [str(images.root / n) for n in images.names[:4]]
    terminal = Terminal()
    with progress_bar(terminal) as (on_target, on_record):
        assert on_target is not None and on_record is not None
        audit(names, str(tmp_path / "a.jsonl"), on_target=on_target, on_record=on_record)
    assert "4/4" in terminal.getvalue()
    with progress_bar(io.StringIO()) as hooks:
        assert hooks == (None, None)


def test_any_fsspec_filesystem_that_can_seek(images: Images, tmp_path: Path) -> None:
    """memory:// has no block cache: its files are read (and counted) as they are."""
    import fsspec

    fs = fsspec.filesystem("memory")
    names = ["plain-64M.qcow2", "disk-3G.vhdx", "stream-3G.vmdk"]
    for name in names:
        fs.pipe_file(f"/audit-test/{name}", (images.root / name).read_bytes())
    out = tmp_path / "memory.jsonl"
    try:
        audit(["memory://audit-test"], str(out))
    finally:
        fs.rm("/audit-test", recursive=True)
    records = {Path(r["url"]).name: r for r in read_records(str(out))}
    assert sorted(records) == sorted(names)
    for name in names:
        agrees(records[name], images.expected(name, deep=False))  # remote: header-only
        assert 0 < records[name]["bytes_read"] <= 1 << 20


def test_a_missing_extra_is_named_at_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "fsspec", None)  # as if the audit extra were absent
    assert cli.main(["audit", "s3://bucket/images/", "--workers", "1"]) == 64
    assert "pip install 'imageintrospect[audit]'" in capsys.readouterr().err
