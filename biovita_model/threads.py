"""CPU thread policy: torch threads per process and per DataLoader worker."""

from __future__ import annotations

import os

import torch


def cpu_threads(world: int, workers: int, threads: int | None = None) -> int:
    """Torch threads for this rank: `threads`, else the cores shared by ranks and workers.

    Oversubscribed OpenMP threads spin against each other (tens of times slower on a busy
    machine), so the default gives every rank and data worker its own cores.
    """
    if threads is not None:
        return max(1, int(threads))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // (max(1, world) * (1 + max(0, workers))))


def worker_init(_: int) -> None:
    """A DataLoader worker runs its ops on one thread."""
    torch.set_num_threads(1)  # the main process's ops get the cores
