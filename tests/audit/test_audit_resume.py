"""A killed audit loses nothing: rerun with ``--resume``, the union equals a clean run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from imageintrospect.audit import audit
from imageintrospect.audit.records import latest_records, prepare_resume, read_records

from .audit_services import RangeServer
from .conftest import Images, comparable

HELD_AFTER = 5


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_kill_half_way_then_resume_equals_a_clean_run(
    images: Images, http: RangeServer, tmp_path: Path
) -> None:
    urls = [http.url("gate", name) for name in images.names]
    listing = tmp_path / "urls.txt"
    listing.write_text("\n".join(urls) + "\n")
    out = tmp_path / "killed.jsonl"
    # the server serves the first HELD_AFTER images, then holds every request: the audit is
    # stuck half way, with HELD_AFTER records written, when it is killed
    http.open_gates = HELD_AFTER
    http.gate.clear()
    command = [
        sys.executable,
        "-m",
        "imageintrospect",
        "audit",
        "--from-file",
        str(listing),
        "--output",
        str(out),
        "--workers",
        "1",
        "--batch-size",
        "1",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while lines(out) < HELD_AFTER:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert lines(out) == HELD_AFTER
    http.gate.set()
    first = {r["url"] for r in read_records(str(out))}
    http.reset()

    summary = audit(urls, str(out), resume=True)
    # the images judged before the kill were not fetched again
    assert all(http.served[u[len(http.base) :]] == 0 for u in first)
    assert summary.images == len(urls)
    resumed = list(read_records(str(out)))
    assert len(resumed) == len(urls)  # no image twice

    clean = tmp_path / "clean.jsonl"
    audit(urls, str(clean))
    assert comparable(resumed) == comparable(list(read_records(str(clean))))


def test_resume_skips_same_mtime_and_redoes_changed_ones(images: Images, tmp_path: Path):
    out = tmp_path / "local.jsonl"
    first = audit([str(images.root)], str(out))
    assert first.images == len(images.names)
    again = audit([str(images.root)], str(out), resume=True)
    assert lines(out) == len(images.names)  # nothing new: every image has the same mtime
    assert again.images == first.images
    touched = images.root / "plain-1M.qcow2"
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    audit([str(images.root)], str(out), resume=True)
    records = list(read_records(str(out)))
    assert len(records) == len(images.names) + 1
    assert records[-1]["url"] == str(touched) and records[-1]["mtime"] == str(
        stat.st_mtime_ns + 1_000_000_000
    )


def test_a_torn_last_line_is_cut_and_its_image_judged_again(images: Images, tmp_path: Path):
    out = tmp_path / "torn.jsonl"
    audit([str(images.root / n) for n in images.names[:3]], str(out))
    whole = out.read_bytes()
    last = whole[:-1].rfind(b"\n") + 1
    out.write_bytes(whole[: last + 20])  # killed while writing the third record
    assert len(prepare_resume(str(out))) == 2
    assert out.read_bytes() == whole[:last]
    audit([str(images.root / n) for n in images.names[:3]], str(out), resume=True)
    assert comparable(latest_records(read_records(str(out)))) == comparable(
        [r for r in read_records(str(out))]
    )
    assert lines(out) == 3
