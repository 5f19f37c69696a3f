"""The final pass over all shards: duplicates by content hash, index.parquet, failures."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from biovita_data.core.layout import failures_path
from biovita_data.core.schemas import FAILURE, MEDIA_FILE, MEDIA_PAYLOAD
from biovita_data.core.tables import read_table, replace_failures, write_table
from biovita_data.media.records import STAGE
from biovita_data.media.shards import SIZES_KEY, ShardSpec, read_failures
from biovita_data.media.store import MediaStore

# OUT/media/<modality>/index.parquet: every stored file without its bytes, where it lives, and
# whether it is kept. A duplicate (same sha256 of the downloaded original as a record earlier in
# (source, record_id) order) stays in its shard, marked kept=False, so no shard is ever rewritten.
MEDIA_INDEX = pa.schema(
    [
        *[f for f in MEDIA_FILE if f.name not in MEDIA_PAYLOAD],
        pa.field("size", pa.int64(), nullable=False),  # len(bytes): for planning published shards
        pa.field("shard", pa.int32(), nullable=False),  # OUT/media/<modality>/shard-NNNNN.parquet
        pa.field("kept", pa.bool_(), nullable=False),  # False: a duplicate, skip it downstream
        pa.field("duplicate_of_source", pa.string()),  # the kept record with the same content
        pa.field("duplicate_of", pa.string()),  # its record_id
    ]
)
_META_COLUMNS = [f.name for f in MEDIA_FILE if f.name not in MEDIA_PAYLOAD]


def build_index(
    store: MediaStore, specs: list[ShardSpec], known: dict[int, pl.DataFrame] | None = None
) -> tuple[pa.Table, pa.Table]:
    """The modality's index (shard order = record order) and one failure row per duplicate.

    `known`: shard index -> its rows as the worker that wrote it reported them (shard_rows);
    other shards (finished by an earlier run) are read back from the store, bytes excluded."""
    known = known or {}
    parts = [
        _live(known[s.index] if s.index in known else _read_shard_index(store, s), s) for s in specs
    ]
    empty = pl.from_arrow(MEDIA_INDEX.empty_table()).select(*_META_COLUMNS, "size", "shard")
    df = pl.concat([empty, *parts], how="vertical_relaxed")
    first = (
        df.select("source", "record_id", "source_sha256")
        .unique(subset=["source", "record_id"], keep="first", maintain_order=True)
        .unique(subset=["source_sha256"], keep="first", maintain_order=True)
        .rename({"source": "duplicate_of_source", "record_id": "duplicate_of"})
    )
    df = df.join(first, on="source_sha256", how="left", maintain_order="left")
    own = (pl.col("duplicate_of_source") == pl.col("source")) & (
        pl.col("duplicate_of") == pl.col("record_id")
    )
    df = df.with_columns(own.alias("kept")).with_columns(
        pl.when(pl.col("kept")).then(None).otherwise(pl.col(c)).alias(c)
        for c in ("duplicate_of_source", "duplicate_of")
    )
    index = df.select(MEDIA_INDEX.names).to_arrow().cast(MEDIA_INDEX)
    names = {(i.source, i.record_id): i.name for s in specs for i in s.items}
    dups = df.filter(~pl.col("kept") & (pl.col("segment") == 0))
    rows = [
        {
            "stage": STAGE,
            "source": r["source"],
            "modality": r["modality"],
            "record_id": r["record_id"],
            "name": names.get((r["source"], r["record_id"])),
            "reason": "duplicate",
            "detail": f"same content (sha256 {r['source_sha256'][:16]}) as "
            f"{r['duplicate_of_source']} {r['duplicate_of']}",
        }
        for r in dups.iter_rows(named=True)
    ]
    return index, pa.Table.from_pylist(rows, schema=FAILURE)


def _live(rows: pl.DataFrame, spec: ShardSpec) -> pl.DataFrame:
    """The shard's rows of records still in the manifest (a kept shard keeps the others' bytes,
    which the index leaves out: they are never published)."""
    if spec.live is None or all(spec.live):
        return rows
    keys = pl.DataFrame(list(spec.live_keys()), schema=["source", "record_id"], orient="row")
    return rows.join(keys, on=["source", "record_id"], how="semi", maintain_order="left")


def _read_shard_index(store: MediaStore, spec: ShardSpec) -> pl.DataFrame:
    """A stored shard's rows without their bytes (a column projection: bytes are never read)."""
    with store.open(store.shard(spec.modality, spec.index)) as f:
        shard = pq.ParquetFile(f)
        sizes = json.loads((shard.metadata.metadata or {})[SIZES_KEY])
        table = shard.read(columns=_META_COLUMNS)
    return shard_rows(table, spec.index, sizes)


def shard_rows(table: pa.Table, shard: int, sizes: list[int]) -> pl.DataFrame:
    """A shard table's index rows: its columns but the payload, each row's size, the shard."""
    table = table.select(_META_COLUMNS)
    return pl.from_arrow(table).with_columns(
        pl.Series("size", sizes, pl.Int64), pl.lit(shard, pl.Int32).alias("shard")
    )


def write_if_changed(table: pa.Table, path: Path) -> bool:
    """Write `table` unless the file already holds exactly it (a re-run leaves files alone)."""
    if path.exists():
        try:
            if pq.read_table(path).equals(table):
                return False
        except (OSError, pa.ArrowInvalid):
            pass
    write_table(table, path)
    return True


def merge_failures(
    out: Path,
    store: MediaStore,
    specs: dict[str, list[ShardSpec]],
    duplicates: dict[str, pa.Table],
) -> pa.Table:
    """This stage's failures in OUT/manifests/failures.parquet; rows of other modalities stay."""
    path = failures_path(out)
    old = pl.from_arrow(read_table(path, FAILURE))
    old_stage = old.filter(pl.col("stage") == STAGE)
    kept_old = old_stage.filter(~pl.col("modality").is_in(list(specs)))
    new = [pl.from_arrow(read_failures(store, specs[m])) for m in specs]
    new += [pl.from_arrow(duplicates[m]) for m in specs]
    merged = pl.concat([kept_old, *new], how="vertical_relaxed")
    order = ["stage", "source", "modality", "record_id", "reason"]
    merged = merged.sort(order, nulls_last=True)
    if merged.equals(old_stage.sort(order, nulls_last=True)):
        return merged.to_arrow().cast(FAILURE)
    sources = set(old_stage["source"].drop_nulls()) | set(merged["source"].drop_nulls())
    sources |= {i.source for group in specs.values() for s in group for i in s.items}
    replace_failures(out, STAGE, sorted(sources), merged.to_arrow().cast(FAILURE))
    return merged.to_arrow().cast(FAILURE)
