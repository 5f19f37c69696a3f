"""A run's BioVITA-Bench evaluation: embed each subset's items, score, write RUN/eval.json.

Media come from a published dataset folder (OUT/hf, OUT, or a Hub snapshot), looked up in the
subset's split (seen: `test`, unseen: `unseen`). Items the media stage dropped after the bench was
built are left out of the scoring (`drop_missing`) and listed in the report's
`meta.missing_media`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from biovita_data.core.layout import BENCH_SPLIT_OF_SUBSET, MEDIA_SPLITS
from biovita_data.curate.bench.csv_layout import OfficialBench
from biovita_model.embed import embed_items, embed_texts, media_items
from biovita_model.eval import scoring as ev
from biovita_model.eval.media import PublishedMedia
from biovita_model.eval.plot import plot_results
from biovita_model.eval.subsets import (
    Layout,
    default_dataset,
    drop_missing,
    find_benches,
    load_subset,
)
from biovita_model.model import BioVITAModel, load_model
from biovita_model.threads import cpu_threads


def text_strings(text_index: pl.DataFrame, column: str) -> list[str]:
    """The text of every text item (by id) for one column; common names fall back to species."""
    if column not in ev.TEXT_COLUMNS:
        raise ValueError(f"column must be one of {ev.TEXT_COLUMNS}, not {column!r}")
    col = pl.col(column)
    if column == ev.COMMON:
        col = pl.coalesce(pl.col(ev.COMMON), pl.col("species"))
    return text_index.sort("id").select(col.fill_null(""))[:, 0].to_list()


def bench_text_embeddings(
    model: Any, bench: OfficialBench, *, common_name: bool = True, batch_size: int = 256
) -> dict[str, torch.Tensor]:
    """Embeddings of the text index per column (species, genus, family[, common_name])."""
    cols = ev.TEXT_COLUMNS if common_name else ev.TEXT_COLUMNS[:3]
    return {c: embed_texts(model, text_strings(bench.text_index, c), batch_size) for c in cols}


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

    The media are looked up in `splits` of the dataset (a subset's own split).
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
    text = {k: v.cpu() for k, v in bench_text_embeddings(model, bench).items()}
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
    layout: Layout = "auto",
    batch_size: int = 64,
    workers: int = 0,
    device: str = "cpu",
    threads: int | None = None,
    short_clip: str | None = None,
    write: bool = True,
) -> EvalResult:
    """Embed a bench's items with a run's model, score it, write RUN/eval.json (+ csv, png).

    `short_clip` overrides how the run's front end fills clips under 10 s (default: the run's,
    in its config.json); eval.json's `meta.short_clip` says which rule produced the numbers.
    """
    torch.set_num_threads(cpu_threads(1, workers, threads))
    t0 = time.monotonic()
    model = load_model(Path(run), map_location=device).eval()
    if short_clip is not None:
        model.set_short_clip(short_clip)
    subsets = find_benches(bench, subset)
    media = PublishedMedia(dataset if dataset is not None else default_dataset(bench))
    reports, dropped = [], {}
    for name, where in subsets.items():
        b = load_subset(where, layout)
        split = BENCH_SPLIT_OF_SUBSET.get(name)
        emb, missing = embed_bench(
            model, b, media, batch_size=batch_size, workers=workers, device=device,
            splits=[split] if split else MEDIA_SPLITS,
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
        "short_clip": model.short_clip,
        "seconds": round(time.monotonic() - t0, 2),
        "missing_media": dropped,
        "chance_top1": chance(report),
    }
    files: dict[str, Path] = {}
    if write:
        run = Path(run)
        files["json"] = ev.write_report(report, run / "eval.json")
        files["per_class"] = write_per_class(report, run / "eval_per_class.csv")
        files["plot"] = plot_results(report, run / "eval.png")
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
    pl.DataFrame(rows, infer_schema_length=None).write_csv(path)
    return path
