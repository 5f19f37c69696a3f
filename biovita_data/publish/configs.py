"""Each published config's rows, from the build folder: species, media (embed or urls), bench."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from biovita_data.core import layout
from biovita_data.core.progress import LogProgress
from biovita_data.core.schemas import BENCH_TASK, MEDIA, MEDIA_FILE, SPECIES
from biovita_data.core.tables import read_table
from biovita_data.curate.bench.csv_layout import (
    index_csv_path,
    index_parquet_path,
    tasks_parquet_path,
)
from biovita_data.curate.duplicates import withheld_copies
from biovita_data.media.store import MediaStore
from biovita_data.publish.features import (
    BENCH_SPLIT_OF_SUBSET,
    DETAIL_COLUMNS,
    MEDIA_SPLITS,
    MEDIA_STRUCT,
    arrow_schema,
    columns,
)
from biovita_data.publish.shards import AUDIO_ROW_GROUP, MEDIA_ROW_GROUP, SplitWriter

TAXON_COLUMNS = ("label", "species_id", "common_name", "class", "order", "family", "genus")
# MEDIA_FILE columns publish reads from the media shards (everything but provenance details).
FILE_COLUMNS = (
    "source",
    "record_id",
    "segment",
    "n_segments",
    "path",
    "bytes",
    "sha256",
    "duration_s",
    "sample_rate",
    "channels",
    "width",
    "height",
)
KEY = ["source", "record_id", "segment"]
# Manifest (and species) columns of an embedded media row; the rest come from the media file.
META_COLUMNS = (
    *TAXON_COLUMNS,
    "scientific_name",
    "source",
    "record_id",
    "license",
    "attribution",
    "media_url",
    "page_url",
    "split",
    *DETAIL_COLUMNS,
)
_BATCH_ROWS = 256


@dataclass
class ConfigResult:
    """What one config wrote: rows and shard files per split."""

    rows: dict[str, int] = field(default_factory=dict)
    files: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class MediaResult(ConfigResult):
    """A media config's result, plus the published records (for the card) and what was skipped."""

    records: pl.DataFrame = field(default_factory=pl.DataFrame)
    skipped: dict[str, int] = field(default_factory=dict)


def _rel(path: Path) -> str:
    """A shard's path inside the dataset folder: `<config>/<file>`."""
    return f"{path.parent.name}/{path.name}"


def _to_arrow(df: pl.DataFrame) -> pa.Table:
    """Polars -> Arrow with plain (non-view) string and binary types."""
    return df.to_arrow(compat_level=pl.CompatLevel.oldest())


def load_species(out: Path) -> pl.DataFrame:
    """species.parquet sorted by species_id, with `label` = its position (the ClassLabel)."""
    path = layout.species_path(out)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the manifest stages first")
    df = pl.from_arrow(read_table(path, SPECIES)).sort("species_id")
    assert isinstance(df, pl.DataFrame)
    if df["species_id"].is_duplicated().any():
        raise ValueError(f"{path}: species_id is not unique")
    dup = df.filter(pl.col("scientific_name").is_duplicated())["scientific_name"].unique()
    if dup.len():
        raise ValueError(
            f"{path}: scientific names repeat (ClassLabel needs unique names): "
            f"{sorted(dup.to_list())[:5]}"
        )
    return df.with_row_index("label").with_columns(pl.col("label").cast(pl.Int64))


def write_species(folder: Path, species: pl.DataFrame, names: list[str], max_bytes: int):
    """The `species` config: one split `train`, label + every SPECIES column."""
    cols = columns("species")
    writer = SplitWriter(folder / "species", "train", arrow_schema(cols, names), max_bytes)
    writer.write(_to_arrow(species.select([c for c, _ in cols])))
    files = writer.close()
    return ConfigResult({"train": writer.rows}, {"train": [_rel(f) for f in files]})


def _manifest(
    out: Path, modality: str, species: pl.DataFrame, columns: list[str] | None = None
) -> pl.DataFrame:
    """A MEDIA manifest (only `columns`, when given) joined to the species' label and lineage."""
    path = layout.media_manifest_path(out, modality)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the manifest stages first")
    df = pl.from_arrow(read_table(path, MEDIA, columns=columns))
    assert isinstance(df, pl.DataFrame)
    taxa = species.select(TAXON_COLUMNS)
    if "background_species" in df.columns:
        df = df.with_columns(pl.col("background_species").list.join("; "))  # a plain Value
    return df.join(taxa, on="species_id", how="inner", maintain_order="left")  # no extra copy


def media_shards(store: MediaStore, modality: str) -> list[str]:
    """The store's <modality>/shard-*.parquet (OUT/media or --media-root), in shard order."""
    return store.glob(modality, "shard-[0-9][0-9][0-9][0-9][0-9].parquet")


def _kept_keys(out: Path, modality: str) -> pl.DataFrame | None:
    """The stored files that are not content duplicates (index.parquet `kept`); None: no index."""
    path = layout.media_dir(out, modality) / "index.parquet"
    if not path.exists():
        return None
    index = pl.read_parquet(path)
    # with the shard: a record whose file was stored again (after an update) has its old row,
    # left out of the index, in an earlier shard
    shard = pl.col("shard").cast(pl.Int64) if "shard" in index.columns else pl.lit(None, pl.Int64)
    return index.filter(pl.col("kept")).select(*KEY, shard.alias("_shard")).unique()


def _writers(folder: Path, modality: str, media: str, names: list[str], max_bytes: int):
    cols = columns(modality, media)
    schema = arrow_schema(cols, names)
    media_group = AUDIO_ROW_GROUP if modality == "audio" else MEDIA_ROW_GROUP
    group = media_group if media == "embed" else 10_000
    media_column = modality if media == "embed" else None
    return cols, {
        s: SplitWriter(
            folder / modality, s, schema, max_bytes, row_group_rows=group, media_column=media_column
        )
        for s in MEDIA_SPLITS
    }


def _finish(writers: dict[str, SplitWriter], result: ConfigResult) -> None:
    for split, writer in writers.items():
        files = writer.close()
        result.rows[split] = writer.rows
        result.files[split] = [_rel(f) for f in files]


def _plan(
    store: MediaStore,
    shards: list[str],
    kept: pl.DataFrame | None,
    manifest: pl.DataFrame,
    copies: pl.DataFrame,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Which stored files are published, in shard order: `_shard`, `_row`, the key, `_m` (the
    manifest row), `split`, `duration_s`; one pass over the shards' key columns, one join."""
    frames = []
    for k, shard in enumerate(shards):
        with store.open(shard) as f:
            keys = pl.from_arrow(pq.read_table(f, columns=[*KEY, "duration_s"]))
        assert isinstance(keys, pl.DataFrame)
        frames.append(
            keys.with_columns(
                _shard=pl.lit(k, pl.Int64), _row=pl.int_range(pl.len(), dtype=pl.Int64)
            )
        )
    files = (
        pl.concat(frames)
        if frames
        else pl.from_arrow(MEDIA_FILE.empty_table()).select(
            *KEY, "duration_s", _shard=pl.lit(0, pl.Int64), _row=pl.lit(0, pl.Int64)
        )
    )
    total = files.height
    if kept is not None:
        on = [*KEY, "_shard"] if kept["_shard"].null_count() == 0 else KEY
        files = files.join(kept.select(on), on=on, how="semi").sort("_shard", "_row")
    unique = files.unique(KEY, keep="first", maintain_order=True)
    index = manifest.select("source", "record_id", "split").with_row_index("_m")
    joined = unique.join(index, on=["source", "record_id"], how="inner")
    placed = joined.filter(pl.col("split").is_in(list(MEDIA_SPLITS)).fill_null(False))
    plan = placed.join(copies, on=["source", "record_id"], how="anti", maintain_order="left")
    skipped = {
        "not_kept": total - files.height,
        "repeated_key": files.height - unique.height,
        "not_in_manifest": unique.height - joined.height,
        "no_split": joined.height - placed.height,
        "exact_copy": placed.height - plan.height,  # files of dedup's exact copies
    }
    return plan.sort("_shard", "_row"), skipped


def _row_groups(
    store: MediaStore, shard: str, rows: np.ndarray
) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """The shard's row groups that hold any of `rows` (sorted), each with the positions of
    those rows in it; groups without a published row are not read."""
    with store.open(shard) as f:
        pf = pq.ParquetFile(f)
        offset = 0
        for g in range(pf.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            lo, hi = np.searchsorted(rows, [offset, offset + n])
            if hi > lo:
                yield pf.read_row_group(g, columns=list(FILE_COLUMNS)), rows[lo:hi] - offset
            offset += n


def write_media_embed(
    out: Path,
    folder: Path,
    modality: str,
    species: pl.DataFrame,
    names: list[str],
    max_bytes: int,
    progress: LogProgress | None = None,
) -> MediaResult:
    """An `audio`/`image` config with the bytes: the media shards' kept files, joined to the
    manifest, in shard order, each row to the writer of its manifest split (rows on `progress`)."""
    store = MediaStore.of(out)
    shards = media_shards(store, modality)
    manifest = _manifest(out, modality, species)
    if not shards and manifest.height:  # no manifest rows, no shards: an empty config
        raise FileNotFoundError(
            f"{store.url}/{modality} holds no shard-*.parquet: run materialize first"
        )
    copies = withheld_copies(out, modality)
    plan, skipped = _plan(store, shards, _kept_keys(out, modality), manifest, copies)
    meta = manifest.select(*META_COLUMNS)
    cols, writers = _writers(folder, modality, "embed", names, max_bytes)
    names_out = [c for c, _ in cols]
    task = progress.add_task(f"publish {modality}", total=plan.height) if progress else None
    for part in plan.partition_by("_shard", maintain_order=True):
        shard = shards[int(part["_shard"][0])]
        done = 0  # rows of `part` already written
        for group, positions in _row_groups(store, shard, part["_row"].to_numpy()):
            for a in range(0, positions.size, _BATCH_ROWS):
                take = positions[a : a + _BATCH_ROWS]
                sel = part.slice(done, take.size)
                done += take.size
                files = group.take(pa.array(take))
                batch_meta = meta[sel["_m"]]
                for split, writer in writers.items():
                    mask = (sel["split"] == split).to_numpy()
                    if mask.any():
                        table = _embed_table(
                            files.filter(pa.array(mask)),
                            _to_arrow(batch_meta.filter(pl.Series(mask))),
                            modality,
                            names_out,
                        )
                        writer.write(table)
                if progress is not None and task is not None:
                    progress.advance(task, take.size)
    result = MediaResult(skipped=skipped)
    _finish(writers, result)
    result.records = _records(plan, manifest)
    return result


def _embed_table(files: pa.Table, meta: pa.Table, modality: str, names: list[str]) -> pa.Table:
    """One batch of output rows: the media struct, the manifest columns and the file columns."""
    data = pc.cast(files.column("bytes"), pa.binary())
    media = pa.StructArray.from_arrays(
        [data.combine_chunks(), files.column("path").combine_chunks()],
        fields=list(MEDIA_STRUCT),
    )
    arrays = {modality: media}
    for name in names:
        if name == modality:
            continue
        source = files if name in FILE_COLUMNS and name not in ("source", "record_id") else meta
        arrays[name] = source.column(name)
    return pa.table({n: arrays[n] for n in names})


def _records(plan: pl.DataFrame, manifest: pl.DataFrame) -> pl.DataFrame:
    """Published files -> one row per record (segments summed): split, species, licence, hours."""
    info = manifest.select("species_id", "license").with_row_index("_m")
    return (
        plan.join(info, on="_m", how="left")
        .group_by("split", "source", "record_id", maintain_order=True)
        .agg(
            pl.col("species_id").first(),
            pl.col("license").first(),
            pl.col("duration_s").sum(),
            files=pl.len(),
        )
        .with_columns(pl.col("files").cast(pl.Int64))
    )


def write_media_urls(
    out: Path, folder: Path, modality: str, species: pl.DataFrame, names: list[str], max_bytes: int
) -> MediaResult:
    """An `audio`/`image` config without bytes: one row per manifest record, with its URL."""
    cols, writers = _writers(folder, modality, "urls", names, max_bytes)
    record_columns = {"split", "source", "record_id", "species_id", "license", "duration_s"}
    used = {c for c, _ in cols} | record_columns  # published, and result.records below
    manifest = _manifest(out, modality, species, [c for c in MEDIA.names if c in used])
    copies = withheld_copies(out, modality)
    everything = manifest.height
    if copies.height:  # a join copies every record (~1 GB of photos at the paper's scale)
        key = ["source", "record_id"]
        manifest = manifest.join(copies, on=key, how="anti", maintain_order="left")
    for split, writer in writers.items():  # one split's published columns copied at a time
        part = manifest.lazy().filter(pl.col("split") == split).select([c for c, _ in cols])
        writer.write(_to_arrow(part.collect()))
    unsplit = manifest.filter(~pl.col("split").is_in(list(MEDIA_SPLITS)).fill_null(False))
    skipped = {"no_split": unsplit.height, "exact_copy": everything - manifest.height}
    result = MediaResult(skipped=skipped)
    _finish(writers, result)
    result.records = (
        manifest.filter(pl.col("split").is_in(list(MEDIA_SPLITS)))
        .select("split", "source", "record_id", "species_id", "license", "duration_s")
        .with_columns(files=pl.lit(1, pl.Int64))
    )
    return result


def _json_list(values: list) -> str:
    """The official CSV's compact JSON: `["a","b"]`, `[[1,2],[3]]`."""
    return json.dumps(values, ensure_ascii=False, separators=(",", ":"))


def _json_lists(column: pa.ChunkedArray) -> pa.Array:
    """_json_list of every value of a list column, vectorised (polars' JSON encoder, whose output
    is the same compact JSON: `{"v":[...]}` with the wrapper cut off)."""
    wrapped = pl.DataFrame({"v": column}).select(pl.struct("v").struct.json_encode())
    return wrapped.to_series().str.slice(5, None).str.head(-1).to_arrow().cast(pa.string())


def _bench_batches(path: Path) -> Iterator[pa.Table]:
    pf = pq.ParquetFile(path)
    for batch in pf.iter_batches(batch_size=_BATCH_ROWS):
        t = pa.Table.from_batches([batch]).cast(BENCH_TASK)
        taxa = _json_lists(t.column("candidates_taxa"))
        ids = _json_lists(t.column("candidates_target_ids"))
        t = t.set_column(3, "candidates_taxa", taxa)
        yield t.set_column(4, "candidates_target_ids", ids)


def write_bench(out: Path, folder: Path, max_bytes: int) -> ConfigResult:
    """The `bench` config: split `test` = the seen bench, `unseen` = the unseen bench; lists as
    JSON strings. Each subset's `ids/` indexes are copied to bench_ids/<subset>/."""
    cols = columns("bench")
    schema = arrow_schema(cols, [])
    result = ConfigResult()
    for subset, split in BENCH_SPLIT_OF_SUBSET.items():
        bench = layout.bench_dir(out, subset)
        path = tasks_parquet_path(bench)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: run `biovita-data bench` first")
        writer = SplitWriter(folder / "bench", split, schema, max_bytes)
        for table in _bench_batches(path):
            writer.write(table)
        result.rows[split] = writer.rows
        result.files[split] = [_rel(f) for f in writer.close()]
        for modality in ("audio", "image", "text"):
            for src in (index_csv_path(bench, modality), index_parquet_path(bench, modality)):
                if src.exists():
                    dst = folder / "bench_ids" / subset / src.name
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dst)
    return result
