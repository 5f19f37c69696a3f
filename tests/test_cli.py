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

from biovita_data.app.cli import app
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
        ["sample", "export-tol"],
        ["import-tol"],
        ["align"],
        ["traits"],
        ["split"],
        ["bench"],
        ["stats"],
        ["materialize"],
        ["publish"],
        ["hub"],
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
    for src in ("xeno_canto", "gbif", "treeoflife_200m"):
        df = pl.read_parquet(tmp_path / "raw" / src / "records.parquet")
        assert len(df) > 20
    # images come from TreeOfLife-200M only, as in the paper; the crawled photos are failures
    for src in ("inaturalist", "inat_open_data"):
        df = pl.read_parquet(tmp_path / "raw" / src / "records.parquet")
        assert set(df["modality"]) <= {"audio"}
    fails = pl.read_parquet(tmp_path / "manifests" / "failures.parquet")
    assert set(fails["reason"]) >= {"license_not_allowed", "restricted", "image_source_excluded"}
    moved = fails.filter(pl.col("reason") == "image_source_excluded")
    n_moved = moved.filter(pl.col("source") == "inat-open-data").height
    assert f"kept nothing ({n_moved} photos moved to failures: not the image source)" in " ".join(
        result.output.split()
    )
    build = json.loads((tmp_path / "build.json").read_text())
    assert build["world"] == {"size": "tiny", "seed": 0, "duplicates": False}
    assert set(build["stages"]) == {
        "fetch",
        "tol",
        "align",
        "traits",
        "split",
        "bench",
        "stats",
        "materialize",
        "dedup",
        "publish",
        "load",
        "train",
    }
    # published into the local hub's bare repo and loaded back by repo id, rows equal to hf/
    assert (tmp_path / "hub" / "mirrors" / "datasets" / "biovita" / "sample" / "HEAD").is_file()
    load = build["stages"]["load"]
    # the stable split: every seen species with 2+ units has at least one in test
    assert load["rows"]["audio"] == {"train": 59, "test": 17, "unseen": 5}
    assert set(load["rows"]) == {"audio", "image", "species", "bench"}
    assert 'load_dataset("biovita/sample", "audio", split="train")' in result.output
    assert "biovita-data hub --root" in result.output
    # a trained tiny model: both stages evaluated on the bench, with table and plot
    for stage in ("stage1", "stage2"):
        report = json.loads((tmp_path / "runs" / stage / "eval.json").read_text())
        entry = report["results"]["seen/species/A2I"]
        assert entry["n_queries"] > 0 and 0 <= entry["top1"] <= entry["top10"] <= 1
        assert (tmp_path / "runs" / stage / "eval.png").stat().st_size > 1000
    assert "BioVITA-Bench" in result.output  # the evaluation tables
    assert "seen species Top-1 A2I" in build["stages"]["train"]["result"]
    # the public trait tables were downloaded from BIOVITA_TRAITS_URL, sizes and sha256 recorded
    releases = json.loads((tmp_path / "raw" / "traits" / "releases.json").read_text())
    assert set(releases) == {"avonet", "eltontraits-birds", "eltontraits-mammals", "amphibio"}
    assert (tmp_path / "raw" / "traits" / "avonet" / "AVONET1_BirdLife.csv").exists()
    for name in ("species", "audio", "image", "unmatched"):
        assert (tmp_path / "manifests" / f"{name}.parquet").exists()
    for subset in ("seen", "unseen"):
        assert (tmp_path / "bench" / subset / "species" / "test_audio_to_image.csv").exists()
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["species"] > 10
    sources = {(r["modality"], r["source"]) for r in stats["per_source"]}
    assert {m for m, _ in sources} == {"audio", "image"}
    assert {s for m, s in sources if m == "image"} == {"treeoflife-200m"}
    assert {"xeno-canto", "inaturalist"} <= {s for m, s in sources if m == "audio"}
    coverage = stats["trait_coverage"]
    assert {r["class"] for r in coverage["per_class"]} == {"Aves", "Amphibia", "Mammalia",
                                                           "Insecta"}  # fmt: skip
    assert coverage["no_public_table"] == ["Insecta", "Reptilia"]
    assert list((tmp_path / "media" / "audio").glob("shard-*.parquet"))
    assert (tmp_path / "hf" / "README.md").read_text().startswith("---")
    species = pl.read_parquet(tmp_path / "manifests" / "species.parquet")
    published = pl.read_parquet(list((tmp_path / "hf" / "species").glob("*.parquet")))
    assert published.height == species.height
    assert "biovita-data demo" in result.output and "records per species" in result.output
    assert dict(os.environ) == env_before  # the sample world's URLs and key do not leak out

    # `demo --update`: the same world one epoch later, only what changed fetched, the diff shown
    again = runner.invoke(app, ["demo", "--workdir", str(tmp_path), "--update"])
    assert again.exit_code == 0, again.output
    assert "update to epoch 1" in again.output and "records removed" in again.output
    assert "bench seen queries" in again.output  # the bench rows kept beside the manifests
    from biovita_data.curate.release import diff

    d = diff(tmp_path / "previous", tmp_path)
    assert d["added"]["total"] > 0 and d["removed"]["total"] > 0
    assert d["moved_split"]["other"] == 0  # no survivor changed side
    assert json.loads((tmp_path / "build.json").read_text())["world"]["epoch"] == 1
    assert dict(os.environ) == env_before


def test_hub_init_and_bad_demo_option(tmp_path: Path) -> None:
    result = runner.invoke(app, ["hub", "--root", str(tmp_path), "--init", "ns/name"])
    assert result.exit_code == 0, result.output
    bare = tmp_path.resolve() / "mirrors" / "datasets" / "ns" / "name"
    assert result.output.strip() == f"--git-remote file://{bare}"
    assert (bare / "HEAD").is_file()
    again = runner.invoke(app, ["hub", "--root", str(tmp_path), "--init", "ns/name"])
    assert again.output == result.output  # idempotent
    bad = runner.invoke(app, ["hub", "--root", str(tmp_path), "--init", "no-slash"])
    assert bad.exit_code != 0
    demo = runner.invoke(app, ["demo", "--workdir", str(tmp_path / "d"), "--train", "big"])
    assert demo.exit_code == 2 and "--train must be one of" in demo.output


def test_run_sample_pipeline(tmp_path: Path) -> None:
    toml = Path("pipelines/sample.toml").read_text().replace('size = "default"', 'size = "tiny"')
    toml = toml.replace('taxa = ["Aves", "Amphibia", "Mammalia", "Insecta"]', 'taxa = ["Amphibia"]')
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(toml)
    result = runner.invoke(app, ["run", str(pipeline), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    df = pl.read_parquet(tmp_path / "out" / "raw" / "xeno_canto" / "records.parquet")
    assert df["source_group"].unique().to_list() == ["frogs"]
    species = pl.read_parquet(tmp_path / "out" / "manifests" / "species.parquet")
    assert set(species["class"]) == {"Amphibia"}
    known = species.select(pl.any_horizontal(pl.col("^trait_.*$").is_not_null())).to_series()
    assert known.all()  # every frog has AmphiBIO labels
    assert (tmp_path / "out" / "bench" / "seen" / "tasks.parquet").exists()
    assert list((tmp_path / "out" / "hf" / "audio").glob("train-*-of-*.parquet"))
    images = pl.read_parquet(tmp_path / "out" / "manifests" / "image.parquet")
    assert images.height and set(images["source"]) == {"treeoflife-200m"}
    bad = tmp_path / "bad.toml"
    bad.write_text("[fetch]\nsources = []\n")
    result = runner.invoke(app, ["run", str(bad)])
    assert result.exit_code == 2 and "taxa" in result.output


def test_pipeline_files_parse() -> None:
    from biovita_data.app.pipeline import load_pipeline

    for name in ("sample", "aves", "biovita"):
        p = load_pipeline(Path("pipelines") / f"{name}.toml")
        assert p.fetch_settings().taxa
    assert set(load_pipeline(Path("pipelines/biovita.toml")).fetch["taxa"]) == {
        "Aves",
        "Amphibia",
        "Insecta",
        "Mammalia",
        "Reptilia",
    }
    biovita = load_pipeline(Path("pipelines/biovita.toml"))
    assert biovita.extra["traits"]["tables"] == [
        "avonet", "eltontraits-birds", "eltontraits-mammals", "amphibio"
    ]  # fmt: skip
    assert biovita.extra["tol"]["per_species"] == 200
    gbif = biovita.fetch_settings()
    assert "gbif" in gbif.sources and gbif.media == "sound"
    assert gbif.gbif_datasets == ["b7ec1bf8-819b-11e2-bad2-00145eb45e9a"]  # Animal Sound Archive


def test_sample_serve_prints_urls_and_serves(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "biovita_data.app.cli",
            "sample",
            "serve",
            "--size",
            "tiny",
            "--format",
            "json",
        ],
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
        # what it prints is everything a build from it needs: the key it accepts, the allowance
        assert info["BIOVITA_ALLOW_LOOPBACK"] == "1"
        params = {"query": "grp:birds", "key": info["XENO_CANTO_API_KEY"]}
        r = requests.get(f"{info['XENO_CANTO_API_URL']}/recordings", params=params, timeout=10)
        assert r.status_code == 200 and int(r.json()["numRecordings"]) > 0
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


def test_stage_commands_one_by_one(tmp_path: Path) -> None:
    """fetch (via demo, its world with planted copies), then each stage as a user types it;
    errors are one clear line."""
    out = tmp_path / "b"
    assert runner.invoke(app, ["split", "--out", str(out)]).exit_code == 2  # nothing aligned
    result = runner.invoke(
        app, ["demo", "--workdir", str(out), "--size", "tiny", "--train", "none", "--duplicates"]
    )
    assert result.exit_code == 0, result.output
    assert not (out / "runs").exists()
    assert json.loads((out / "build.json").read_text())["world"]["duplicates"] is True
    from biovita_data.core import layout
    from biovita_data.sample.duplicates import COPY_XC_BASE

    dups = pl.read_parquet(layout.duplicates_path(out)).filter(pl.col("kind") != "metadata")
    planted = dups.filter(pl.col("record_id").cast(pl.Int64, strict=False) >= COPY_XC_BASE)
    assert planted.height >= 3  # the planted copies are found ...
    assert "duplicate groups: none" not in " ".join(result.output.split())  # ... and reported
    # the summary's rows say what dedup's second split left on disk, not the first split's
    rows = json.loads((out / "build.json").read_text())["stages"]
    split = json.loads((out / "manifests" / "split.json").read_text())
    moved = sum(split["moved"].values())
    assert moved == split["moved"]["unit_merged"] >= 1  # the tiny world's copies join a group
    assert f"split again: {moved} items moved" in rows["dedup"]["result"]
    test_clips = pl.read_parquet(out / "manifests" / "audio.parquet")["split"].eq("test").sum()
    assert rows["split"]["result"].startswith(f"test: {test_clips} clips")
    assert rows["split"]["result"].endswith("(after dedup)")
    queries = sum(
        pl.read_parquet(out / "bench" / s / "tasks.parquet").height for s in ("seen", "unseen")
    )
    assert f", {queries} queries" in rows["bench"]["result"]  # drawn again after the new split
    before = (out / "bench" / "seen" / "tasks.parquet").read_bytes()
    # align again with a CSV backbone: no network needed
    from biovita_data.sample.world import World

    world = World("tiny")
    rows = [
        {"scientific_name": s.name, "class": s.class_name, "order": s.order,
         "family": s.family, "genus": s.genus, "common_name": s.common_name}
        for s in world.species
    ]  # fmt: skip
    backbone = tmp_path / "backbone.csv"
    pl.DataFrame(rows).write_csv(backbone)
    result = runner.invoke(app, ["align", "--out", str(out), "--backbone", str(backbone)])
    assert result.exit_code == 0, result.output
    assert "species in the corpus" in result.output
    tables = [f"avonet={out / 'raw' / 'traits' / 'avonet' / 'AVONET1_BirdLife.csv'}"]
    result = runner.invoke(app, ["traits", "--out", str(out), "--table", tables[0]])
    assert result.exit_code == 0, result.output
    for cmd in (["split", "--seed", "0"], ["bench"], ["stats"]):
        result = runner.invoke(app, [cmd[0], "--out", str(out), *cmd[1:]])
        assert result.exit_code == 0, (cmd, result.output)
    assert (out / "bench" / "seen" / "tasks.parquet").read_bytes() != before  # new species ids
    bad = runner.invoke(app, ["traits", "--out", str(out), "--table", "pantheria"])
    assert bad.exit_code == 2 and "KIND=FILE" in bad.output
    # a release by name: in the cache already (the demo downloaded it), verified, no network
    result = runner.invoke(app, ["traits", "--out", str(out), "--table", "eltontraits-mammals"])
    assert result.exit_code == 0, result.output
    assert "Mammalia" in result.output and "no public trait table" in result.output
    bad = runner.invoke(app, ["align", "--out", str(out), "--backbone", str(tmp_path / "no.csv")])
    assert bad.exit_code == 2 and "no.csv" in bad.output


def test_hub_serves_until_sigterm_then_stops_olah(tmp_path: Path) -> None:
    pytest.importorskip("olah")
    import signal
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    proc = subprocess.Popen(
        [sys.executable, "-m", "biovita_data.app.cli", "hub", "--root", str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # printed once the server answers
        assert line.startswith("HF_ENDPOINT=http://127.0.0.1:"), line
        url = line.split("=", 1)[1].split()[0]
        with pytest.raises(urllib.error.HTTPError):  # up: an unknown repo is an HTTP error
            urllib.request.urlopen(f"{url}/api/datasets/ns/none/revision/main", timeout=5)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    with pytest.raises(urllib.error.URLError) as refused:  # olah went down with it
        urllib.request.urlopen(f"{url}/", timeout=5)
    assert not isinstance(refused.value, urllib.error.HTTPError)
