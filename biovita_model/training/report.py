"""What a training stage prints: one progress bar and a short summary.

Every number stays on disk: each step in RUN/metrics.jsonl, each epoch in RUN/train_summary.json
(`history`); the per-epoch table is printed only with `--verbose`.
"""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from biovita_data.core.progress import LogProgress
from biovita_model.losses import LOSS_PARTS

_OF = re.compile(r"(\d+)/(\d+)")
_settings = {"verbose": False}


def set_verbose(verbose: bool) -> None:
    """Print the per-epoch table after each stage (the CLI's --verbose)."""
    _settings["verbose"] = verbose


class StageProgress(LogProgress):
    """One bar for a whole stage: an epoch's `add_task` ("epoch E/N") continues the same bar;
    in a log, a plain line every 5 % or 30 s (core.progress)."""

    def __init__(self, enabled: bool, console: Console) -> None:
        super().__init__(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
            transient=False,
            unit="steps",
        )
        self._stage_task: TaskID | None = None

    def add_task(self, description: str, start: bool = True, total: float | None = 100.0,
                 completed: int = 0, visible: bool = True, **fields: Any) -> TaskID:  # fmt: skip
        """The first epoch makes the bar (steps of all epochs left); later ones relabel it."""
        if self._stage_task is None:
            m = _OF.search(description)
            epochs_left = int(m[2]) - int(m[1]) + 1 if m else 1
            self._stage_task = super().add_task(
                description, start, None if total is None else total * epochs_left, completed,
                visible, **fields,
            )  # fmt: skip
            return self._stage_task
        task = self._tasks[self._stage_task]
        if not _OF.search(description) and total is not None and task.total is not None:
            self.update(self._stage_task, total=task.total + total)
        self.update(self._stage_task, description=description, **fields)
        return self._stage_task


def summary_line(result: Any) -> str:
    """`stage 1 -> RUN: 30 epochs, 360 steps in 4m12s; loss 4.2100 -> 2.0300; 85 items/s`
    (stage 2 also names its loss's parts while λ rises)."""
    history = result.history
    epochs = f"{result.epochs} epochs"
    if result.resumed_from:
        epochs += f" (resumed after epoch {result.resumed_from})"
    parts = [f"stage {result.stage} -> {result.run_dir}: {epochs}, {result.steps} steps in "
             f"{_duration(result.seconds)}"]  # fmt: skip
    if history:
        first, last = history[0], history[-1]
        parts.append(f"mean loss {first['loss']:.4f} (epoch {first['epoch']}) -> "
                     f"{last['loss']:.4f} (epoch {last['epoch']}){_ramp(first, last)}")  # fmt: skip
        parts.append(f"{last['items_per_s']:.1f} items/s")
    return "; ".join(parts)


def _ramp(first: dict[str, Any], last: dict[str, Any]) -> str:
    """Stage 2's loss is ATC + λ (AIC + ITC) with λ rising: its mean can grow while every part
    falls, so the parts are named beside it when λ moved."""
    if "lambda" not in first or first["lambda"] == last.get("lambda"):
        return ""
    moves = ", ".join(
        f"{k.upper()} {first[k]:.4f} -> {last[k]:.4f}"
        for k in LOSS_PARTS
        if k in first and k in last
    )
    return (
        f" as λ in ATC + λ (AIC + ITC) rose {first['lambda']:.2f} -> {last['lambda']:.2f}: {moves}"
    )


def print_summary(console: Console, result: Any, table: Any) -> None:
    """The stage's one-line summary; the per-epoch `table` too with --verbose."""
    if _settings["verbose"]:
        console.print(table)
    console.print(summary_line(result), highlight=False, markup=False, soft_wrap=True)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"
