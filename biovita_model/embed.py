"""Embeddings of published items (audio, image, text) and of BioVITA-Bench, and a run's eval.

Media come from a published dataset folder (OUT/hf, OUT, or a Hub snapshot): a bench item
(`ids/<modality>_index`: source, record_id; or the official CSV's file_path
`<modality>/<source>/<record_id>.<ext>`) is found by (source, record_id) among the rows of the
subset's split (seen: `test`, unseen: `unseen`) of the dataset's audio or image config (segment 0
of a segmented recording). Items the media stage dropped after the bench was built are left out
of the scoring (`drop_missing`) and listed in the report's `meta.missing_media`. Audio is cropped
onset-aligned (10 s from 0.2 s before the first sample above 1 % of the peak) and images get the
tower's eval transform (JPEGs decoded at a reduced DCT scale that stays >= 2 x the tower's input),
as DESIGN.md's "Bench" evaluation asks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from rich.table import Table
from torch.utils.data import DataLoader, Dataset

from biovita_data.build.bench.csv_layout import (
    LEVELS,
    SUBSETS,
    TASK_BY_CODE,
    TASK_DTYPES,
    TASKS,
    OfficialBench,
    index_csv_path,
    index_parquet_path,
    read_index_csv,
    tasks_parquet_path,
)
from biovita_data.core.layout import MEDIA_SPLITS
from biovita_data.loader import decode_clip, read_species
from biovita_data.loader.index import MediaIndex, RowReader, resolve_folder, split_files
from biovita_model import evaluate as ev
from biovita_model.audio_frontend import AudioFrontend, FrontendConfig
from biovita_model.model import BioVITAModel
from biovita_model.training.data import input_size, load_image, worker_init
from biovita_model.training.distributed import cpu_threads

MODALITIES = ("audio", "image", "text")
BENCH_SPLIT = {"seen": "test", "unseen": "unseen"}  # the published bench config's splits
_META = ("label", "species_id", "scientific_name", "source", "record_id", "segment")


# ---- finding media ---------------------------------------------------------------------------


def _row_positions(files: Sequence[Path], columns: Sequence[str]) -> pl.DataFrame:
    """Columns of every row of the files with (file, row_group, row): the key of RowReader."""
    frames = []
    for k, path in enumerate(files):
        pf = pq.ParquetFile(path)
        present = [c for c in columns if c in pf.schema_arrow.names]
        for g in range(pf.num_row_groups):
            t = pl.from_arrow(pf.read_row_group(g, columns=present))
            assert isinstance(t, pl.DataFrame)
            frames.append(
                t.with_columns(
                    pl.lit(k, pl.Int32).alias("_file"),
                    pl.lit(g, pl.Int32).alias("_group"),
                    pl.int_range(t.height, dtype=pl.Int32).alias("_row"),
                )
            )
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


def media_index(positions: pl.DataFrame, files: Sequence[Path]) -> MediaIndex:
    """A MediaIndex over rows located by _row_positions (label: the `label` column or 0)."""
    label = (
        positions["label"] if "label" in positions.columns else pl.Series([0] * positions.height)
    )
    return MediaIndex(
        files=tuple(str(p) for p in files),
        file=positions["_file"].to_numpy().astype(np.int32),
        row_group=positions["_group"].to_numpy().astype(np.int32),
        row=positions["_row"].to_numpy().astype(np.int32),
        label=label.to_numpy().astype(np.int64),
    )


class PublishedMedia:
    """The media rows of a published folder, found by (source, record_id) across its splits."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = resolve_folder(folder)
        self._keys: dict[str, tuple[list[Path], pl.DataFrame]] = {}

    def keys(
        self, modality: str, splits: Sequence[str] = MEDIA_SPLITS
    ) -> tuple[list[Path], pl.DataFrame]:
        """(files, rows with source, record_id and their positions) of a config's splits."""
        key = (modality, tuple(splits))
        if key not in self._keys:
            files = [p for s in splits for p in split_files(self.folder, modality, s)]
            rows = _row_positions(files, ["source", "record_id", "segment"])
            if rows.height and "segment" in rows.columns:
                rows = rows.sort("segment", maintain_order=True)
            if rows.height:
                rows = rows.unique(["source", "record_id"], keep="first", maintain_order=True)
            self._keys[key] = (files, rows)
        return self._keys[key]

    def locate(
        self, modality: str, index: pl.DataFrame, splits: Sequence[str] = MEDIA_SPLITS
    ) -> tuple[MediaIndex, np.ndarray]:
        """Rows of a bench index (source + record_id, or file_path) in the dataset's splits.

        Returns (MediaIndex of the items found, in id order; the ids not found). An item the
        media stage dropped after the bench was built (e.g. a silent file) is not found.
        """
        files, rows = self.keys(modality, splits)
        if not files:
            raise FileNotFoundError(f"no {modality}/{list(splits)} shards under {self.folder}")
        wanted = _bench_keys(index, modality)
        found = wanted.join(rows, on=["source", "record_id"], how="left").sort("id")
        missing = found.filter(pl.col("_file").is_null())["id"].to_numpy()
        if missing.size == found.height and found.height:
            raise ValueError(
                f"none of the bench's {modality} items is in {self.folder} {list(splits)}: "
                "is it the dataset this bench was built with?"
            )
        return media_index(found.filter(pl.col("_file").is_not_null()), files), missing


def _bench_keys(index: pl.DataFrame, modality: str) -> pl.DataFrame:
    """id, source, record_id of a bench media index (parsed from file_path when absent)."""
    if {"source", "record_id"} <= set(index.columns):
        return index.select("id", "source", "record_id")
    # the official CSV has only file_path = <modality>/<source>/<record_id>.<ext>
    parts = index["file_path"].str.split("/")
    rest = parts.list.slice(2).list.join("/")
    return index.select("id").with_columns(
        parts.list.get(1).alias("source"),
        rest.str.replace(r"\.[^./]+$", "").alias("record_id"),
    )


# ---- item datasets ---------------------------------------------------------------------------


class MediaItems(Dataset):
    """Rows of a MediaIndex decoded for the model: log-mel (onset crop) or eval-ready images."""

    def __init__(
        self,
        index: MediaIndex,
        modality: str,
        *,
        frontend: FrontendConfig | None = None,
        image_transform: Callable[[Any], torch.Tensor] | None = None,
    ) -> None:
        if modality not in ("audio", "image"):
            raise ValueError(f"modality must be audio or image, not {modality!r}")
        self.index = index
        self.modality = modality
        self.reader = RowReader(index, [modality])
        self.frontend_cfg = frontend
        self.transform = image_transform
        self.size = input_size(image_transform) if image_transform is not None else 224
        self._frontend: AudioFrontend | None = None

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_frontend": None}

    def __getitem__(self, i: int) -> torch.Tensor:
        data = self.reader.media(i)
        if self.modality == "image":
            assert self.transform is not None
            return self.transform(load_image(data, self.size))
        cfg = self.frontend_cfg
        assert cfg is not None
        clip = decode_clip(
            data, mode="onset", seconds=float(cfg.max_length_s), target_rate=cfg.sample_rate
        )
        if self._frontend is None:
            self._frontend = AudioFrontend(cfg)
        wave = torch.from_numpy(clip.samples)[None]
        with torch.no_grad():
            return self._frontend(wave, torch.tensor([max(1, clip.valid)]))[0]


@torch.no_grad()
def embed_items(
    model: BioVITAModel,
    items: MediaItems,
    *,
    batch_size: int = 64,
    workers: int = 0,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Normalised embeddings (n, D) of every item, in order."""
    model.eval().to(device)
    loader = DataLoader(
        items,
        batch_size=batch_size,
        num_workers=workers,
        worker_init_fn=worker_init if workers else None,
    )
    out = []
    for batch in loader:
        x = batch.to(device)
        e = model.encode_mel(x) if items.modality == "audio" else model.encode_image(x)
        out.append(e.float().cpu())
    return torch.cat(out) if out else torch.zeros((0, model.embed_dim))


def media_items(model: BioVITAModel, index: MediaIndex, modality: str) -> MediaItems:
    """MediaItems with the model's front end and eval image transform."""
    _, eval_tf = model.image_transforms()
    return MediaItems(index, modality, frontend=model.frontend.cfg, image_transform=eval_tf)


# ---- benches ---------------------------------------------------------------------------------


def _read_index(path_parquet: Path, path_csv: Path, modality: str) -> pl.DataFrame:
    """An id index: the Parquet table (with source, record_id) when there, else the CSV."""
    if path_parquet.is_file():
        return pl.read_parquet(path_parquet)
    return read_index_csv(path_csv, modality)


def _published_bench(folder: Path, subset: str) -> OfficialBench:
    """A subset of a published folder's `bench` config (+ bench_ids/<subset>/)."""
    files = split_files(folder, "bench", BENCH_SPLIT[subset])
    if not files:
        raise FileNotFoundError(f"no bench/{BENCH_SPLIT[subset]}-*.parquet under {folder}")
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


def _load_subset(path: Path, layout: ev.Layout) -> OfficialBench:
    """One BENCH folder, with the full index tables (source, record_id) when Parquet exists."""
    bench = ev.load_bench(path, layout)
    if tasks_parquet_path(path).is_file() or not index_parquet_path(path, "audio").is_file():
        return bench
    idx = {
        m: _read_index(index_parquet_path(path, m), index_csv_path(path, m), m)
        for m in ("audio", "image")
    }
    return OfficialBench(bench.tasks, idx["audio"], idx["image"], bench.text_index)


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
        found = {s: (path, s) for s in wanted if split_files(path, "bench", BENCH_SPLIT[s])}
    else:
        found = {s: path / s for s in wanted if (path / s / "ids").is_dir()}
    if not found:
        raise FileNotFoundError(f"{path}: no bench subset {list(wanted)} (need <subset>/ids/)")
    return found  # type: ignore[return-value]


def load_subset(where: Path | tuple[Path, str], layout: ev.Layout = "auto") -> OfficialBench:
    """A subset found by find_benches."""
    if isinstance(where, tuple):
        return _published_bench(*where)
    return _load_subset(where, layout)


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
    return OfficialBench(tasks, bench.audio_index, bench.image_index, bench.text_index)


def embed_bench(
    model: BioVITAModel,
    bench: OfficialBench,
    media: PublishedMedia,
    *,
    batch_size: int = 64,
    workers: int = 0,
    device: str | torch.device = "cpu",
    splits: Sequence[str] = MEDIA_SPLITS,
) -> tuple[ev.BenchEmbeddings, dict[str, np.ndarray]]:
    """Embeddings of every bench item by index id (texts: species, genus, family, common name),
    and the ids of media items not in the dataset (their rows are zeros: see drop_missing).

    The media are looked up in `splits` of the dataset (a subset's own split: BENCH_SPLIT).
    """
    emb, missing = {}, {}
    for modality in ("audio", "image"):
        index, missing[modality] = media.locate(modality, bench.index(modality), splits)
        found = embed_items(
            model,
            media_items(model, index, modality),
            batch_size=batch_size,
            workers=workers,
            device=device,
        )
        full = torch.zeros((bench.index(modality).height, found.shape[1]))
        keep = np.setdiff1d(np.arange(full.shape[0]), missing[modality])
        full[torch.from_numpy(keep)] = found
        emb[modality] = full
    model.to(device)
    text = {k: v.cpu() for k, v in ev.bench_text_embeddings(model, bench).items()}
    return ev.BenchEmbeddings(audio=emb["audio"], image=emb["image"], text=text), missing


@dataclass
class EvalResult:
    """A run's bench report and the files written."""

    report: dict[str, Any]
    files: dict[str, Path]


def evaluate_run(
    run: str | Path,
    bench: str | Path,
    *,
    subset: str = "all",
    ks: Sequence[int] = ev.KS,
    dataset: str | Path | None = None,
    layout: ev.Layout = "auto",
    batch_size: int = 64,
    workers: int = 0,
    device: str = "cpu",
    threads: int | None = None,
    write: bool = True,
) -> EvalResult:
    """Embed a bench's items with a run's model, score it, write RUN/eval.json (+ csv, png)."""
    from biovita_model.model import load_model

    torch.set_num_threads(cpu_threads(1, workers, threads))
    t0 = time.monotonic()
    model = load_model(Path(run), map_location=device).eval()
    subsets = find_benches(bench, subset)
    media = PublishedMedia(dataset if dataset is not None else default_dataset(bench))
    reports, dropped = [], {}
    for name, where in subsets.items():
        b = load_subset(where, layout)
        emb, missing = embed_bench(
            model, b, media, batch_size=batch_size, workers=workers, device=device,
            splits=[BENCH_SPLIT.get(name, "test")] if name in BENCH_SPLIT else MEDIA_SPLITS,
        )  # fmt: skip
        dropped[name] = {m: ids.tolist() for m, ids in missing.items() if ids.size}
        b = drop_missing(b, missing)
        reports.append(ev.evaluate_bench(b, emb, subset=name, ks=ks, device=device))
    report = ev.merge_reports(reports)
    report["meta"] = {
        "run": str(run),
        "bench": str(bench),
        "dataset": str(media.folder),
        "subsets": list(subsets),
        "seconds": round(time.monotonic() - t0, 2),
        "missing_media": dropped,
        "chance_top1": chance(report),
    }
    files: dict[str, Path] = {}
    if write:
        run = Path(run)
        files["json"] = ev.write_report(report, run / "eval.json")
        files["per_class"] = write_per_class(report, run / "eval_per_class.csv")
        files["plot"] = ev.plot_results(report, run / "eval.png")
    return EvalResult(report, files)


def chance(report: dict[str, Any]) -> dict[str, float]:
    """Top-1 of random guessing per task: 1 / number of candidates."""
    return {k: 1.0 / max(1, e["n_candidates"]) for k, e in report["results"].items()}


def write_per_class(report: dict[str, Any], path: Path) -> Path:
    """The per-class breakdown as CSV: subset, level, task, class, top-k..., n_queries."""
    rows = []
    for section, data in (("scientific", report), ("common_name", report.get(ev.COMMON, {}))):
        for key, classes in data.get("per_class", {}).items():
            subset, level, task = key.split("/")
            for cls, e in classes.items():
                rows.append(
                    {"names": section, "subset": subset, "level": level, "task": task,
                     "class": cls, **{k: v for k, v in e.items()}}
                )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_csv(path)
    return path


# ---- embeddings of a dataset's items ---------------------------------------------------------


def split_items(folder: Path, modality: str, split: str) -> tuple[MediaIndex, pl.DataFrame]:
    """A split's MediaIndex and metadata (label, species_id, scientific_name, source, ...)."""
    files = split_files(folder, modality, split)
    if not files:
        return media_index(
            pl.DataFrame({"_file": [], "_group": [], "_row": []}), []
        ), pl.DataFrame()
    rows = _row_positions(files, _META)
    meta = rows.drop("_file", "_group", "_row").with_columns(pl.lit(split).alias("split"))
    return media_index(rows, files), meta


def embed_dataset(
    model: BioVITAModel,
    dataset: str | Path,
    modality: str,
    splits: Sequence[str] = MEDIA_SPLITS,
    *,
    batch_size: int = 64,
    workers: int = 0,
    device: str = "cpu",
) -> pl.DataFrame:
    """One row per item of the splits: metadata + `embedding` (list of float32).

    Text items are the species' prompts (one row per species and template).
    """
    folder = resolve_folder(dataset)
    if modality == "text":
        return _embed_prompts(model, folder, device)
    frames = []
    for split in splits:
        index, meta = split_items(folder, modality, split)
        if not len(index):
            continue
        items = media_items(model, index, modality)
        e = embed_items(model, items, batch_size=batch_size, workers=workers, device=device)
        frames.append(meta.with_columns(_embedding_series(e)))
    if not frames:
        raise FileNotFoundError(f"no {modality} items in splits {list(splits)} of {folder}")
    return pl.concat(frames, how="diagonal_relaxed")


def _embedding_series(e: torch.Tensor) -> pl.Series:
    arr = pa.FixedSizeListArray.from_arrays(pa.array(e.numpy().reshape(-1)), e.shape[1])
    return pl.Series("embedding", pl.from_arrow(arr))


def _embed_prompts(model: BioVITAModel, folder: Path, device: str) -> pl.DataFrame:
    species = read_species(split_files(folder, "species", "train"))
    rows = [
        (label, int(species.species_id[label]), species.scientific_name[label], t, text)
        for label in range(len(species))
        if species.species_id[label] >= 0
        for t, text in enumerate(species.prompts[label])
    ]
    model.eval().to(device)
    e = ev.embed_texts(model, [r[4] for r in rows])
    meta = pl.DataFrame(
        rows,
        schema=["label", "species_id", "scientific_name", "template", "text"],
        orient="row",
    )
    return meta.with_columns(_embedding_series(e.cpu()))


def write_embeddings(df: pl.DataFrame, path: str | Path) -> Path:
    """Write an embed_dataset frame as Parquet (zstd)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.write_parquet(path, compression="zstd")
    return path


def eval_table(report: dict[str, Any], ks: Sequence[int] = ev.KS) -> list[Table]:
    """Rich tables of a report: Top-k (%) per subset, level, k and direction (+ the mean);
    the common-name variant of the species-level text tasks in a second table."""
    from rich import box

    tables = []
    sections = [("scientific names", report)]
    if ev.COMMON in report:
        sections.append(("common names, species-level text tasks", report[ev.COMMON]))
    codes = [t.code for t in TASKS]
    for title, data in sections:
        res = data["results"]
        table = Table(title=f"BioVITA-Bench, {title}: Top-k (%)", box=box.SIMPLE_HEAD)
        for name in ("subset", "level", "k"):
            table.add_column(name, no_wrap=True)
        for code in [*codes, "mean"]:
            table.add_column(code, justify="right", no_wrap=True)
        for subset in (*SUBSETS, "bench"):
            for level in LEVELS:
                if not any(f"{subset}/{level}/{c}" in res for c in codes):
                    continue
                entries = [res.get(f"{subset}/{level}/{c}") for c in codes]
                entries.append(data.get("summary", {}).get(f"{subset}/{level}"))
                for i, k in enumerate(ks):
                    cells = ["-" if e is None else f"{100 * e[f'top{k}']:.0f}" for e in entries]
                    table.add_row(
                        subset if i == 0 else "",
                        level if i == 0 else "",
                        f"top{k}",
                        *cells,
                        end_section=i == len(ks) - 1,
                    )
        tables.append(table)
    return tables
