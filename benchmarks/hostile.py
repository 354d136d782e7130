"""What hostile images cost: time, peak memory and bytes read, each run in a fresh process.

    python benchmarks/hostile.py [--full] [--case NAME ...] [--mode MODE ...] [--dir DIR]

The images are those of ``tests/support/hostile_images.py`` (``--full``: the benchmark sizes,
otherwise the test-suite sizes).  Modes:

* ``seekable``: ``introspect(path)``;
* ``header``: ``introspect(file, deep=False)`` through a file that counts what it hands out;
* ``streamed``: ``introspect(stream)`` on a forward-only reader of the file;
* ``reader``: ``InspectingReader`` over the file, iterated to the end, then ``metadata()``
  (``expected_format="qcow2"`` for the ``not-qcow2`` case, which must be refused early).

Each (case, mode) runs in its own interpreter, so that one case's heap does not hide
another's: the figures are the wall time of the call, the growth of the peak resident set
over the interpreter after ``import imageintrospect``, the bytes read, and the verdict.
A markdown table is printed at the end (the one in docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from tests.support import hostile_images  # noqa: E402

MODES = ("seekable", "header", "streamed", "reader")

RUNNER = r"""
import io, json, resource, sys, time
import imageintrospect as ii
path, mode, expected = sys.argv[1], sys.argv[2], sys.argv[3] or None

class Counting(io.FileIO):
    bytes_read = 0
    def read(self, size=-1):
        data = super().read(size)
        self.bytes_read += len(data)
        return data
    def readinto(self, buffer):
        n = super().readinto(buffer) or 0
        self.bytes_read += n
        return n

class ForwardOnly:
    def __init__(self, f):
        self._f = f
    def read(self, size=-1):
        return self._f.read(size)

def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

base = rss()
f = Counting(path)
verdict = None
start = time.perf_counter()
try:
    if mode == "seekable":
        md = ii.introspect(f, expected_format=expected)
    elif mode == "header":
        md = ii.introspect(f, deep=False, expected_format=expected)
    elif mode == "streamed":
        md = ii.introspect(ForwardOnly(f), expected_format=expected)
    else:
        reader = ii.InspectingReader(ForwardOnly(f), expected_format=expected)
        for _ in reader:
            pass
        md = reader.metadata()
    answer = json.dumps(md.to_dict())
    verdict = {"safe": md.safe, "findings": len(md.findings), "answer_bytes": len(answer)}
except ii.ImageIntrospectError as exc:
    verdict = {"error": type(exc).__name__, "message": str(exc)[:120]}
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rss_growth": rss() - base, "bytes_read": f.bytes_read,
                  "verdict": verdict}))
"""


def measure(path: Path, mode: str, expected: str | None) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, str(path), mode, expected or ""],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return {"crash": proc.stderr.strip().splitlines()[-1:]}
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the benchmark-size images")
    parser.add_argument("--case", action="append", choices=sorted(hostile_images.CASES))
    parser.add_argument("--mode", action="append", choices=MODES)
    parser.add_argument("--dir", type=Path, help="build the images here (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.dir or Path(scratch)
        rows = []
        for case in args.case or list(hostile_images.CASES):
            path = hostile_images.build(case, directory, args.full)
            expected = "qcow2" if case == "not-qcow2" else None
            for mode in args.mode or MODES:
                figures = measure(path, mode, expected)
                rows.append({"case": case, "mode": mode, **figures})
                print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print("\n| case | mode | s | RSS growth MiB | MiB read | verdict |")
    print("|---|---|---:|---:|---:|---|")
    for row in rows:
        verdict = row.get("verdict") or row.get("crash")
        print(
            f"| {row['case']} | {row['mode']} | {float(row.get('seconds', 0)):.2f} | "  # type: ignore[arg-type]
            f"{int(row.get('rss_growth', 0)) / 2**20:.1f} | "  # type: ignore[call-overload]
            f"{int(row.get('bytes_read', 0)) / 2**20:.2f} | {verdict} |"  # type: ignore[call-overload]
        )


if __name__ == "__main__":
    main()
