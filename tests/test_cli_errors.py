"""A newcomer's errors and logs: one line and a non-zero exit, no traceback unless --debug;
nothing cut at 80 columns when the output is a file; help that says what each option does."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.table import Table
from typer.testing import CliRunner

from biovita_data.app.cli import app
from biovita_data.app.clikit import CliConsole
from biovita_data.sample.server import DEFAULT_XC_KEY, SampleServer
from biovita_model.cli import app as model_app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def one_error_line(output: str) -> str:
    """The output is exactly one `error: ...` line, without a traceback."""
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error: ") and "Traceback" not in output, output
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "--dataset", "MISSING", "--stage", "1", "--out", "R"], "no such folder"),
        (["train", "--out", "R"], "--dataset"),
        (["train", "--out", "R", "--dataset", "ns/name"], "--stage"),
        (["train", "--out", "MISSING/run", "--resume"], "no run to resume"),
        (["eval", "--run", "MISSING", "--bench", "MISSING"], "no such run folder"),
        (["eval", "--run", "."], "Missing option '--bench'"),
        (["embed", "--run", "MISSING", "--dataset", "d", "--out", "x.parquet"], "--run"),
        (["probe-traits", "--run", "MISSING", "--dataset", "d"], "--run"),
        (["train-tiny", "--dataset", "MISSING", "--runs", "R"], "no such folder"),
        (["import-official", "--clap-weights", "MISSING.pth", "--open-clip", "MISSING",
          "--out", "R"], "--clap-weights"),
        (["trian"], "Did you mean 'train'"),
    ],
)  # fmt: skip
def test_model_errors_are_one_line(args: list[str], expected: str, tmp_path: Path) -> None:
    result = runner.invoke(model_app, [a.replace("MISSING", str(tmp_path / "x")) for a in args])
    assert result.exit_code == 2, result.output
    assert expected in one_error_line(result.output)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["fetch", "--out", "O"], "Missing option '--taxa'"),
        (["fetch", "--taxa", "Aves", "--out", "O", "--since", "yesterday"], "YYYY-MM-DD"),
        (["fetch", "--taxa", "Aves", "--out", "O", "--source", "gbiff"], "unknown source"),
        (["align", "--out", "MISSING/out"], "x/out"),
        (["run", "MISSING.toml"], "x.toml: No such file or directory"),
        (["publish", "--out", "MISSING", "--repo-id", "a/b", "--folder-only"], "no build here"),
        (["sample", "serve", "--format", "yaml"], "env or json"),
        (["materialize"], "Missing option '--out'"),
    ],
)
def test_data_errors_are_one_line(args: list[str], expected: str, tmp_path: Path) -> None:
    result = runner.invoke(app, [a.replace("MISSING", str(tmp_path / "x")) for a in args])
    assert result.exit_code != 0, result.output
    line = one_error_line(result.output)
    assert expected in line and "[Errno" not in line


def test_since_is_checked_before_any_request(tmp_path: Path, monkeypatch) -> None:
    with _server(monkeypatch) as server:
        result = runner.invoke(
            app, ["fetch", "--taxa", "Aves", "--out", str(tmp_path), "--since", "2024-13-01"]
        )
        assert server.faults.counts["requests"] == 0
    assert result.exit_code == 2 and "YYYY-MM-DD" in one_error_line(result.output)


def _server(monkeypatch):
    from biovita_data.sample.world import World

    server = SampleServer(World("tiny"), port=0)
    for k, v in server.urls.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("XENO_CANTO_API_KEY", DEFAULT_XC_KEY)
    return server


def test_unknown_taxon_suggests_and_gives_no_resume_advice(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    with _server(monkeypatch):
        result = runner.invoke(
            app, ["fetch", "--taxa", "Avess", "--out", str(out), "--no-throttle"]
        )
    assert result.exit_code == 2
    line = one_error_line(result.output)
    assert "'Avess' not found" in line and "did you mean Aves" in line, line
    assert "resume" not in line and str(out) not in line


def test_unexpected_error_is_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("this is = not [valid toml")
    plain = runner.invoke(app, ["run", str(bad)])
    assert plain.exit_code != 0
    one_error_line(plain.output)
    # an error no command expects: a one-liner naming its type, the traceback behind --debug
    code = (
        "from typing import Annotated\n"
        "from biovita_data.app.clikit import cli_app, debug_option\n"
        "app = cli_app('t')\n"
        "@app.callback()\n"
        "def main(debug: Annotated[bool, debug_option()] = False) -> None: ...\n"
        "@app.command()\n"
        "def boom() -> None:\n"
        "    raise ZeroDivisionError('the bug')\n"
        "app()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    quiet = subprocess.run([sys.executable, "-c", code, "boom"], capture_output=True, text=True,
                           env=env, timeout=120)  # fmt: skip
    assert quiet.returncode == 1
    line = one_error_line(quiet.stderr)
    assert "ZeroDivisionError: the bug" in line and "--debug" in line
    loud = subprocess.run([sys.executable, "-c", code, "--debug", "boom"], capture_output=True,
                          text=True, env=env, timeout=120)  # fmt: skip
    assert loud.returncode == 1 and "Traceback" in loud.stderr and "the bug" in loud.stderr


def test_console_is_not_cut_when_not_a_terminal() -> None:
    buf = io.StringIO()
    console = CliConsole(file=buf)
    command = "biovita-model eval --run " + "/very/long/path" * 12 + " --bench OUT/bench"
    console.print("# next: " + command)
    table = Table("modality", "failed (by reason)")
    table.add_row("audio", "undecodable: 3, silent: 2, duplicate: 1, license_not_allowed: 12" * 2)
    console.print(table)
    console.rule("a rule")
    text = buf.getvalue()
    assert "# next: " + command + "\n" in text  # one line, pasteable
    assert "undecodable: 3, silent: 2, duplicate: 1, license_not_allowed: 12" * 2 in text
    assert "failed (by reason)" in text and "…" not in text
    assert max(len(line) for line in text.splitlines()) > 200
    assert len(text.splitlines()[-1]) <= 100  # a rule stays short in a log


def test_logged_output_of_the_real_cli_is_uncut(tmp_path: Path) -> None:
    """`biovita-model train --help > file`: the help whole, each option on one line."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-m", "biovita_model.cli", "train", "--help"],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    help_text = proc.stdout
    assert "--max-audio-per-species" in help_text and "…" not in help_text
    line = next(x for x in help_text.splitlines() if "--keep-checkpoints" in x)
    assert "epoch checkpoints kept" in line
    assert "<bool>" not in help_text
    assert "required unless --resume" in help_text


def test_help_text() -> None:
    run_help = runner.invoke(app, ["run", "--help"]).output
    assert "[sample]" in run_help
    for cmd in ("fetch", "align", "materialize"):
        out = runner.invoke(app, [cmd, "--help"]).output
        assert "--no-throttle" in out and "--no-no-throttle" not in out and "<bool>" not in out
    assert "--no-restart" not in runner.invoke(app, ["fetch", "--help"]).output
    assert "--debug" in runner.invoke(app, ["--help"]).output
    assert "--debug" in runner.invoke(model_app, ["--help"]).output
    train_tiny = runner.invoke(model_app, ["train-tiny", "--help"]).output
    assert "--json" in train_tiny and "--verbose" in train_tiny


def test_sample_serve_prints_exports() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "biovita_data.app.cli", "sample", "serve", "--size", "tiny"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        lines = []
        while not lines or lines[-1].startswith("export "):  # up to the "# serving" line
            lines.append(proc.stdout.readline().strip())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    exports = dict(x.removeprefix("export ").split("=", 1) for x in lines if x.startswith("export"))
    assert set(exports) >= {"XENO_CANTO_API_URL", "INATURALIST_API_URL", "XENO_CANTO_API_KEY"}
    assert exports["INATURALIST_API_URL"].startswith("http://127.0.0.1:")


def test_traits_on_a_build_without_species_fails_before_any_download(tmp_path: Path) -> None:
    result = runner.invoke(app, ["traits", "--out", str(tmp_path), "--table", "avonet"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {tmp_path}/manifests/species.parquet: missing (run align first)"
    ]
    assert not (tmp_path / "raw" / "traits").exists()  # nothing was downloaded
