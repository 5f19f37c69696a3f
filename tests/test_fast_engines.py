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
    outcomes, _ = engines.run_items(items, ProcessSettings(), _spec(), 2, cpu_threads=2)
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
    outcomes, _ = engines.run_items(_items(8), ProcessSettings(), _spec(), 4)
    assert len(outcomes) == 8 and seen == {threading.get_ident()}


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


def test_shard_parts_hold_the_rows_as_arrow_would_convert_them() -> None:
    """The payload column joined into one buffer: the same table as Arrow's own conversion,
    row group by row group, empty payloads and the last short group included."""
    from biovita_data.core.schemas import MEDIA_FILE
    from biovita_data.media.shards import ROW_GROUP, ShardFiles

    rows = []
    for k in range(ROW_GROUP + 5):
        payload = bytes([k % 251]) * (k * 37 % 1000) if k % 7 else b""
        rows.append(
            {"source": "xeno-canto", "record_id": str(k), "modality": "audio", "segment": 0,
             "n_segments": 1, "path": f"audio/xeno-canto/{k}.mp3", "bytes": payload,
             "sha256": "0" * 64, "file_format": "mp3", "transcoded": False,
             "source_sha256": "0" * 64, "offset_s": 0.0, "duration_s": 1.0,
             "sample_rate": 22050, "channels": 1, "width": None, "height": None,
             "fingerprint": b"fp" if k % 2 else None}
        )  # fmt: skip
    schema = MEDIA_FILE.with_metadata({b"k": b"v"})
    parts = list(ShardFiles(rows, schema).parts())
    assert [len(p) for p in parts] == [ROW_GROUP, 5]
    for a, part in zip((0, ROW_GROUP), parts, strict=True):
        part.validate(full=True)
        assert part.schema.equals(schema, check_metadata=True)
        assert part.equals(pa.Table.from_pylist(rows[a : a + ROW_GROUP], schema=schema))
