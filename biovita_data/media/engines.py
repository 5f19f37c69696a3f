"""Engines: both run `run_shard` (download, verify/convert/hash, write) over the shards to do.

`run_shard` runs in a worker process: its threads download (I/O), its own thread decodes,
converts and hashes as downloads arrive (CPU; with fewer shards than workers, `cpu_threads`
threads do, as libsndfile, Pillow and hashlib release the GIL, so that every core works), and
it writes the shard straight to the media store (OUT/media, a shared folder or an object store)
row group by row group as its records are done (downloads run at most WINDOW records ahead, so
a worker holds a few row groups of media, not a shard), commits it when complete, and returns
only a small report (index rows without bytes, failures, counters). No downloaded byte ever
reaches the driver. `local` maps shards over a process pool, `ray` over a Ray Dataset
(`map_batches`, any node); both write the same bytes, because the shard is assembled and
encoded the same way.
"""

from __future__ import annotations

import contextlib
import logging
import math
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
)
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from queue import SimpleQueue

import polars as pl
import pyarrow as pa

from biovita_data.core import forkserver
from biovita_data.core.heap import keep_freed_memory
from biovita_data.crawl.http import HttpClient
from biovita_data.media.download import HttpSpec, fetch_item
from biovita_data.media.index import shard_rows
from biovita_data.media.process import process_item
from biovita_data.media.records import ItemFailure, ItemOutcome, failed
from biovita_data.media.settings import MaterializeSettings, ProcessSettings, WorkItem
from biovita_data.media.shards import ROW_GROUP, ShardSpec, ShardWriter, write_failures
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


# downloads start at most this many records past the first one not yet written (run_items)
WINDOW = 2 * ROW_GROUP
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
    take: Callable[[int, ItemOutcome], int],
    cpu_threads: int = 1,
    window: int = WINDOW,
) -> Counter:
    """Hand each record's outcome to `take(k, outcome)` (in this thread) as it is done; the HTTP
    client's counters for them.

    `threads` threads download (fetch_item), records in order, never more than `window` past
    the first record `take` has not let go (it returns how many leading records it has), so a
    worker holds a few row groups of media, however fast the downloads are. Each download is
    processed as it arrives (process_item): by this thread alone when cpu_threads is 1, so CPU
    work never oversubscribes the worker's core, else by cpu_threads threads (the worker has
    that many cores to itself: `worker_plan`). The client (rate limits, keep-alive sessions)
    and the threads live as long as the worker process.
    """
    client = _CLIENTS.get(http)
    if client is None:  # a new run: its own client (rate limits, circuit breaker) from scratch
        _CLIENTS.clear()
        client = _CLIENTS[http] = http.client()
    pool = _POOLS.get(threads)
    if pool is None:
        pool = _POOLS[threads] = ThreadPoolExecutor(threads, "materialize-io")
    cpu = None
    if cpu_threads > 1:
        cpu = _POOLS.get(-cpu_threads)  # keyed apart from the download pools
        if cpu is None:
            cpu = _POOLS[-cpu_threads] = ThreadPoolExecutor(cpu_threads, "materialize-cpu")
    before = Counter(client.stats)
    finished: SimpleQueue[tuple[int, Future, bool]] = SimpleQueue()  # (k, future, processed)

    def notify(k: int, processed: bool) -> Callable[[Future], None]:
        return lambda fut: finished.put((k, fut, processed))

    started = released = outstanding = 0
    ahead = max(window, 2 * threads)
    while True:
        while started < min(len(items), released + ahead):
            fut = pool.submit(_download, client, items[started])
            fut.add_done_callback(notify(started, False))
            started, outstanding = started + 1, outstanding + 1
        if not outstanding:
            return Counter(client.stats) - before  # type: ignore[return-value]
        k, fut, processed = finished.get()
        outstanding -= 1
        if processed:
            released = take(k, fut.result())
        elif cpu is None:
            released = take(k, _process(items[k], fut.result(), ps))
        else:
            cpu.submit(_process, items[k], fut.result(), ps).add_done_callback(notify(k, True))
            outstanding += 1


def _process(item: WorkItem, data: bytes | ItemFailure, ps: ProcessSettings) -> ItemOutcome:
    """A download's outcome: processed when it is bytes, else the failure it is."""
    return process_item(item, data, ps) if isinstance(data, bytes) else failed(item, data)


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
    """Do a shard, writing it to the store as its records are done (ShardWriter; its failures
    just before it is committed); the ShardReport, pickled and compressed."""
    keep_freed_memory()  # every row group reuses the last one's memory (core/heap.py)
    done: dict = {}

    def write(f) -> None:
        shard = ShardWriter(spec, f)
        done["stats"] = run_items(spec.items, ps, http, threads, shard.add, cpu_threads)
        done["rows"], done["fails"] = shard.finish()
        done["sizes"], done["downloaded"] = shard.sizes, shard.downloaded
        write_failures(store, spec, done["fails"])  # before the shard exists: it marks it done

    store.write(store.shard(spec.modality, spec.index), write)
    rows = shard_rows(done["rows"], spec.index, done["sizes"])
    report = ShardReport(
        spec.modality,
        spec.index,
        len(spec.items),
        rows,
        done["fails"],
        done["downloaded"],
        int(rows["size"].sum() or 0),
        done["stats"],
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
    """Shards over a process pool, one per worker at a time;
    with fewer shards than workers, fewer processes with more CPU threads each (`worker_plan`)."""
    ps = settings.process()
    spec, threads = _worker_share(settings, http)
    collect = Collector(http, on, received)
    todo = iter(shards)
    window, cpu_threads = worker_plan(settings.n_workers, len(shards))
    # never fork a process that runs threads; pandas preloaded too: pyarrow imports it at its
    # first table built from Python rows (every shard's), ~0.5 CPU-s paid once, not per worker
    ctx = forkserver.context(["biovita_data.media.engines", "pandas"])
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
