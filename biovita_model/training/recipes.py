"""Measured recipes for the tiny towers, and the whole chain in one call (`train_tiny`).

The chain: `pretrain-towers` (the image/text stand-in for BioCLIP 2) -> Stage 1 -> Stage 2, each
evaluated on the bench when one is given. Presets were measured on the default sample world
(209 species: ~129 seen, 60 unseen; ~1,100 training clips, ~740 training photos) on 2 CPU cores,
with `cache_inputs` (each recording's log-mel computed once, photos decoded once, Stage 2's photo
targets embedded once; a step costs the model's time only: about 0.12 s towers, 0.10 s Stage 1,
0.11 s Stage 2):

- `demo`: for `biovita-data demo`, within 10 minutes of training: towers 40 epochs (~840
  steps), Stage 1 40 (~1,280), Stage 2 50 (~1,600) at lambda 1.0 and lr 3e-3;
- `acceptance`: longer (Stage 1 60, Stage 2 70 epochs): 9.5 minutes of training.

Stage 2 of the tiny presets keeps the text tower frozen (`train_text` False, its prompts embedded
once) where the paper trains it at a small learning rate: at 1e-5 it changed no figure of the tiny
model and cost 45 % of each Stage 2 step. Its ITC term then only trains its own scale.

Figures, timings and what changed: README, "The tiny model on the sample world".

Re-running is idempotent: a finished run with the same options is kept, an interrupted one is
resumed from its last checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from biovita_model.training.checkpoint import latest_checkpoint
from biovita_model.training.config import TrainConfig
from biovita_model.training.loop import SUMMARY_FILE, train

STAGES = ("towers", "stage1", "stage2")
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "acceptance": {
        "towers": {"epochs": 40, "batch_size": 32, "lr": 1e-3, "cache_inputs": True},
        "stage1": {"epochs": 60, "batch_size": 32, "lr": 3e-3, "cache_inputs": True},
        "stage2": {"epochs": 70, "batch_size": 32, "lr": 3e-3, "train_text": False,
                   "lambda_max": 1.0, "lambda_ramp_fraction": 0.25, "cache_inputs": True},
    },
    "demo": {
        "towers": {"epochs": 40, "batch_size": 32, "lr": 1e-3, "cache_inputs": True},
        "stage1": {"epochs": 40, "batch_size": 32, "lr": 3e-3, "cache_inputs": True},
        "stage2": {"epochs": 50, "batch_size": 32, "lr": 3e-3, "train_text": False,
                   "lambda_max": 1.0, "lambda_ramp_fraction": 0.25, "cache_inputs": True},
    },
}  # fmt: skip
STAGE_OF = {"towers": "pretrain", "stage1": "1", "stage2": "2"}


@dataclass
class ChainResult:
    """The runs of a chain, their bench reports (when a bench was given) and timings."""

    runs: dict[str, Path]
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)


def stage_config(
    preset: str, name: str, dataset: str | Path, out: Path, init: Path | None, **overrides: Any
) -> TrainConfig:
    """The TrainConfig of one stage of a preset."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} (known: {sorted(PRESETS)})")
    options = {**PRESETS[preset][name], **overrides}
    return TrainConfig(
        dataset=str(dataset),
        out=str(out),
        stage=STAGE_OF[name],
        init=None if init is None else str(init),
        **options,
    )


def ensure_trained(cfg: TrainConfig, console: Console) -> bool:
    """Train cfg's run unless it is already finished with these options; True if it trained."""
    run = Path(cfg.out)
    summary = run / SUMMARY_FILE
    if summary.is_file():
        done = json.loads(summary.read_text())
        if done.get("config") == cfg.to_dict() and done.get("epochs") == cfg.epochs:
            console.print(f"{run}: finished earlier with the same options, kept")
            return False
    train(cfg, resume=latest_checkpoint(run) is not None, console=console)
    return True


def species_per_stage(dataset: str | Path) -> dict[str, int]:
    """Distinct training species each stage can batch: photos (towers), recordings (Stage 1),
    recordings whose species has a photo (Stage 2); a batch holds one item per species."""
    import pyarrow.parquet as pq

    from biovita_data.loader.index import resolve_folder, split_files

    folder = resolve_folder(dataset)
    labels = {
        config: {
            int(v)
            for f in split_files(folder, config, "train")
            for v in pq.read_table(f, columns=["label"]).column("label").to_pylist()
        }
        for config in ("audio", "image")
    }
    return {
        "towers": len(labels["image"]),
        "stage1": len(labels["audio"]),
        "stage2": len(labels["audio"] & labels["image"]),
    }


def train_tiny(
    dataset: str | Path,
    runs_dir: str | Path,
    *,
    bench: str | Path | None = None,
    preset: str = "demo",
    seed: int = 0,
    workers: int | None = None,
    console: Console | None = None,
    **overrides: Any,
) -> ChainResult:
    """pretrain-towers -> Stage 1 -> Stage 2 with tiny towers into RUNS/{towers,stage1,stage2};
    each stage's run is evaluated on `bench` (RUN/eval.json, eval_per_class.csv, eval.png)."""
    from biovita_model.eval.run import evaluate_run

    console = console or Console(stderr=True)
    runs_dir = Path(runs_dir)
    result = ChainResult(runs={name: runs_dir / name for name in STAGES})
    init: Path | None = None
    species = species_per_stage(dataset)
    for name in STAGES:
        extra = {"seed": seed, **overrides}
        if workers is not None:
            extra["workers"] = workers
        batch = extra.get("batch_size", PRESETS.get(preset, {}).get(name, {}).get("batch_size"))
        if batch and name in species and species[name] < batch:
            extra["batch_size"] = max(2, species[name])
            console.print(
                f"{name}: batch size {batch} -> {extra['batch_size']}, the species of the split"
            )
        cfg = stage_config(preset, name, dataset, result.runs[name], init, **extra)
        t0 = time.monotonic()
        if not ensure_trained(cfg, console):
            result.reused.append(name)
        result.seconds[name] = round(time.monotonic() - t0, 1)
        init = result.runs[name]
        if bench is not None and name != "towers":
            t0 = time.monotonic()
            report = evaluate_run(
                init,
                bench,
                dataset=dataset,
                workers=2,
                threads=None,  # decoding the bench
            )
            result.reports[name] = report.report
            result.seconds[f"eval_{name}"] = round(time.monotonic() - t0, 1)
    return result
