"""Embeddings of media items (a MediaIndex of a published dataset) and of a dataset's splits.

Audio is cropped onset-aligned (10 s from 0.2 s before the first sample above 1 % of the peak;
a shorter clip filled by the model's `short_clip` setting: silence or repeats), and images get
the tower's eval transform (JPEGs decoded at a reduced DCT scale that stays >= 2 x the tower's
input), as docs/design.md's "Loader" and "Bench format" ask. Text items of a dataset are its
species' prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, Dataset

from biovita_data.core.layout import MEDIA_SPLITS
from biovita_data.loader import decode_clip, read_species
from biovita_data.loader.index import MediaIndex, RowReader, index_rows, resolve_folder, split_files
from biovita_model.audio_frontend import AudioFrontend, FrontendConfig
from biovita_model.image_input import input_size, load_image
from biovita_model.model import BioVITAModel
from biovita_model.threads import worker_init

_META = ("label", "species_id", "scientific_name", "source", "record_id", "segment")


class MediaItems(Dataset):
    """Rows of a MediaIndex decoded for the model: log-mel (onset crop) or eval-ready images."""

    def __init__(
        self,
        index: MediaIndex,
        modality: str,
        *,
        frontend: FrontendConfig | None = None,
        image_transform: Callable[[Any], torch.Tensor] | None = None,
    ) -> None:
        if modality not in ("audio", "image"):
            raise ValueError(f"modality must be audio or image, not {modality!r}")
        self.index = index
        self.modality = modality
        self.reader = RowReader(index, [modality])
        self.frontend_cfg = frontend
        self.transform = image_transform
        self.size = input_size(image_transform) if image_transform is not None else 224
        self._frontend: AudioFrontend | None = None

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_frontend": None}

    def __getitem__(self, i: int) -> torch.Tensor:
        data = self.reader.media(i)
        if self.modality == "image":
            assert self.transform is not None
            return self.transform(load_image(data, self.size))
        cfg = self.frontend_cfg
        assert cfg is not None
        clip = decode_clip(
            data,
            mode="onset",
            seconds=float(cfg.max_length_s),
            target_rate=cfg.sample_rate,
            short_clip=cfg.short_clip,  # type: ignore[arg-type]
        )
        if self._frontend is None:
            self._frontend = AudioFrontend(cfg)
        with torch.no_grad():  # the clip is cropped and filled: its log-mel as it is
            return self._frontend.log_mel(torch.from_numpy(clip.samples)[None])[0]


@torch.no_grad()
def embed_texts(model: Any, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """Normalised text embeddings (n, D) through model.tokenize + model.encode_text."""
    out = []
    for i in range(0, len(texts), batch_size):
        out.append(model.encode_text(model.tokenize(list(texts[i : i + batch_size]))).float())
    if not out:
        return torch.zeros((0, model.embed_dim))
    return torch.cat(out)


@torch.no_grad()
def embed_items(
    model: BioVITAModel,
    items: MediaItems,
    *,
    batch_size: int = 64,
    workers: int = 0,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Normalised embeddings (n, D) of every item, in order. Torch's global random stream is left
    as it was (the loader draws its base seed from a generator of its own), so a training run
    that embeds something first keeps its dropout stream."""
    model.eval().to(device)
    loader = DataLoader(
        items,
        batch_size=batch_size,
        num_workers=workers,
        worker_init_fn=worker_init if workers else None,
        generator=torch.Generator().manual_seed(0),
    )
    out = []
    for batch in loader:
        x = batch.to(device)
        e = model.encode_mel(x) if items.modality == "audio" else model.encode_image(x)
        out.append(e.float().cpu())
    return torch.cat(out) if out else torch.zeros((0, model.embed_dim))


def media_items(model: BioVITAModel, index: MediaIndex, modality: str) -> MediaItems:
    """MediaItems with the model's front end and eval image transform."""
    _, eval_tf = model.image_transforms()
    return MediaItems(index, modality, frontend=model.frontend.cfg, image_transform=eval_tf)


# ---- embeddings of a dataset's items ---------------------------------------------------------


def split_items(folder: Path, modality: str, split: str) -> tuple[MediaIndex, pl.DataFrame]:
    """A split's MediaIndex and metadata (label, species_id, scientific_name, source, ...)."""
    index, meta = index_rows(split_files(folder, modality, split), _META)
    if not len(index):
        return index, pl.DataFrame()
    rows = pl.from_arrow(meta)
    assert isinstance(rows, pl.DataFrame)
    return index, rows.with_columns(pl.lit(split).alias("split"))


def embed_dataset(
    model: BioVITAModel,
    dataset: str | Path,
    modality: str,
    splits: Sequence[str] = MEDIA_SPLITS,
    *,
    batch_size: int = 64,
    workers: int = 0,
    device: str = "cpu",
) -> pl.DataFrame:
    """One row per item of the splits: metadata + `embedding` (list of float32).

    Text items are the species' prompts (one row per species and template).
    """
    folder = resolve_folder(dataset)
    if modality == "text":
        return _embed_prompts(model, folder, device)
    frames = []
    for split in splits:
        index, meta = split_items(folder, modality, split)
        if not len(index):
            continue
        items = media_items(model, index, modality)
        e = embed_items(model, items, batch_size=batch_size, workers=workers, device=device)
        frames.append(meta.with_columns(_embedding_series(e)))
    if not frames:
        raise FileNotFoundError(f"no {modality} items in splits {list(splits)} of {folder}")
    return pl.concat(frames, how="diagonal_relaxed")


def _embedding_series(e: torch.Tensor) -> pl.Series:
    arr = pa.FixedSizeListArray.from_arrays(pa.array(e.numpy().reshape(-1)), e.shape[1])
    return pl.Series("embedding", pl.from_arrow(arr))


def _embed_prompts(model: BioVITAModel, folder: Path, device: str) -> pl.DataFrame:
    species = read_species(split_files(folder, "species", "train"))
    rows = [
        (label, int(species.species_id[label]), species.scientific_name[label], t, text)
        for label in range(len(species))
        if species.species_id[label] >= 0
        for t, text in enumerate(species.prompts[label])
    ]
    model.eval().to(device)
    e = embed_texts(model, [r[4] for r in rows])
    meta = pl.DataFrame(
        rows,
        schema=["label", "species_id", "scientific_name", "template", "text"],
        orient="row",
    )
    return meta.with_columns(_embedding_series(e.cpu()))


def write_embeddings(df: pl.DataFrame, path: str | Path) -> Path:
    """Write an embed_dataset frame as Parquet (zstd)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.write_parquet(path, compression="zstd")
    return path
