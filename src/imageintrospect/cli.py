"""The ``imageintrospect`` command: ``info`` describes an image, ``check`` gives a verdict.

Exit status of ``check``: 0 safe, 1 unsafe, 2 unreadable (the image could not be described,
or could not be opened).  ``info`` exits 0, or 2 for an unreadable image.  Errors are one line
on standard error, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any, TextIO

from . import __version__
from .core import introspect
from .errors import ImageIntrospectError
from .findings import Finding
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

    def read(self, size: int = -1, /) -> bytes:
        return self._raw.read(size)


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
        print(qemu_info_json(md, args.path, actual_size(args.path)), file=out)
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
    with deep_scan_progress(deep, sys.stderr):
        if path == STDIN:
            return introspect(
                ForwardOnly(sys.stdin.buffer), deep=deep, expected_format=expected_format
            )
        return introspect(path, deep=deep, expected_format=expected_format)


@contextmanager
def deep_scan_progress(deep: bool, stream: TextIO) -> Iterator[None]:
    """Where a progress bar for long deep scans plugs in.

    The contract asks for one on standard error when a deep scan takes over a second and
    standard error is a terminal.  ``introspect()`` has no progress callback yet (deep table
    validation is still to come), so there is nothing to report: this hook deliberately does
    nothing until the library can tell how far a scan has got.
    """
    del deep, stream  # used once introspect() reports progress
    yield


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
