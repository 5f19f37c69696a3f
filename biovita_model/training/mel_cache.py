"""Log-mels of a split's recordings, computed once per front end and kept on disk.

Decoding, resampling and the STFT of a recording cost more than the tiny audio tower's step
(about 30 ms an item against 5 ms), so a run that decodes every item again spends most of its
time feeding the model. With the cache a training item is a crop of stored frames:

- a recording no longer than the clip is stored exactly as the front end makes it (padded to the
  clip as the extractor pads): its item is the same as without the cache;
- a longer one is stored as the log-mel of the whole recording, and an item is `n_frames`
  consecutive frames starting at the item's crop fraction: the random crop in frames (steps of
  one hop) instead of samples, with the neighbouring audio instead of reflect padding at its
  edges.

The cache file is `$BIOVITA_CACHE/mels/<key>.npz` (default `~/.cache/biovita`); the key hashes the
front end and the split's recordings (their sha256 and segment), so another split, dataset
version or front end gets its own file. Memory: every frame of every recording, float16
(`MelCache.nbytes`); meant for the tiny towers' coarse front end (12 frames/s x 32 bins: 0.8 kB a
second of audio) and datasets of thousands of recordings, not for a million-recording corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from torch.utils.data import DataLoader, Dataset

from biovita_data.loader import BioVITADataset, decode_whole
from biovita_data.loader.index import index_rows
from biovita_model.audio_frontend import FrontendConfig
from biovita_model.model import write_atomic
from biovita_model.threads import worker_init
from biovita_model.training.data import LazyFrontend
from biovita_model.training.prompt_cache import cache_root

CACHE_DIR = "mels"
FORMAT = 1  # bump when what is stored changes


def cache_key(base: BioVITADataset, cfg: FrontendConfig) -> str:
    """SHA-256 of the front end, the resampler and each recording's (sha256, segment)."""
    _, table = index_rows([Path(f) for f in base.audio_index.files], ["sha256", "segment"])
    digest = hashlib.sha256()
    meta = {"format": FORMAT, "frontend": cfg.to_dict(), "quality": base.resample_quality}
    digest.update(json.dumps(meta, sort_keys=True).encode())
    for name in ("sha256", "segment"):
        if name in table.column_names:
            digest.update(json.dumps(table.column(name).to_pylist()).encode())
        else:  # no content hash: the shards' paths and sizes stand in
            digest.update(
                json.dumps([[f, Path(f).stat().st_size] for f in base.audio_index.files]).encode()
            )
    return digest.hexdigest()


class _Recordings(Dataset):
    """Item i: recording i's stored frames (T, F) float16 (decoded in a loader worker)."""

    def __init__(self, base: BioVITADataset, cfg: FrontendConfig) -> None:
        self.base, self.cfg, self.frontend = base, cfg, LazyFrontend(cfg)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> np.ndarray:
        try:
            wave = decode_whole(
                self.base.audio_bytes(index),
                target_rate=self.cfg.sample_rate,
                quality=self.base.resample_quality,
            )
            if wave.size == 0:
                raise ValueError("the recording has no samples")
        except Exception as exc:  # name the item, as the loader does
            raise RuntimeError(
                f"cannot decode audio item {index} of {self.base.folder} split "
                f"{self.base.split} for the mel cache: {exc}"
            ) from exc
        x = torch.from_numpy(wave)
        if x.shape[0] <= self.cfg.max_samples:  # the front end's own padding: exact
            mel = self.frontend(x, x.shape[0])[0]
        else:
            with torch.no_grad():
                mel = self.frontend.module.log_mel(x[None])[0, 0]
        return mel.to(torch.float16).numpy()


class MelCache:
    """Every recording of a split as log-mel frames; `clip(index, u)` is a training item's input."""

    def __init__(
        self,
        base: BioVITADataset,
        cfg: FrontendConfig,
        *,
        workers: int | None = None,
        console: Console | None = None,
        cache: Path | None = None,
        write: bool = True,
    ) -> None:
        self.cfg = cfg
        self.path = (cache or cache_root()) / CACHE_DIR / f"{cache_key(base, cfg)}.npz"
        self.computed = False
        if self.path.is_file():
            with np.load(self.path) as doc:
                frames, offsets = doc["frames"], doc["offsets"]
        else:
            frames, offsets = self._compute(base, cfg, workers, console)
            self.computed = True
            if write:
                write_atomic(self.path, lambda p: _save(p, frames, offsets))
        if offsets.shape[0] != len(base) + 1:
            raise ValueError(
                f"{self.path}: {offsets.shape[0] - 1} recordings, the split has {len(base)}"
            )
        self.frames = torch.from_numpy(frames)
        self.offsets = offsets

    @staticmethod
    def _compute(
        base: BioVITADataset, cfg: FrontendConfig, workers: int | None, console: Console | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if workers is None:  # a one-off pass: every core decodes
            workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        loader = DataLoader(
            _Recordings(base, cfg),
            batch_size=None,
            num_workers=workers,
            worker_init_fn=worker_init if workers else None,
            generator=torch.Generator(),  # its workers' seed: never drawn from the global stream
        )
        parts: list[np.ndarray] = []
        with Progress(console=console or Console(stderr=True), transient=True) as progress:
            task = progress.add_task("mel cache", total=len(base))
            for mel in loader:
                parts.append(np.asarray(mel))
                progress.advance(task)
        offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([p.shape[0] for p in parts])
        frames = np.concatenate(parts) if parts else np.zeros((0, cfg.n_mels), np.float16)
        return frames, offsets

    @property
    def nbytes(self) -> int:
        """Bytes the frames take in memory."""
        return int(self.frames.numel() * self.frames.element_size())

    def clip(self, index: int, u: float) -> torch.Tensor:
        """Item input (1, n_frames, F) float32: the recording's frames from fraction u of the
        admissible starts (the whole stored clip when the recording fits in one)."""
        lo, hi = int(self.offsets[index]), int(self.offsets[index + 1])
        n = self.cfg.n_frames
        start = lo + min(hi - lo - n, int(u * (hi - lo - n + 1)))
        return self.frames[start : start + n].float()[None]


def _save(path: Path, frames: np.ndarray, offsets: np.ndarray) -> None:
    with open(path, "wb") as f:  # np.savez would append .npz to a temporary name
        np.savez(f, frames=frames, offsets=offsets)
