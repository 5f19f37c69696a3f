"""Global contrastive batches with one item per species, the same for any number of ranks.

Each epoch draws up to N items per species (`draw_epoch`, the loader's draw), orders them in
rounds (round r holds every species' r-th item, shuffled) and cuts batches of distinct species
(an item whose species is already in the batch waits for the next one), so no batch holds a false
negative. The batches are a function of (seed, epoch) only; rank r of W takes the r-th of W equal
slices of each global batch, in rank order, which is how the losses gather features.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from biovita_data.loader import draw_epoch

_BATCH_STREAM = 4  # first word of the batch order's seed sequence (loader items use 1, 2, 3)


def species_batches(
    indices: np.ndarray, labels: np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Cut indices into full batches of batch_size items of distinct labels (the rest dropped)."""
    lab = labels[indices]
    order = np.argsort(lab, kind="stable")
    first = np.searchsorted(lab[order], lab[order], side="left")
    rounds = np.empty(indices.size, dtype=np.int64)
    rounds[order] = np.arange(indices.size) - first
    seq = indices[np.lexsort((rng.random(indices.size), rounds))].tolist()
    label_of = labels.tolist()
    batches: list[np.ndarray] = []
    waiting: deque[int] = deque()
    pos = 0
    while True:
        batch: list[int] = []
        taken: set[int] = set()
        for _ in range(len(waiting)):
            i = waiting.popleft()
            if len(batch) < batch_size and label_of[i] not in taken:
                batch.append(i)
                taken.add(label_of[i])
            else:
                waiting.append(i)
        while len(batch) < batch_size and pos < len(seq):
            i = seq[pos]
            pos += 1
            if label_of[i] in taken:
                waiting.append(i)
            else:
                batch.append(i)
                taken.add(label_of[i])
        if len(batch) < batch_size:
            return batches
        batches.append(np.asarray(batch, dtype=np.int64))


class SpeciesBatchSampler(Sampler):
    """Yields this rank's slice of each global batch, as `(index, epoch)` keys.

    `eligible` (a bool mask over the items) leaves items out, e.g. those of species without a
    photo when the stage needs one.
    """

    def __init__(
        self,
        labels: np.ndarray,
        batch_size: int,
        *,
        max_per_species: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        multiple_of: int = 1,
        eligible: np.ndarray | None = None,
    ) -> None:
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} does not split evenly over {world} ranks")
        self.labels = np.asarray(labels, dtype=np.int64)
        all_items = np.arange(self.labels.size, dtype=np.int64)
        self.items = all_items if eligible is None else all_items[np.asarray(eligible, bool)]
        n_species = int(np.unique(self.labels[self.items]).size)
        if batch_size > n_species:
            raise ValueError(
                f"batch size {batch_size} exceeds the {n_species} species of the split: a batch "
                "holds one item per species"
            )
        self.batch_size = batch_size
        self.max_per_species = max_per_species
        self.seed = int(seed)
        self.rank, self.world = rank, world
        self.multiple_of = max(1, multiple_of)
        self.epoch = 0
        self._cache: tuple[int, list[np.ndarray]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch the next iteration draws."""
        self.epoch = int(epoch)

    def global_batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """Every global batch of an epoch (a multiple of multiple_of batches)."""
        epoch = self.epoch if epoch is None else int(epoch)
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        drawn = self.items[
            draw_epoch(
                self.labels[self.items],
                max_per_species=self.max_per_species,
                seed=self.seed,
                epoch=epoch,
            )
        ]
        rng = np.random.default_rng(np.random.SeedSequence([_BATCH_STREAM, self.seed, epoch]))
        batches = species_batches(drawn, self.labels, self.batch_size, rng)
        batches = batches[: len(batches) - len(batches) % self.multiple_of]
        self._cache = (epoch, batches)
        return batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.epoch
        per = self.batch_size // self.world
        for batch in self.global_batches(epoch):
            mine = batch[self.rank * per : (self.rank + 1) * per]
            yield [(int(i), epoch) for i in mine]

    def __len__(self) -> int:
        return len(self.global_batches())
