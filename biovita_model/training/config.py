"""TrainConfig: every option of a training run (a stage or the tower pre-training), JSON-able."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

STAGES = ("pretrain", "1", "2")
PRECISIONS = ("fp32", "bf16", "fp16")
TINY_LR = 1e-3  # from-scratch tiny towers (DESIGN.md "Tiny towers")
PAPER_LR = 1e-4  # fine-tuning pretrained towers (the paper)
CONFIG_FILE = "train_config.json"


@dataclass
class TrainConfig:
    """A training run. `stage`: "pretrain" (image-text, the BioCLIP 2 stand-in), "1" or "2".

    `batch_size` is the global contrastive batch: the negatives of one loss, split evenly over
    the ranks (one item per species: no false negatives). With `grad_accum` K, one optimizer step
    takes K such batches (each its own loss), so a step sees K x batch_size items.
    """

    dataset: str
    out: str
    stage: str = "1"
    init: str | None = None  # a run folder (config.json + model.pt) to start from
    towers: str = "tiny"  # tower spec when there is no init: tiny | local-dir:PATH
    epochs: int = 10
    batch_size: int = 64
    lr: float | None = None  # None: 1e-3 for tiny towers, 1e-4 otherwise
    text_lr: float | None = None  # stage 2 text tower; None: lr / 10
    weight_decay: float = 0.05
    warmup: float = 0.05  # warm-up: a fraction of the steps (< 1) or a number of steps (>= 1)
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    lambda_max: float = 0.1  # stage 2: ATC + lambda (AIC + ITC), lambda 0 -> lambda_max
    lambda_ramp: float = 1.0  # the ramp's length, a fraction of the steps (or steps, >= 1)
    train_text: bool = True  # stage 2: train the text tower (at text_lr); image stays frozen
    max_audio_per_species: int | None = None  # per epoch (images, in pre-training)
    workers: int = 0  # DataLoader worker processes per rank
    threads: int | None = None  # torch CPU threads per rank; None: cores / (ranks x (1 + workers))
    device: str = "cpu"
    precision: str = "fp32"
    grad_accum: int = 1
    grad_clip: float | None = None  # clip the global gradient norm (None: no clipping)
    seed: int = 0
    augment: bool = True  # mel gain + time mask, image shifts / brightness / noise
    dropout: float | None = None  # override the audio tower's dropout (None: the tower's own)
    keep_checkpoints: int = 2  # training-state checkpoints kept (the newest)
    stop_after: int | None = None  # end this session after so many epochs (resume later)
    log_every: int = 1  # metrics.jsonl lines: every step by default
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stage = str(self.stage)
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, not {self.stage!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        for name in ("epochs", "batch_size", "grad_accum", "keep_checkpoints", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2 (a contrastive batch)")
        if self.max_audio_per_species is not None and self.max_audio_per_species < 1:
            raise ValueError("max_audio_per_species must be at least 1")
        if self.workers < 0:
            raise ValueError("workers must be >= 0")
        if self.dataset is None or self.out is None:
            raise ValueError("dataset and out are required")
        self.dataset, self.out = str(self.dataset), str(self.out)
        if self.init is not None:
            self.init = str(self.init)

    @property
    def base_lr(self) -> float:
        """The learning rate in use (the tower-dependent default when lr is None)."""
        if self.lr is not None:
            return float(self.lr)
        return TINY_LR if self.towers == "tiny" else PAPER_LR

    @property
    def text_base_lr(self) -> float:
        """Stage 2's text tower learning rate."""
        return float(self.text_lr) if self.text_lr is not None else self.base_lr / 10

    def to_dict(self) -> dict[str, Any]:
        """As a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """From to_dict's output; unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown training options: {sorted(unknown)}")
        return cls(**d)

    def write(self, run_dir: Path) -> Path:
        """RUN/train_config.json."""
        path = Path(run_dir) / CONFIG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def read(cls, run_dir: Path) -> TrainConfig:
        """RUN/train_config.json back."""
        return cls.from_dict(json.loads((Path(run_dir) / CONFIG_FILE).read_text()))


def steps_of(value: float, total: int) -> int:
    """A length given as a fraction of total (< 1) or as a count (>= 1), in steps."""
    if value < 0:
        raise ValueError("a schedule length cannot be negative")
    return round(value * total) if value < 1 else int(value)
