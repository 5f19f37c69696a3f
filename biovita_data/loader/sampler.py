"""Per-epoch species-level sampling: at most N recordings of each species per epoch, shuffled."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import Sampler

_SAMPLER_STREAM = 2  # first words of the sampler's seed sequences (items use 1)
_WINDOW_STREAM = 3


def cap_per_label(labels: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most `cap` random items of every label, grouped by label (draws n uniforms)."""
    labels = np.asarray(labels)
    order = np.lexsort((rng.random(labels.shape[0]), labels))  # by label, random within one
    grouped = labels[order]
    rank = np.arange(labels.shape[0]) - np.searchsorted(grouped, grouped, side="left")
    return order[rank < cap]


def draw_epoch(
    labels: np.ndarray,
    *,
    max_per_species: int | None,
    seed: int,
    epoch: int,
    shuffle: bool = True,
) -> np.ndarray:
    """Item indices of one epoch: up to max_per_species random items of every label, shuffled."""
    labels = np.asarray(labels)
    n = labels.shape[0]
    if not shuffle:
        keep = np.arange(n)
        if max_per_species is not None:
            order = np.argsort(labels, kind="stable")
            starts = np.searchsorted(labels[order], labels[order], side="left")
            keep = np.sort(order[np.arange(n) - starts < max_per_species])
        return keep.astype(np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([_SAMPLER_STREAM, seed, epoch]))
    if max_per_species is None:
        return rng.permutation(n).astype(np.int64)
    return rng.permutation(cap_per_label(labels, max_per_species, rng)).astype(np.int64)


def window_order(
    indices: np.ndarray, groups: np.ndarray, window: int, rng: np.random.Generator
) -> np.ndarray:
    """Reorder so that windows of `window` random row groups come one after the other, each
    window's items shuffled: a reader caching `window` row groups then reads each group once."""
    g = groups[indices]
    uniq, inv = np.unique(g, return_inverse=True)
    win = rng.permutation(uniq.size)[inv] // window
    return indices[np.lexsort((rng.random(indices.size), win))]


class SpeciesSampler(Sampler):
    """Yields `(index, epoch)` keys: each epoch, up to max_audio_per_species items per species.

    The draw is a function of (seed, epoch) only. With num_replicas > 1 (DDP), every rank draws
    the same epoch and takes every num_replicas-th key from offset rank, after padding the epoch
    by wrapping around (drop_last=False) or trimming it (drop_last=True) to a multiple.

    row_group_window (with groups, each item's row group): shuffle within windows of that many
    random row groups instead of over the whole epoch, so that a reader caching that many row
    groups reads each once per window. It trades randomness for I/O: use it only when rows are
    not grouped by species within row groups (else batches hold few species).
    """

    def __init__(
        self,
        labels: np.ndarray,
        *,
        max_audio_per_species: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
        groups: np.ndarray | None = None,
        row_group_window: int | None = None,
    ) -> None:
        if row_group_window is not None and (groups is None or row_group_window < 1):
            raise ValueError("row_group_window needs groups and must be at least 1")
        if max_audio_per_species is not None and max_audio_per_species < 1:
            raise ValueError("max_audio_per_species must be at least 1 (or None for no cap)")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.labels = np.asarray(labels, dtype=np.int64)
        self.max_audio_per_species = max_audio_per_species
        self.seed = int(seed)
        self.shuffle = shuffle
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.groups = None if groups is None else np.asarray(groups, dtype=np.int64)
        self.row_group_window = row_group_window
        self.epoch = 0
        _, counts = np.unique(self.labels, return_counts=True)
        cap = max_audio_per_species if max_audio_per_species is not None else np.inf
        self.epoch_size = int(np.minimum(counts, cap).sum())  # the same every epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch the next iteration draws."""
        self.epoch = int(epoch)

    def epoch_indices(self, epoch: int | None = None) -> np.ndarray:
        """This rank's item indices for an epoch (the current one by default)."""
        epoch = self.epoch if epoch is None else int(epoch)
        drawn = draw_epoch(
            self.labels,
            max_per_species=self.max_audio_per_species,
            seed=self.seed,
            epoch=epoch,
            shuffle=self.shuffle,
        )
        if self.row_group_window is not None and self.groups is not None and self.shuffle:
            rng = np.random.default_rng(np.random.SeedSequence([_WINDOW_STREAM, self.seed, epoch]))
            drawn = window_order(drawn, self.groups, self.row_group_window, rng)
        if self.num_replicas == 1:
            return drawn
        total = len(self) * self.num_replicas
        if total > drawn.size:
            drawn = np.resize(drawn, total)  # wraps around
        return drawn[:total][self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        for index in self.epoch_indices(epoch).tolist():
            yield (index, epoch)

    def __len__(self) -> int:
        if self.num_replicas == 1:
            return self.epoch_size
        if self.drop_last:
            return self.epoch_size // self.num_replicas
        return math.ceil(self.epoch_size / self.num_replicas)


def species_sampler(
    dataset: Any, max_audio_per_species: int | None = None, **kwargs: Any
) -> SpeciesSampler:
    """A SpeciesSampler over a BioVITADataset (its labels and row groups; its seed by default)."""
    kwargs.setdefault("seed", getattr(dataset, "seed", 0))
    window = kwargs.get("row_group_window")
    if window is not None:
        kwargs.setdefault("groups", dataset.row_groups)
        cache = getattr(dataset, "cache_row_groups", window)
        if cache < window:
            warnings.warn(
                f"row_group_window={window} but the dataset caches {cache} row groups per "
                "worker: pass cache_row_groups >= row_group_window to the dataset",
                stacklevel=2,
            )
    return SpeciesSampler(dataset.labels, max_audio_per_species=max_audio_per_species, **kwargs)
