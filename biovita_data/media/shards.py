"""Shards: the manifest cut into fixed, fingerprinted groups; each written once, atomically.

The assignment of records to shards is kept (OUT/media/<modality>/plan.parquet) and only grows:
after an update, a record whose media is unchanged stays in its finished shard (its bytes are
never downloaded again), a record that left the manifest stays in its shard's file but is no
longer live (the index and failures leave it out, so it is never published), and new or changed
records go to new shards after the last.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from biovita_data.core import layout
from biovita_data.core.schemas import FAILURE, MEDIA_FILE, MEDIA_PAYLOAD
from biovita_data.core.tables import to_table, write_table
from biovita_data.media.records import ItemOutcome
from biovita_data.media.settings import FORMAT_VERSION, ProcessSettings, WorkItem
from biovita_data.media.store import MediaStore

FINGERPRINT_KEY = b"biovita.materialize.fingerprint"
SIZES_KEY = b"biovita.materialize.sizes"  # JSON list: each row's len(bytes), read without the bytes
ROW_GROUP = 64  # rows per Parquet row group of a shard
# Failures that say nothing about the record (its host did not answer): a shard holding any is
# marked so and done again by the next run, which therefore resumes what a dead host left out.
TRANSIENT = frozenset({"host_unreachable"})
TRANSIENT_KEY = b"biovita.materialize.transient"


@dataclass(frozen=True)
class ShardSpec:
    """Shard `index` of a modality: its records in order, and what its output depends on;
    `live`: which of its records are in the current manifest (None: all)."""

    modality: str
    index: int
    items: tuple[WorkItem, ...]
    fingerprint: str
    live: tuple[bool, ...] | None = None

    def live_keys(self) -> set[tuple[str, str]]:
        """(source, record_id) of the shard's records that are in the current manifest."""
        live = self.live or (True,) * len(self.items)
        return {(i.source, i.record_id) for i, ok in zip(self.items, live, strict=True) if ok}


def natural_order(df: pl.DataFrame) -> pl.DataFrame:
    """Sort by (source, record_id), numeric ids in numeric order (as the crawl stage does)."""
    return df.sort([pl.col("source"), pl.col("record_id").str.len_chars(), pl.col("record_id")])


PLAN = pa.schema(
    [
        pa.field("shard", pa.int32(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("media_url", pa.string()),
        pa.field("file_format", pa.string()),
        pa.field("name", pa.string()),
    ]
)
SETTINGS_KEY = b"biovita.materialize.settings"


def plan(
    out: Path,
    modality: str,
    shard_size: int,
    settings: ProcessSettings,
    store: MediaStore | None = None,
) -> list[ShardSpec]:
    """The manifest's records cut into shards of `shard_size`: the first time in natural order;
    after that the previous assignment (plan.parquet) kept, new or changed records appended in
    new shards. A kept shard the store lacks (`store` given) is planned with its live records
    only, so nothing that left the manifest is downloaded again."""
    path = layout.media_manifest_path(out, modality)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run align (and split) first")
    cols = ["source", "record_id", "media_url", "file_format", "raw_scientific_name"]
    df = pl.read_parquet(path, columns=[*cols, "scientific_name"])
    df = natural_order(df.unique(subset=["source", "record_id"], keep="first", maintain_order=True))
    items = [
        WorkItem(modality, r["source"], r["record_id"], r["media_url"], r["file_format"],
                 r["raw_scientific_name"] or r["scientific_name"])
        for r in df.iter_rows(named=True)
    ]  # fmt: skip
    key = json.dumps([FORMAT_VERSION, asdict(settings), shard_size]).encode()
    old = _previous(out, modality, key)
    specs: list[ShardSpec] = []
    covered: set[tuple] = set()
    if old:
        current = {_identity(i) for i in items}
        for k in range(max(old) + 1):
            chunk = old.get(k, ())
            live = tuple(_identity(i) in current for i in chunk)
            covered |= {_identity(i) for i, ok in zip(chunk, live, strict=True) if ok}
            spec = ShardSpec(modality, k, chunk, fingerprint(modality, chunk, settings), live)
            if store is not None and not all(live) and not is_done(store, spec):
                chunk = tuple(i for i, ok in zip(chunk, live, strict=True) if ok)
                spec = ShardSpec(modality, k, chunk, fingerprint(modality, chunk, settings))
            specs.append(spec)
    rest = [i for i in items if _identity(i) not in covered]
    for i in range(0, len(rest), shard_size):
        chunk = tuple(rest[i : i + shard_size])
        specs.append(ShardSpec(modality, len(specs), chunk, fingerprint(modality, chunk, settings)))
    _write_plan(out, modality, specs, key)
    return specs


def plan_path(out: Path, modality: str) -> Path:
    return layout.media_dir(out, modality) / "plan.parquet"


def _identity(item: WorkItem) -> tuple:
    """What makes a stored file reusable: the record, its format and its URL's path and query
    (the same file served from another host, as the sample world's servers are, is the same)."""
    url = item.media_url or ""
    path = (
        url.split("://", 1)[1].split("/", 1)[1]
        if "://" in url and "/" in url.split("://", 1)[1]
        else url
    )
    return (item.source, item.record_id, item.file_format, path)


def _previous(out: Path, modality: str, key: bytes) -> dict[int, tuple[WorkItem, ...]]:
    """The previous plan's shards (index -> items), or {} when there is none or it was made
    with other settings (then every shard is redone anyway)."""
    path = plan_path(out, modality)
    if not path.exists():
        return {}
    table = pq.read_table(path)
    if (table.schema.metadata or {}).get(SETTINGS_KEY) != key:
        return {}
    shards: dict[int, list[WorkItem]] = {}
    for r in table.to_pylist():
        shards.setdefault(r["shard"], []).append(
            WorkItem(modality, r["source"], r["record_id"], r["media_url"], r["file_format"],
                     r["name"])
        )  # fmt: skip
    return {k: tuple(v) for k, v in shards.items()}


def _write_plan(out: Path, modality: str, specs: list[ShardSpec], key: bytes) -> None:
    rows = [
        {"shard": s.index, "source": i.source, "record_id": i.record_id,
         "media_url": i.media_url, "file_format": i.file_format, "name": i.name}
        for s in specs for i in s.items
    ]  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=PLAN).replace_schema_metadata({SETTINGS_KEY: key})
    path = plan_path(out, modality)
    if path.exists():
        try:
            if pq.read_table(path).equals(table):
                return
        except (OSError, pa.ArrowInvalid):
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    write_table(table, path)


_NOT_IN_FINGERPRINT = ("fingerprints",)  # settings that leave the stored bytes as they are


def fingerprint(modality: str, items: Iterable[WorkItem], settings: ProcessSettings) -> str:
    """What a finished shard was made from: the same fingerprint means the same bytes."""
    key = [
        FORMAT_VERSION,
        modality,
        {k: v for k, v in asdict(settings).items() if k not in _NOT_IN_FINGERPRINT},
        [[i.source, i.record_id, i.media_url, i.file_format, i.name] for i in items],
    ]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()


def is_done(store: MediaStore, spec: ShardSpec) -> bool:
    """Finished: the shard object exists and was made from the same records and settings."""
    path = store.shard(spec.modality, spec.index)
    if not (store.exists(path) and store.exists(store.failures(spec.modality, spec.index))):
        return False
    try:
        with store.open(path) as f:
            meta = shard_metadata(f)
    except (OSError, pa.ArrowInvalid):
        return False
    return meta.get(FINGERPRINT_KEY) == spec.fingerprint.encode() and TRANSIENT_KEY not in meta


class ShardWriter:
    """A shard's Parquet file written while its records are done: ROW_GROUP rows at a time in
    record order, each group as soon as every record before its last row is done, whose bytes
    are then let go. A worker so holds a few row groups of media, never a whole shard (fresh
    memory for each shard's bytes was also a VM's dearest part of materialize: core/heap.py).

    The footer's keys (the shard's fingerprint, its rows' sizes, transient failures) are added
    at `finish`, after the last row: a file cut short carries no fingerprint, so it is never
    taken for a finished shard."""

    def __init__(self, spec: ShardSpec, where: str | Path | IO[bytes] | pa.NativeFile) -> None:
        self.spec = spec
        self._writer = _parquet_writer(where, MEDIA_FILE)
        self._done: dict[int, ItemOutcome] = {}
        self._ready: list[dict] = []  # rows of records done in order, not yet written
        self.released = 0  # records 0 .. released-1 are done and handed on
        self.rows: list[dict] = []  # every row written, without its payload
        self.sizes: list[int] = []  # len(bytes) of every row written
        self.failures: list[dict] = []
        self.downloaded = 0

    def add(self, k: int, outcome: ItemOutcome) -> int:
        """Take record k's outcome; write what is complete. Returns `released`."""
        self._done[k] = outcome
        while self.released in self._done:
            done = self._done.pop(self.released)
            self.released += 1
            self.downloaded += done.downloaded
            self._ready += done.rows
            if done.failure:
                self.failures.append(done.failure)
        while len(self._ready) >= ROW_GROUP:
            self._write(self._ready[:ROW_GROUP])
            del self._ready[:ROW_GROUP]
        return self.released

    def _write(self, rows: list[dict]) -> None:
        rest = pa.Table.from_pylist(rows, schema=_WITHOUT_BYTES)
        payload = joined_binary([r["bytes"] for r in rows])
        columns = [payload if n == "bytes" else rest[n] for n in MEDIA_FILE.names]
        self._writer.write_table(pa.Table.from_arrays(columns, schema=MEDIA_FILE), ROW_GROUP)
        self.sizes += [len(r["bytes"]) for r in rows]
        self.rows += [{k: v for k, v in r.items() if k not in MEDIA_PAYLOAD} for r in rows]

    def finish(self) -> tuple[pa.Table, pa.Table]:
        """Write the last rows and the footer (the file is then complete; its store commits it):
        (the shard's rows without payload, its FAILURE rows), both in record order."""
        if self.released != len(self.spec.items):
            raise RuntimeError(f"shard {self.spec.index}: {self.released} records done of "
                               f"{len(self.spec.items)}")  # fmt: skip
        if self._ready:
            self._write(self._ready)
            self._ready = []
        fails = to_table(self.failures, FAILURE)
        transient = sum(1 for f in self.failures if f["reason"] in TRANSIENT)
        meta = {FINGERPRINT_KEY: self.spec.fingerprint.encode(),
                SIZES_KEY: json.dumps(self.sizes).encode()}  # fmt: skip
        if transient:
            meta[TRANSIENT_KEY] = str(transient).encode()
        self._writer.add_key_value_metadata(meta)
        self._writer.close()
        fingerprint = {FINGERPRINT_KEY: meta[FINGERPRINT_KEY]}
        return to_table(self.rows, _INDEXED), fails.replace_schema_metadata(fingerprint)


_WITHOUT_BYTES = pa.schema([f for f in MEDIA_FILE if f.name != "bytes"])
_INDEXED = pa.schema([f for f in MEDIA_FILE if f.name not in MEDIA_PAYLOAD])


def shard_metadata(where: str | IO[bytes] | pa.NativeFile) -> dict[bytes, bytes]:
    """A stored shard's footer keys (FINGERPRINT_KEY, SIZES_KEY, TRANSIENT_KEY), read alone."""
    return pq.read_metadata(where).metadata or {}


def joined_binary(values: list[bytes]) -> pa.Array:
    """A large_binary array of `values` (no nulls) over one buffer of their bytes joined: Arrow's
    builder would copy them growing its buffer by doubling, into fresh memory each time, which
    cost a fresh worker 0.5-1 CPU-ms a recording (benchmarks/README.md)."""
    offsets = np.zeros(len(values) + 1, np.int64)
    np.cumsum([len(v) for v in values], out=offsets[1:])
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(values))]
    return pa.Array.from_buffers(pa.large_binary(), len(values), buffers)


def write_failures(store: MediaStore, spec: ShardSpec, fails: pa.Table) -> None:
    """A shard's FAILURE rows: written before its shard is committed (whose existence marks the
    shard done)."""
    store.write(
        store.failures(spec.modality, spec.index),
        lambda f: pq.write_table(fails, f, compression="zstd"),
    )


def write_media_parquet(table: pa.Table, where: str | Path | IO[bytes]) -> None:
    """Media rows (MEDIA_FILE columns) as Parquet, as a shard stores them."""
    with _parquet_writer(where, table.schema) as writer:
        writer.write_table(table, row_group_size=ROW_GROUP)


def _parquet_writer(where: str | Path | IO[bytes] | pa.NativeFile, schema: pa.Schema):
    """Row groups of ROW_GROUP rows let readers fetch a few files without reading a whole shard.
    The media bytes are stored plainly (encoded media does not compress: zstd only cost time;
    publish stores them so too), the rest zstd; the payload gets no dictionary and no min/max
    statistics (it is never filtered on)."""
    others = [name for name in schema.names if name not in MEDIA_PAYLOAD]
    codecs = {name: "none" if name == "bytes" else "zstd" for name in schema.names}
    return pq.ParquetWriter(
        where, schema, compression=codecs, use_dictionary=others, write_statistics=others
    )


def remove_partial(store: MediaStore, modality: str) -> None:
    """Delete temp files of writes cut short by a killed run (one run per store at a time)."""
    for tmp in store.glob(modality, ".*.tmp"):
        store.remove(tmp)


def remove_stale(store: MediaStore, modality: str, n_shards: int) -> list[str]:
    """Delete shards (and their failures) numbered past the plan: left by a larger manifest."""
    gone = []
    paths = [*store.glob(modality, "shard-*.parquet"), *store.glob(modality, "failures-*.parquet")]
    for path in sorted(paths):
        number = path.rsplit("/", 1)[-1].removesuffix(".parquet").split("-", 1)[1]
        if number.isdigit() and int(number) >= n_shards:
            store.remove(path)
            gone.append(path)
    return gone


def read_failures(store: MediaStore, specs: list[ShardSpec]) -> pa.Table:
    """The shards' failure rows of live records, read from the store."""
    tables = []
    for s in specs:
        with store.open(store.failures(s.modality, s.index)) as f:
            t = pl.from_arrow(pq.read_table(f).cast(FAILURE))
        if s.live is not None and not all(s.live):
            live = pl.DataFrame(list(s.live_keys()), schema=["source", "record_id"], orient="row")
            t = t.join(live, on=["source", "record_id"], how="semi")
        tables.append(t.to_arrow().cast(FAILURE))
    return pa.concat_tables([FAILURE.empty_table(), *tables])
