"""The command lines a user types: help, version, demo, run, sample serve / export-traits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import requests
from typer.testing import CliRunner

from biovita_data.cli import app
from biovita_model.cli import app as model_app

runner = CliRunner()


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["fetch"],
        ["run"],
        ["demo"],
        ["sample"],
        ["sample", "serve"],
        ["sample", "export-traits"],
    ],
)
def test_help_on_every_command(args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_versions() -> None:
    assert runner.invoke(app, ["--version"]).output.startswith("biovita-data 0.")
    assert runner.invoke(model_app, ["--version"]).output.startswith("biovita-model 0.")
    assert runner.invoke(model_app, ["--help"]).exit_code == 0
    info = runner.invoke(model_app, ["info"])
    assert info.exit_code == 0 and "torch" in info.output


def test_demo_tiny_builds_the_layout(tmp_path: Path) -> None:
    env_before = dict(os.environ)
    result = runner.invoke(app, ["demo", "--workdir", str(tmp_path), "--size", "tiny"])
    assert result.exit_code == 0, result.output
    for src in ("xeno_canto", "inaturalist", "inat_open_data"):
        df = pl.read_parquet(tmp_path / "raw" / src / "records.parquet")
        assert len(df) > 20
    fails = pl.read_parquet(tmp_path / "manifests" / "failures.parquet")
    assert set(fails["reason"]) >= {"license_not_allowed", "restricted"}
    build = json.loads((tmp_path / "build.json").read_text())
    assert build["world"] == {"size": "tiny", "seed": 0}
    assert set(build["stages"]) == {"fetch", "sample-traits"}
    assert (tmp_path / "traits" / "AVONET1_BirdLife.csv").exists()
    assert "biovita-data demo" in result.output
    assert dict(os.environ) == env_before  # the sample world's URLs and key do not leak out


def test_run_sample_pipeline(tmp_path: Path) -> None:
    toml = Path("pipelines/sample.toml").read_text().replace('size = "default"', 'size = "tiny"')
    toml = toml.replace('taxa = ["Aves", "Amphibia", "Mammalia", "Insecta"]', 'taxa = ["Amphibia"]')
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(toml)
    result = runner.invoke(app, ["run", str(pipeline), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    df = pl.read_parquet(tmp_path / "out" / "raw" / "xeno_canto" / "records.parquet")
    assert df["source_group"].unique().to_list() == ["frogs"]
    bad = tmp_path / "bad.toml"
    bad.write_text("[fetch]\nsources = []\n")
    result = runner.invoke(app, ["run", str(bad)])
    assert result.exit_code == 2 and "taxa" in result.output


def test_pipeline_files_parse() -> None:
    from biovita_data.pipeline import load_pipeline

    for name in ("sample", "aves", "biovita"):
        p = load_pipeline(Path("pipelines") / f"{name}.toml")
        assert p.fetch_settings().taxa
    assert set(load_pipeline(Path("pipelines/biovita.toml")).fetch["taxa"]) == {
        "Aves",
        "Amphibia",
        "Insecta",
        "Mammalia",
    }


def test_sample_serve_prints_urls_and_serves(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "biovita_data.cli", "sample", "serve", "--size", "tiny"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        info = json.loads(proc.stdout.readline())
        r = requests.get(f"{info['INATURALIST_API_URL']}/taxa/3", timeout=10)
        assert r.json()["results"][0]["name"] == "Aves"
        r = requests.get(
            f"{info['XENO_CANTO_API_URL']}/recordings", params={"query": "grp:birds"}, timeout=10
        )
        assert r.status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_export_traits(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sample", "export-traits", str(tmp_path), "--size", "tiny"])
    assert result.exit_code == 0
    assert {p.name for p in tmp_path.iterdir()} == {
        "AVONET1_BirdLife.csv",
        "BirdFuncDat.txt",
        "MamFuncDat.txt",
        "AmphiBIO_v1.csv",
        "traits_other.csv",
    }


def test_import_official_through_the_cli(tmp_path: Path) -> None:
    csv = tmp_path / "metadata.csv"
    args = ["sample", "export-official", str(csv), "--root", "http://127.0.0.1:9", "--size", "tiny"]
    assert runner.invoke(app, args).exit_code == 0
    result = runner.invoke(app, ["import-official", str(csv), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    df = pl.read_parquet(tmp_path / "o" / "raw" / "official" / "records.parquet")
    assert len(df) == len(csv.read_text().splitlines()) - 1
    missing = runner.invoke(app, ["import-official", str(tmp_path / "nope.csv"), "--out", "x"])
    assert missing.exit_code == 2
