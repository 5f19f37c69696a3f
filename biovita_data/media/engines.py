"""Engines: both run `run_batch` (download + verify/convert/hash, per record) over batches.

A batch is up to BATCH[modality] consecutive records of one shard. `run_batch` runs in a worker
process: its threads download (I/O), its own thread decodes/converts/hashes as downloads arrive
(CPU), so the driver never touches the downloaded bytes. `local` maps batches over a process pool,
`ray` over a Ray Dataset (`map_batches`); the driver assembles finished shards from the
outcomes the same way for both, so both write the same bytes.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import pickle
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
from dataclasses import dataclass
from typing import NamedTuple

import pyarrow as pa

from biovita_data.crawl.http import HttpClient
from biovita_data.media.download import HttpSpec, fetch_item
from biovita_data.media.process import process_item
from biovita_data.media.records import ItemFailure, ItemOutcome, failed
from biovita_data.media.settings import MaterializeSettings, ProcessSettings, WorkItem
from biovita_data.media.shards import ShardSpec, assemble

# Records per batch: enough to keep a worker's threads busy, few enough to spread small runs.
BATCH = {"audio": 16, "image": 64}

# Called as batches finish: (modality, records, bytes downloaded).
OnProgress = Callable[[str, int, int], None]


class ShardDone(NamedTuple):
    spec: ShardSpec
    files: pa.Table
    failures: pa.Table


@dataclass(frozen=True)
class Batch:
    shard: int  # position in the engine's shard list
    start: int  # index of the first record within the shard
    items: tuple[WorkItem, ...]


def make_batches(shards: list[ShardSpec]) -> list[Batch]:
    """Consecutive records of one shard each, in shard order."""
    out = []
    for s, spec in enumerate(shards):
        size = BATCH[spec.modality]
        out += [Batch(s, k, spec.items[k : k + size]) for k in range(0, len(spec.items), size)]
    return out


# ----------------------------------------------------------------------------- in a worker
_CLIENTS: dict[HttpSpec, HttpClient] = {}
_POOLS: dict[int, ThreadPoolExecutor] = {}


def _download(http: HttpClient, item: WorkItem) -> bytes | ItemFailure:
    try:
        return fetch_item(http, item)
    except ItemFailure as exc:
        return exc


def run_batch(
    items: tuple[WorkItem, ...], ps: ProcessSettings, http: HttpSpec, threads: int
) -> tuple[list[ItemOutcome], Counter]:
    """A batch's outcomes in record order, and the HTTP client's counters for it.

    `threads` threads download (fetch_item); this thread processes each download as it
    arrives (process_item), so CPU work never oversubscribes the worker's core. The client
    (rate limits, keep-alive sessions) and the threads live as long as the worker process.
    """
    client = _CLIENTS.get(http)
    if client is None:
        client = _CLIENTS[http] = http.client()
    pool = _POOLS.get(threads)
    if pool is None:
        pool = _POOLS[threads] = ThreadPoolExecutor(threads, "materialize-io")
    before = Counter(client.stats)
    futures = {pool.submit(_download, client, item): k for k, item in enumerate(items)}
    outcomes: list[ItemOutcome | None] = [None] * len(items)
    for fut in as_completed(futures):
        item, data = items[futures[fut]], fut.result()
        done = process_item(item, data, ps) if isinstance(data, bytes) else failed(item, data)
        outcomes[futures[fut]] = done
    return outcomes, Counter(client.stats) - before  # type: ignore[return-value]


# ----------------------------------------------------------------------------- in the driver
class Assembler:
    """Collects batch outcomes; a shard is done (and assembled) once all its records are in."""

    def __init__(self, shards: list[ShardSpec], http: HttpClient, on: OnProgress) -> None:
        self.shards = shards
        self.http = http
        self.on = on
        self.outcomes: dict[int, dict[int, ItemOutcome]] = {s: {} for s in range(len(shards))}

    def add(self, batch: Batch, outcomes: list[ItemOutcome], stats: Counter) -> list[ShardDone]:
        got = self.outcomes[batch.shard]
        for k, outcome in enumerate(outcomes):
            got[batch.start + k] = outcome
        self.http.stats.update(stats)
        spec = self.shards[batch.shard]
        self.on(spec.modality, len(outcomes), sum(o.downloaded for o in outcomes))
        if len(got) < len(spec.items):
            return []
        return [ShardDone(spec, *assemble(spec, self.outcomes.pop(batch.shard)))]


def _worker_share(settings: MaterializeSettings, http: HttpClient) -> tuple[HttpSpec, int]:
    """Each worker's HTTP recipe (its share of every host's limits) and its thread count."""
    workers = settings.n_workers
    threads = max(1, math.ceil(settings.download_threads / workers))
    return HttpSpec.of(http).shared_by(workers), threads


def run_local(
    shards: list[ShardSpec], settings: MaterializeSettings, http: HttpClient, on: OnProgress
) -> Iterator[ShardDone]:
    """Batches over a process pool, at most two per worker in flight (bounded memory)."""
    ps = settings.process()
    spec, threads = _worker_share(settings, http)
    assembler = Assembler(shards, http, on)
    todo = iter(make_batches(shards))
    window = 2 * settings.n_workers
    ctx = multiprocessing.get_context("forkserver")  # never fork a process that runs threads
    ctx.set_forkserver_preload(["biovita_data.media.engines"])
    inflight: dict[Future, Batch] = {}
    with ProcessPoolExecutor(settings.n_workers, mp_context=ctx) as pool:
        while True:
            for batch in todo if len(inflight) < window else ():
                inflight[pool.submit(run_batch, batch.items, ps, spec, threads)] = batch
                if len(inflight) >= window:
                    break
            if not inflight:
                return
            done, _ = wait_futures(list(inflight), return_when=FIRST_COMPLETED)
            for fut in done:
                yield from assembler.add(inflight.pop(fut), *fut.result())


def _ray_batch(batch: pa.Table, ps: ProcessSettings, http: HttpSpec, threads: int) -> pa.Table:
    """Ray Data's map_batches function: pickled Batches in, pickled outcomes out."""
    pos, results = [], []
    for p, blob in zip(batch["pos"].to_pylist(), batch["batch"].to_pylist(), strict=True):
        pos.append(p)
        results.append(pickle.dumps(run_batch(pickle.loads(blob).items, ps, http, threads)))
    return pa.table(
        {"pos": pa.array(pos, pa.int64()), "result": pa.array(results, pa.large_binary())}
    )


def run_ray(
    shards: list[ShardSpec], settings: MaterializeSettings, http: HttpClient, on: OnProgress
) -> Iterator[ShardDone]:
    """Each batch is one row of a Ray Dataset, mapped by `run_batch` on whichever node is free."""
    import ray

    started = False
    if not ray.is_initialized():
        where = {"address": settings.ray_address} if settings.ray_address else {}
        cpus = {} if settings.ray_address else {"num_cpus": settings.n_workers}
        ray.init(
            **where,
            **cpus,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
        started = True
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        spec, threads = _worker_share(settings, http)
        batches = make_batches(shards)
        assembler = Assembler(shards, http, on)
        rows = [{"pos": k, "batch": pickle.dumps(b)} for k, b in enumerate(batches)]
        kwargs = {"ps": settings.process(), "http": spec, "threads": threads}
        ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            _ray_batch,
            batch_size=1,
            batch_format="pyarrow",
            fn_kwargs=kwargs,
            num_cpus=1,
            concurrency=settings.n_workers,
        )
        for row in ds.iter_rows():
            outcomes, stats = pickle.loads(row["result"])
            yield from assembler.add(batches[row["pos"]], outcomes, stats)
    finally:
        if started:
            ray.shutdown()


ENGINES = {"local": run_local, "ray": run_ray}
