"""Output a user reads in a log (not a terminal): help without boxes or trailing spaces, table
titles on one line, plain progress lines with rate and time left, results on stdout."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, TextColumn
from rich.table import Table
from typer.testing import CliRunner

from biovita_data.app import stages
from biovita_data.app.cli import app
from biovita_data.app.clikit import CliConsole
from biovita_data.app.stages import dropped_words
from biovita_data.core.progress import LogProgress

ROOT = Path(__file__).resolve().parents[1]


def test_help_in_a_log_has_no_boxes_and_no_trailing_spaces() -> None:
    res = CliRunner().invoke(app, ["split", "--help"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert [line for line in lines if line != line.rstrip()] == []
    assert not any(ch in res.output for ch in "╭╰│")
    assert "Options:" in lines
    assert any(line.lstrip("* ").startswith("--out") and "[required]" in line for line in lines)
    assert max(len(line) for line in lines) <= 160


def test_help_piped_from_the_real_program() -> None:
    exe = Path(sys.executable).with_name("biovita-data")
    out = subprocess.run(
        [str(exe), "--help"], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "Commands:" in out and "fetch" in out
    assert all(line == line.rstrip() for line in out.splitlines())


def test_table_title_stays_on_one_line_in_a_log() -> None:
    buf = io.StringIO()
    console = CliConsole(file=buf)
    table = Table(title="stage 2 training time per direction (3.57 h on two idle cores)")
    table.add_column("A2I")
    table.add_row("41")
    console.print(table)
    first = buf.getvalue().splitlines()[0]
    assert first.strip() == "stage 2 training time per direction (3.57 h on two idle cores)"


def _progress(console: Console, clock: list[float]) -> LogProgress:
    return LogProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        console=console,
        get_time=lambda: clock[0],
        unit="steps",
    )


def test_progress_in_a_log_prints_every_five_percent_with_rate_and_time_left() -> None:
    buf, clock = io.StringIO(), [0.0]
    with _progress(Console(file=buf, force_terminal=False), clock) as progress:
        task = progress.add_task("stage 1", total=200)
        for _ in range(200):
            clock[0] += 0.5
            progress.advance(task)
    lines = [line for line in buf.getvalue().splitlines() if line.startswith("stage 1:")]
    assert len(lines) == 20  # 5 %, 10 %, ..., 100 %
    assert lines[0] == "stage 1: 10/200 (5 %), 2.0 steps/s, 0m05s elapsed, 1m35s left"
    assert lines[-1].startswith("stage 1: 200/200 (100 %)")


def test_progress_in_a_log_of_a_fast_task_prints_a_line_a_second_at_most() -> None:
    buf, clock = io.StringIO(), [0.0]
    with _progress(Console(file=buf, force_terminal=False), clock) as progress:
        task = progress.add_task("dedup image", total=66)
        for _ in range(66):  # the whole task in 1.98 s: not a line per 5 %
            clock[0] += 0.03
            progress.advance(task)
    lines = [line for line in buf.getvalue().splitlines() if line.startswith("dedup image:")]
    assert [line.split(" (")[0] for line in lines] == ["dedup image: 34/66", "dedup image: 66/66"]


def test_progress_in_a_log_prints_every_30_seconds_when_slow() -> None:
    buf, clock = io.StringIO(), [0.0]
    with _progress(Console(file=buf, force_terminal=False), clock) as progress:
        task = progress.add_task("materialize audio", total=10_000)
        for _ in range(10):  # 0.1 % of the total per 10 s: only the clock brings a line
            clock[0] += 10.0
            progress.advance(task, 10)
    lines = [line for line in buf.getvalue().splitlines() if line.startswith("materialize")]
    assert [line.split("), ")[0] + ")" for line in lines[:3]] == [
        "materialize audio: 30/10,000 (0 %)",
        "materialize audio: 60/10,000 (1 %)",
        "materialize audio: 90/10,000 (1 %)",
    ]
    assert lines[0].endswith("left")


def test_progress_on_a_terminal_prints_no_plain_lines() -> None:
    buf, clock = io.StringIO(), [0.0]
    with _progress(Console(file=buf, force_terminal=True), clock) as progress:
        task = progress.add_task("stage 1", total=10)
        for _ in range(10):
            clock[0] += 5
            progress.advance(task)
    assert "stage 1: " not in buf.getvalue()


def test_the_build_prints_the_class_coverage_table_once(monkeypatch) -> None:
    seen: dict[str, dict] = {}

    def fake(stage: str):
        def run(out: Path, cfg: dict, console: Console) -> str:
            seen[stage] = cfg
            return stage

        return run

    monkeypatch.setattr(stages, "RUNNERS", {s: fake(s) for s in ("traits", "stats")})
    monkeypatch.setattr(stages, "describe", lambda stage, result: result)
    console = Console(file=io.StringIO())
    stages.run_build(Path("OUT"), {"traits": {"tables": ["avonet"]}}, console, ("traits", "stats"))
    assert seen["stats"] == {"class_coverage": False}  # traits printed it in this run
    stages.run_build(Path("OUT"), {}, console, ("stats",))
    assert seen["stats"] == {}  # stats alone prints it (class_coverage defaults to True)


def test_demo_words_licence_drops_as_drops_not_failures() -> None:
    assert dropped_words({"license_not_allowed": 396}) == ", 396 dropped: licence"
    assert dropped_words({"license_not_allowed": 0}) == ""
    assert "failed" not in dropped_words({"license_unknown": 2, "malformed": 1})


def test_demo_results_go_to_stdout(monkeypatch, tmp_path: Path) -> None:
    got: dict[str, Console] = {}

    def fake_demo(workdir: Path, *, console: Console, results: Console, **_: object) -> dict:
        got.update(console=console, results=results)
        results.print("next: biovita-model eval")
        return {}

    monkeypatch.setattr("biovita_data.app.demo.run_demo", fake_demo)
    res = CliRunner().invoke(app, ["demo", "--workdir", str(tmp_path), "--train", "none"])
    assert res.exit_code == 0, res.output
    assert got["results"].stderr is False and got["console"].stderr is True
    assert "next: biovita-model eval" in res.stdout


def test_progress_in_a_log_prints_every_30_seconds_while_a_task_does_not_advance() -> None:
    """One long step (a genus block of the near search) still shows a sign of life in a log."""
    import time

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False)
    with LogProgress(TextColumn("{task.description}"), console=console, every_s=0.2) as progress:
        progress.add_task("dedup audio: near search", total=3)
        time.sleep(0.9)
    lines = [
        ln for ln in buf.getvalue().splitlines() if ln.startswith("dedup audio: near search: ")
    ]
    assert len(lines) >= 2 and all(
        ln.startswith("dedup audio: near search: 0/3 (0 %)") for ln in lines
    )
    with LogProgress(TextColumn("{task.description}"), console=console, every_s=0.2) as progress:
        task = progress.add_task("done at once", total=1)
        progress.advance(task)
        time.sleep(0.5)
    assert buf.getvalue().count("done at once: ") == 1  # a finished task is not repeated
