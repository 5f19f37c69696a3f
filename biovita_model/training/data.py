"""Training items and loaders: log-mel audio, augmented images, prompts, seeded per item.

Every random choice of an item (the loader's crop, image and prompt; the mel and image
augmentation here) is a function of (seed, epoch, index), so a batch is the same whatever the
number of workers or ranks, and a resumed run sees the same items as an uninterrupted one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from biovita_data.loader import BioVITADataset, collate, read_species
from biovita_data.loader.index import (
    RowReader,
    build_index,
    label_rows,
    resolve_folder,
    split_files,
)
from biovita_model.audio_frontend import AudioFrontend, FrontendConfig, augment_mel
from biovita_model.image_input import input_size, load_image
from biovita_model.threads import worker_init
from biovita_model.training.batches import SpeciesBatchSampler

if TYPE_CHECKING:
    from biovita_model.training.mel_cache import MelCache

_AUGMENT_STREAM = 6  # first word of the augmentation seed sequences
_IMAGE_ITEM_STREAM = 7


def item_seed(seed: int, epoch: int, index: int, stream: int = _AUGMENT_STREAM) -> int:
    """A 63-bit seed that depends on (seed, epoch, index) only."""
    ss = np.random.SeedSequence([stream, seed, epoch, index])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def seed_cpu(seed: int) -> None:
    """Seed torch's CPU generator only. `torch.manual_seed` also queues a lazy CUDA seeding that
    records a stack trace each call (~2.5 ms: 80 ms of a 32-item batch's preparation)."""
    torch.default_generator.manual_seed(seed)


class LazyFrontend:
    """An AudioFrontend built lazily in each process (its mel filters are not pickled)."""

    def __init__(self, cfg: FrontendConfig) -> None:
        self.cfg = cfg
        self._module: AudioFrontend | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"cfg": self.cfg}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.cfg, self._module = state["cfg"], None

    @property
    def module(self) -> AudioFrontend:
        """The AudioFrontend of this process (built on first use)."""
        if self._module is None:
            self._module = AudioFrontend(self.cfg)
        return self._module

    def __call__(self, wave: torch.Tensor, length: int) -> torch.Tensor:
        """One waveform (samples,) -> log-mel (1, T, F)."""
        with torch.no_grad():
            return self.module(wave[None], torch.tensor([length]))[0]


class SpeciesImages:
    """The photos of one split by species: a seeded pick per item, decoded and transformed."""

    def __init__(
        self,
        folder: Path,
        split: str,
        transform: Callable[[Image.Image], Any],
        *,
        cache: bool = False,
    ) -> None:
        files = split_files(folder, "image", split)
        if not files:
            raise FileNotFoundError(f"no image/{split}-*.parquet shards under {folder}")
        self.index = build_index(files)
        self.reader = RowReader(self.index, ["image"])
        self.order, self.starts = self.index.by_label()
        self.transform = transform
        self.size = input_size(transform)
        self._decoded: dict[int, Image.Image] | None = {} if cache else None

    def rows_of(self, label: int) -> np.ndarray:
        """Rows of the index that show species `label`."""
        return label_rows(self.order, self.starts, label)

    def load(self, row: int) -> Any:
        """Row `row` decoded (once, with `cache`: the decoded photo is kept) and transformed."""
        if self._decoded is None:
            return self.transform(load_image(self.reader.media(row), self.size))
        img = self._decoded.get(row)
        if img is None:
            img = self._decoded[row] = load_image(self.reader.media(row), self.size)
        return self.transform(img)


class AudioItems(Dataset):
    """Audio items of a split as model inputs: `mel` (1, T, F), `text`, `label` (and `image`).

    Audio, prompt and label come from BioVITADataset (random 10 s crop, random template); with
    `mels`, the audio is a crop of the recording's cached log-mel instead of a fresh decode; with
    `images`, each item also gets a random photo of its species (seeded by the item): decoded and
    transformed (`image`), or with `photo_rows` only its row (`image_row`, for `FrozenImages`).
    """

    def __init__(
        self,
        base: BioVITADataset,
        frontend: FrontendConfig,
        *,
        images: SpeciesImages | None = None,
        mels: MelCache | None = None,
        augment: bool = True,
        seed: int = 0,
        photo_rows: bool = False,
    ) -> None:
        self.base = base
        self.mels = mels
        self.photo_rows = photo_rows
        self.frontend = LazyFrontend(frontend)
        self.images = images
        self.augment = augment
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.base)

    @property
    def labels(self) -> np.ndarray:
        """Each item's label."""
        return self.base.labels

    def eligible(self) -> np.ndarray | None:
        """Items usable in a batch: with images, those whose species has a photo."""
        if self.images is None:
            return None
        labels = self.base.labels
        has = {int(k): self.images.rows_of(int(k)).size > 0 for k in np.unique(labels)}
        return np.fromiter((has[int(k)] for k in labels), dtype=bool, count=labels.size)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, epoch = int(key[0]), int(key[1])
        s = item_seed(self.seed, epoch, index)
        if self.mels is None:
            item = self.base[(index, epoch)]
            mel = self.frontend(item["audio"], int(item["audio_length"]))
        else:
            item = self.base.item((index, epoch), audio=False)
            mel = self.mels.clip(index, item["crop_u"])
        if self.augment:
            g = torch.Generator().manual_seed(s)
            mel = augment_mel(mel[None], generator=g)[0]
        out = {"mel": mel, "label": item["label"], "index": index, "text": item["text"]}
        if self.images is not None:
            rows = self.images.rows_of(item["label"])
            if rows.size:
                pick = int(rows[np.random.default_rng(s).integers(rows.size)])
                if self.photo_rows:
                    out["image_row"] = pick
                    return out
                with torch.random.fork_rng(devices=[]):
                    seed_cpu(s)  # the transform draws from torch's global generator
                    out["image"] = self.images.load(pick)
        return out


class ImageTextItems(Dataset):
    """Photos of one split with a random prompt of their species (for the tower pre-training)."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        split: str = "train",
        *,
        image_transform: Callable[[Image.Image], Any],
        seed: int = 0,
        cache: bool = False,
    ) -> None:
        self.folder = resolve_folder(folder) if Path(folder).is_dir() else Path(folder)
        self.images = SpeciesImages(self.folder, split, image_transform, cache=cache)
        self.index = self.images.index
        self.species = read_species(
            split_files(self.folder, "species", "train"), labels=self.index.label
        )
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def labels(self) -> np.ndarray:
        """Each photo's label."""
        return self.index.label

    def eligible(self) -> np.ndarray | None:
        """Every photo is usable."""
        return None

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, epoch = int(key[0]), int(key[1])
        label = int(self.index.label[index])
        s = item_seed(self.seed, epoch, index, _IMAGE_ITEM_STREAM)
        prompts = self.species.prompts[label]
        pick = np.random.default_rng(s).integers(len(prompts))
        with torch.random.fork_rng(devices=[]):
            seed_cpu(s)
            image = self.images.load(index)
        return {"image": image, "text": prompts[pick], "label": label, "index": index}


def make_loader(
    dataset: Dataset,
    sampler: SpeciesBatchSampler,
    workers: int = 0,
    *,
    pin_memory: bool = False,
    seed: int = 0,
) -> DataLoader:
    """A DataLoader over (index, epoch) keys of the batch sampler.

    It draws its workers' base seed from its own generator: drawn from torch's global one, each
    new iterator (every epoch without persistent workers, the first epoch of a session with them)
    would shift the model's random stream (dropout), and a resumed run would leave the path of an
    uninterrupted one."""
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate,  # the loader's: in a worker, batches in reused shared memory
        worker_init_fn=worker_init if workers else None,
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
        generator=torch.Generator().manual_seed(int(seed)),
    )
