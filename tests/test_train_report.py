"""Training output: one bar per stage, a one-line summary, the per-epoch table with --verbose."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from biovita_data.app.clikit import CliConsole
from biovita_model.training.report import StageProgress, print_summary, set_verbose, summary_line


@dataclass
class _Result:
    run_dir: Path = Path("RUNS/stage1")
    stage: str = "1"
    epochs: int = 3
    steps: int = 30
    seconds: float = 75.0
    history: list = field(default_factory=list)
    resumed_from: int | None = None


def test_one_bar_for_all_epochs() -> None:
    buf = io.StringIO()
    with StageProgress(True, CliConsole(file=buf)) as progress:
        ids = set()
        for epoch in range(3):
            task = progress.add_task(f"epoch {epoch + 1}/3", total=10, loss=0.0)
            ids.add(task)
            for _ in range(10):
                progress.update(task, advance=1, loss=1.5)
        assert len(ids) == 1 and len(progress.tasks) == 1
        assert progress.tasks[0].total == 30 and progress.tasks[0].completed == 30
    lines = buf.getvalue().splitlines()
    # in a log: plain progress lines (every 5 % or 30 s, rate and time left), then the final bar
    assert 2 <= len(lines) <= 22 and "epoch 3/3" in lines[-1] and "30/30" in lines[-1]
    done = [int(line.split(": ")[1].split("/")[0]) for line in lines[:-1]]
    assert done == sorted(done) and all("left" in line for line in lines[:-1])


def test_resumed_stage_counts_the_epochs_left() -> None:
    with StageProgress(False, CliConsole(file=io.StringIO())) as progress:
        progress.add_task("epoch 3/4", total=10, loss=0.0)
        assert progress.tasks[0].total == 20


def test_summary_is_one_line_and_the_table_needs_verbose() -> None:
    history = [
        {"epoch": e, "step": 10 * e, "loss": 2.0 - e / 10, "seconds": 25.0, "items_per_s": 12.5}
        for e in (1, 2, 3)
    ]
    result = _Result(history=history)
    table = Table("epoch")
    table.add_row("per-epoch-row")
    for verbose in (False, True):
        buf = io.StringIO()
        set_verbose(verbose)
        try:
            print_summary(CliConsole(file=buf), result, table)
        finally:
            set_verbose(False)
        lines = buf.getvalue().splitlines()
        assert ("per-epoch-row" in buf.getvalue()) is verbose
        assert lines[-1] == (
            "stage 1 -> RUNS/stage1: 3 epochs, 30 steps in 1m15s; "
            "mean loss 1.9000 (epoch 1) -> 1.7000 (epoch 3); 12.5 items/s"
        )


def test_stage_2_summary_names_the_parts_while_lambda_rises() -> None:
    """A stage-2 mean loss that grows only because λ does is shown with its falling parts."""
    ramp = [(0.5, 2.1, 2.6, 1.5), (1.0, 0.8, 1.2, 1.4)]  # (λ, ATC, AIC, ITC) of two epochs
    history = [
        {"epoch": e, "step": e, "loss": atc + lam * (aic + itc), "seconds": 1.0,
         "items_per_s": 9.0, "atc": atc, "aic": aic, "itc": itc, "lambda": lam}
        for e, (lam, atc, aic, itc) in enumerate(ramp, 1)
    ]  # fmt: skip
    line = summary_line(_Result(stage="2", history=history))
    assert (
        "mean loss 4.1500 (epoch 1) -> 3.4000 (epoch 2) as λ in ATC + λ (AIC + ITC) rose " in line
    )
    assert "0.50 -> 1.00: ATC 2.1000 -> 0.8000, AIC 2.6000 -> 1.2000, ITC 1.5000 -> 1.4000" in line
    flat = [dict(h, **{"lambda": 1.0}) for h in history]  # λ at its top: the loss alone
    assert "ATC" not in summary_line(_Result(stage="2", history=flat))
