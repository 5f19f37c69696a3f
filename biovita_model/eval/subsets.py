"""Which BioVITA-Bench subsets to score and their tables: a build's OUT/bench, one BENCH folder
(Parquet or the official CSV layout), or a published folder's `bench` config (+
bench_ids/<subset>/); items missing from the dataset dropped from the tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from biovita_data.core.layout import BENCH_SPLIT_OF_SUBSET
from biovita_data.curate.bench.csv_layout import (
    MEDIA_INDEX_COLUMNS,
    SUBSETS,
    TASK_BY_CODE,
    TASK_DTYPES,
    TEXT_INDEX_COLUMNS,
    OfficialBench,
    index_csv_path,
    index_parquet_path,
    read_index_csv,
    read_official,
    tasks_parquet_path,
)
from biovita_data.loader.index import split_files

MODALITIES = ("audio", "image", "text")
Layout = Literal["auto", "parquet", "csv"]


def load_bench(bench_dir: Path, layout: Layout = "auto") -> OfficialBench:
    """A bench folder's tasks and indexes from Parquet (tasks.parquet + ids/*.parquet) or CSV.

    `auto` reads Parquet when tasks.parquet exists, else the official CSV layout.
    """
    bench_dir = Path(bench_dir)
    if layout == "auto":
        layout = "parquet" if tasks_parquet_path(bench_dir).is_file() else "csv"
    if layout == "csv":
        return read_official(bench_dir)
    if layout != "parquet":
        raise ValueError(f"layout must be 'auto', 'parquet' or 'csv', not {layout!r}")
    tasks = pl.read_parquet(tasks_parquet_path(bench_dir), columns=list(TASK_DTYPES))
    tasks = tasks.cast(TASK_DTYPES)  # type: ignore[arg-type]
    indexes = {}
    for modality in ("audio", "image", "text"):
        cols = TEXT_INDEX_COLUMNS if modality == "text" else MEDIA_INDEX_COLUMNS
        indexes[modality] = pl.read_parquet(
            index_parquet_path(bench_dir, modality), columns=list(cols)
        )
    return OfficialBench(
        tasks=tasks,
        audio_index=indexes["audio"],
        image_index=indexes["image"],
        text_index=indexes["text"],
    )


def _read_index(path_parquet: Path, path_csv: Path, modality: str) -> pl.DataFrame:
    """An id index: the Parquet table (with source, record_id) when there, else the CSV."""
    if path_parquet.is_file():
        return pl.read_parquet(path_parquet)
    return read_index_csv(path_csv, modality)


def _published_bench(folder: Path, subset: str) -> OfficialBench:
    """A subset of a published folder's `bench` config (+ bench_ids/<subset>/)."""
    split = BENCH_SPLIT_OF_SUBSET[subset]
    files = split_files(folder, "bench", split)
    if not files:
        raise FileNotFoundError(f"no bench/{split}-*.parquet under {folder}")
    tasks = pl.concat([pl.read_parquet(f, columns=list(TASK_DTYPES)) for f in files])
    tasks = tasks.with_columns(
        pl.col("candidates_taxa").str.json_decode(TASK_DTYPES["candidates_taxa"]),
        pl.col("candidates_target_ids").str.json_decode(TASK_DTYPES["candidates_target_ids"]),
    ).cast(TASK_DTYPES)  # type: ignore[arg-type]
    ids = folder / "bench_ids" / subset
    idx = {
        m: _read_index(ids / f"{m}_index.parquet", ids / f"{m}_index.csv", m) for m in MODALITIES
    }
    return OfficialBench(tasks, idx["audio"], idx["image"], idx["text"])


def _bench_folder(path: Path, layout: Layout) -> OfficialBench:
    """One BENCH folder, with the full index tables (source, record_id) when Parquet exists."""
    bench = load_bench(path, layout)
    if tasks_parquet_path(path).is_file() or not index_parquet_path(path, "audio").is_file():
        return bench
    idx = {
        m: _read_index(index_parquet_path(path, m), index_csv_path(path, m), m)
        for m in ("audio", "image")
    }
    return OfficialBench(bench.tasks, idx["audio"], idx["image"], bench.text_index, bench.notes)


def find_benches(bench: str | Path, subset: str = "all") -> dict[str, Path | tuple[Path, str]]:
    """The subsets to score: OUT/bench (seen/, unseen/), one BENCH folder, or a published folder."""
    path = Path(bench)
    wanted = SUBSETS if subset == "all" else (subset,)
    if subset not in (*SUBSETS, "all"):
        raise ValueError(f"subset must be seen, unseen or all, not {subset!r}")
    if (path / "ids").is_dir():
        name = path.name if path.name in SUBSETS else "bench"
        return {name: path}
    if (path / "bench").is_dir() and (path / "bench_ids").is_dir():
        found = {
            s: (path, s) for s in wanted if split_files(path, "bench", BENCH_SPLIT_OF_SUBSET[s])
        }
    else:
        found = {s: path / s for s in wanted if (path / s / "ids").is_dir()}
    if not found:
        raise FileNotFoundError(f"{path}: no bench subset {list(wanted)} (need <subset>/ids/)")
    return found  # type: ignore[return-value]


def load_subset(where: Path | tuple[Path, str], layout: Layout = "auto") -> OfficialBench:
    """A subset found by find_benches."""
    if isinstance(where, tuple):
        return _published_bench(*where)
    return _bench_folder(where, layout)


def default_dataset(bench: str | Path) -> Path:
    """Where a bench's media are when --dataset is not given: the build folder OUT (-> OUT/hf)."""
    path = Path(bench).resolve()
    if (path / "bench").is_dir() and (path / "audio").is_dir():
        return path  # a published folder
    for parent in (path, *path.parents):
        if (parent / "hf" / "audio").is_dir():
            return parent / "hf"
    raise FileNotFoundError(f"cannot tell which dataset holds the media of {bench}: pass --dataset")


def drop_missing(bench: OfficialBench, missing: dict[str, np.ndarray]) -> OfficialBench:
    """The bench without the items in `missing` (by modality): their queries go, and they leave
    the candidate groups they are in (a group left empty scores nothing)."""
    if not any(ids.size for ids in missing.values()):
        return bench
    frames = []
    for (code,), df in bench.tasks.partition_by("task", as_dict=True, maintain_order=True).items():
        task = TASK_BY_CODE[str(code)]
        gone_q = missing.get(task.query, np.zeros(0, np.int64)).tolist()
        gone_t = missing.get(task.target, np.zeros(0, np.int64)).tolist()
        if gone_q:
            df = df.filter(~pl.col("query_payload_id").is_in(gone_q))
        if gone_t:
            keep = pl.element().filter(~pl.element().is_in(gone_t))
            df = df.with_columns(
                pl.col("candidates_target_ids").list.eval(pl.element().list.eval(keep))
            )
        frames.append(df)
    tasks = pl.concat(frames).cast(TASK_DTYPES)  # type: ignore[arg-type]
    return OfficialBench(tasks, bench.audio_index, bench.image_index, bench.text_index, bench.notes)
