"""Learning-rate schedule (linear warm-up, then cosine) as a picklable LambdaLR factor."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


class WarmupCosine:
    """Factor of the base lr at a step: linear warm-up to 1, then cosine down to min_ratio."""

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> None:
        self.warmup_steps = max(0, int(warmup_steps))
        self.total_steps = max(1, int(total_steps))
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.0
) -> LambdaLR:
    """A LambdaLR that applies WarmupCosine to every parameter group."""
    return LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps, min_ratio))
