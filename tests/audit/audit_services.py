"""The real services the audit tests run against, on 127.0.0.1, started and stopped by fixtures.

- :class:`CountingS3`: moto's S3 server (the WSGI app ``moto_server`` runs) behind a middleware
  that counts the body bytes it serves per object, so bytes fetched are measured at the server.
- :class:`RangeServer`: a plain HTTP file server with ``Range`` support and misbehaving paths.
- :class:`DaskProcesses`: ``dask scheduler`` and ``dask worker`` as separate processes.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# -- S3 -----------------------------------------------------------------------------------------


class CountingMiddleware:
    """Counts response body bytes per request path (``/bucket/key``) of a WSGI app."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.served: collections.Counter[str] = collections.Counter()
        self.requests: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        with self.lock:
            self.requests[path] += 1
        for chunk in self.app(environ, start_response):
            with self.lock:
                self.served[path] += len(chunk)
            yield chunk

    def reset(self) -> None:
        with self.lock:
            self.served.clear()
            self.requests.clear()


class CountingS3:
    """moto's S3 server on 127.0.0.1 (an ephemeral port) with server-side byte counts."""

    def __init__(self) -> None:
        from moto.server import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        # one log line per request costs the server more than the request itself
        logging.getLogger("werkzeug").setLevel(logging.WARNING)

        self.counter = CountingMiddleware(DomainDispatcherApplication(create_backend_app))
        self.server = make_server("127.0.0.1", 0, self.counter, threaded=True)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
        )

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join()


S3_KEY = "AKIAAUDITTESTKEY"
S3_SECRET = "audit-s3cr3t-never-printed"


# -- HTTP with ranges and misbehaving paths -----------------------------------------------------

RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class RangeServer:
    """Serves files of ``root``; the first path segment chooses a behaviour.

    ``/ok/NAME``: well behaved.  ``/fail/NAME``: 500 always.  ``/flaky/NAME``: 500 for the
    first four requests (the listing's size query and the first attempt's), then well
    behaved.  ``/drop/NAME``: every GET sends its headers and half the body, then closes the
    connection.  ``/dropfirst/NAME``: the first GET is dropped that way, later ones are
    served.  ``/slow/NAME``: the body goes out in 512-byte pieces with a pause between them.
    ``/gate/NAME``: the first :attr:`open_gates` names are served, requests for any other
    are held until :attr:`gate` is set (the resume test kills an audit held there).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: collections.Counter[str] = collections.Counter()
        self.served: collections.Counter[str] = collections.Counter()
        self.gets: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()
        self.gate = threading.Event()
        self.gate.set()
        self.open_gates = 0
        self.gated: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, behaviour: str, name: str) -> str:
        return f"{self.base}/{behaviour}/{name}"

    def count(self, path: str, body: int) -> int:
        with self.lock:
            self.requests[path] += 1
            self.served[path] += body
            return self.requests[path]

    def through_gate(self, name: str) -> bool:
        with self.lock:
            if name not in self.gated:
                self.gated.append(name)
            return self.gated.index(name) < self.open_gates

    def count_get(self, path: str) -> int:
        with self.lock:
            self.gets[path] += 1
            return self.gets[path]

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.served.clear()
            self.gets.clear()

    def stop(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.thread.join()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self.answer(head=True)

            def do_GET(self) -> None:
                self.answer(head=False)

            def answer(self, *, head: bool) -> None:
                _, behaviour, name = self.path.split("/", 2)
                seen = owner.count(self.path, 0) if head else None
                if behaviour == "gate" and not owner.through_gate(name):
                    owner.gate.wait()
                path = owner.root / name
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                status, body, extra = 200, data, {}
                match = RANGE.match(self.headers.get("Range", ""))
                if match:
                    start = int(match[1])
                    end = min(int(match[2]) + 1 if match[2] else len(data), len(data))
                    status, body = 206, data[start:end]
                    extra["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
                if not head:
                    seen = owner.count(self.path, len(body))
                    gets = owner.count_get(self.path)
                assert seen is not None
                if behaviour == "fail" or (behaviour == "flaky" and seen <= 4):
                    self.send_error(500)
                    return
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", f'"{len(data)}-{int(path.stat().st_mtime_ns)}"')
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                if head:
                    return
                if behaviour == "drop" or (behaviour == "dropfirst" and gets == 1):
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if behaviour == "slow":
                    for at in range(0, len(body), 512):
                        self.wfile.write(body[at : at + 512])
                        self.wfile.flush()
                        time.sleep(0.002)
                    return
                self.wfile.write(body)

        return Handler


# -- Dask as separate processes -----------------------------------------------------------------


class DaskProcesses:
    """``dask scheduler`` and ``dask worker`` processes on 127.0.0.1, sharing a scheduler file."""

    def __init__(self, workdir: Path, workers: int) -> None:
        self.scheduler_file = workdir / "scheduler.json"
        self.processes: list[subprocess.Popen[bytes]] = []
        dask = [sys.executable, "-m", "dask"]
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        env = dict(os.environ, DASK_DISTRIBUTED__WORKER__DAEMON="False")
        self.processes.append(
            subprocess.Popen(
                [
                    *dask,
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--no-dashboard",
                    "--scheduler-file",
                    str(self.scheduler_file),
                ],
                cwd=workdir,
                env=env,
                **quiet,
            )
        )
        for _ in range(workers):
            self.processes.append(
                subprocess.Popen(
                    [
                        *dask,
                        "worker",
                        "--scheduler-file",
                        str(self.scheduler_file),
                        "--host",
                        "127.0.0.1",
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                        "--local-directory",
                        str(workdir),
                    ],
                    cwd=workdir,
                    env=env,
                    **quiet,
                )
            )

    def address(self, workers: int) -> str:
        """The scheduler's address once ``workers`` workers have joined it."""
        from distributed import Client

        while not self.scheduler_file.exists():
            self._check_alive()
            time.sleep(0.05)
        with Client(scheduler_file=str(self.scheduler_file)) as client:
            while len(client.scheduler_info(n_workers=-1)["workers"]) < workers:
                self._check_alive()
                time.sleep(0.05)
            return str(client.scheduler.address)

    def _check_alive(self) -> None:
        for process in self.processes:
            if process.poll() is not None:
                raise AssertionError(f"{process.args[3]} exited with {process.returncode}")

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            process.wait()


def have(command: str) -> bool:
    return shutil.which(command) is not None
