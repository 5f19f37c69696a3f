"""The training loop of every stage: tower pre-training (image-text), Stage 1 (ATC), Stage 2.

`train(TrainConfig(...))` runs as is on one CPU/GPU and under `torchrun --nproc_per_node N`
(DDP; only rank 0 writes). See TrainConfig for the options and docs/design.md ("Model") for the
stages: Stage 1 trains the audio tower + adapter against frozen image and text towers (ATC);
Stage 2 adds lambda (AIC + ITC) with lambda ramped 0 -> lambda_max, the image tower frozen and
the text tower at a small learning rate; `pretrain` trains the image and text towers alone
(ITC), the stand-in for BioCLIP 2 when its weights are not at hand.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from biovita_data.loader import BioVITADataset
from biovita_model.losses import LOSS_PARTS, itc_loss, lambda_ramp, stage1_loss, stage2_loss
from biovita_model.model import (
    PAIRS,
    BioVITAModel,
    create_model,
    load_model,
    part_of_key,
    save_model,
)
from biovita_model.threads import cpu_threads
from biovita_model.training import checkpoint as ck
from biovita_model.training.batches import SpeciesBatchSampler
from biovita_model.training.config import TrainConfig, resolve_init, steps_of
from biovita_model.training.data import AudioItems, ImageTextItems, SpeciesImages, make_loader
from biovita_model.training.distributed import (
    DistInfo,
    barrier,
    convert_batch_norm,
    mean_over_ranks,
    setup,
    teardown,
)
from biovita_model.training.frozen_images import FrozenImages
from biovita_model.training.mel_cache import MelCache
from biovita_model.training.prompt_cache import FrozenText
from biovita_model.training.report import StageProgress, print_summary
from biovita_model.training.schedule import warmup_cosine

STAND_IN = (
    "tiny image/text towers trained image-text contrastively on this dataset: a stand-in for "
    "BioCLIP 2 (whose weights are not available here), not BioCLIP 2"
)
SUMMARY_FILE = "train_summary.json"
_NO_DECAY = ("bn", "ln", "bias", "logit_scale", "norm")
# the loss pairs each stage uses (their learnable scales train; the others stay frozen)
STAGE_PAIRS = {"pretrain": ("image_text",), "1": ("audio_text",), "2": PAIRS}


@dataclass
class TrainResult:
    """What a run did: where, how many epochs and steps, the mean loss per epoch, the time."""

    run_dir: Path
    stage: str
    epochs: int
    steps: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None


# ---- model ----------------------------------------------------------------------------------


def initial_model(cfg: TrainConfig) -> BioVITAModel:
    """The model a run starts from: --init (a run or checkpoint), else fresh --towers (and
    --audio-tower). Stage 1 leaves out an image tower that comes from a file: it never uses it."""
    skip_image = cfg.stage == "1"
    if cfg.init is None:
        spec = cfg.start_towers
        model = create_model(
            spec,
            audio_tower=cfg.audio_tower,
            audio=cfg.audio_config,
            skip_image=skip_image and spec != "tiny",
        )
    else:
        run, ckpt = resolve_init(cfg.init)
        model = load_model(run, skip_image=skip_image)
        if ckpt is not None:
            load_trained_state(model, ck.load_checkpoint(ckpt)["model"], ckpt)
    if cfg.short_clip is not None:
        model.set_short_clip(cfg.short_clip)
    return model


def trained_state(model: BioVITAModel) -> dict[str, torch.Tensor]:
    """The state of the parts a stage trains (adapter and scales included): what resume needs;
    the frozen towers are rebuilt from the run's start."""
    return {
        k: v.detach().cpu()
        for k, v in model.state_dict().items()
        if part_of_key(k) is None or part_of_key(k) not in model.frozen
    }


def load_trained_state(model: BioVITAModel, state: dict[str, torch.Tensor], where: Path) -> None:
    """trained_state's output (or a whole state dict) into the model."""
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if part_of_key(k) not in model.frozen]
    if missing or result.unexpected_keys:
        unexpected = [k for k in result.unexpected_keys if not k.startswith("clip.visual.")]
        if missing or unexpected:
            raise ValueError(
                f"{where}: the checkpoint does not fit the model: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )


def set_grad_checkpointing(model: BioVITAModel, enable: bool = True) -> None:
    """Recompute activations in backward: open_clip's towers and the HTS-AT stages."""
    model.clip.set_grad_checkpointing(enable)
    audio = model.audio
    # transformers >= 5 names it activation checkpointing; 4.x gradient checkpointing
    new = hasattr(audio, "activation_checkpointing_enable")
    if enable:
        # CLAP's audio model declares no support, but its stages are checkpointing layers
        audio.supports_gradient_checkpointing = True
        if new:
            audio.activation_checkpointing_enable({"use_reentrant": False})
        else:
            audio.gradient_checkpointing_enable({"use_reentrant": False})
    elif new:
        audio.activation_checkpointing_disable()
    else:
        audio.gradient_checkpointing_disable()


def configure_stage(model: BioVITAModel, cfg: TrainConfig) -> None:
    """Freeze per stage (and the scales of unused pairs); apply the dropout override."""
    if cfg.stage == "pretrain":
        model.freeze(image=False, text=False, audio=True)
    elif cfg.stage == "1":
        model.freeze(image=True, text=True, audio=False)
    else:
        model.freeze(image=True, text=not cfg.train_text, audio=False)
    for pair in PAIRS:
        model.log_logit_scales[pair].requires_grad_(pair in STAGE_PAIRS[cfg.stage])
    model.forget_trained_references()
    if cfg.grad_checkpointing:
        set_grad_checkpointing(model)
    if cfg.dropout is not None:
        for m in model.audio.modules():
            if isinstance(m, nn.Dropout):
                m.p = float(cfg.dropout)


def param_groups(model: BioVITAModel, cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices only; stage 2's text tower at text_lr."""
    text_ids = {id(p) for p in model.part_parameters("text")} if cfg.stage == "2" else set()
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim >= 2 and not any(k in name for k in _NO_DECAY)
        groups.setdefault((id(p) in text_ids, decay), []).append(p)
    out = []
    for (is_text, decay), params in sorted(groups.items()):
        lr = cfg.text_base_lr if is_text else cfg.base_lr
        wd = cfg.weight_decay if decay else 0.0
        name = f"{'text' if is_text else 'main'}{'' if decay else '_no_decay'}"
        out.append({"params": params, "lr": lr, "weight_decay": wd, "name": name})
    return out


# ---- data -----------------------------------------------------------------------------------


def build_data(
    cfg: TrainConfig, model: BioVITAModel, info: DistInfo, console: Console | None = None
) -> tuple[Any, Any]:
    """(dataset, batch sampler) of a stage's training split."""
    train_tf, eval_tf = model.image_transforms()
    image_tf = train_tf if cfg.augment else eval_tf
    cache = cfg.cache_inputs
    if cfg.stage == "pretrain":
        ds: Any = ImageTextItems(
            cfg.dataset, "train", image_transform=image_tf, seed=cfg.seed, cache=cache
        )
    else:
        fe = model.frontend.cfg
        base = BioVITADataset.from_pretrained(
            cfg.dataset,
            split="train",
            seed=cfg.seed,
            with_image=False,
            sample_rate=fe.sample_rate,
            clip_seconds=float(fe.max_length_s),
        )
        images = None
        if cfg.stage == "2":  # the frozen image tower's photos are targets: not augmented
            # (with cache_inputs FrozenImages embeds each photo once: no decoded copies kept)
            images = SpeciesImages(base.folder, "train", eval_tf)
        mels = MelCache(base, fe, console=console, write=info.is_main) if cache else None
        if mels is not None and info.is_main and console is not None:
            state = "computed" if mels.computed else "read"
            console.print(
                f"mel cache: {len(base)} recordings, {mels.nbytes / 2**20:.1f} MiB, {state} "
                f"({mels.path})"
            )
        ds = AudioItems(
            base,
            fe,
            images=images,
            mels=mels,
            augment=cfg.augment,
            seed=cfg.seed,
            photo_rows=images is not None and cache,  # FrozenImages looks their embeddings up
        )
    sampler = SpeciesBatchSampler(
        ds.labels,
        cfg.batch_size,
        max_per_species=cfg.max_audio_per_species,
        seed=cfg.seed,
        rank=info.rank,
        world=info.world,
        multiple_of=cfg.grad_accum,
        eligible=ds.eligible(),
    )
    return ds, sampler


# ---- one step -------------------------------------------------------------------------------


@dataclass
class Frozen:
    """Targets of frozen towers embedded once: prompts (`FrozenText`), photos (`FrozenImages`)."""

    text: FrozenText | None = None
    images: FrozenImages | None = None


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def forward_loss(
    module: nn.Module,
    model: BioVITAModel,
    batch: dict[str, Any],
    stage: str,
    lam: float,
    device: torch.device,
    precision: str,
    frozen: Frozen | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The stage's loss on one (local) batch and its detached parts."""
    frozen = frozen or Frozen()
    inputs: dict[str, torch.Tensor] = {}
    if frozen.text is None:
        inputs["text"] = model.tokenize(batch["text"]).to(device)
    if stage != "pretrain":
        inputs["audio"] = batch["mel"].to(device, non_blocking=True)
    if stage != "1" and frozen.images is None:
        inputs["image"] = batch["image"].to(device, non_blocking=True)
    with _autocast(device, precision):
        out = module(**inputs)
    out = {k: v.float() for k, v in out.items()}
    if frozen.text is not None:
        out["text"] = frozen.text(batch["text"])
    if frozen.images is not None:
        out["image"] = frozen.images(batch["image_row"])
    if stage == "pretrain":
        loss = itc_loss(out["image"], out["text"], out["scale_image_text"])
        return loss, {"itc": loss.detach()}
    if stage == "1":
        loss = stage1_loss(out)
        return loss, {"atc": loss.detach()}
    return stage2_loss(out, lam)


# ---- the run --------------------------------------------------------------------------------


def _progress(enabled: bool, console: Console) -> Progress:
    return StageProgress(enabled, console)  # one bar per stage (training/report.py)


def _check_resume(cfg: TrainConfig, run_dir: Path) -> None:
    """A resumed run must keep the options that decide its numbers."""
    stored = TrainConfig.read(run_dir).to_dict()
    free = {"workers", "threads", "progress", "device", "keep_checkpoints", "stop_after", "out"}
    free |= {"dataset", "log_every", "grad_checkpointing"}
    diff = {
        k: (stored.get(k), v)
        for k, v in cfg.to_dict().items()
        if k not in free and stored.get(k) != v
    }
    if diff:
        raise ValueError(
            f"--resume with other options than the run's (stored, given): {diff}; "
            "a run continues exactly as it started"
        )


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _gather_rng(info: DistInfo) -> list[dict[str, Any]]:
    state = ck.rng_state()
    if info.world == 1:
        return [state]
    from torch import distributed as dist

    states: list[Any] = [None] * info.world
    dist.all_gather_object(states, state)
    return states


def train(cfg: TrainConfig, *, resume: bool = False, console: Console | None = None) -> TrainResult:
    """Run one training stage to cfg.epochs epochs (continuing the run's checkpoints on resume)."""
    info = setup(cfg.device)
    torch.set_num_threads(cpu_threads(info.world, cfg.workers, cfg.threads))
    try:
        return _train(cfg, resume, info, console or Console(stderr=True))
    finally:
        teardown()


def _train(cfg: TrainConfig, resume: bool, info: DistInfo, console: Console) -> TrainResult:
    run_dir = Path(cfg.out)
    latest = ck.latest_checkpoint(run_dir)
    if resume:
        if latest is None:
            raise FileNotFoundError(f"{run_dir}: no checkpoint to resume from")
        _check_resume(cfg, run_dir)
    elif latest is not None:
        raise FileExistsError(f"{run_dir} already holds a run: pass --resume, or another --out")
    cfg.check_towers()
    _seed_all(cfg.seed)
    model = initial_model(cfg)
    configure_stage(model, cfg)
    if info.world > 1:
        convert_batch_norm(model)
    model.to(info.device)
    dataset, sampler = build_data(cfg, model, info, console)
    loader = make_loader(
        dataset, sampler, cfg.workers, pin_memory=info.device.type == "cuda", seed=cfg.seed
    )
    steps_per_epoch = len(sampler.global_batches(0)) // cfg.grad_accum
    if steps_per_epoch == 0:
        raise ValueError(
            f"an epoch of {len(dataset)} items gives no full batch of {cfg.batch_size} x "
            f"{cfg.grad_accum}: lower --batch-size or --grad-accum"
        )
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    optimizer = torch.optim.AdamW(param_groups(model, cfg), betas=(0.9, 0.98), eps=1e-6)
    scheduler = warmup_cosine(optimizer, steps_of(cfg.warmup, total), total, cfg.min_lr_ratio)
    scaler = torch.amp.GradScaler(info.device.type, enabled=cfg.precision == "fp16")
    ramp = cfg.lambda_ramp_length(total)
    log = ck.MetricsLog(run_dir, enabled=info.is_main)
    start_epoch, step, history, resumed_from = 0, 0, [], None
    if resume and latest is not None:
        state = ck.load_checkpoint(latest)
        load_trained_state(model, state["model"], latest)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, step, history = int(state["epoch"]), int(state["step"]), state["history"]
        rngs = state["rng"]
        ck.set_rng_state(rngs[info.rank] if len(rngs) == info.world else rngs[0])
        resumed_from = start_epoch
        log.truncate_after(step)
    elif info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.write(run_dir)
        log.reset()
    barrier()
    module: nn.Module = model
    if info.world > 1:
        ids = [info.device.index] if info.device.type == "cuda" else None
        module = DistributedDataParallel(model, device_ids=ids)
    frozen = Frozen()
    if "text" in model.frozen:  # Stage 1 (and 2 without --train-text): embed the prompts once
        frozen.text = FrozenText(
            model, dataset.base.species.prompts, info.device, write=info.is_main
        )
    if getattr(dataset, "photo_rows", False):  # Stage 2 with cache_inputs: embed the photos once
        frozen.images = FrozenImages(
            model, dataset.images, info.device, autocast=_autocast(info.device, cfg.precision)
        )
    trainable = [p for p in model.parameters() if p.requires_grad]
    if info.is_main:
        n_train = sum(p.numel() for p in trainable)
        console.print(
            f"[bold]stage {cfg.stage}[/bold] -> {run_dir}: {len(dataset)} items, "
            f"{steps_per_epoch} steps/epoch x {cfg.epochs} epochs, global batch {cfg.batch_size}"
            f" x accum {cfg.grad_accum} on {info.world} x {info.device}, "
            f"{n_train:,} trainable parameters, lr {cfg.base_lr:g} (towers {cfg.start_towers})"
            + (f", {total} steps (--max-steps)" if total < steps_per_epoch * cfg.epochs else "")
        )
        if frozen.text is not None:
            console.print(
                f"prompt embeddings: {len(frozen.text.row) - frozen.text.computed} cached, "
                f"{frozen.text.computed} embedded ({frozen.text.path})"
            )
        if frozen.images is not None:
            console.print(f"photo embeddings: {len(frozen.images)} embedded once (frozen tower)")
        if cfg.stage == "pretrain":
            console.print(f"[yellow]note[/yellow]: {STAND_IN}")
    end_epoch = cfg.epochs if cfg.stop_after is None else start_epoch + cfg.stop_after
    end_epoch = min(cfg.epochs, end_epoch, math.ceil(total / steps_per_epoch))
    t_run = time.monotonic()
    with _progress(info.is_main and cfg.progress, console) as progress:
        for epoch in range(start_epoch, end_epoch):
            sampler.set_epoch(epoch)
            model.train()
            task = progress.add_task(
                f"epoch {epoch + 1}/{cfg.epochs}", total=steps_per_epoch, loss=0.0
            )
            t_epoch, losses, parts = time.monotonic(), [], []
            for records in _epoch_steps(
                module, model, loader, optimizer, scheduler, scaler, cfg, info, step, ramp,
                steps_per_epoch, frozen,
            ):  # fmt: skip
                step += 1
                records.update(step=step, epoch=epoch, seconds=round(time.monotonic() - t_run, 3))
                losses.append(records["loss"])
                parts.append({k: records[k] for k in (*LOSS_PARTS, "lambda") if k in records})
                if step % cfg.log_every == 0:
                    log.write(records)
                progress.update(task, advance=1, loss=records["loss"])
                if step >= total:  # --max-steps
                    break
            seconds = time.monotonic() - t_epoch
            history.append(
                {
                    "epoch": epoch + 1,
                    "step": step,
                    "loss": float(np.mean(losses)) if losses else math.nan,
                    "seconds": round(seconds, 2),
                    "items_per_s": round(len(losses) * cfg.batch_size * cfg.grad_accum / seconds, 1)
                    if seconds > 0
                    else 0.0,
                    **epoch_parts(parts),
                }
            )
            _save(model, optimizer, scheduler, scaler, cfg, info, epoch + 1, step, history)
    log.close()
    result = TrainResult(
        run_dir, cfg.stage, end_epoch, step, time.monotonic() - t_run, history, resumed_from
    )
    if info.is_main:
        (run_dir / SUMMARY_FILE).write_text(json.dumps(_summary(result, cfg), indent=2) + "\n")
        print_summary(console, result, summary_table(result, cfg))
    barrier()
    return result


def epoch_parts(steps: list[dict[str, float]]) -> dict[str, float]:
    """An epoch's mean of each loss part over its steps, and stage 2's weight at its last step."""
    out = {k: float(np.mean([r[k] for r in steps])) for k in LOSS_PARTS if steps and k in steps[0]}
    if steps and "lambda" in steps[-1]:
        out["lambda"] = float(steps[-1]["lambda"])
    return out


def _epoch_steps(
    module: nn.Module,
    model: BioVITAModel,
    loader: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    cfg: TrainConfig,
    info: DistInfo,
    step: int,
    ramp: int,
    steps_per_epoch: int,
    frozen: Frozen | None = None,
) -> Iterator[dict[str, Any]]:
    """Run one epoch's optimizer steps; yield each step's metrics (global means)."""
    k = cfg.grad_accum
    parts_sum: dict[str, float] = {}
    loss_sum = 0.0
    micro = done = 0
    optimizer.zero_grad(set_to_none=True)
    for batch in loader:
        if done == steps_per_epoch:  # a later epoch may draw a batch more than the first
            break
        lam = lambda_ramp(step, ramp, cfg.lambda_max) if cfg.stage == "2" else 0.0
        last = micro == k - 1
        sync = contextlib.nullcontext() if last or info.world == 1 else module.no_sync()
        with sync:
            loss, parts = forward_loss(
                module, model, batch, cfg.stage, lam, info.device, cfg.precision, frozen
            )
            scaler.scale(loss / k).backward()
        loss_sum += float(mean_over_ranks(loss.detach()))
        for name, v in parts.items():
            parts_sum[name] = parts_sum.get(name, 0.0) + float(mean_over_ranks(v))
        micro += 1
        if not last:
            continue
        if cfg.grad_clip is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(
                [p for p in model.parameters() if p.requires_grad], cfg.grad_clip
            )
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        lr = optimizer.param_groups[0]["lr"]
        with warnings.catch_warnings():  # fp16: a step the grad scaler skipped is no error
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler")
            scheduler.step()
        step += 1
        done += 1
        record: dict[str, Any] = {"loss": loss_sum / k, "lr": lr}
        record.update({name: v / k for name, v in parts_sum.items()})
        if cfg.stage == "2":
            record["lambda"] = lam
        scales = model.logit_scales()
        for pair in STAGE_PAIRS[cfg.stage]:
            record[f"scale_{pair}"] = round(float(scales[pair].detach()), 4)
        yield record
        parts_sum, loss_sum, micro = {}, 0.0, 0


def _save(
    model: BioVITAModel,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    cfg: TrainConfig,
    info: DistInfo,
    epoch: int,
    step: int,
    history: list[dict[str, Any]],
) -> None:
    """Rank 0 writes RUN/model.pt + config.json and the epoch's training-state checkpoint."""
    rngs = _gather_rng(info)
    if info.is_main:
        extra = {
            "stage": cfg.stage,
            "epoch": epoch,
            "step": step,
            "dataset": cfg.dataset,
            "train_config": cfg.to_dict(),
        }
        if cfg.stage == "pretrain":
            extra["stand_in"] = STAND_IN
        save_model(model, Path(cfg.out), extra=extra)
        state = {
            "epoch": epoch,
            "step": step,
            "history": history,
            "model": trained_state(model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rngs,
            "config": cfg.to_dict(),
        }
        ck.save_checkpoint(Path(cfg.out), epoch, state, keep=cfg.keep_checkpoints)
    barrier()


def _summary(result: TrainResult, cfg: TrainConfig) -> dict[str, Any]:
    return {
        "stage": result.stage,
        "epochs": result.epochs,
        "steps": result.steps,
        "seconds": round(result.seconds, 2),
        "resumed_from": result.resumed_from,
        "history": result.history,
        "config": cfg.to_dict(),
    }


def summary_table(result: TrainResult, cfg: TrainConfig) -> Table:
    """Per epoch: steps, mean loss (and its parts in stage 2, with λ), items/s, seconds."""
    table = Table(title=f"stage {result.stage} -> {result.run_dir}")
    first = result.history[0] if result.history else {}
    extra = [k for k in (*LOSS_PARTS, "lambda") if "lambda" in first and k in first]
    for col in ("epoch", "step", "mean loss", *extra, "items/s", "seconds"):
        table.add_column(col.upper() if col in LOSS_PARTS else col, justify="right")
    for h in result.history:
        table.add_row(
            str(h["epoch"]),
            str(h["step"]),
            f"{h['loss']:.4f}",
            *(f"{h[k]:.4f}" if k in h else "" for k in extra),
            f"{h['items_per_s']:.1f}",
            f"{h['seconds']:.1f}",
        )
    return table
