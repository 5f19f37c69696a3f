"""Parquet I/O: atomic writes (temp file + rename), zstd, schemas from `schemas`."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from biovita_data.core.schemas import FAILURE


def _umask_mode() -> int:
    """The mode a plainly created file gets (mkstemp's 0600 would hide shared builds)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def to_table(rows: Iterable[dict], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=schema)


def write_table(table: pa.Table | pl.DataFrame, path: Path) -> Path:
    """Write Parquet atomically: readers never see a half-written file."""
    if isinstance(table, pl.DataFrame):
        table = table.to_arrow()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_table(path: Path, schema: pa.Schema) -> pa.Table:
    """Read a table, or an empty one with `schema` when the file does not exist."""
    if not path.exists():
        return schema.empty_table()
    return pq.read_table(path, schema=schema)


def write_json_atomic(obj: object, path: Path) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def replace_failures(out: Path, stage: str, sources: Iterable[str], new: pa.Table) -> Path:
    """Update OUT/manifests/failures.parquet: this stage's rows for these sources are replaced."""
    path = out / "manifests" / "failures.parquet"
    old = pl.from_arrow(read_table(path, FAILURE))
    keep = old.filter(~((pl.col("stage") == stage) & pl.col("source").is_in(list(sources))))
    merged = pl.concat([keep, pl.from_arrow(new.cast(FAILURE))], how="vertical_relaxed")
    merged = merged.sort(["stage", "source", "modality", "record_id", "reason"], nulls_last=True)
    return write_table(merged.to_arrow().cast(FAILURE), path)
