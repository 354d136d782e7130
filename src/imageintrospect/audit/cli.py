"""``imageintrospect audit``: the arguments and the run (the main CLI only registers us).

Importing this module is cheap (argparse only): fsspec, Dask and rich are imported when an
audit actually runs, so ``imageintrospect info`` works without the ``audit`` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

EXIT_UNREADABLE = 2
EXIT_USAGE = 64  # what sysexits calls EX_USAGE: the audit did not start


def add_parser(commands: Any) -> None:
    """Register ``audit`` on the main parser's subcommands."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "audit",
        help="judge every image in a store (paths, s3://, http(s)://, glance://)",
        description="Judge every image under the given paths and URLs, reading a few KiB "
        "of each, and write one JSON record per image. Exit status: 0 all safe, 1 some unsafe, "
        "2 some unreadable.",
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="PATH_OR_URL",
        help="files, directories (recursive), s3://bucket/prefix, http(s)://, file://, glance://",
    )
    parser.add_argument(
        "--from-file",
        action="append",
        default=[],
        metavar="FILE",
        help="read more paths/URLs from FILE, one a line (- for standard input)",
    )
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="the JSON Lines file of records (default: standard output)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="append to --output, skipping images already judged there (same etag/mtime)",
    )
    parser.add_argument("--html", metavar="REPORT", help="also write a self-contained HTML report")
    depth = parser.add_mutually_exclusive_group()
    depth.add_argument(
        "--deep",
        dest="deep",
        action="store_true",
        default=None,
        help="also read the allocation tables (by ranges; the data is never read)",
    )
    depth.add_argument(
        "--no-deep",
        dest="deep",
        action="store_false",
        help="headers only, at most 1 MiB per image (the default for remote sources)",
    )
    parser.add_argument(
        "--workers",
        type=positive,
        default=os.cpu_count() or 1,
        metavar="N",
        help="local worker processes (default: one per CPU; 1 runs in this process)",
    )
    parser.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="run on a Dask cluster: a scheduler address, or local:N for a local cluster",
    )
    parser.add_argument(
        "--batch-size", type=positive, default=32, metavar="N", help="images per task (default 32)"
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=3,
        metavar="N",
        help="retries of a failing source before recording an error (default 3)",
    )
    parser.add_argument(
        "--backoff",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="pause before the first retry, doubled each time (default 0.5)",
    )
    parser.add_argument(
        "--s3-endpoint-url", metavar="URL", help="an S3-compatible endpoint (Ceph RGW, MinIO...)"
    )
    parser.add_argument(
        "--os-cloud",
        metavar="NAME",
        help="the clouds.yaml entry for glance:// (default: OS_* variables)",
    )
    parser.add_argument(
        "--storage-option",
        action="append",
        default=[],
        metavar="PROTOCOL.KEY=VALUE",
        help="an fsspec option, e.g. s3.anon=true (VALUE is JSON, or a string)",
    )
    parser.set_defaults(run=run)


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def storage_options(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    options: dict[str, dict[str, Any]] = {}
    for item in args.storage_option:
        name, sep, text = item.partition("=")
        protocol, dot, key = name.partition(".")
        if not sep or not dot or not protocol or not key:
            raise ValueError(f"--storage-option wants PROTOCOL.KEY=VALUE, not {item!r}")
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text
        options.setdefault(protocol, {})[key] = value
    if args.s3_endpoint_url:
        options.setdefault("s3", {})["endpoint_url"] = args.s3_endpoint_url
    if args.os_cloud:
        options.setdefault("glance", {})["cloud"] = args.os_cloud
    return options


def run(args: argparse.Namespace) -> int:
    try:
        options = storage_options(args)
    except ValueError as exc:
        print(f"imageintrospect audit: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return run_audit(args, options)
    except ModuleNotFoundError as exc:
        print(
            f"imageintrospect audit: {exc.name} is missing: pip install 'imageintrospect[audit]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except (OSError, ValueError) as exc:  # the output file, a --from-file list
        print(f"imageintrospect audit: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE


def run_audit(args: argparse.Namespace, options: dict[str, dict[str, Any]]) -> int:
    from .report import write_html, write_text
    from .runner import audit
    from .sources import read_list

    names = list(args.names)
    for listing in args.from_file:
        names.extend(read_list(listing))
    if not names:
        print("imageintrospect audit: no image named (PATH_OR_URL or --from-file)", file=sys.stderr)
        return EXIT_USAGE
    if args.resume and not args.output:
        print("imageintrospect audit: --resume needs --output", file=sys.stderr)
        return EXIT_USAGE
    with progress_bar(sys.stderr) as (on_target, on_record):
        summary = audit(
            names,
            args.output,
            deep=args.deep,
            workers=args.workers,
            dask=args.dask,
            batch_size=args.batch_size,
            resume=args.resume,
            retries=args.retries,
            backoff=args.backoff,
            storage_options=options,
            on_record=on_record,
            on_target=on_target,
        )
    # records on standard output: the summary goes beside them, on standard error
    write_text(summary, sys.stdout if args.output else sys.stderr)
    if args.html:
        with open(args.html, "w", encoding="utf-8") as stream:
            write_html(summary, stream)
    return summary.exit_status()


Hook = Callable[[Any], None]


@contextmanager
def progress_bar(stream: Any) -> Iterator[tuple[Hook | None, Hook | None]]:
    """A rich progress bar on ``stream`` when it is a terminal: images listed vs judged."""
    if not stream.isatty():
        yield None, None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    progress = Progress(
        TextColumn("auditing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unsafe]} unsafe, {task.fields[errors]} unreadable"),
        console=Console(file=stream),
        transient=True,
    )
    task = progress.add_task("audit", total=0, unsafe=0, errors=0)
    counts = {"unsafe": 0, "error": 0}

    def listed(_target: Any) -> None:
        progress.update(task, total=(progress.tasks[0].total or 0) + 1)

    def judged(record: dict[str, Any]) -> None:
        counts[record["verdict"]] = counts.get(record["verdict"], 0) + 1
        progress.update(task, advance=1, unsafe=counts["unsafe"], errors=counts["error"])

    with progress:
        yield listed, judged
