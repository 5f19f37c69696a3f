"""A trained run as an MTEB encoder: audio, image and text retrieval tasks call `encode`.

MTEB (>= 2, `mteb.models.models_protocols.EncoderProtocol`) hands an encoder a DataLoader of
batches, each a dict with one modality: `audio` (items `{"array", "sampling_rate"}`), `image`
(PIL images) or `text` (strings); `encode` returns one L2-normalised row per item, and
`similarity` is the cosine (the dot product of the rows). Audio goes through the loader's rules
(mono, resampled to the front end's rate, the onset-aligned 10 s crop and the run's `short_clip`),
as `biovita-model eval` embeds it; images get the tower's eval transform. The protocol is
followed without importing mteb; `mteb_model_meta` needs it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from biovita_data.loader.audio import fit_clip, resample, to_mono
from biovita_model.model import BioVITAModel, load_model

MODALITIES = ("audio", "image", "text")


class BioVITAEncoder:
    """A run folder's model behind MTEB's encoder protocol (`model_name`: the run folder)."""

    def __init__(
        self,
        model_name: str | Path,
        revision: str | None = None,
        *,
        device: str | None = None,
        model: BioVITAModel | None = None,
        **kwargs: Any,
    ) -> None:
        self.model_name = str(model_name)
        self.revision = revision
        self.device = torch.device(device or "cpu")
        self.model = (model or load_model(Path(model_name), map_location=self.device)).eval()
        self.model.to(self.device)
        _, self.image_transform = self.model.image_transforms()

    @torch.no_grad()
    def encode(self, inputs: Iterable[Mapping[str, Any]], **kwargs: Any) -> np.ndarray:
        """One normalised float32 row per item of every batch (task_metadata, hf_split,
        hf_subset and prompt_type are accepted and not needed: a prompt is its text)."""
        rows = [self._batch(batch) for batch in inputs]
        if not rows:
            return np.zeros((0, self.model.embed_dim), np.float32)
        return torch.cat(rows).float().cpu().numpy()

    def _batch(self, batch: Mapping[str, Any]) -> torch.Tensor:
        kinds = [m for m in MODALITIES if batch.get(m) is not None]
        if not kinds:
            raise ValueError(f"a batch needs one of {MODALITIES}, got keys {sorted(batch)}")
        kind = kinds[0]
        if kind == "audio":
            mel = torch.stack([self._mel(item) for item in batch["audio"]])
            return self.model.encode_mel(mel.to(self.device))
        if kind == "image":
            pixels = torch.stack([self.image_transform(img) for img in batch["image"]])
            return self.model.encode_image(pixels.to(self.device))
        return self.model.encode_text(self.model.tokenize(list(batch["text"])))

    def _mel(self, item: Mapping[str, Any]) -> torch.Tensor:
        """One recording ({"array", "sampling_rate"}) as the model's input (1, T, F)."""
        cfg = self.model.frontend.cfg
        x = np.asarray(item["array"], dtype=np.float32)
        x = to_mono(x.T if x.ndim == 2 and x.shape[0] < x.shape[1] else x)
        x = resample(x, int(item["sampling_rate"]), cfg.sample_rate)
        clip, _, _ = fit_clip(
            x, cfg.max_samples, mode="onset", rate=cfg.sample_rate, short_clip=cfg.short_clip
        )
        return self.model.frontend.log_mel(torch.from_numpy(clip)[None].to(self.device))[0]

    @staticmethod
    def similarity(a: Any, b: Any) -> torch.Tensor:
        """Cosine similarity matrix (rows of a x rows of b)."""
        a, b = _unit(a), _unit(b)
        return a @ b.T

    @staticmethod
    def similarity_pairwise(a: Any, b: Any) -> torch.Tensor:
        """Cosine similarity of each pair of rows."""
        return (_unit(a) * _unit(b)).sum(-1)

    @property
    def mteb_model_meta(self) -> Any:
        """mteb's ModelMeta of this run (needs mteb)."""
        from mteb.models import ModelMeta

        return ModelMeta(
            loader=None,
            name=f"biovita/{Path(self.model_name).name}",
            revision=self.revision or "local",
            release_date=None,
            languages=["eng-Latn"],
            n_parameters=sum(p.numel() for p in self.model.parameters()),
            memory_usage_mb=None,
            max_tokens=None,
            embed_dim=self.model.embed_dim,
            license=None,
            open_weights=True,
            public_training_code=None,
            public_training_data=None,
            framework=["PyTorch"],
            similarity_fn_name="cosine",
            use_instructions=False,
            training_datasets=None,
            modalities=list(MODALITIES),
        )


def _unit(x: Any) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float()
    return torch.nn.functional.normalize(t.reshape(-1, t.shape[-1]), dim=-1)
