"""torchrun / DDP plumbing: process group set-up from the environment, batch norm over all ranks.

`torchrun --nproc_per_node N` sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT;
`setup` joins the group (NCCL on CUDA, gloo on CPU). Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """This process's place: rank, world size, local rank and device."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def setup(device: str = "cpu") -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1; pick this rank's device."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", 0)
    kind = torch.device(device).type
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda, but CUDA is not available")
        dev = torch.device("cuda", local if world > 1 else (torch.device(device).index or 0))
        torch.cuda.set_device(dev)
    else:
        dev = torch.device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if kind == "cuda" else "gloo", rank=rank, world_size=world)
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank, world, local, dev)


def teardown() -> None:
    """Leave the process group (when one was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (a no-op on one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def mean_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """The mean of a (detached) tensor over the ranks; itself on one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    y = x.detach().clone()
    dist.all_reduce(y)
    return y / dist.get_world_size()


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics span the batch of every rank (differentiably).

    The same idea as nn.SyncBatchNorm, on any backend (gloo included): mean, then centred sum
    of squares, each one all_reduce with gradients. One process behaves as plain batch norm.
    Instances are converted in place (`convert_batch_norm`): names and state dict keys stay.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise x (N, C, ...) with the global batch statistics in training."""
        multi = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not (self.training and multi):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = [d for d in range(x.ndim) if d != 1]
        n_local = x.numel() // x.shape[1]
        count = all_reduce(torch.tensor([float(n_local)], device=x.device))
        mean = all_reduce(x.float().sum(dim=dims)) / count
        shape = [1, -1] + [1] * (x.ndim - 2)
        centred = x.float() - mean.view(shape)
        var = all_reduce(centred.square().sum(dim=dims)) / count
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 0.1
                unbiased = var.detach() * count / (count - 1).clamp(min=1)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


_GLOBAL_TYPES: dict[type, type] = {}


def _global_type(cls: type) -> type:
    """The GlobalBatchNorm subclass of a batch norm class (made once per class)."""
    if cls not in _GLOBAL_TYPES:
        _GLOBAL_TYPES[cls] = type(f"Global{cls.__name__}", (GlobalBatchNorm, cls), {})
    return _GLOBAL_TYPES[cls]


def convert_batch_norm(module: nn.Module) -> int:
    """Turn every batch norm layer of module into a GlobalBatchNorm, in place; returns how many."""
    n = 0
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, GlobalBatchNorm):
            m.__class__ = _global_type(type(m))
            n += 1
    return n
