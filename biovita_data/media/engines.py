"""Engines: both run `run_shard` (download, verify/convert/hash, write) over the shards to do.

`run_shard` runs in a worker process: its threads download (I/O), its own thread decodes,
converts and hashes as downloads arrive (CPU; with fewer shards than workers, `cpu_threads`
threads do, as libsndfile, Pillow and hashlib release the GIL, so that every core works), then
it writes the finished shard straight to the media store (OUT/media, a shared folder or an
object store) and returns only a small report (index rows without bytes, failures, counters).
No downloaded byte ever reaches the driver. `local` maps shards over a process pool, `ray` over
a Ray Dataset (`map_batches`, any node); both write the same bytes, because the shard is
assembled and encoded the same way.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import pickle
import socket
import sys
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    as_completed,
)
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

from biovita_data.crawl.http import HttpClient
from biovita_data.media.download import HttpSpec, fetch_item
from biovita_data.media.index import shard_rows
from biovita_data.media.process import process_item
from biovita_data.media.records import ItemFailure, ItemOutcome, failed
from biovita_data.media.settings import MaterializeSettings, ProcessSettings, WorkItem
from biovita_data.media.shards import ShardSpec, assemble, write_shard
from biovita_data.media.store import MediaStore

# Called as shards finish: (modality, records, bytes downloaded).
OnProgress = Callable[[str, int, int], None]


@dataclass
class ShardReport:
    """What a worker sends back for a shard it wrote: no media bytes."""

    modality: str
    index: int
    records: int
    rows: pl.DataFrame  # the shard's index rows (index.shard_rows)
    failures: pa.Table
    downloaded: int  # bytes downloaded
    stored: int  # bytes of media stored
    stats: Counter  # the HTTP client's counters for this shard
    node: str  # where it was done: the Ray node id, else the host name


def _node() -> str:
    """This worker's Ray node id when it runs in Ray, else the host name."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return ray.get_runtime_context().get_node_id()
    return socket.gethostname()


@dataclass
class Received:
    """What crossed from the workers to the driver: compressed pickled reports, in bytes."""

    reports: int = 0
    bytes: int = 0
    nodes: set[str] = field(default_factory=set)  # where the shards were done


_CLIENTS: dict[HttpSpec, HttpClient] = {}
_POOLS: dict[int, ThreadPoolExecutor] = {}


def _download(http: HttpClient, item: WorkItem) -> bytes | ItemFailure:
    try:
        return fetch_item(http, item)
    except ItemFailure as exc:
        return exc


def run_items(
    items: tuple[WorkItem, ...],
    ps: ProcessSettings,
    http: HttpSpec,
    threads: int,
    cpu_threads: int = 1,
) -> tuple[list[ItemOutcome], Counter]:
    """The records' outcomes in record order, and the HTTP client's counters for them.

    `threads` threads download (fetch_item); each download is processed as it arrives
    (process_item): by this thread alone when cpu_threads is 1, so CPU work never
    oversubscribes the worker's core, else by cpu_threads threads (the worker has that many
    cores to itself: `worker_plan`). The client (rate limits, keep-alive sessions) and the
    threads live as long as the worker process.
    """
    client = _CLIENTS.get(http)
    if client is None:  # a new run: its own client (rate limits, circuit breaker) from scratch
        _CLIENTS.clear()
        client = _CLIENTS[http] = http.client()
    pool = _POOLS.get(threads)
    if pool is None:
        pool = _POOLS[threads] = ThreadPoolExecutor(threads, "materialize-io")
    before = Counter(client.stats)
    futures = {pool.submit(_download, client, item): k for k, item in enumerate(items)}
    outcomes: list[ItemOutcome | None] = [None] * len(items)
    if cpu_threads <= 1:
        for fut in as_completed(futures):
            k = futures[fut]
            outcomes[k] = _process(items[k], fut.result(), ps)
    else:
        cpu = _POOLS.get(-cpu_threads)  # keyed apart from the download pools
        if cpu is None:
            cpu = _POOLS[-cpu_threads] = ThreadPoolExecutor(cpu_threads, "materialize-cpu")
        work = {cpu.submit(_process, items[k], f.result(), ps): k for f, k in _arrivals(futures)}
        for fut in as_completed(work):
            outcomes[work[fut]] = fut.result()
    return outcomes, Counter(client.stats) - before  # type: ignore[return-value]


def _process(item: WorkItem, data: bytes | ItemFailure, ps: ProcessSettings) -> ItemOutcome:
    """A download's outcome: processed when it is bytes, else the failure it is."""
    return process_item(item, data, ps) if isinstance(data, bytes) else failed(item, data)


def _arrivals(futures: dict[Future, int]) -> Iterator[tuple[Future, int]]:
    """(download future, record number) in the order the downloads finish."""
    for fut in as_completed(futures):
        yield fut, futures[fut]


def worker_plan(n_workers: int, n_shards: int) -> tuple[int, int]:
    """(worker processes, CPU threads per worker) for n_shards shards on n_workers cores: one
    process per shard at most, and with fewer shards than workers each process gets the cores
    left over (rounded up), so every core works."""
    processes = max(1, min(n_workers, n_shards))
    return processes, max(1, -(-n_workers // processes)) if n_shards < n_workers else 1


def run_shard(
    spec: ShardSpec,
    ps: ProcessSettings,
    http: HttpSpec,
    threads: int,
    store: MediaStore,
    cpu_threads: int = 1,
) -> bytes:
    """Do a shard, write it (and its failures) to the store; the ShardReport, pickled and
    compressed."""
    outcomes, stats = run_items(spec.items, ps, http, threads, cpu_threads)
    files, fails = assemble(spec, dict(enumerate(outcomes)))
    write_shard(store, spec, files, fails)
    rows = shard_rows(files.without_payload(), spec.index)
    report = ShardReport(
        spec.modality,
        spec.index,
        len(spec.items),
        rows,
        fails,
        sum(o.downloaded for o in outcomes),
        int(rows["size"].sum() or 0),
        stats,
        _node(),
    )
    return zlib.compress(pickle.dumps(report))  # hex digests and repeated paths: about 2x


# ----------------------------------------------------------------------------- in the driver
class Collector:
    """Turns the workers' compressed reports into ShardReports; counts what the driver got."""

    def __init__(self, http: HttpClient, on: OnProgress, received: Received) -> None:
        self.http, self.on, self.received = http, on, received

    def add(self, blob: bytes) -> ShardReport:
        self.received.reports += 1
        self.received.bytes += len(blob)
        report: ShardReport = pickle.loads(zlib.decompress(blob))
        self.received.nodes.add(report.node)
        self.http.stats.update(report.stats)
        self.on(report.modality, report.records, report.downloaded)
        return report


def _worker_share(settings: MaterializeSettings, http: HttpClient) -> tuple[HttpSpec, int]:
    """Each worker's HTTP recipe (its share of every host's limits) and its thread count."""
    workers = settings.n_workers
    threads = max(1, math.ceil(settings.download_threads / workers))
    return HttpSpec.of(http, uuid.uuid4().hex).shared_by(workers), threads


def run_local(
    shards: list[ShardSpec],
    settings: MaterializeSettings,
    http: HttpClient,
    store: MediaStore,
    on: OnProgress,
    received: Received,
) -> Iterator[ShardReport]:
    """Shards over a process pool, one per worker at a time (a shard is held in its memory);
    with fewer shards than workers, fewer processes with more CPU threads each (`worker_plan`)."""
    ps = settings.process()
    spec, threads = _worker_share(settings, http)
    collect = Collector(http, on, received)
    todo = iter(shards)
    window, cpu_threads = worker_plan(settings.n_workers, len(shards))
    ctx = multiprocessing.get_context("forkserver")  # never fork a process that runs threads
    # pandas too: pyarrow imports it at its first table built from Python rows (every shard's),
    # about 0.5 CPU-s that the forkserver then pays once instead of every worker
    ctx.set_forkserver_preload(["biovita_data.media.engines", "pandas"])
    inflight: set[Future] = set()
    with ProcessPoolExecutor(window, mp_context=ctx) as pool:
        while True:
            for shard in todo if len(inflight) < window else ():
                inflight.add(pool.submit(run_shard, shard, ps, spec, threads, store, cpu_threads))
                if len(inflight) >= window:
                    break
            if not inflight:
                return
            done, _ = wait_futures(list(inflight), return_when=FIRST_COMPLETED)
            for fut in done:
                inflight.discard(fut)
                yield collect.add(fut.result())


def _ray_shards(batch: pa.Table, cpu_threads: int = 1, **kwargs) -> pa.Table:
    """Ray Data's map_batches function: pickled ShardSpecs in, pickled ShardReports out (with at
    most as many CPU threads as the node has cores)."""
    threads = max(1, min(cpu_threads, os.cpu_count() or 1))
    blobs = [
        run_shard(pickle.loads(b), cpu_threads=threads, **kwargs)
        for b in batch["shard"].to_pylist()
    ]
    return pa.table({"report": pa.array(blobs, pa.large_binary())})


def run_ray(
    shards: list[ShardSpec],
    settings: MaterializeSettings,
    http: HttpClient,
    store: MediaStore,
    on: OnProgress,
    received: Received,
) -> Iterator[ShardReport]:
    """Each shard is one row of a Ray Dataset, done and written by whichever node is free; with
    fewer shards than workers, as many tasks as shards, each with the idle cores' CPU threads
    (`worker_plan`)."""
    ray = ray_module()
    with ray_connected(settings.ray_address, settings.n_workers):
        ray.data.DataContext.get_current().enable_progress_bars = False
        spec, threads = _worker_share(settings, http)
        collect = Collector(http, on, received)
        rows = [{"shard": pickle.dumps(s)} for s in shards]
        tasks, cpu_threads = worker_plan(settings.n_workers, len(shards))
        kwargs = {"ps": settings.process(), "http": spec, "threads": threads, "store": store}
        kwargs["cpu_threads"] = cpu_threads
        ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            _ray_shards,
            batch_size=1,
            batch_format="pyarrow",
            fn_kwargs=kwargs,
            num_cpus=1,
            concurrency=tasks,
        )
        for row in ds.iter_rows():
            yield collect.add(row["report"])


def ray_module():
    """`ray`, or a ValueError saying how to install it (the `distributed` extra)."""
    try:
        import ray
    except ImportError:
        raise ValueError(
            "engine 'ray' needs Ray, which is not installed: pip install 'biovita[distributed]' "
            "(in a clone: pip install -e '.[distributed]')"
        ) from None
    return ray


@contextlib.contextmanager
def ray_connected(address: str | None, local_cpus: int) -> Iterator[None]:
    """Ray as the caller left it, or else connected for the block: to the cluster at `address`,
    or a local Ray of `local_cpus` CPUs (shut down after)."""
    ray = ray_module()
    if ray.is_initialized():
        yield
        return
    where = {"address": address} if address else {"num_cpus": local_cpus}
    ray.init(**where, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


ENGINES = {"local": run_local, "ray": run_ray}
