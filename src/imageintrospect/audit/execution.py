"""Where the batches run: this process, a local process pool, or a Dask cluster.

Targets are cut into batches (``batch_size`` images per task) so the scheduling cost of one
task is shared by many images, and only a bounded number of batches is in flight at once, so a
listing of millions of objects never sits in the scheduler's memory.  Results come back as they
finish, in any order; each executor yields records one by one.
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from .reading import Options, audit_batch
from .records import Record, Target

BATCH_SIZE = 32
#: Batches queued per worker beyond the one it runs, so no worker waits for the next.
QUEUE_PER_WORKER = 2
LOCAL_CLUSTER = "local:"


def batches(targets: Iterable[Target], size: int) -> Iterator[list[Target]]:
    iterator = iter(targets)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def run_inline(targets: Iterable[Target], options: Options, batch_size: int) -> Iterator[Record]:
    """One worker: no pool, the records are produced here."""
    for batch in batches(targets, batch_size):
        yield from audit_batch(batch, options)


def run_pool(
    targets: Iterable[Target], options: Options, workers: int, batch_size: int
) -> Iterator[Record]:
    """A local process pool of ``workers`` processes (started fresh: no inherited threads)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: set[Future[list[Record]]] = set()
        limit = workers * (1 + QUEUE_PER_WORKER)
        for batch in batches(targets, batch_size):
            pending.add(pool.submit(audit_batch, batch, options))
            if len(pending) >= limit:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield from future.result()
        for future in _as_they_finish(pending):
            yield from future.result()


def _as_they_finish(pending: set[Future[list[Record]]]) -> Iterator[Future[list[Record]]]:
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        yield from done


def run_dask(
    targets: Iterable[Target], options: Options, address: str, batch_size: int
) -> Iterator[Record]:
    """The same batches as tasks on a Dask distributed cluster.

    ``address`` is a scheduler address (``tcp://host:8786``) or ``local:N`` for a
    ``LocalCluster`` of N single-threaded worker processes started for this audit.
    """
    from distributed import Client, LocalCluster, as_completed

    cluster: Any = None
    if address.startswith(LOCAL_CLUSTER):
        cluster = LocalCluster(
            n_workers=int(address[len(LOCAL_CLUSTER) :] or 1),
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
        client = Client(cluster)
    else:
        client = Client(address)
    try:
        workers = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
        limit = workers * (1 + QUEUE_PER_WORKER)
        queue = batches(targets, batch_size)
        # pure=False: two batches with equal targets are still two tasks (a rerun must run)
        first = [
            client.submit(audit_batch, batch, options, pure=False)
            for batch in itertools.islice(queue, limit)
        ]
        running = as_completed(first)
        for future in running:
            records: list[Record] = future.result()
            future.release()
            for batch in itertools.islice(queue, 1):
                running.add(client.submit(audit_batch, batch, options, pure=False))
            yield from records
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
