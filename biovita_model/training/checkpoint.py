"""Training-state checkpoints (RUN/checkpoints/epoch-NNNN.pt) and the per-step metrics log.

A checkpoint holds what `--resume` needs to continue exactly: model, optimizer, scheduler and
grad scaler states, the finished epoch and step, and the RNG states (torch, CUDA, NumPy,
Python). The sampler is a function of (seed, epoch), so the epoch restores it.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from biovita_model.model import write_atomic

CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"
_NAME = re.compile(r"^epoch-(\d{4,})\.pt$")


def rng_state() -> dict[str, Any]:
    """Every global RNG state a training step draws from."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore rng_state's output."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_path(run_dir: Path, epoch: int) -> Path:
    """RUN/checkpoints/epoch-NNNN.pt (epoch = epochs finished)."""
    return Path(run_dir) / CHECKPOINT_DIR / f"epoch-{epoch:04d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    found = [(int(m[1]), p) for p in folder.glob("epoch-*.pt") if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(run_dir: Path, epoch: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write a checkpoint atomically; keep only the newest `keep`."""
    path = checkpoint_path(run_dir, epoch)
    write_atomic(path, lambda p: torch.save(state, p))
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint's dict (it holds RNG states and optimizer state: not weights_only)."""
    return torch.load(path, map_location=map_location, weights_only=False)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint of a run, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


class MetricsLog:
    """RUN/metrics.jsonl: one JSON object per line (a step, or an epoch summary)."""

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self.enabled = enabled
        self._file = None

    def truncate_after(self, step: int) -> None:
        """Drop the lines of steps after `step` (a resumed run writes them again)."""
        if not (self.enabled and self.path.exists()):
            return
        kept = [line for line in self.path.read_text().splitlines() if _step(line) <= step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def reset(self) -> None:
        """Start an empty log."""
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")

    def write(self, record: dict[str, Any]) -> None:
        """Append one line (flushed)."""
        if not self.enabled:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a")
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None


def _step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 0


def read_metrics(run_dir: Path) -> Iterator[dict[str, Any]]:
    """The records of RUN/metrics.jsonl."""
    path = Path(run_dir) / METRICS_FILE
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                yield json.loads(line)
