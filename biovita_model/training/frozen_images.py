"""Stage 2's photo targets embedded once: the frozen image tower's output for each training photo.

The image tower is frozen in Stage 2 (kept in eval mode) and its photos go through the eval
transform, so a photo's embedding never changes within a run. With `cache_inputs`, every photo of
the training split is embedded once at the start and a batch looks its rows up instead of decoding
and embedding them at each step. The table is in memory (rows x embed_dim floats, per rank): for
small datasets, like the rest of `cache_inputs`.
"""

from __future__ import annotations

import contextlib

import torch

from biovita_model.embed import MediaItems, embed_items
from biovita_model.model import BioVITAModel
from biovita_model.training.data import SpeciesImages


class FrozenImages:
    """Embeddings of every photo of a `SpeciesImages` split by a frozen image tower
    (`embed.embed_items` over its index, with its transform; the model's mode is kept)."""

    def __init__(
        self,
        model: BioVITAModel,
        images: SpeciesImages,
        device: torch.device,
        *,
        batch_size: int = 64,
        autocast: contextlib.AbstractContextManager | None = None,
    ) -> None:
        if "image" not in model.frozen:
            raise ValueError("photo embeddings can only be cached for a frozen image tower")
        items = MediaItems(images.index, "image", image_transform=images.transform)
        training = model.training
        with autocast or contextlib.nullcontext():
            embeddings = embed_items(model, items, batch_size=batch_size, device=device)
        model.train(training)  # embed_items leaves the model in eval mode
        self.embeddings = embeddings.to(device)  # embed_items returns them on the CPU

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        """The embeddings of a batch's photo rows."""
        return self.embeddings[rows.to(self.embeddings.device)]
