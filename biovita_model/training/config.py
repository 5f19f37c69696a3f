"""TrainConfig: every option of a training run (a stage or the tower pre-training), JSON-able."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from biovita_data.loader.audio import SHORT_CLIPS

STAGES = ("pretrain", "1", "2")
PRECISIONS = ("fp32", "bf16", "fp16")
TINY_LR = 1e-3  # from-scratch tiny towers (docs/design.md, "Tiny towers")
PAPER_LR = 1e-4  # fine-tuning pretrained towers (the paper)
CONFIG_FILE = "train_config.json"
MODEL_CONFIG_FILE = "config.json"  # a run's model config (biovita_model.model.CONFIG_FILE)


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
    init: str | None = None  # a run folder (config.json + model.pt) or checkpoint to start from
    towers: str | None = None  # without init: tiny (default), local-dir:PATH, hf-hub:ORG/NAME[@REV]
    audio_tower: str | None = None  # without init: a CLAP model, ORG/NAME[@REV] or local-dir:PATH
    audio_config: str | None = None  # configs/ HTS-AT config of the front end (htsat-unfused)
    # how the front end fills clips under 10 s: pad (silence, the official extractor), repeat or
    # repeatpad; None: the towers' config (tiny: repeat; htsat-unfused: repeatpad) or the init run's
    short_clip: str | None = None
    epochs: int = 10
    batch_size: int = 64
    lr: float | None = None  # None: 1e-3 for tiny towers, 1e-4 otherwise (the towers of init)
    text_lr: float | None = None  # stage 2 text tower; None: lr / 10
    weight_decay: float = 0.05
    warmup: float = 0.05  # warm-up: a fraction of the steps (< 1) or a number of steps (>= 1)
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    lambda_max: float = 0.1  # stage 2: ATC + lambda (AIC + ITC), lambda 0 -> lambda_max
    # stage 2's linear ramp of lambda: 0 at the first step, lambda_max after this fraction of the
    # stage's steps (None and no lambda_ramp_steps: 1.0, the whole stage: lambda_max at its last
    # step), or after so many optimizer steps
    lambda_ramp_fraction: float | None = None
    lambda_ramp_steps: int | None = None
    max_steps: int | None = None  # stop after so many optimizer steps (the schedules end there)
    grad_checkpointing: bool = False  # recompute the trained towers' activations in backward
    train_text: bool = True  # stage 2: train the text tower (at text_lr); image stays frozen
    max_audio_per_species: int | None = None  # per epoch (images, in pre-training)
    workers: int = 0  # DataLoader worker processes per rank
    # keep every recording's log-mel (computed once, on disk: training/mel_cache.py) and every
    # decoded photo in memory: items cost microseconds instead of ~30 ms (small datasets); Stage 2
    # embeds its photo targets once (training/frozen_images.py)
    cache_inputs: bool = False
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
    _init_towers: str | None = field(default=None, init=False, repr=False, compare=False)

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
            for name in ("audio_tower", "audio_config"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{name} and init exclude each other: the towers come from the init run"
                    )
        if self.short_clip is not None and self.short_clip not in SHORT_CLIPS:
            raise ValueError(f"short_clip must be one of {SHORT_CLIPS}, not {self.short_clip!r}")
        if self.lambda_ramp_fraction is not None and self.lambda_ramp_steps is not None:
            raise ValueError("give the lambda ramp as a fraction or in steps, not both")
        if self.lambda_ramp_fraction is not None and not 0 <= self.lambda_ramp_fraction <= 1:
            raise ValueError("lambda_ramp_fraction must be within [0, 1]")
        for name, least in (("lambda_ramp_steps", 0), ("max_steps", 1)):
            value = getattr(self, name)
            if value is not None and int(value) < least:
                raise ValueError(f"{name} must be at least {least}")

    @property
    def start_towers(self) -> str:
        """The tower spec the run starts from: --towers, or the --init run's (read once)."""
        if self.init is None:
            return self.towers or "tiny"
        if self._init_towers is None:
            run, _ = resolve_init(self.init)
            doc = json.loads((run / MODEL_CONFIG_FILE).read_text())
            self._init_towers = str(doc["towers"])
        return self._init_towers

    def check_towers(self) -> None:
        """--towers with --init must name the init run's towers (they come from the run)."""
        if self.init is not None and self.towers is not None and self.towers != self.start_towers:
            raise ValueError(
                f"--towers {self.towers} and --init {self.init} disagree: the towers come from "
                f"the init run ({self.start_towers}); drop --towers"
            )

    def lambda_ramp_length(self, total_steps: int) -> int:
        """The step (0-based) at which lambda reaches lambda_max, in a stage of total_steps:
        lambda_ramp_steps, or the fraction of the stage (1.0: its last step)."""
        if self.lambda_ramp_steps is not None:
            return int(self.lambda_ramp_steps)
        fraction = 1.0 if self.lambda_ramp_fraction is None else self.lambda_ramp_fraction
        return round(fraction * max(0, total_steps - 1))

    @property
    def base_lr(self) -> float:
        """The learning rate in use (the tower-dependent default when lr is None)."""
        if self.lr is not None:
            return float(self.lr)
        return TINY_LR if self.start_towers == "tiny" else PAPER_LR

    @property
    def text_base_lr(self) -> float:
        """Stage 2's text tower learning rate."""
        return float(self.text_lr) if self.text_lr is not None else self.base_lr / 10

    def to_dict(self) -> dict[str, Any]:
        """As a JSON-ready dict."""
        d = asdict(self)
        d.pop("_init_towers")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """From to_dict's output; unknown keys are refused."""
        d = dict(d)
        if "lambda_ramp" in d:  # before the two explicit options: < 1 a fraction, else steps
            old = float(d.pop("lambda_ramp"))
            if old < 1:
                d["lambda_ramp_fraction"] = old
            else:
                d["lambda_ramp_steps"] = int(old)
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


def resolve_init(path: str | Path) -> tuple[Path, Path | None]:
    """(run folder, checkpoint file or None) of an --init value: a run or a checkpoint file."""
    p = Path(path)
    if p.is_file():
        return p.parent.parent, p
    if (p / MODEL_CONFIG_FILE).is_file():
        return p, None
    raise FileNotFoundError(f"{p}: neither a run folder (config.json + model.pt) nor a checkpoint")
