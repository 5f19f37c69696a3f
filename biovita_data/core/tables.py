"""Atomic writes (temp file beside the target + rename) of Parquet (zstd), JSON and bytes."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from biovita_data.core.layout import failures_path
from biovita_data.core.schemas import FAILURE


def _umask_mode() -> int:
    """The mode a plainly created file gets (mkstemp's 0600 would hide shared builds)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temp file beside `path` to write; renamed onto `path` when the block succeeds.

    The temp file gets a plain file's mode (the umask's, not mkstemp's 0600) and is removed when
    the block raises, so `path` holds either its old content or the whole new one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, _umask_mode())
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(data: bytes, path: Path) -> Path:
    """Write bytes atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def to_table(rows: Iterable[dict], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=schema)


def write_table(table: pa.Table | pl.DataFrame, path: Path) -> Path:
    """Write Parquet atomically: readers never see a half-written file."""
    if isinstance(table, pl.DataFrame):
        table = table.to_arrow()
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return path


def read_table(path: Path, schema: pa.Schema, columns: list[str] | None = None) -> pa.Table:
    """Read a table (only `columns`, when given), or an empty one with `schema` when the file
    does not exist."""
    if not path.exists():
        table = schema.empty_table()
        return table.select(columns) if columns is not None else table
    return pq.read_table(path, schema=schema, columns=columns)


def write_json_atomic(obj: object, path: Path) -> None:
    """Write indented, key-sorted JSON atomically (temp file + rename)."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str)
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def replace_failures(out: Path, stage: str, sources: Iterable[str], new: pa.Table) -> Path:
    """Update OUT/manifests/failures.parquet: this stage's rows for these sources are replaced."""
    path = failures_path(out)
    old = pl.from_arrow(read_table(path, FAILURE))
    keep = old.filter(~((pl.col("stage") == stage) & pl.col("source").is_in(list(sources))))
    merged = pl.concat([keep, pl.from_arrow(new.cast(FAILURE))], how="vertical_relaxed")
    merged = merged.sort(["stage", "source", "modality", "record_id", "reason"], nulls_last=True)
    return write_table(merged.to_arrow().cast(FAILURE), path)
