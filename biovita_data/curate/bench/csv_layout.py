"""The official BioVITA-Bench CSV layout: task and level names, file paths, and its reader.

The reader needs the layout's columns (in any order) and keeps any others a file carries (the
released bench's `query_id` in task files, taxon columns in index files) after them, with a note
in `OfficialBench.notes`; a missing column is an error naming the file and the column.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

SUBSETS = ("seen", "unseen")
LEVELS = ("species", "genus", "family")


@dataclass(frozen=True)
class Task:
    """One retrieval direction: its code, query and target modalities, and CSV file stem."""

    code: str
    query: str
    target: str

    @property
    def file_stem(self) -> str:
        return f"test_{self.query}_to_{self.target}"


# In the official layout's file order.
TASKS = (
    Task("A2I", "audio", "image"),
    Task("I2A", "image", "audio"),
    Task("A2T", "audio", "text"),
    Task("T2A", "text", "audio"),
    Task("I2T", "image", "text"),
    Task("T2I", "text", "image"),
)
TASK_BY_CODE = {t.code: t for t in TASKS}

TASK_COLUMNS = (
    "task",
    "taxon_level",
    "query_payload_id",
    "candidates_taxa",
    "candidates_target_ids",
    "correct_taxon",
    "taxon_class",
)
MEDIA_INDEX_COLUMNS = ("id", "file_path")
TEXT_INDEX_COLUMNS = ("id", "species", "genus", "family", "class", "common_name")

# Polars dtypes of the parsed tables (the same as BENCH_TASK & co. read through Polars).
TASK_DTYPES: dict[str, pl.DataType] = {
    "task": pl.String(),
    "taxon_level": pl.String(),
    "query_payload_id": pl.Int64(),
    "candidates_taxa": pl.List(pl.String()),
    "candidates_target_ids": pl.List(pl.List(pl.Int64())),
    "correct_taxon": pl.String(),
    "taxon_class": pl.String(),
}


def task_csv_path(bench: Path, level: str, task: Task | str) -> Path:
    """BENCH/<level>/test_<query>_to_<target>.csv."""
    t = TASK_BY_CODE[task] if isinstance(task, str) else task
    return bench / level / f"{t.file_stem}.csv"


def index_csv_path(bench: Path, modality: str) -> Path:
    """BENCH/ids/<modality>_index.csv."""
    return bench / "ids" / f"{modality}_index.csv"


def index_parquet_path(bench: Path, modality: str) -> Path:
    return bench / "ids" / f"{modality}_index.parquet"


def tasks_parquet_path(bench: Path) -> Path:
    return bench / "tasks.parquet"


def bench_json_path(bench: Path) -> Path:
    return bench / "bench.json"


@dataclass(frozen=True)
class OfficialBench:
    """A bench folder read back from its CSV files: tasks (lists parsed) and the three indexes."""

    tasks: pl.DataFrame  # TASK_COLUMNS, all levels and tasks, in file order
    audio_index: pl.DataFrame  # id, file_path
    image_index: pl.DataFrame  # id, file_path
    text_index: pl.DataFrame  # id, species, genus, family, class, common_name
    notes: tuple[str, ...] = ()  # what the reader accepted beyond the layout (extra columns)

    def task(self, level: str, code: str) -> pl.DataFrame:
        """The rows of one task file."""
        return self.tasks.filter((pl.col("taxon_level") == level) & (pl.col("task") == code))

    def index(self, modality: str) -> pl.DataFrame:
        return {"audio": self.audio_index, "image": self.image_index, "text": self.text_index}[
            modality
        ]


def media_keys(index: pl.DataFrame) -> pl.DataFrame:
    """id, source, record_id of a media id index (parsed from file_path when absent: the CSV
    layout has only file_path = <modality>/<source>/<record_id>.<ext>)."""
    if {"source", "record_id"} <= set(index.columns):
        return index.select("id", "source", "record_id")
    parts = index["file_path"].str.split("/")
    rest = parts.list.slice(2).list.join("/")
    return index.select("id").with_columns(
        parts.list.get(1).alias("source"),
        rest.str.replace(r"\.[^./]+$", "").alias("record_id"),
    )


def _header(path: Path) -> list[str]:
    with path.open("rb") as f:
        line = f.readline()
    return line.decode("utf-8-sig").rstrip("\r\n").split(",")


def _read_csv(
    path: Path,
    columns: tuple[str, ...],
    dtypes: dict[str, pl.DataType],
    notes: list[str] | None = None,
) -> pl.DataFrame:
    """The file's `columns` (required, any order) first, then any extra columns as strings."""
    if not path.is_file():
        raise ValueError(f"{path}: missing")
    header = _header(path)
    missing = [c for c in columns if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} (has {header})")
    if len(set(header)) != len(header):
        raise ValueError(f"{path}: a column name appears twice in {header}")
    extra = [c for c in header if c not in columns]
    schema = {c: dtypes.get(c, pl.String()) for c in header}
    try:
        df = pl.read_csv(path, schema=schema, empty_string_is_null=True)
    except (pl.exceptions.PolarsError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable CSV: {exc}") from exc
    if extra and notes is not None:
        notes.append(f"{path}: kept extra column(s) {extra}")
    return df.select(*columns, *extra)


def read_index_csv(path: Path, modality: str, notes: list[str] | None = None) -> pl.DataFrame:
    """An id index CSV (ids/<modality>_index.csv), checked: its columns, ids 0..n-1 in order;
    extra columns are kept after the layout's (noted in `notes`)."""
    cols = TEXT_INDEX_COLUMNS if modality == "text" else MEDIA_INDEX_COLUMNS
    dtypes = {c: pl.Int64() if c == "id" else pl.String() for c in cols}
    df = _read_csv(path, cols, dtypes, notes)
    if df["id"].null_count() or not df["id"].equals(
        pl.Series("id", range(df.height), dtype=pl.Int64), check_names=False
    ):
        raise ValueError(f"{path}: ids must be 0..n-1 in order")
    if modality != "text" and df["file_path"].null_count():
        raise ValueError(f"{path}: empty file_path")
    return df


def _read_task(
    path: Path, level: str, task: Task, sizes: dict[str, int], notes: list[str]
) -> pl.DataFrame:
    raw = _read_csv(
        path,
        TASK_COLUMNS,
        {c: (pl.Int64() if c == "query_payload_id" else pl.String()) for c in TASK_COLUMNS},
        notes,
    )
    try:
        df = raw.with_columns(
            pl.col("candidates_taxa").str.json_decode(TASK_DTYPES["candidates_taxa"]),
            pl.col("candidates_target_ids").str.json_decode(TASK_DTYPES["candidates_target_ids"]),
        )
    except pl.exceptions.PolarsError as exc:
        raise ValueError(f"{path}: candidates are not JSON lists: {exc}") from exc
    required = ("task", "taxon_level", "query_payload_id", "candidates_taxa")
    required += ("candidates_target_ids", "correct_taxon")
    for col in required:
        if df[col].null_count():
            raise ValueError(f"{path}: empty {col}")
    if (df["task"] != task.code).any() or (df["taxon_level"] != level).any():
        raise ValueError(f"{path}: rows must all be task {task.code} at level {level}")
    n_taxa = df["candidates_taxa"].list.len()
    if (n_taxa != df["candidates_target_ids"].list.len()).any():
        raise ValueError(f"{path}: candidates_taxa and candidates_target_ids differ in length")
    if (df["candidates_taxa"].list.n_unique() != n_taxa).any():
        raise ValueError(f"{path}: a candidate taxon is listed twice")
    found = (
        df.select(pl.int_range(pl.len()).alias("row"), "candidates_taxa", "correct_taxon")
        .explode("candidates_taxa")
        .filter(pl.col("candidates_taxa") == pl.col("correct_taxon"))
    )
    if found.height != df.height:
        raise ValueError(f"{path}: correct_taxon missing from candidates_taxa")
    _check_ids(path, df["query_payload_id"], sizes[task.query], "query_payload_id")
    flat = df["candidates_target_ids"].explode().explode().drop_nulls()
    _check_ids(path, flat, sizes[task.target], "candidates_target_ids")
    return df


def _check_ids(path: Path, ids: pl.Series, size: int, what: str) -> None:
    if ids.len() and (ids.min() < 0 or ids.max() >= size):  # type: ignore[operator]
        raise ValueError(f"{path}: {what} outside the index (0..{size - 1})")


def read_official(bench_dir: Path) -> OfficialBench:
    """Parse a bench folder's official CSV layout (tasks + ids) into Polars tables.

    Task files that are absent are left out (at least one must exist); a malformed file raises
    ValueError naming it. Extra columns are kept (after the layout's), each file's in `notes`.
    """
    bench_dir = Path(bench_dir)
    notes: list[str] = []
    indexes = {
        m: read_index_csv(index_csv_path(bench_dir, m), m, notes)
        for m in ("audio", "image", "text")
    }
    sizes = {m: df.height for m, df in indexes.items()}
    frames = []
    for level in LEVELS:
        for task in TASKS:
            path = task_csv_path(bench_dir, level, task)
            if path.exists():
                frames.append(_read_task(path, level, task, sizes, notes))
    if not frames:
        raise ValueError(f"{bench_dir}: no task CSV files (<level>/test_*_to_*.csv)")
    tasks = pl.concat(frames, how="diagonal_relaxed").cast(TASK_DTYPES)  # type: ignore[arg-type]
    return OfficialBench(
        tasks=tasks,
        audio_index=indexes["audio"],
        image_index=indexes["image"],
        text_index=indexes["text"],
        notes=tuple(notes),
    )
