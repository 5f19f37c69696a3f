"""Shards: the manifest cut into fixed, fingerprinted groups; each written once, atomically."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from biovita_data.core import layout
from biovita_data.core.schemas import FAILURE, MEDIA_FILE
from biovita_data.core.tables import to_table
from biovita_data.media.records import ItemOutcome
from biovita_data.media.settings import FORMAT_VERSION, ProcessSettings, WorkItem
from biovita_data.media.store import MediaStore

FINGERPRINT_KEY = b"biovita.materialize.fingerprint"
SIZES_KEY = b"biovita.materialize.sizes"  # JSON list: each row's len(bytes), read without the bytes
ROW_GROUP = 64  # rows per Parquet row group of a shard


@dataclass(frozen=True)
class ShardSpec:
    """Shard `index` of a modality: its records in order, and what its output depends on."""

    modality: str
    index: int
    items: tuple[WorkItem, ...]
    fingerprint: str


def natural_order(df: pl.DataFrame) -> pl.DataFrame:
    """Sort by (source, record_id), numeric ids in numeric order (as the crawl stage does)."""
    return df.sort([pl.col("source"), pl.col("record_id").str.len_chars(), pl.col("record_id")])


def plan(out: Path, modality: str, shard_size: int, settings: ProcessSettings) -> list[ShardSpec]:
    """The manifest's records in natural order, cut into shards of `shard_size`."""
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
    return [
        ShardSpec(modality, k, chunk, fingerprint(modality, chunk, settings))
        for k, chunk in enumerate(
            tuple(items[i : i + shard_size]) for i in range(0, len(items), shard_size)
        )
    ]


def fingerprint(modality: str, items: Iterable[WorkItem], settings: ProcessSettings) -> str:
    """What a finished shard was made from: the same fingerprint means the same bytes."""
    key = [
        FORMAT_VERSION,
        modality,
        asdict(settings),
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
            meta = pq.read_schema(f).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return False
    return meta.get(FINGERPRINT_KEY) == spec.fingerprint.encode()


def assemble(spec: ShardSpec, outcomes: dict[int, ItemOutcome]) -> tuple[pa.Table, pa.Table]:
    """The shard's MEDIA_FILE and FAILURE tables, rows in record order (segments in order)."""
    ordered = [outcomes[k] for k in range(len(spec.items))]
    files = to_table((row for o in ordered for row in o.rows), MEDIA_FILE)
    fails = to_table((o.failure for o in ordered if o.failure), FAILURE)
    meta = {FINGERPRINT_KEY: spec.fingerprint.encode()}
    sizes = json.dumps([len(row["bytes"]) for o in ordered for row in o.rows]).encode()
    files = files.replace_schema_metadata({**meta, SIZES_KEY: sizes})
    return files, fails.replace_schema_metadata(meta)


def write_shard(store: MediaStore, spec: ShardSpec, files: pa.Table, fails: pa.Table) -> None:
    """Failures first, the shard last: the shard object's existence marks the shard done."""
    store.write(
        store.failures(spec.modality, spec.index),
        lambda f: pq.write_table(fails, f, compression="zstd"),
    )
    store.write(store.shard(spec.modality, spec.index), lambda f: write_media_parquet(files, f))


def write_media_parquet(table: pa.Table, where: str | Path | IO[bytes]) -> None:
    """Media bytes as Parquet: zstd, small row groups, no dictionary or stats on `bytes`.

    Encoded media does not compress and is never filtered on, so dictionary encoding and
    min/max statistics of the `bytes` column only cost time; row groups of ROW_GROUP rows let
    readers fetch a few files without reading a whole shard.
    """
    others = [name for name in table.column_names if name != "bytes"]
    pq.write_table(
        table,
        where,
        compression="zstd",
        row_group_size=ROW_GROUP,
        use_dictionary=others,
        write_statistics=others,
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
    """The shards' failure rows, read from the store."""
    tables = []
    for s in specs:
        with store.open(store.failures(s.modality, s.index)) as f:
            tables.append(pq.read_table(f))
    return pa.concat_tables([FAILURE.empty_table(), *(t.cast(FAILURE) for t in tables)])
