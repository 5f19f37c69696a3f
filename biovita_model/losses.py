"""Contrastive losses: symmetric InfoNCE with features gathered across ranks, ATC / AIC / ITC.

Distributed: when `torch.distributed` is initialised with more than one rank, each rank scores its
own rows against the rows of every rank (gathered WITH gradients by
`torch.distributed.nn.functional.all_gather`), so the negatives are the global batch. The mean of
the ranks' losses equals the single-process loss over the global batch, and DDP's gradient
averaging then gives that loss's gradient. Every rank must pass the same batch size.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_features(x: torch.Tensor) -> torch.Tensor:
    """Concatenate x over all ranks (rank order) keeping gradients; identity on one process."""
    _, size = world()
    if size == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def info_nce(
    a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor | float, *, gather: bool = True
) -> torch.Tensor:
    """Symmetric InfoNCE of paired rows a[i] <-> b[i] (L2-normalised), mean of both directions."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"expected two (batch, dim) tensors of one shape: {a.shape}, {b.shape}")
    rank, size = world() if gather else (0, 1)
    a_all = gather_features(a) if size > 1 else a
    b_all = gather_features(b) if size > 1 else b
    n = a.shape[0]
    labels = torch.arange(n, device=a.device) + rank * n
    logits_ab = logit_scale * a @ b_all.T
    logits_ba = logit_scale * b @ a_all.T
    return (F.cross_entropy(logits_ab, labels) + F.cross_entropy(logits_ba, labels)) / 2


def atc_loss(
    audio: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float, *, gather: bool = True
) -> torch.Tensor:
    """Audio-text contrastive loss."""
    return info_nce(audio, text, scale, gather=gather)


def aic_loss(
    audio: torch.Tensor, image: torch.Tensor, scale: torch.Tensor | float, *, gather: bool = True
) -> torch.Tensor:
    """Audio-image contrastive loss."""
    return info_nce(audio, image, scale, gather=gather)


def itc_loss(
    image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float, *, gather: bool = True
) -> torch.Tensor:
    """Image-text contrastive loss."""
    return info_nce(image, text, scale, gather=gather)


def lambda_ramp(step: int, total_steps: int, lam_max: float = 0.1) -> float:
    """Stage-2 weight: linear from 0 at step 0 to lam_max at total_steps, then constant."""
    if total_steps <= 0:
        return lam_max
    return lam_max * min(max(step, 0), total_steps) / total_steps


def _scale(out: Mapping[str, torch.Tensor], pair: str) -> torch.Tensor:
    return out[f"scale_{pair}"]


def stage1_loss(out: Mapping[str, torch.Tensor], *, gather: bool = True) -> torch.Tensor:
    """Stage 1: ATC alone, from BioVITAModel.forward's output (keys audio, text, scale_*)."""
    return atc_loss(out["audio"], out["text"], _scale(out, "audio_text"), gather=gather)


# the parts a stage's loss reports (stage2_loss's keys), in the order summaries name them
LOSS_PARTS = ("atc", "aic", "itc")


def stage2_loss(
    out: Mapping[str, torch.Tensor], lam: float, *, gather: bool = True
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stage 2: ATC + lam * (AIC + ITC); returns (total, {"atc", "aic", "itc"} detached)."""
    atc = atc_loss(out["audio"], out["text"], _scale(out, "audio_text"), gather=gather)
    aic = aic_loss(out["audio"], out["image"], _scale(out, "audio_image"), gather=gather)
    itc = itc_loss(out["image"], out["text"], _scale(out, "image_text"), gather=gather)
    total = atc + lam * (aic + itc)
    return total, {"atc": atc.detach(), "aic": aic.detach(), "itc": itc.detach()}
