"""Tower pre-training: tiny image/text towers trained image-text contrastively on the dataset.

BioCLIP 2's weights cannot be had here, so Stage 1 needs image and text towers that already
agree: `pretrain_towers` trains the tiny open_clip towers with ITC on the dataset's photos and
prompts. The result is a run folder (its audio tower untouched) that Stage 1 starts from with
`--init`. It is a stand-in for BioCLIP 2, labelled as such in its config.json (`extra.stand_in`).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console

from biovita_model.training import TrainConfig, TrainResult, train


def pretrain_towers(
    dataset: str,
    out: str,
    *,
    towers: str = "tiny",
    resume: bool = False,
    console: Console | None = None,
    **options: Any,
) -> TrainResult:
    """Train the image and text towers (ITC) on the dataset's train photos; writes the run OUT."""
    cfg = TrainConfig(dataset=dataset, out=out, stage="pretrain", towers=towers, **options)
    return train(cfg, resume=resume, console=console)
