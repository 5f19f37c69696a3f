"""Frozen text-tower embeddings of prompts, cached on disk by text tower identity and prompt.

Stage 1 keeps the text tower frozen, so a prompt's embedding never changes within a run, nor
between runs over the same text tower. The cache file of a tower is
`$BIOVITA_CACHE/prompt-embeddings/<key>.pt` (default `~/.cache/biovita`), where the key hashes the
text tower's architecture, tokenizer and weights; it holds every prompt embedded so far, and a
start embeds only the prompts it lacks.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import torch

from biovita_model.embed import embed_texts
from biovita_model.model import BioVITAModel, part_of_key, write_atomic

CACHE_ENV = "BIOVITA_CACHE"
CACHE_DIR = "prompt-embeddings"


def cache_root() -> Path:
    """$BIOVITA_CACHE, else ~/.cache/biovita (XDG_CACHE_HOME respected)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "biovita"


def text_tower_key(model: BioVITAModel) -> str:
    """SHA-256 of the text tower: its open_clip config, tokenizer folder and every text weight."""
    digest = hashlib.sha256()
    cfg = model.tower_config
    meta = {"text_cfg": cfg.open_clip["model_cfg"].get("text_cfg"), "tok": cfg.tokenizer_dir}
    meta["embed_dim"] = cfg.embed_dim
    digest.update(json.dumps(meta, sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        if part_of_key(name) != "text":
            continue
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(t.shape)}".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


class FrozenText:
    """Embeddings of a fixed prompt set by a frozen text tower (Stage 1), from the disk cache
    where it has them; `computed` counts the prompts this start had to embed."""

    def __init__(
        self,
        model: BioVITAModel,
        prompts: Iterable[Iterable[str]],
        device: torch.device,
        *,
        cache: Path | None = None,
        write: bool = True,
    ) -> None:
        texts = sorted({p for group in prompts for p in group})
        self.row = {t: i for i, t in enumerate(texts)}
        self.path = (cache or cache_root()) / CACHE_DIR / f"{text_tower_key(model)}.pt"
        stored: dict[str, torch.Tensor] = {}
        if self.path.is_file():
            doc = torch.load(self.path, map_location="cpu", weights_only=True)
            stored = dict(zip(doc["texts"], doc["embeddings"], strict=True))
        missing = [t for t in texts if t not in stored]
        self.computed = len(missing)
        if missing:
            with torch.no_grad():
                fresh = embed_texts(model, missing).cpu()
            stored.update(zip(missing, fresh, strict=True))
            if write:
                names = sorted(stored)
                doc = {"texts": names, "embeddings": torch.stack([stored[n] for n in names])}
                write_atomic(self.path, lambda p: torch.save(doc, p))
        self.embeddings = torch.stack([stored[t] for t in texts]).to(device)

    def __call__(self, texts: list[str]) -> torch.Tensor:
        """The embeddings of a batch of prompts."""
        return self.embeddings[[self.row[t] for t in texts]]
