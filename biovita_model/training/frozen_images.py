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

from biovita_model.model import BioVITAModel
from biovita_model.training.data import SpeciesImages


class FrozenImages:
    """Embeddings of every photo of a `SpeciesImages` split by a frozen image tower."""

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
        rows = len(images.index)
        chunks = []
        visual = model.clip.visual
        mode = visual.training
        visual.eval()
        with torch.no_grad(), autocast or contextlib.nullcontext():
            for start in range(0, rows, batch_size):
                pixels = torch.stack(
                    [images.load(r) for r in range(start, min(rows, start + batch_size))]
                )
                chunks.append(model.encode_image(pixels.to(device)).float())
        visual.train(mode)
        dim = model.embed_dim
        self.embeddings = torch.cat(chunks) if chunks else torch.zeros(0, dim, device=device)

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        """The embeddings of a batch's photo rows."""
        return self.embeddings[rows.to(self.embeddings.device)]
