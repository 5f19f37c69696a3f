"""Shards: the manifest cut into fixed, fingerprinted groups; each written once, atomically."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from biovita_data.core import layout
from biovita_data.core.schemas import FAILURE, MEDIA_FILE
from biovita_data.core.tables import to_table, write_table
from biovita_data.media.records import ItemOutcome
from biovita_data.media.settings import FORMAT_VERSION, ProcessSettings, WorkItem

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


def failures_path(out: Path, modality: str, index: int) -> Path:
    """The shard's failures, next to it: failures-NNNNN.parquet (not matched by shard-*)."""
    return layout.media_dir(out, modality) / f"failures-{index:05d}.parquet"


def is_done(out: Path, spec: ShardSpec) -> bool:
    """Finished: the shard file exists and was made from the same records and settings."""
    path = layout.media_shard_path(out, spec.modality, spec.index)
    if not (path.exists() and failures_path(out, spec.modality, spec.index).exists()):
        return False
    try:
        meta = pq.read_schema(path).metadata or {}
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


def write_shard(out: Path, spec: ShardSpec, files: pa.Table, fails: pa.Table) -> None:
    """Failures first, the shard last: the shard file's existence marks the shard done."""
    write_table(fails, failures_path(out, spec.modality, spec.index))
    write_media_table(files, layout.media_shard_path(out, spec.modality, spec.index))


def write_media_table(table: pa.Table, path: Path) -> Path:
    """tables.write_table for media bytes: atomic, zstd, small row groups, no stats on `bytes`.

    Encoded media does not compress and is never filtered on, so dictionary encoding and
    min/max statistics of the `bytes` column only cost time; row groups of ROW_GROUP rows let
    readers fetch a few files without reading a whole shard.
    """
    others = [name for name in table.column_names if name != "bytes"]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(
            table,
            tmp,
            compression="zstd",
            row_group_size=ROW_GROUP,
            use_dictionary=others,
            write_statistics=others,
        )
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # as a plainly created file (mkstemp makes 0600)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def remove_partial(out: Path, modality: str) -> None:
    """Delete temp files of writes cut short by a killed run (one run per OUT at a time)."""
    for tmp in layout.media_dir(out, modality).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def remove_stale(out: Path, modality: str, n_shards: int) -> list[Path]:
    """Delete shards (and their failures) numbered past the plan: left by a larger manifest."""
    gone = []
    folder = layout.media_dir(out, modality)
    for path in sorted([*folder.glob("shard-*.parquet"), *folder.glob("failures-*.parquet")]):
        number = path.stem.split("-", 1)[1]
        if number.isdigit() and int(number) >= n_shards:
            path.unlink()
            gone.append(path)
    return gone


def read_failures(out: Path, specs: list[ShardSpec]) -> pa.Table:
    tables = [pq.read_table(failures_path(out, s.modality, s.index)) for s in specs]
    return pa.concat_tables([FAILURE.empty_table(), *(t.cast(FAILURE) for t in tables)])
