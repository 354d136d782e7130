"""The ``imageintrospect`` command: ``info`` describes an image, ``check`` gives a verdict.

Exit status: ``check`` exits 0 safe, 1 unsafe; every command exits 2 when the image cannot
be read or described (a missing file, a closed standard input, not ``--expected-format``),
74 (``EX_IOERR`` of sysexits.h) when its output cannot be written (a closed standard output),
141 when the reader of a pipe went away (as a tool killed by SIGPIPE), 130 on Ctrl-C.  Errors
are one line on standard error, never a traceback.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import stat
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any, TextIO

from . import __version__, detect
from .core import introspect
from .errors import ImageIntrospectError
from .formats.base import QemuRefuses
from .metadata import Metadata

EXIT_SAFE = 0
EXIT_UNSAFE = 1
EXIT_UNREADABLE = 2
EXIT_OUTPUT_FAILED = 74  # EX_IOERR (sysexits.h): the answer could not be written
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a tool killed by SIGPIPE
EXIT_INTERRUPTED = 128 + 2  # Ctrl-C, as a shell reports SIGINT

OUTPUTS = ("human", "json", "qemu-json", "glance")
CHECK_OUTPUTS = ("human", "json")
STDIN = "-"


class OutputFailed(Exception):
    """Standard output is closed or refuses the answer."""


class ForwardOnly:
    """Standard input as a stream: only ``read()``, even when the shell gave us a file.

    ``-`` is read as a stream, so the answer for ``- < disk.img`` is the one a pipe would get,
    whatever kind of file descriptor 0 happens to be.  Named pipes are read this way too.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.position = 0  # bytes read so far (the progress bar's measure)
        self.size: int | None = None

    def read(self, size: int = -1, /) -> bytes:
        data = self._raw.read(size)
        self.position += len(data)
        return data

    def close(self) -> None:
        if self._raw is not getattr(sys.stdin, "buffer", None):
            self._raw.close()


class Tracked(io.FileIO):
    """An image file that remembers how far into it reads have reached (for progress)."""

    def __init__(self, path: str) -> None:
        super().__init__(path, "rb")
        self.position = 0
        self.size: int | None = os.fstat(self.fileno()).st_size or None

    def read(self, size: int | None = -1, /) -> bytes:
        start = self.tell()
        data = super().read(size)
        # Footers and probes read the last sectors first: they say nothing of progress.
        if self.size is None or start < self.size - TAIL_READS:
            self.position = max(self.position, start + len(data))
        return data


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script passes it to exit)."""
    words = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(words[0] if words else None).parse_args(words)
    where = describe_path(getattr(args, "path", None) or "")
    try:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            status: int = args.run(args)
        flush_stdout()
    except BrokenPipeError:
        # The reader went away (``| head``): exit as a SIGPIPE'd tool would, without the
        # interpreter complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OutputFailed as exc:
        error(f"cannot write the answer to standard output: {exc}")
        return EXIT_OUTPUT_FAILED
    except (ImageIntrospectError, OSError) as exc:
        error(f"{where}: {exc}")
        return EXIT_UNREADABLE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return status


def error(message: str) -> None:
    """One line on standard error, if there is one."""
    if sys.stderr is not None:
        print(f"imageintrospect: {message}", file=sys.stderr)


def show_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    """Warnings as one plain line on standard error (no source line, no module path)."""
    error(f"warning: {message}")


class ShowVersion(argparse.Action):
    """``--version``: the version and the live backend, on one line however long (argparse's
    own version action wraps it at the terminal's width)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from . import scan

        print(f"{parser.prog} {__version__} (backend: {scan.describe_backend()})")
        parser.exit()


class Formatter(argparse.HelpFormatter):
    """argparse's help layout, the terminal's width found as ``shutil.get_terminal_size``
    finds it, without importing shutil (argparse makes a formatter for every argument
    added, so its own would import shutil on every run, help or not)."""

    def __init__(self, prog: str, indent: int = 2, position: int = 24, width: int | None = None):
        super().__init__(prog, indent, position, terminal_columns() - 2 if width is None else width)


def terminal_columns() -> int:
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):  # no stdout (None), not a terminal
        return 80


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; ``command`` names the one about to run when known: ``info``
    and ``check`` leave the audit's arguments out (its module is not imported for them)."""
    parser = argparse.ArgumentParser(
        prog="imageintrospect",
        formatter_class=Formatter,
        description="Tell what a disk image really is, from its own bytes. "
        "Files named inside the image (backing files, extents) are reported, never opened.",
    )
    parser.add_argument(
        "--version", action=ShowVersion, nargs=0, help="show the version and backend, and exit"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_info(commands)
    add_check(commands)
    if command not in ("info", "check"):
        # the audit's own arguments and run live in its package (the ``audit`` extra)
        from .audit.cli import add_parser as add_audit_parser

        add_audit_parser(commands)
    return parser


def add_info(commands: Any) -> None:
    info = commands.add_parser("info", help="describe an image", formatter_class=Formatter)
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
    info.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="human output: also every field read (header fields, offsets, qemu's view) and "
        "the backend in use",
    )
    info.add_argument("path", metavar="PATH", help="the image, or - for standard input")
    info.set_defaults(run=run_info)


def add_check(commands: Any) -> None:
    check = commands.add_parser(
        "check",
        help="exit 0 if the image is safe, 1 if unsafe, 2 if unreadable",
        formatter_class=Formatter,
    )
    check.add_argument(
        "--expected-format",
        metavar="FMT",
        type=str.lower,
        choices=detect.known_formats(),
        help="the format the image is supposed to be; anything else is an error. "
        f"One of: {', '.join(detect.known_formats())}",
    )
    check.add_argument(
        "--output",
        choices=CHECK_OUTPUTS,
        default="human",
        help="human (default: the findings, then the verdict) or json "
        "({image, format, safe, findings}, or {image, safe: false, error} when unreadable)",
    )
    check.add_argument("path", metavar="PATH", help="the image, or - for standard input")
    check.set_defaults(run=run_check)


def run_info(args: argparse.Namespace) -> int:
    md = inspect_path(args.path, deep=args.deep, expected_format=None)
    if args.output == "json":
        write(json.dumps(md.to_dict(), indent=2))
    elif args.output == "glance":
        write(json.dumps(md.glance_properties(), indent=2))
    elif args.output == "qemu-json":
        from .qemu_json import qemu_info_json

        try:
            text = qemu_info_json(md, args.path, actual_size(args.path))
        except QemuRefuses as exc:  # fail as qemu-img info would, with its status
            print(f"qemu-img: Could not open '{args.path}': {exc}", file=sys.stderr)
            return exc.status
        write(text)
    else:
        from . import human, scan

        lines = human.write_info(
            md, describe_path(args.path), verbose=args.verbose, backend=scan.describe_backend()
        )
        write("\n".join(lines))
    return EXIT_SAFE


def run_check(args: argparse.Namespace) -> int:
    name = describe_path(args.path)
    try:
        md = inspect_path(args.path, deep=True, expected_format=args.expected_format)
    except ImageIntrospectError as exc:
        if args.output == "json":
            answer = {"image": name, "safe": False, "error": str(exc)}
            write(json.dumps({**answer, "error_type": type(exc).__name__}, indent=2))
        raise
    if args.output == "json":
        answer = {"image": name, "format": md.format, "safe": md.safe}
        write(json.dumps({**answer, "findings": [f.to_dict() for f in md.findings]}, indent=2))
    else:
        from . import human

        write("\n".join(human.check_lines(md, name)))
    return EXIT_SAFE if md.safe else EXIT_UNSAFE


def write(text: str) -> None:
    """Print the answer; a closed or failing standard output is :class:`OutputFailed`."""
    if sys.stdout is None:  # started with standard output closed (``>&-``)
        raise OutputFailed("it is closed")
    try:
        print(text, file=sys.stdout)
    except BrokenPipeError:
        raise
    except (OSError, ValueError) as exc:  # EBADF, ENOSPC, a closed file object
        raise OutputFailed(str(exc)) from exc


def flush_stdout() -> None:
    if sys.stdout is None:
        return
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except (OSError, ValueError) as exc:
        raise OutputFailed(str(exc)) from exc


def open_input(path: str) -> ForwardOnly | Tracked:
    """The image as the CLI reads it: a regular file or block device at random, anything
    else (standard input, a named pipe, ``/dev/stdin``, ``<(...)``) forward, as a stream."""
    if path == STDIN:
        if sys.stdin is None:  # started with standard input closed (``<&-``)
            raise ImageIntrospectError("standard input is closed")
        return ForwardOnly(sys.stdin.buffer)
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode) or stat.S_ISBLK(mode):
        return Tracked(path)
    # a pipe cannot seek: reading it as a file would fail at the first seek
    return ForwardOnly(open(path, "rb", buffering=0))


def inspect_path(path: str, *, deep: bool, expected_format: str | None) -> Metadata:
    try:
        source = open_input(path)
    except OSError:  # let introspect() word the error as for any unreadable path
        return introspect(path, deep=deep, expected_format=expected_format)
    try:
        with deep_scan_progress(source if deep else None, sys.stderr):
            return introspect(source, deep=deep, expected_format=expected_format)
    finally:
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
    if source is None or stream is None or not stream.isatty():
        yield
        return
    import threading  # a progress bar only on a terminal

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


if __name__ == "__main__":  # pragma: no cover - python -m imageintrospect.cli
    sys.exit(main())
