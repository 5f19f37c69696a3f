"""BioVITADataset: species-level (audio, image, text, traits) items of a published BioVITA split."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate, get_worker_info

from biovita_data.loader.audio import (
    CLIP_SECONDS,
    TARGET_RATE,
    CropMode,
    decode_clip,
    ffmpeg_decoder,
)
from biovita_data.loader.index import (
    MediaIndex,
    RowReader,
    build_index,
    label_rows,
    resolve_folder,
    split_files,
)
from biovita_data.loader.prompts import TEMPLATES
from biovita_data.loader.shared_batches import (
    POOLED_MIN_BYTES,
    fresh_shared,
    worker_pool,
)
from biovita_data.loader.species import SpeciesTable, read_species

Mode = Literal["train", "eval"]
Key = int | tuple[int, int]
_ITEM_STREAM = 1  # first word of an item's seed sequence (the sampler uses another)


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one item: a function of (seed, epoch, index) only, whatever the worker."""
    return np.random.default_rng(np.random.SeedSequence([_ITEM_STREAM, seed, epoch, index]))


def decode_image(data: bytes, *, draft: int | None = None) -> Image.Image:
    """Decode image bytes to an RGB PIL image. With `draft`, a JPEG decodes at the smallest DCT
    scale (1/2, 1/4, 1/8) that keeps both sides >= draft px: several times faster when the
    consumer resizes far below the stored size anyway."""
    with Image.open(io.BytesIO(data)) as img:
        if draft is not None and img.format == "JPEG":
            img.draft("RGB", (draft, draft))
        return img.convert("RGB")


def batch_tensor(rows: int, samples: int) -> torch.Tensor:
    """An empty float32 (rows, samples) tensor; in a DataLoader worker it lives in shared memory,
    as default_collate's batches do, so it travels to the main process without a copy (in a
    segment of the worker's pool, reused once the main process has let it go)."""
    if get_worker_info() is None:
        return torch.empty(rows, samples)
    pool = worker_pool()
    return fresh_shared((rows, samples)) if pool is None else pool.empty((rows, samples))


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a uint8 (3, H, W) tensor."""
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


class BioVITADataset(Dataset):
    """Map-style dataset over the audio rows of one split, each paired at the species level.

    Item i (a key `i` or `(i, epoch)`) is a dict: `audio` float32 (n_samples,) at 48 kHz mono (a
    random 10 s crop in mode "train", the onset-aligned crop in mode "eval"), `audio_length`
    (samples from the recording, the rest is zero padding), `image` (a random photo of the same
    species: uint8 (3, H, W), or whatever image_transform returns from an RGB PIL image), `text`
    (a random prompt of the five templates), `label`, `species_id`, `scientific_name`, `traits`
    float32 (34,) with NaN where unknown, `traits_mask` bool (34,), `index`, `epoch`. Every random
    choice comes from (seed, epoch, index), so the items do not depend on the worker layout.

    A DataLoader fetches a batch through `__getitems__`: without an audio_transform, the crops are
    decoded straight into the rows of one (batch, n_samples) tensor (in a worker, shared memory of
    its pool, reused) that `collate` hands on as the batch's `audio` without stacking a copy.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        split: str = "train",
        *,
        mode: Mode = "train",
        seed: int = 0,
        with_image: bool = True,
        with_text: bool = True,
        image_split: str | None = None,
        image_transform: Callable[[Image.Image], Any] | None = None,
        audio_transform: Callable[[torch.Tensor], Any] | None = None,
        templates: Sequence[str] = TEMPLATES,
        sample_rate: int = TARGET_RATE,
        clip_seconds: float = CLIP_SECONDS,
        resample_quality: str = "HQ",
        cache_row_groups: int = 2,
    ) -> None:
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be train or eval, not {mode!r}")
        if seed < 0:
            raise ValueError("seed must be a non-negative integer")
        self.folder = resolve_folder(folder) if Path(folder).is_dir() else Path(folder)
        self.split = split
        self.mode: Mode = mode
        self.seed = int(seed)
        self.epoch = 0
        self.with_image = with_image
        self.with_text = with_text
        self.image_split = image_split or split
        self.image_transform = image_transform
        self.audio_transform = audio_transform
        self.sample_rate = sample_rate
        self.clip_seconds = clip_seconds
        self.resample_quality = resample_quality
        self.cache_row_groups = cache_row_groups
        # load FFmpeg's libraries (torchcodec: ~2 CPU-s) here once, so that forked DataLoader
        # workers inherit them instead of each loading them on its first MP3
        ffmpeg_decoder()

        audio_files = split_files(self.folder, "audio", split)
        if not audio_files:
            raise FileNotFoundError(f"no audio/{split}-*.parquet shards under {self.folder}")
        self.audio_index: MediaIndex = build_index(audio_files)
        species_files = split_files(self.folder, "species", "train")
        if not species_files:
            raise FileNotFoundError(f"no species/train-*.parquet under {self.folder}")
        self.species: SpeciesTable = read_species(
            species_files, templates, labels=self.audio_index.label
        )
        self._audio = RowReader(self.audio_index, ["audio"], cache_row_groups)

        self.image_index: MediaIndex | None = None
        self._image: RowReader | None = None
        self._image_order = np.zeros(0, dtype=np.int64)
        self._image_starts = np.zeros(1, dtype=np.int64)
        if with_image:
            image_files = split_files(self.folder, "image", self.image_split)
            if image_files:
                self.image_index = build_index(image_files)
                self._image = RowReader(self.image_index, ["image"], cache_row_groups)
                self._image_order, self._image_starts = self.image_index.by_label()

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo: str | os.PathLike[str],
        split: str = "train",
        *,
        revision: str | None = None,
        **kwargs: Any,
    ) -> BioVITADataset:
        """Open a published folder (OUT/hf, or OUT) or a Hub dataset repo id (downloaded once) at
        `revision` (a release tag such as v2026.12, a branch or a commit; or `NS/NAME@REVISION`)."""
        splits = {split, kwargs.get("image_split") or split}
        folder = resolve_folder(path_or_repo, splits=sorted(splits), revision=revision)
        return cls(folder, split, **kwargs)

    # -- the map-style protocol ---------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.audio_index)

    @property
    def labels(self) -> np.ndarray:
        """The label of every item (int64), for samplers."""
        return self.audio_index.label

    @property
    def row_groups(self) -> np.ndarray:
        """Each item's row group as one int64 id (shard << 32 | group), for row_group_window."""
        return (self.audio_index.file.astype(np.int64) << 32) | self.audio_index.row_group

    @property
    def num_species(self) -> int:
        """Species in the label space (all splits), i.e. the width of a classifier head."""
        return len(self.species)

    def set_epoch(self, epoch: int) -> None:
        """The epoch used for plain integer keys (sampler keys carry their own epoch)."""
        self.epoch = int(epoch)

    def images_of(self, label: int) -> np.ndarray:
        """Rows of the image index that show species `label` (empty when none in image_split)."""
        return label_rows(self._image_order, self._image_starts, label)

    def __getitem__(self, key: Key) -> dict[str, Any]:
        return self.item(key)

    def __getitems__(self, keys: Sequence[Key]) -> list[dict[str, Any]]:
        """The items of `keys` (a DataLoader's batch): equal to [self[k] for k in keys], their
        `audio` being the rows of one batch tensor (`batch_tensor`) when there is no
        audio_transform."""
        if self.audio_transform is not None or not keys:
            return [self.item(key) for key in keys]
        rows = batch_tensor(len(keys), round(self.clip_seconds * self.sample_rate))
        return [self.item(key, audio_out=rows[b]) for b, key in enumerate(keys)]

    def item(
        self, key: Key, *, audio: bool = True, audio_out: torch.Tensor | None = None
    ) -> dict[str, Any]:
        """Item `key`; with audio=False the audio is not decoded and the item carries `crop_u`
        instead: the fraction of the admissible starts its random crop would start at (for a
        caller that crops a cached spectrogram the same way). `audio_out` (float32, n_samples):
        the crop is decoded into it, and it is the item's `audio` (without audio_transform)."""
        index, epoch = (key, self.epoch) if isinstance(key, int | np.integer) else key
        index, epoch = int(index), int(epoch)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        if self.mode == "eval":
            epoch = 0  # evaluation items are fixed
        rng = item_rng(self.seed, epoch, index)
        u_crop, u_image, u_text = rng.random(3)  # drawn up front: fixed whatever is decoded

        label = int(self.audio_index.label[index])
        item: dict[str, Any] = (
            {"crop_u": float(u_crop)}
            if not audio
            else self._audio_item(index, float(u_crop), audio_out)
        )
        item.update(
            label=label,
            species_id=int(self.species.species_id[label]),
            scientific_name=self.species.scientific_name[label],
            traits=torch.from_numpy(self.species.traits[label].copy()),
            traits_mask=torch.from_numpy(self.species.trait_mask[label].copy()),
            index=index,
            epoch=epoch,
        )
        if self.with_text:
            prompts = self.species.prompts[label]
            item["text"] = prompts[min(len(prompts) - 1, int(u_text * len(prompts)))]
        if self.with_image:
            item["image"] = self._image_item(label, float(u_image))
        return item

    def audio_bytes(self, index: int) -> bytes:
        """The encoded audio of item `index` (only this value is read)."""
        data = self._audio.media(index)
        if data is None:
            raise ValueError(f"audio item {index} ({self._audio_path(index)}) is null")
        return data

    def _audio_item(
        self, index: int, u_crop: float, out: torch.Tensor | None = None
    ) -> dict[str, Any]:
        """`audio` (the decoded crop, in `out` when given, through audio_transform) and
        `audio_length`."""
        data = self._audio.media_view(index)  # only this value is read, and not copied
        crop: CropMode = "onset" if self.mode == "eval" else "random"
        try:
            if data is None:
                raise ValueError("the audio is null")
            clip = decode_clip(
                data,
                mode=crop,
                u=u_crop,
                seconds=self.clip_seconds,
                target_rate=self.sample_rate,
                quality=self.resample_quality,
                out=None if out is None else out.numpy(),
            )
        except Exception as exc:  # name the item: a bare libsndfile error says nothing useful
            raise RuntimeError(
                f"cannot decode audio item {index} ({self._audio_path(index)}) "
                f"of {self.folder} split {self.split}: {exc}"
            ) from exc
        audio: Any = torch.from_numpy(clip.samples) if out is None else out
        if self.audio_transform is not None:
            audio = self.audio_transform(audio)
        return {"audio": audio, "audio_length": clip.valid}

    def _audio_path(self, index: int) -> str | None:
        """The `path` of audio item `index`, for error messages."""
        try:
            return (self._audio.read(index)["audio"] or {}).get("path")
        except Exception:  # reading the row is what failed: say so, not why
            return None

    def _image_item(self, label: int, u: float) -> Any:
        """A random photo of the species (None when image_split has none)."""
        rows = self.images_of(label)
        if self._image is None or rows.size == 0:
            return None
        pick = int(rows[min(rows.size - 1, int(u * rows.size))])
        img = decode_image(self._image.media(pick))
        if self.image_transform is not None:
            return self.image_transform(img)
        return image_to_tensor(img)

    def __repr__(self) -> str:
        images = len(self.image_index) if self.image_index is not None else 0
        return (
            f"BioVITADataset({str(self.folder)!r}, split={self.split!r}, mode={self.mode!r}, "
            f"items={len(self)}, species={int(np.unique(self.labels).size)}, images={images})"
        )


def rows_of(values: Sequence[Any]) -> torch.Tensor | None:
    """The tensor whose rows, in order, are `values` (as BioVITADataset.__getitems__ decodes a
    batch's audio); None when they are not exactly that."""
    first = values[0]
    base = first._base if isinstance(first, torch.Tensor) else None
    if base is None or not base.is_contiguous() or base.shape != (len(values), *first.shape):
        return None
    for b, v in enumerate(values):
        if not isinstance(v, torch.Tensor) or v._base is not base:
            return None
        if v.data_ptr() != base[b].data_ptr() or v.shape != first.shape or not v.is_contiguous():
            return None
    return base


def stack(values: Sequence[torch.Tensor]) -> torch.Tensor:
    """default_collate's stack of same-shape tensors; in a worker, a batch of 1 MiB or more goes
    into a segment of the worker's pool (the images of a batch, say) instead of fresh shared
    memory."""
    first = values[0]
    pool = worker_pool() if get_worker_info() is not None and first.device.type == "cpu" else None
    if pool is None or len(values) * first.numel() * first.element_size() < POOLED_MIN_BYTES:
        return default_collate(values)
    return torch.stack(list(values), out=pool.empty((len(values), *first.shape), first.dtype))


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of items: tensors of one shape -> a batch tensor (the items' own batch
    tensor when they are its rows: no copy), ints -> int64, else a list."""
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        first = values[0]
        if isinstance(first, torch.Tensor) and all(
            isinstance(v, torch.Tensor) and v.shape == first.shape for v in values
        ):
            rows = rows_of(values)
            out[key] = rows if rows is not None else stack(values)
        elif all(isinstance(v, bool | np.bool_) for v in values):
            out[key] = torch.tensor(values, dtype=torch.bool)
        elif all(isinstance(v, int | np.integer) for v in values):
            out[key] = torch.tensor(values, dtype=torch.int64)
        elif all(isinstance(v, float | np.floating) for v in values):
            out[key] = torch.tensor(values, dtype=torch.float32)
        else:
            out[key] = values
    return out
