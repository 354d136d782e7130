"""The ``imageintrospect`` command: ``info`` describes an image, ``check`` gives a verdict.

Exit status of ``check``: 0 safe, 1 unsafe, 2 unreadable (the image could not be described,
or could not be opened).  ``info`` exits 0, or 2 for an unreadable image.  Errors are one line
on standard error, never a traceback.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any, TextIO

from . import __version__
from .core import introspect
from .errors import ImageIntrospectError
from .findings import Finding
from .formats.base import QemuRefuses
from .metadata import Metadata
from .qemu_json import qemu_info_json

EXIT_SAFE = 0
EXIT_UNSAFE = 1
EXIT_UNREADABLE = 2
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a tool killed by SIGPIPE

OUTPUTS = ("human", "json", "qemu-json", "glance")
STDIN = "-"


class ForwardOnly:
    """Standard input as a stream: only ``read()``, even when the shell gave us a file.

    The contract reads ``-`` as a stream, so the answer for ``- < disk.img`` is the one a pipe
    would get, whatever kind of file descriptor 0 happens to be.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.position = 0  # bytes read so far (the progress bar's measure)
        self.size: int | None = None

    def read(self, size: int = -1, /) -> bytes:
        data = self._raw.read(size)
        self.position += len(data)
        return data


class Tracked(io.FileIO):
    """An image file that remembers how far into it reads have reached (for progress)."""

    def __init__(self, path: str) -> None:
        super().__init__(path, "rb")
        self.position = 0
        self.size: int | None = os.fstat(self.fileno()).st_size

    def read(self, size: int | None = -1, /) -> bytes:
        start = self.tell()
        data = super().read(size)
        # Footers and probes read the last sectors first: they say nothing of progress.
        if self.size is None or start < self.size - TAIL_READS:
            self.position = max(self.position, start + len(data))
        return data


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script passes it to exit)."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.run(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``| head``): exit as a SIGPIPE'd tool would, without the
        # interpreter complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (ImageIntrospectError, OSError) as exc:
        print(f"imageintrospect: {describe_path(args.path)}: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    except KeyboardInterrupt:
        return 130
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imageintrospect",
        description="Tell what a disk image really is, from its own bytes. "
        "Files named inside the image (backing files, extents) are reported, never opened.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="describe an image")
    info.add_argument(
        "--output",
        choices=OUTPUTS,
        default="human",
        help="human (default), json (Metadata.to_dict()), qemu-json (what "
        "'qemu-img info --output=json' prints) or glance (Glance image properties)",
    )
    info.add_argument(
        "--no-deep",
        dest="deep",
        action="store_false",
        help="read the headers only; skip validating the allocation tables",
    )
    info.add_argument("path", metavar="PATH", help="the image, or - for standard input")
    info.set_defaults(run=run_info)

    check = commands.add_parser(
        "check", help="exit 0 if the image is safe, 1 if unsafe, 2 if unreadable"
    )
    check.add_argument(
        "--expected-format",
        metavar="FMT",
        help="the format the image is supposed to be (e.g. qcow2); anything else is an error",
    )
    check.add_argument("path", metavar="PATH", help="the image, or - for standard input")
    check.set_defaults(run=run_check)
    return parser


def run_info(args: argparse.Namespace) -> int:
    md = inspect_path(args.path, deep=args.deep, expected_format=None)
    out = sys.stdout
    if args.output == "json":
        print(json.dumps(md.to_dict(), indent=2), file=out)
    elif args.output == "glance":
        print(json.dumps(md.glance_properties(), indent=2), file=out)
    elif args.output == "qemu-json":
        try:
            text = qemu_info_json(md, args.path, actual_size(args.path))
        except QemuRefuses as exc:  # fail as qemu-img info would, with its status
            print(f"qemu-img: Could not open '{args.path}': {exc}", file=sys.stderr)
            return exc.status
        print(text, file=out)
    else:
        write_human(md, args.path, out)
    return EXIT_SAFE


def run_check(args: argparse.Namespace) -> int:
    md = inspect_path(args.path, deep=True, expected_format=args.expected_format)
    for finding in md.findings:
        print(finding_line(finding))
    unsafe = sum(1 for finding in md.findings if finding.severity == "unsafe")
    if md.safe:
        print(f"{describe_path(args.path)}: safe ({md.format})")
        return EXIT_SAFE
    print(f"{describe_path(args.path)}: UNSAFE ({md.format}, {unsafe} unsafe finding(s))")
    return EXIT_UNSAFE


def inspect_path(path: str, *, deep: bool, expected_format: str | None) -> Metadata:
    if path == STDIN:
        source: ForwardOnly | Tracked = ForwardOnly(sys.stdin.buffer)
    else:
        try:
            source = Tracked(path)
        except OSError:  # let introspect() word the error as for any unreadable path
            return introspect(path, deep=deep, expected_format=expected_format)
    try:
        with deep_scan_progress(source if deep else None, sys.stderr):
            return introspect(source, deep=deep, expected_format=expected_format)
    finally:
        if isinstance(source, Tracked):
            source.close()


#: Reads this close to the end of the file do not move the progress bar.
TAIL_READS = 1 << 20
#: A deep scan shows progress once it has run this long.
PROGRESS_AFTER = 1.0
PROGRESS_EVERY = 0.2
PROGRESS_WIDTH = 30


@contextmanager
def deep_scan_progress(source: ForwardOnly | Tracked | None, stream: TextIO) -> Iterator[None]:
    """A progress bar on ``stream`` for a deep scan that takes over a second, on a terminal.

    It shows how far into the image the reads have reached (tables are walked in file
    order), or the bytes read from a stream whose size is unknown.
    """
    if source is None or not stream.isatty():
        yield
        return
    done = threading.Event()

    def show() -> None:
        if done.wait(PROGRESS_AFTER):
            return
        while not done.wait(PROGRESS_EVERY):
            stream.write("\r" + progress_line(source.position, source.size))
            stream.flush()
        stream.write("\r" + " " * (PROGRESS_WIDTH + 40) + "\r")
        stream.flush()

    painter = threading.Thread(target=show, name="imageintrospect-progress", daemon=True)
    painter.start()
    try:
        yield
    finally:
        done.set()
        painter.join()


def progress_line(position: int, size: int | None) -> str:
    """``deep scan [#######-------]  42%  1.2 GiB of 2.9 GiB`` (or bytes read of a stream)."""
    if not size:
        return f"deep scan: {short_size(position)} read"
    fraction = min(1.0, position / size)
    filled = int(fraction * PROGRESS_WIDTH)
    bar = "#" * filled + "-" * (PROGRESS_WIDTH - filled)
    return f"deep scan [{bar}] {fraction:4.0%}  {short_size(position)} of {short_size(size)}"


def short_size(size: int) -> str:
    """``1.2 GiB``: a size for a line that must fit a terminal."""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} bytes"


def actual_size(path: str) -> int | None:
    """Bytes the file occupies on disk, as qemu-img reports it; None for standard input."""
    if path == STDIN:
        return None
    return os.stat(path).st_blocks * 512


def describe_path(path: str) -> str:
    return "<stdin>" if path == STDIN else path


# -- human output ------------------------------------------------------------------------------


def write_human(md: Metadata, path: str, out: TextIO) -> None:
    rows: list[tuple[str, str]] = [
        ("image", describe_path(path)),
        ("format", md.format),
        ("virtual size", size_text(md.virtual_size)),
        ("image size", size_text(md.image_size)),
        ("allocated size", size_text(md.allocated_size)),
    ]
    if md.partition_table is not None:
        rows.append(("partition table", md.partition_table))
    rows.append(("safe", "yes" if md.safe else "NO"))
    width = max(len(label) for label, _ in rows) + 1
    for label, value in rows:
        print(f"{label + ':':<{width}} {value}", file=out)
    section = md.section
    if section is not None:
        print(f"{md.format}:", file=out)
        for line in nested_lines(section.to_dict(), indent=1):
            print(line, file=out)
    if md.findings:
        print("findings:", file=out)
        for finding in md.findings:
            print(f"  {finding_line(finding)}", file=out)
    else:
        print("findings: none", file=out)


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
    return f"{value:.4g} {unit} ({size} bytes)"


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


if __name__ == "__main__":  # pragma: no cover - python -m imageintrospect.cli
    sys.exit(main())
