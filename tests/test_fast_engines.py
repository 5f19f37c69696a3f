"""Materialize's engines: a run with fewer shards than workers still puts every worker's core to
work; a shard's row groups hold its rows as Arrow would convert them."""

from __future__ import annotations

import sys
import threading
from concurrent.futures import Future
from types import SimpleNamespace
from typing import ClassVar

import pyarrow as pa
import pytest

from biovita_data.crawl.http import HttpClient
from biovita_data.media import engines
from biovita_data.media.download import HttpSpec
from biovita_data.media.records import ItemOutcome
from biovita_data.media.settings import MaterializeSettings, ProcessSettings, WorkItem
from biovita_data.media.shards import ShardSpec


def _items(n: int) -> tuple[WorkItem, ...]:
    return tuple(
        WorkItem("audio", "xeno-canto", str(i), f"http://example.invalid/{i}.mp3", "mp3", None)
        for i in range(n)
    )


def _spec() -> HttpSpec:
    return HttpSpec.of(HttpClient({}, throttle=False, retries=0), "test-fast-engines")


class _Taken:
    """run_items' `take`: keeps the outcomes and lets go of the leading ones done."""

    def __init__(self) -> None:
        self.outcomes: dict[int, ItemOutcome] = {}
        self.released = 0

    def __call__(self, k: int, outcome: ItemOutcome) -> int:
        self.outcomes[k] = outcome
        while self.released in self.outcomes:
            self.released += 1
        return self.released

    def in_order(self) -> list[ItemOutcome]:
        return [self.outcomes[k] for k in sorted(self.outcomes)]


PLANS = [(2, 1, (1, 2)), (2, 2, (2, 1)), (2, 7, (2, 1)), (3, 2, (2, 2)), (4, 1, (1, 4))]


@pytest.mark.parametrize(("workers", "shards", "plan"), [*PLANS, (1, 0, (1, 1))])
def test_worker_plan_gives_idle_cores_to_the_shards(workers, shards, plan) -> None:
    assert engines.worker_plan(workers, shards) == plan


def test_run_items_processes_on_several_threads_when_told(monkeypatch) -> None:
    """Two items must be in process_item at the same time: a serial loop never gets past the
    barrier (BrokenBarrierError after its timeout)."""
    barrier = threading.Barrier(2, timeout=10)
    seen: set[int] = set()

    def fake_download(http, item):
        return b"bytes of " + item.record_id.encode()

    def fake_process(item, data, ps):
        seen.add(threading.get_ident())
        barrier.wait()
        return ItemOutcome(item, rows=[{"record_id": item.record_id}], downloaded=len(data))

    monkeypatch.setattr(engines, "_download", fake_download)
    monkeypatch.setattr(engines, "process_item", fake_process)
    items = _items(6)
    taken = _Taken()
    engines.run_items(items, ProcessSettings(), _spec(), 2, taken, cpu_threads=2)
    outcomes = taken.in_order()
    assert [o.item.record_id for o in outcomes] == [i.record_id for i in items]  # record order
    assert [o.downloaded for o in outcomes] == [len(b"bytes of ") + len(i.record_id) for i in items]
    assert len(seen) == 2


def test_run_items_keeps_one_cpu_thread_by_default(monkeypatch) -> None:
    seen: set[int] = set()

    def fake_process(item, data, ps):
        seen.add(threading.get_ident())
        return ItemOutcome(item, rows=[], downloaded=len(data))

    monkeypatch.setattr(engines, "_download", lambda http, item: b"x")
    monkeypatch.setattr(engines, "process_item", fake_process)
    taken = _Taken()
    engines.run_items(_items(8), ProcessSettings(), _spec(), 4, taken)
    assert len(taken.outcomes) == 8 and seen == {threading.get_ident()}


def test_run_items_downloads_at_most_a_window_past_the_first_record_not_let_go(
    monkeypatch,
) -> None:
    """Record 0 hangs: downloads go on up to the window past it and then wait, so a worker never
    holds more than a window of media however fast the other downloads are."""
    gate = threading.Event()
    started: list[int] = []

    def fake_download(http, item):
        started.append(int(item.record_id))
        if item.record_id == "0":
            gate.wait(10)
        return b"x"

    monkeypatch.setattr(engines, "_download", fake_download)
    monkeypatch.setattr(
        engines, "process_item", lambda item, data, ps: ItemOutcome(item, downloaded=len(data))
    )
    taken = _Taken()
    threading.Timer(0.5, gate.set).start()
    engines.run_items(_items(30), ProcessSettings(), _spec(), 2, taken, window=6)
    assert sorted(started) == list(range(30)) and taken.released == 30
    before_gate = started[: started.index(6)] if 6 in started else started
    assert sorted(before_gate) == list(range(6))  # 6 only once record 0 was let go


class _InlinePool:
    """A ProcessPoolExecutor stand-in that runs in this process and records what it got."""

    made: ClassVar[list[int]] = []
    calls: ClassVar[list[tuple]] = []

    def __init__(self, max_workers: int, mp_context=None) -> None:
        _InlinePool.made.append(max_workers)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def submit(self, fn, *args) -> Future:
        _InlinePool.calls.append(args)
        fut: Future = Future()
        fut.set_result(b"report")
        return fut


def test_run_local_gives_a_lone_shard_every_core(monkeypatch) -> None:
    _InlinePool.made, _InlinePool.calls = [], []
    monkeypatch.setattr(engines, "ProcessPoolExecutor", _InlinePool)
    monkeypatch.setattr(engines.Collector, "add", lambda self, blob: blob)
    shard = ShardSpec("audio", 0, _items(3), "fingerprint")
    settings = MaterializeSettings(modalities=("audio",), workers=2, throttle=False)
    client = HttpClient({}, throttle=False, retries=0)
    reports = list(
        engines.run_local([shard], settings, client, None, lambda *a: None, engines.Received())
    )
    assert reports == [b"report"]
    assert _InlinePool.made == [1]  # one process: one shard
    assert _InlinePool.calls[0][-1] == 2  # ... with both cores' CPU threads
    # enough shards: one process per worker, one CPU thread each
    _InlinePool.made, _InlinePool.calls = [], []
    many = [ShardSpec("audio", k, _items(2), f"fp{k}") for k in range(3)]
    list(engines.run_local(many, settings, client, None, lambda *a: None, engines.Received()))
    assert _InlinePool.made == [2]
    assert [c[-1] for c in _InlinePool.calls] == [1, 1, 1]


class _FakeRayDataset:
    """Ray Data's from_items(...).map_batches(...).iter_rows(), run in this process."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows, self.fn, self.options = rows, None, {}

    def map_batches(self, fn, **options):
        self.fn, self.options = fn, options
        _FakeRay.options.append(options)
        return self

    def iter_rows(self):
        for row in self.rows:
            batch = pa.table({"shard": pa.array([row["shard"]], pa.binary())})
            out = self.fn(batch, **self.options["fn_kwargs"])
            yield {"report": out["report"][0].as_py()}


class _FakeRay:
    """The few attributes of `ray` that run_ray uses, on an already started cluster."""

    options: ClassVar[list[dict]] = []
    data = SimpleNamespace(
        DataContext=SimpleNamespace(get_current=lambda: SimpleNamespace()),
        from_items=lambda rows, override_num_blocks: _FakeRayDataset(rows),
    )

    @staticmethod
    def is_initialized() -> bool:
        return True


def test_run_ray_gives_a_lone_shard_every_core(monkeypatch) -> None:
    ran: list[tuple[int, int]] = []

    def fake_run_shard(spec, ps, http, threads, store, cpu_threads=1):
        ran.append((spec.index, cpu_threads))
        return b"report %d" % spec.index

    monkeypatch.setitem(sys.modules, "ray", _FakeRay)
    monkeypatch.setattr(engines, "run_shard", fake_run_shard)
    monkeypatch.setattr(engines.Collector, "add", lambda self, blob: blob)
    monkeypatch.setattr(engines.os, "cpu_count", lambda: 2)
    settings = MaterializeSettings(modalities=("audio",), workers=2, throttle=False)
    client = HttpClient({}, throttle=False, retries=0)

    def run(shards: list[ShardSpec]) -> list:
        _FakeRay.options, ran[:] = [], []
        return list(
            engines.run_ray(shards, settings, client, None, lambda *a: None, engines.Received())
        )

    assert run([ShardSpec("audio", 0, _items(3), "fp")]) == [b"report 0"]
    assert _FakeRay.options[0]["concurrency"] == 1  # one task: one shard
    assert ran == [(0, 2)]  # ... with both cores' CPU threads
    many = [ShardSpec("audio", k, _items(2), f"fp{k}") for k in range(3)]
    assert run(many) == [b"report 0", b"report 1", b"report 2"]
    assert _FakeRay.options[0]["concurrency"] == 2 and ran == [(0, 1), (1, 1), (2, 1)]
    monkeypatch.setattr(engines.os, "cpu_count", lambda: 1)  # a node of one core: one thread
    assert run([ShardSpec("audio", 0, _items(3), "fp")]) == [b"report 0"] and ran == [(0, 1)]


def test_shard_writer_writes_row_groups_in_record_order_as_records_finish(tmp_path) -> None:
    """Outcomes arriving out of order: each row group is written once the records before its
    last row are done, and the file holds the rows as Arrow's own conversion would, empty
    payloads and the last short group included; its footer carries the fingerprint and sizes,
    and a file cut short before `finish` carries no fingerprint."""
    import json
    import random

    import pyarrow.parquet as pq

    from biovita_data.core.schemas import MEDIA_FILE
    from biovita_data.media.shards import (
        FINGERPRINT_KEY,
        ROW_GROUP,
        SIZES_KEY,
        ShardWriter,
        shard_metadata,
    )

    n = ROW_GROUP + 5
    items = _items(n + 1)  # the last record fails
    rows = []
    for k in range(n):
        payload = bytes([k % 251]) * (k * 37 % 1000) if k % 7 else b""
        rows.append(
            {"source": "xeno-canto", "record_id": str(k), "modality": "audio", "segment": 0,
             "n_segments": 1, "path": f"audio/xeno-canto/{k}.mp3", "bytes": payload,
             "sha256": "0" * 64, "file_format": "mp3", "transcoded": False,
             "source_sha256": "0" * 64, "offset_s": 0.0, "duration_s": 1.0,
             "sample_rate": 22050, "channels": 1, "width": None, "height": None,
             "fingerprint": b"fp" if k % 2 else None}
        )  # fmt: skip
    outcomes = [ItemOutcome(items[k], rows=[dict(rows[k])], downloaded=k) for k in range(n)]
    failure = {"stage": "materialize", "source": "xeno-canto", "modality": "audio",
               "record_id": str(n), "name": None, "reason": "silent", "detail": "x"}  # fmt: skip
    outcomes.append(ItemOutcome(items[n], failure=failure))
    spec = ShardSpec("audio", 0, items, "the-fingerprint")
    order = list(range(n + 1))
    random.Random(3).shuffle(order)
    path = tmp_path / "shard.parquet"
    shard = ShardWriter(spec, str(path))
    for k in order:
        released = shard.add(k, outcomes[k])
        assert released == next((j for j in range(n + 1) if j not in order[: order.index(k) + 1]),
                                n + 1)  # fmt: skip
        assert len(shard.sizes) == released // ROW_GROUP * ROW_GROUP  # whole groups, in order
    cut = ShardWriter(spec, str(tmp_path / "cut.parquet"))
    for k in range(ROW_GROUP):
        cut.add(k, outcomes[k])
    cut._writer.close()  # a worker killed here never writes the footer keys
    assert FINGERPRINT_KEY not in shard_metadata(str(tmp_path / "cut.parquet"))

    index, fails = shard.finish()
    stored = pq.ParquetFile(path)
    assert [stored.metadata.row_group(g).num_rows for g in range(2)] == [ROW_GROUP, 5]
    table = stored.read()
    table.validate(full=True)
    assert table.equals(pa.Table.from_pylist(rows, schema=MEDIA_FILE))
    meta = shard_metadata(str(path))
    assert meta[FINGERPRINT_KEY] == b"the-fingerprint"
    assert json.loads(meta[SIZES_KEY]) == [len(r["bytes"]) for r in rows] == shard.sizes
    assert index.column_names == [c for c in MEDIA_FILE.names if c not in ("bytes", "fingerprint")]
    assert index["record_id"].to_pylist() == [str(k) for k in range(n)]
    assert fails["record_id"].to_pylist() == [str(n)] and shard.downloaded == sum(range(n))
