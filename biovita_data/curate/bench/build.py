"""The bench stage: BioVITA-Bench from the manifests, as Parquet and in the official CSV layout.

Per subset (seen: the `test` items of seen species; unseen: every item of unseen species) the
items of each modality form a pool, indexed 0..n-1 (media by (source, record_id), texts by
scientific name). At each level (species, genus, family) a taxon's target group is a seeded choice
of at most `max_images` / `max_clips` / `max_texts` pool items, fixed per subset, level and target
modality, so each group is rendered to JSON once. A query gets the correct taxon and up to
`candidates - 1` seeded distractors drawn from the taxa with a nonempty target group.

Every seeded choice is by keys, not positions (core/draws): each item has a 64-bit key of the
seed, its modality, source and record id (a text: its name), each taxon one of its name; a group
holds its taxon's items of least key, the caps keep the queries of least key, and a query's
distractors are the taxa of least key mixed from its key and theirs. So a rebuild after an update
asks the same queries with the same candidates wherever the items and taxa involved are still
there: an item or taxon that comes or goes changes only the groups, queries and candidate lists
it enters or leaves (pool ids, numbered in order, still shift).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from biovita_data.core import layout
from biovita_data.core.draws import keyed_hash, salt, salted
from biovita_data.core.schemas import BENCH_MEDIA_INDEX, BENCH_TASK, BENCH_TEXT_INDEX
from biovita_data.core.tables import atomic_path, write_json_atomic, write_table
from biovita_data.curate.bench.csv_layout import (
    LEVELS,
    MEDIA_INDEX_COLUMNS,
    SUBSETS,
    TASK_COLUMNS,
    TASKS,
    TEXT_INDEX_COLUMNS,
    Task,
    bench_json_path,
    index_csv_path,
    index_parquet_path,
    task_csv_path,
    tasks_parquet_path,
)
from biovita_data.curate.duplicates import withheld_copies
from biovita_data.curate.settings import BenchSettings

MEDIA_MODALITIES = ("audio", "image")
_SPECIES_COLUMNS = ("species_id", "scientific_name", "common_name", "class", "family", "genus")
_MEDIA_COLUMNS = ("source", "record_id", "species_id", "file_format", "split")
_CHUNK_ROWS = 1024  # task rows rendered and written at a time (bounds memory)


@dataclass(frozen=True)
class TaskStats:
    """What one task file holds."""

    subset: str
    level: str
    task: str
    queries: int  # rows written
    skipped: int  # pool queries whose correct taxon has no target group (or no name at level)
    capped: int  # usable queries left out by the per-taxon / per-task caps
    query_taxa: int  # distinct correct taxa
    target_taxa: int  # taxa with a nonempty target group (the distractor pool + 1)
    mean_candidates: float


@dataclass
class BenchResult:
    out: Path
    settings: BenchSettings
    dirs: dict[str, Path] = field(default_factory=dict)  # subset -> BENCH folder
    pool: dict[str, dict[str, int]] = field(default_factory=dict)  # subset -> modality -> items
    tasks: list[TaskStats] = field(default_factory=list)

    def stats(self, subset: str, level: str, task: str) -> TaskStats:
        for s in self.tasks:
            if (s.subset, s.level, s.task) == (subset, level, task):
                return s
        raise KeyError((subset, level, task))


# ---- inputs ---------------------------------------------------------------------------------


def _blank_to_null(cols: tuple[str, ...]) -> list[pl.Expr]:
    return [
        pl.when(pl.col(c).str.strip_chars() == "").then(None).otherwise(pl.col(c)).alias(c)
        for c in cols
    ]


def _read_species(out: Path) -> pl.DataFrame:
    path = layout.species_path(out)
    if not path.exists():
        raise FileNotFoundError(f"{path}: run the earlier stages first (align, traits, split)")
    cols = pl.read_parquet_schema(path)
    want = [*_SPECIES_COLUMNS, "split_group"] + (["species"] if "species" in cols else [])
    df = pl.read_parquet(path, columns=want)
    if "species" not in df.columns:
        df = df.with_columns(pl.lit(None, pl.String).alias("species"))
    text_cols = ("species", "common_name", "class", "family", "genus")
    df = df.with_columns(_blank_to_null(text_cols)).with_columns(
        pl.coalesce("species", "scientific_name").alias("species")
    )
    if df["species_id"].is_duplicated().any():
        raise ValueError(f"{path}: duplicate species_id")
    return df


def _read_media(out: Path, modality: str) -> pl.DataFrame:
    """The modality's manifest; once materialize has run, only the records it stored and kept
    (a failed download, an undecodable file or a duplicate can be neither query nor candidate),
    less the exact copies dedup found (each is in the corpus once, as the member it copies)."""
    path = layout.media_manifest_path(out, modality)
    if not path.exists():
        raise FileNotFoundError(f"{path}: run the earlier stages first (align, split)")
    df = pl.read_parquet(path, columns=list(_MEDIA_COLUMNS))
    stored = layout.media_index_path(out, modality)
    if stored.exists():
        kept = (
            pl.scan_parquet(stored)
            .filter(pl.col("kept") & (pl.col("segment") == 0))
            .select("source", "record_id")
            .collect()
        )
        df = df.join(kept, on=["source", "record_id"], how="semi", maintain_order="left")
    copies = withheld_copies(out, modality)
    return df.join(copies, on=["source", "record_id"], how="anti", maintain_order="left")


_ROW_BLOCK = 256  # query rows whose candidate keys are computed at a time (rows x taxa)
_NEVER = np.uint64(2**64 - 1)
_TASK_DRAWS = ("queries", "cap", "distract", "order")  # a task's keyed choices, salted apart


# ---- the pool of one subset -----------------------------------------------------------------


@dataclass
class _Pool:
    subset: str
    media: dict[str, pl.DataFrame]  # modality -> BENCH_MEDIA_INDEX rows, by id
    text: pl.DataFrame  # BENCH_TEXT_INDEX rows, by id
    species_of: dict[str, np.ndarray]  # modality -> species_id per item id
    keys: dict[str, np.ndarray]  # modality -> the seeded uint64 key per item id


def _pool(subset: str, species: pl.DataFrame, media: dict[str, pl.DataFrame], seed: int) -> _Pool:
    members = species.filter(pl.col("split_group") == subset)
    frames: dict[str, pl.DataFrame] = {}
    for modality in MEDIA_MODALITIES:
        m = media[modality].join(members.select("species_id"), on="species_id", how="semi")
        if subset == "seen":
            m = m.filter(pl.col("split") == "test")
        m = m.sort("source", "record_id", "species_id").unique(
            subset=["source", "record_id"], keep="first", maintain_order=True
        )
        paths = [
            layout.media_file_path(modality, s, r, f)
            for s, r, f in zip(m["source"], m["record_id"], m["file_format"], strict=True)
        ]
        frames[modality] = pl.DataFrame(
            {
                "id": np.arange(m.height, dtype=np.int64),
                "file_path": pl.Series(paths, dtype=pl.String),
                "source": m["source"],
                "record_id": m["record_id"],
                "species_id": m["species_id"],
            }
        )
    present = pl.concat([frames[m].select("species_id") for m in MEDIA_MODALITIES]).unique()
    text = (
        members.join(present, on="species_id", how="semi")
        .sort("scientific_name", "species_id")
        .with_row_index("id")
        .select(
            pl.col("id").cast(pl.Int64),
            "species",
            "genus",
            "family",
            "class",
            "common_name",
            "species_id",
        )
    )
    species_of = {m: frames[m]["species_id"].to_numpy() for m in MEDIA_MODALITIES}
    species_of["text"] = text["species_id"].to_numpy()
    keys = {
        m: keyed_hash(seed, m, frames[m]["source"], frames[m]["record_id"]).to_numpy()
        for m in MEDIA_MODALITIES
    }
    keys["text"] = keyed_hash(seed, "text", text["species"]).to_numpy()
    return _Pool(subset, frames, text, species_of, keys)


@dataclass
class _Level:
    """The taxa at one level (sorted names) and each pool item's taxon code (-1: none)."""

    name: str
    taxa: pa.Array  # string, by code
    classes: pa.Array  # string, the class of each taxon
    taxa_json: np.ndarray  # object: JSON string of each taxon name
    codes: dict[str, np.ndarray]  # modality -> int64 code per item id
    keys: np.ndarray  # uint64: the seeded key of each taxon (of its name)


def _level(pool: _Pool, level: str, seed: int) -> _Level:
    taxa = (
        pool.text.filter(pl.col(level).is_not_null())
        .group_by(level)
        .agg(pl.col("class").drop_nulls().sort().first())
        .sort(level)
    )
    code_of = pl.DataFrame({"species_id": pool.text["species_id"], level: pool.text[level]}).join(
        taxa.with_row_index("code").select(level, "code"), on=level, how="left"
    )
    ids = code_of["species_id"].to_list()
    codes = code_of["code"].cast(pl.Int64).fill_null(-1).to_list()
    codes_by_modality = {}
    for modality, sid in pool.species_of.items():
        codes_by_modality[modality] = (
            pl.Series(sid, dtype=pl.Int64)
            .replace_strict(ids, codes, default=-1, return_dtype=pl.Int64)
            .to_numpy()
            .astype(np.int64, copy=False)
        )
    names = taxa[level].to_list()
    return _Level(
        name=level,
        taxa=pa.array(names, pa.string()),
        classes=pa.array(taxa["class"].to_list(), pa.string()),
        taxa_json=np.array([json.dumps(n, ensure_ascii=False) for n in names], dtype=object),
        codes=codes_by_modality,
        keys=keyed_hash(seed, level, taxa[level]).to_numpy(),
    )


@dataclass
class _Groups:
    """Each taxon's target group: item ids flat[start[t] : start[t] + length[t]], sorted."""

    start: np.ndarray
    length: np.ndarray
    flat: np.ndarray
    json: np.ndarray  # object: "[id,id,...]" per taxon


def _ranked(codes: np.ndarray, n_taxa: int, keys: np.ndarray) -> tuple[np.ndarray, ...]:
    """Items with a taxon, by key within each taxon: (item, code, rank)."""
    items = np.flatnonzero(codes >= 0)
    c = codes[items]
    order = np.lexsort((keys[items], c))
    items, c = items[order], c[order]
    first = np.zeros(n_taxa + 1, dtype=np.int64)
    np.cumsum(np.bincount(c, minlength=n_taxa), out=first[1:])
    rank = np.arange(items.size, dtype=np.int64) - first[c]
    return items, c, rank


def _groups(codes: np.ndarray, n_taxa: int, cap: int, keys: np.ndarray) -> _Groups:
    items, c, rank = _ranked(codes, n_taxa, keys)
    keep = rank < cap
    items, c = items[keep], c[keep]
    order = np.lexsort((items, c))
    flat, c = items[order], c[order]
    length = np.bincount(c, minlength=n_taxa).astype(np.int64)
    start = np.cumsum(length) - length
    text = list(map(str, flat.tolist()))
    rendered = np.empty(n_taxa, dtype=object)
    for t, (a, n) in enumerate(zip(start.tolist(), length.tolist(), strict=True)):
        rendered[t] = "[" + ",".join(text[a : a + n]) + "]"
    return _Groups(start, length, flat, rendered)


def _least_keys(
    correct: np.ndarray, query_keys: np.ndarray, taxon_keys: np.ndarray, k: int, order: np.uint64
) -> np.ndarray:
    """Each query's row of candidates (positions in taxon_keys): its correct taxon and the k
    other taxa of least key mixed from the query's and the taxon's, ordered by a second such key
    (so the correct taxon is anywhere); a taxon that comes or goes changes only the rows it
    enters or leaves."""
    rows = np.empty((correct.size, k + 1), dtype=np.int64)
    for a in range(0, correct.size, _ROW_BLOCK):
        q, right = query_keys[a : a + _ROW_BLOCK, None], correct[a : a + _ROW_BLOCK]
        score = salted(q ^ taxon_keys[None, :], np.uint64(0))
        score[np.arange(right.size), right] = _NEVER  # never its own distractor
        chosen = np.concatenate(
            [right[:, None], np.argpartition(score, k - 1, axis=1)[:, :k]], axis=1
        )
        place = salted(salted(q, order) ^ taxon_keys[chosen], np.uint64(0))
        rows[a : a + _ROW_BLOCK] = np.take_along_axis(chosen, np.argsort(place, axis=1), axis=1)
    return rows


@dataclass
class _TaskRows:
    query_ids: np.ndarray  # int64, sorted
    query_codes: np.ndarray  # int64 correct taxon codes
    candidates: np.ndarray  # int64 (rows, k) taxon codes, in keyed order
    skipped: int
    capped: int
    target_taxa: int


def _task_rows(
    queries: tuple[np.ndarray, np.ndarray, np.ndarray],
    target: _Groups,
    taxon_keys: np.ndarray,
    settings: BenchSettings,
    salt_of: tuple[np.uint64, ...],
) -> _TaskRows:
    """The task's queries (ids, taxon codes, keys) capped, each with its candidates; salt_of:
    the salts of the per-taxon order, the per-task cap, the distractors and their order."""
    q_ids, q_codes, q_keys = queries
    by_taxon, by_cap, distract, order = salt_of
    n_taxa = target.length.size
    usable = q_codes >= 0
    usable[usable] = target.length[q_codes[usable]] > 0
    skipped = int((~usable).sum())
    q_ids, q_codes, q_keys = q_ids[usable], q_codes[usable], q_keys[usable]
    # Caps: by key within each taxon; keep the first per taxon, then round-robin over taxa
    # (all rank-0 queries by key, then rank 1, ...) up to the per-task cap.
    pos, _, rank = _ranked(q_codes, n_taxa, salted(q_keys, by_taxon))
    keep = rank < settings.max_queries_per_taxon
    pos, rank = pos[keep], rank[keep]
    if pos.size > settings.max_queries_per_task:
        cap_keys = salted(q_keys[pos], by_cap)
        pos = pos[np.lexsort((cap_keys, rank))[: settings.max_queries_per_task]]
    capped = int(q_ids.size - pos.size)
    pos = pos[np.argsort(q_ids[pos], kind="stable")]
    q_ids, q_codes, q_keys = q_ids[pos], q_codes[pos], q_keys[pos]

    available = np.flatnonzero(target.length > 0)
    where = np.full(n_taxa, -1, dtype=np.int64)
    where[available] = np.arange(available.size)
    k = min(settings.candidates, available.size) - 1  # distractors per query
    correct = where[q_codes]
    if k > 0 and q_ids.size:
        keys = salted(q_keys, distract)
        grid = _least_keys(correct, keys, taxon_keys[available], k, order)
    else:
        grid = correct[:, None]
    return _TaskRows(q_ids, q_codes, available[grid], skipped, capped, int(available.size))


# ---- writing ---------------------------------------------------------------------------------


def _write_csv(path: Path, frames: Iterable[pl.DataFrame], columns: tuple[str, ...]) -> None:
    """Write frames as one CSV, atomically (temp file + rename); a header even when empty."""
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        f.write((",".join(columns) + "\n").encode())
        for df in frames:
            df.select(columns).write_csv(f, include_header=False)


def _json_rows(grid: np.ndarray) -> list[str]:
    return ["[" + ",".join(row) + "]" for row in grid.tolist()]


def _chunks(
    rows: _TaskRows, level: _Level, target: _Groups, task: Task
) -> Iterator[tuple[pa.Table, pl.DataFrame]]:
    """The task's rows as BENCH_TASK tables and official-CSV frames, a chunk at a time."""
    for a in range(0, rows.query_ids.size, _CHUNK_ROWS):
        q_ids = rows.query_ids[a : a + _CHUNK_ROWS]
        q_codes = rows.query_codes[a : a + _CHUNK_ROWS]
        grid = rows.candidates[a : a + _CHUNK_ROWS]
        n, k = grid.shape
        flat = grid.ravel()
        outer = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
        lens = target.length[flat]
        inner = np.zeros(flat.size + 1, dtype=np.int64)
        np.cumsum(lens, out=inner[1:])
        take = np.repeat(target.start[flat] - inner[:-1], lens) + np.arange(inner[-1])
        ids = pa.ListArray.from_arrays(pa.array(inner.astype(np.int32)), target.flat[take])
        correct = level.taxa.take(pa.array(q_codes))
        klass = level.classes.take(pa.array(q_codes))
        table = pa.Table.from_arrays(
            [
                pa.array([task.code] * n, pa.string()),
                pa.array([level.name] * n, pa.string()),
                pa.array(q_ids, pa.int64()),
                pa.ListArray.from_arrays(outer, level.taxa.take(pa.array(flat))),
                pa.ListArray.from_arrays(outer, ids),
                correct,
                klass,
            ],
            schema=BENCH_TASK,
        )
        csv = pl.DataFrame(
            {
                "task": pl.Series([task.code] * n, dtype=pl.String),
                "taxon_level": pl.Series([level.name] * n, dtype=pl.String),
                "query_payload_id": pl.Series(q_ids, dtype=pl.Int64),
                "candidates_taxa": pl.Series(_json_rows(level.taxa_json[grid]), dtype=pl.String),
                "candidates_target_ids": pl.Series(_json_rows(target.json[grid]), dtype=pl.String),
                "correct_taxon": pl.from_arrow(correct),
                "taxon_class": pl.from_arrow(klass),
            }
        )
        yield table, csv


def _tee(
    chunks: Iterator[tuple[pa.Table, pl.DataFrame]], writer: pq.ParquetWriter
) -> Iterator[pl.DataFrame]:
    """Write each chunk's table to the Parquet writer and pass its CSV frame on."""
    for table, csv in chunks:
        writer.write_table(table)
        yield csv


def _write_indexes(bench: Path, pool: _Pool) -> None:
    for modality in MEDIA_MODALITIES:
        df = pool.media[modality]
        write_table(df.to_arrow().cast(BENCH_MEDIA_INDEX), index_parquet_path(bench, modality))
        _write_csv(index_csv_path(bench, modality), [df], MEDIA_INDEX_COLUMNS)
    write_table(pool.text.to_arrow().cast(BENCH_TEXT_INDEX), index_parquet_path(bench, "text"))
    _write_csv(index_csv_path(bench, "text"), [pool.text], TEXT_INDEX_COLUMNS)


def _build_subset(
    out: Path, subset: str, species: pl.DataFrame, media: dict[str, pl.DataFrame], s: BenchSettings
) -> tuple[Path, dict[str, int], list[TaskStats]]:
    bench = layout.bench_dir(out, subset)
    pool = _pool(subset, species, media, s.seed)
    _write_indexes(bench, pool)
    stats: list[TaskStats] = []
    parquet = tasks_parquet_path(bench)
    with (
        atomic_path(parquet) as tmp,
        pq.ParquetWriter(tmp, BENCH_TASK, compression="zstd") as writer,
    ):
        for level_name in LEVELS:
            level = _level(pool, level_name, s.seed)
            n_taxa = len(level.taxa)
            groups = {
                m: _groups(
                    level.codes[m],
                    n_taxa,
                    s.group_cap(m),
                    salted(pool.keys[m], salt(s.seed, level_name, m, "group")),
                )
                for m in ("audio", "image", "text")
            }
            # a text query: one per taxon, the first by the key its group uses
            text_keys = salted(pool.keys["text"], salt(s.seed, level_name, "text", "group"))
            items, c, rank = _ranked(level.codes["text"], n_taxa, text_keys)
            text_queries = (items[rank == 0], c[rank == 0])
            for task in TASKS:
                if task.query == "text":
                    q_ids, q_codes = text_queries
                else:
                    q_codes = level.codes[task.query]
                    q_ids = np.arange(q_codes.size, dtype=np.int64)
                target = groups[task.target]
                rows = _task_rows(
                    (q_ids, q_codes, pool.keys[task.query][q_ids]),
                    target,
                    level.keys,
                    s,
                    tuple(salt(s.seed, level_name, task.code, p) for p in _TASK_DRAWS),
                )
                _write_csv(
                    task_csv_path(bench, level_name, task),
                    _tee(_chunks(rows, level, target, task), writer),
                    TASK_COLUMNS,
                )
                n = int(rows.query_ids.size)
                stats.append(
                    TaskStats(
                        subset=subset,
                        level=level_name,
                        task=task.code,
                        queries=n,
                        skipped=rows.skipped,
                        capped=rows.capped,
                        query_taxa=int(np.unique(rows.query_codes).size),
                        target_taxa=rows.target_taxa,
                        mean_candidates=float(rows.candidates.shape[1]) if n else 0.0,
                    )
                )
    sizes = {m: pool.media[m].height for m in MEDIA_MODALITIES}
    sizes["text"] = pool.text.height
    _write_bench_json(bench, subset, s, sizes, stats)
    return bench, sizes, stats


def _write_bench_json(
    bench: Path, subset: str, s: BenchSettings, sizes: dict[str, int], stats: list[TaskStats]
) -> None:
    tasks: dict[str, dict[str, dict]] = {}
    for st in stats:
        entry = {k: v for k, v in asdict(st).items() if k not in ("subset", "level", "task")}
        entry["file"] = task_csv_path(Path(), st.level, st.task).as_posix()
        tasks.setdefault(st.level, {})[st.task] = entry
    doc = {
        "subset": subset,
        "seed": s.seed,
        "settings": asdict(s),
        "pool": sizes,
        "tasks": tasks,
    }
    write_json_atomic(doc, bench_json_path(bench))


def build_bench(
    out: Path,
    *,
    candidates: int = BenchSettings.candidates,
    seed: int = BenchSettings.seed,
    max_images: int = BenchSettings.max_images,
    max_clips: int = BenchSettings.max_clips,
    max_texts: int = BenchSettings.max_texts,
    max_queries_per_taxon: int = BenchSettings.max_queries_per_taxon,
    max_queries_per_task: int = BenchSettings.max_queries_per_task,
) -> BenchResult:
    """Write OUT/bench/{seen,unseen}: tasks.parquet, ids/*, the official CSVs and bench.json."""
    settings = BenchSettings(
        candidates=candidates,
        seed=seed,
        max_images=max_images,
        max_clips=max_clips,
        max_texts=max_texts,
        max_queries_per_taxon=max_queries_per_taxon,
        max_queries_per_task=max_queries_per_task,
    )
    for name, value in asdict(settings).items():
        if value < (0 if name == "seed" else 1):
            raise ValueError(f"{name} must be {'>= 0' if name == 'seed' else '>= 1'}, not {value}")
    out = Path(out)
    species = _read_species(out)
    if species["split_group"].is_null().all():  # align wrote it empty: no seen/unseen yet
        raise ValueError(
            f"{layout.species_path(out)}: no split yet (split_group is empty): "
            f"run `biovita-data split --out {out}` before bench"
        )
    media = {m: _read_media(out, m) for m in MEDIA_MODALITIES}
    result = BenchResult(out=out, settings=settings)
    for subset in SUBSETS:
        bench, sizes, stats = _build_subset(out, subset, species, media, settings)
        result.dirs[subset] = bench
        result.pool[subset] = sizes
        result.tasks.extend(stats)
    return result
