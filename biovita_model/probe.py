"""Trait probes: a linear head per trait on frozen embeddings, F1 against the majority class.

For each modality (audio, image), the run's model embeds the dataset's `train` items (the probe's
training set) and its `test` items (the evaluation set); an item's labels are its species' 34
traits (1, 0, or unknown: left out). One logistic-regression column per trait (class-balanced,
L2, on standardised embeddings) is fitted by L-BFGS; the score is the macro F1 (mean of the F1 of
label 1 and of label 0) on the test items, against the majority label of the training items.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.table import Table

from biovita_data.core.vocab import TRAIT_CATEGORIES, TRAIT_COLUMNS
from biovita_data.loader import cap_per_label, read_species
from biovita_data.loader.index import resolve_folder, split_files
from biovita_model.embed import embed_items, media_items, split_items
from biovita_model.model import BioVITAModel, load_model
from biovita_model.threads import cpu_threads

PROBE_FILE = "probe.json"
METRIC = "macro F1 (mean of the F1 of label 1 and label 0) on test-split items"


def class_f1(y: np.ndarray, pred: np.ndarray, c: int) -> float:
    """F1 of label c (1 when c is absent from both y and pred)."""
    tp = float(np.sum((pred == c) & (y == c)))
    fp = float(np.sum((pred == c) & (y != c)))
    fn = float(np.sum((pred != c) & (y == c)))
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean of the F1 of label 1 and of label 0."""
    return float(np.mean([class_f1(y, pred, 1), class_f1(y, pred, 0)]))


def positive_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """F1 of label 1."""
    return class_f1(y, pred, 1)


def fit_linear(
    x: torch.Tensor, y: torch.Tensor, known: torch.Tensor, *, l2: float = 1e-3, steps: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic regression per column of y (N, T) on x (N, D), class-balanced, masked: (W, b)."""
    n_pos = (y * known).sum(0)
    n_neg = ((1 - y) * known).sum(0)
    n = known.sum(0)
    w_pos = n / (2 * n_pos.clamp(min=1))
    w_neg = n / (2 * n_neg.clamp(min=1))
    weight = known * (y * w_pos + (1 - y) * w_neg) / n.clamp(min=1)
    w = torch.zeros(x.shape[1], y.shape[1], requires_grad=True)
    b = torch.zeros(y.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = x @ w + b
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
        loss = (weight * bce).sum() / y.shape[1] + l2 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def probe_modality(
    train_x: np.ndarray,
    train_labels: np.ndarray,
    test_x: np.ndarray,
    test_labels: np.ndarray,
    traits: np.ndarray,
    *,
    l2: float = 1e-3,
) -> dict[str, Any]:
    """Per trait: the probe's and the majority baseline's F1 on the test items."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    xtr = torch.from_numpy((train_x - mean) / std).float()
    xte = torch.from_numpy((test_x - mean) / std).float()
    ytr = traits[train_labels]
    yte = traits[test_labels]
    known = ~np.isnan(ytr)
    w, b = fit_linear(
        xtr, torch.from_numpy(np.nan_to_num(ytr)).float(), torch.from_numpy(known).float(), l2=l2
    )
    pred = ((xte @ w + b) > 0).numpy().astype(np.int64)
    out: dict[str, Any] = {}
    for j, name in enumerate(TRAIT_COLUMNS):
        k_tr, k_te = ~np.isnan(ytr[:, j]), ~np.isnan(yte[:, j])
        y_tr, y_te = ytr[k_tr, j].astype(np.int64), yte[k_te, j].astype(np.int64)
        if np.unique(y_tr).size < 2 or np.unique(y_te).size < 2:
            out[name] = None  # one label only: nothing to learn or to score
            continue
        majority = int(np.mean(y_tr) >= 0.5)
        base = np.full_like(y_te, majority)
        out[name] = {
            "f1": macro_f1(y_te, pred[k_te, j]),
            "baseline_f1": macro_f1(y_te, base),
            "f1_positive": positive_f1(y_te, pred[k_te, j]),
            "baseline_f1_positive": positive_f1(y_te, base),
            "n_train": int(k_tr.sum()),
            "n_test": int(k_te.sum()),
            "positives_test": int(y_te.sum()),
        }
    return {"traits": out, "categories": categories(out), "mean": _mean(out.values())}


def _mean(entries: Any) -> dict[str, Any]:
    scored = [e for e in entries if e is not None]
    if not scored:
        return {"f1": None, "baseline_f1": None, "n_traits": 0}
    return {
        "f1": float(np.mean([e["f1"] for e in scored])),
        "baseline_f1": float(np.mean([e["baseline_f1"] for e in scored])),
        "n_traits": len(scored),
    }


def categories(traits: dict[str, Any]) -> dict[str, Any]:
    """Mean F1 (probe and baseline) over the scored traits of each category."""
    return {
        cat: _mean(traits[f"trait_{cat}_{label}"] for label in labels)
        for cat, labels in TRAIT_CATEGORIES.items()
    }


def _split_embeddings(
    model: BioVITAModel,
    folder: Path,
    modality: str,
    split: str,
    *,
    max_per_species: int | None,
    seed: int,
    batch_size: int,
    workers: int,
    device: str,
) -> tuple[np.ndarray, np.ndarray]:
    index, _ = split_items(folder, modality, split)
    if not len(index):
        return np.zeros((0, model.embed_dim), np.float32), np.zeros(0, np.int64)
    labels = index.label
    keep = np.arange(labels.size)
    if max_per_species is not None:
        keep = np.sort(cap_per_label(labels, max_per_species, np.random.default_rng(seed)))
    items = media_items(model, index.take(keep), modality)
    e = embed_items(model, items, batch_size=batch_size, workers=workers, device=device)
    return e.numpy(), labels[keep]


def probe_traits(
    run: str | Path,
    dataset: str | Path,
    *,
    modalities: Sequence[str] = ("audio", "image"),
    test_split: str = "test",
    max_per_species: int | None = 50,
    l2: float = 1e-3,
    batch_size: int = 64,
    workers: int = 0,
    device: str = "cpu",
    threads: int | None = None,
    seed: int = 0,
    write: bool = True,
) -> dict[str, Any]:
    """Fit and score the trait probes of a run on a dataset; writes RUN/probe.json."""
    torch.set_num_threads(cpu_threads(1, workers, threads))
    t0 = time.monotonic()
    folder = resolve_folder(dataset)
    model = load_model(Path(run), map_location=device).eval()
    traits = read_species(split_files(folder, "species", "train")).traits
    report: dict[str, Any] = {"metric": METRIC, "modalities": {}}
    for modality in modalities:
        common = {"max_per_species": max_per_species, "seed": seed, "batch_size": batch_size,
                  "workers": workers, "device": device}  # fmt: skip
        xtr, ltr = _split_embeddings(model, folder, modality, "train", **common)
        xte, lte = _split_embeddings(model, folder, modality, test_split, **common)
        if not (len(ltr) and len(lte)):
            continue
        torch.manual_seed(seed)
        result = probe_modality(xtr, ltr, xte, lte, traits, l2=l2)
        result["items"] = {"train": len(ltr), "test": len(lte)}
        report["modalities"][modality] = result
    report["settings"] = {
        "run": str(run),
        "dataset": str(folder),
        "test_split": test_split,
        "max_per_species": max_per_species,
        "l2": l2,
        "seconds": round(time.monotonic() - t0, 2),
    }
    if write:
        path = Path(run) / PROBE_FILE
        path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


def probe_table(report: dict[str, Any]) -> list[Table]:
    """Rich tables: per category, then per trait, the probe's F1 vs the majority baseline."""
    mods = list(report["modalities"])
    cat = Table(title=f"trait probes per category: {METRIC}")
    cat.add_column("category")
    for m in mods:
        cat.add_column(f"{m} probe", justify="right")
        cat.add_column(f"{m} majority", justify="right")
    for name in [*TRAIT_CATEGORIES, "mean"]:
        cells = []
        for m in mods:
            r = report["modalities"][m]
            e = r["mean"] if name == "mean" else r["categories"][name]
            cells += [_f(e["f1"]), _f(e["baseline_f1"])]
        cat.add_row(name, *cells)
    per = Table(title="trait probes per trait (macro F1; * = beats the majority baseline)")
    per.add_column("trait")
    for m in mods:
        per.add_column(f"{m} probe", justify="right")
        per.add_column(f"{m} majority", justify="right")
    for name in TRAIT_COLUMNS:
        cells = []
        for m in mods:
            e = report["modalities"][m]["traits"].get(name)
            if e is None:
                cells += ["-", "-"]
            else:
                star = "*" if e["f1"] > e["baseline_f1"] else ""
                cells += [_f(e["f1"]) + star, _f(e["baseline_f1"])]
        per.add_row(name.removeprefix("trait_"), *cells)
    return [cat, per]


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"
