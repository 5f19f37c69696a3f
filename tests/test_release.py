"""Releases (issue 23): `release diff` between two builds, `publish --tag` (tags on a git remote
served by the local hub, the card's changelog, OUT/releases), loading a release by revision,
croissant.json validated by mlcroissant."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from publish_helpers import REPO_ID, make_build
from release_helpers import KEY, base_corpus, quiet, write_manifests
from rich.console import Console
from typer.testing import CliRunner

from biovita_data.app.cli import app
from biovita_data.core import layout
from biovita_data.core.schemas import FAILURE, MEDIA, REMOVED, SPECIES
from biovita_data.core.tables import write_table
from biovita_data.curate.release import ReleaseError, changelog_markdown, diff, print_diff
from biovita_data.curate.split import split
from biovita_data.publish import PublishError, localhub, publish

# ---- release diff -----------------------------------------------------------------------------


def _edit(out: Path, modality: str, keys: pl.DataFrame, **values: object) -> None:
    """Set columns of the manifest rows in `keys` (source, record_id) to `values`."""
    path = layout.media_manifest_path(out, modality)
    df = pl.read_parquet(path)
    wanted = keys.select("source", "record_id").to_struct().implode()
    hit = pl.struct("source", "record_id").is_in(wanted)
    df = df.with_columns(
        **{c: pl.when(hit).then(pl.lit(v)).otherwise(pl.col(c)) for c, v in values.items()}
    )
    write_table(df.to_arrow().cast(MEDIA), path)


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """OLD: a split corpus. NEW: five items removed (withdrawn, licence, takedown in
    removed.parquet; one dropped by align; one gone without a trace), five added, two licences,
    one coordinate, one media URL changed, one recording re-identified, two trait values."""
    root = tmp_path_factory.mktemp("release")
    corpus = base_corpus(n_species=30, n_items=800)
    old, new = root / "old", root / "new"
    write_manifests(old, corpus)
    split(old, console=quiet())
    audio = pl.read_parquet(layout.media_manifest_path(old, "audio"))
    seen = audio.filter(pl.col("split") == "train").sort("source", "record_id")
    gone = seen.head(5)
    reid = seen[5:6]
    big = seen["species_id"].value_counts(sort=True)["species_id"]
    a, b = reid["species_id"][0], next(s for s in big if s != reid["species_id"][0])
    added = pl.DataFrame(
        {"source": "xeno-canto", "modality": "audio",
         "record_id": [f"new{i}" for i in range(5)], "species_id": b, "observation_id": None},
        schema={"source": pl.String, "modality": pl.String, "record_id": pl.String,
                "species_id": pl.Int64, "observation_id": pl.Int64},
    )  # fmt: skip
    items = corpus.join(gone.select(KEY), on=KEY, how="anti")
    items = pl.concat([items, added]).with_columns(
        species_id=pl.when(pl.col("record_id") == reid["record_id"][0])
        .then(pl.lit(b))
        .otherwise(pl.col("species_id"))
    )
    shutil.copytree(old / "manifests", new / "manifests")
    write_manifests(new, items)
    split(new, console=quiet())
    removed = gone.head(3).select(
        *KEY,
        reason=pl.Series(["withdrawn", "licence", "takedown"]),
        detail=pl.lit("test"),
        removed_at=pl.lit("2026-12-01T00:00:00+00:00"),
    )
    layout.removed_path(new).parent.mkdir(parents=True, exist_ok=True)
    write_table(removed.to_arrow().cast(REMOVED), layout.removed_path(new))
    failures = gone[3:4].select(
        stage=pl.lit("align"), source="source", modality="modality", record_id="record_id",
        name=pl.lit(None, pl.String), reason=pl.lit("species_below_minimum"),
        detail=pl.lit("too few"),
    )  # fmt: skip
    write_table(failures.to_arrow().cast(FAILURE), layout.manifests_dir(new) / "failures.parquet")
    changed = seen[6:10]
    _edit(new, "audio", changed[0:2], license="cc0-1.0")
    _edit(new, "audio", changed[2:3], latitude=12.5)
    _edit(new, "audio", changed[3:4], media_url="https://example.org/moved.mp3")
    species = pl.read_parquet(layout.species_path(new)).with_columns(
        trait_diet_fruit=pl.when(pl.col("species_id") == a).then(1).otherwise(None),
        trait_habitat_forest=pl.when(pl.col("species_id") == a).then(0).otherwise(None),
    )
    write_table(species.to_arrow().cast(SPECIES), layout.species_path(new))
    names = {"a": a, "b": b, "reid": reid["record_id"][0]}
    return old, new, names


def test_diff_counts_every_kind_of_change(builds: tuple[Path, Path, dict]) -> None:
    old, new, names = builds
    d = diff(old, new)
    assert d["added"] == {"total": 5, "audio": 5}
    assert d["removed"]["total"] == 5
    assert d["removed"]["by_reason"] == {
        "absent_from_sources": 1, "dropped_by_align": 1, "licence": 1, "takedown": 1,
        "withdrawn": 1,
    }  # fmt: skip
    assert d["changed"] == {
        "total": 5, "licence": 2, "identification": 1, "coordinates": 1, "media_url": 1
    }  # fmt: skip
    assert d["moved_split"]["total"] == 0 and d["moved_split"]["other"] == 0
    assert d["traits_changed"] == {"species": 1, "values": 2}
    per = {e["species_id"]: e for e in d["per_species"]}
    assert per[names["a"]]["removed"]["re_identified"] == 1
    assert per[names["a"]]["traits_changed"] == ["trait_diet_fruit", "trait_habitat_forest"]
    assert per[names["b"]]["added"] == {"new": 5, "re_identified": 1}
    assert sum(sum(e["removed"].values()) for e in d["per_species"]) == 5 + 1
    assert diff(new, new)["changed"]["total"] == 0 == diff(new, new)["added"]["total"]
    log = io.StringIO()
    print_diff(d, Console(file=log, width=300))
    assert "records removed" in log.getvalue() and "withdrawn 1" in log.getvalue()
    md = changelog_markdown(d)
    assert md.startswith("## Changelog") and "| species | added |" in md


def test_diff_ignores_a_media_host_move(builds: tuple[Path, Path, dict], tmp_path: Path) -> None:
    """Every media URL on another host and port (a mirror, a restarted server): no change; a
    different path on the new host still is one."""
    old, new, _ = builds
    moved = tmp_path / "mirror"
    shutil.copytree(new, moved)
    for modality in ("audio", "image"):
        path = layout.media_manifest_path(moved, modality)
        df = pl.read_parquet(path)
        host = pl.col("media_url").str.replace(r"^[a-z]+://[^/]+", "http://mirror.example:8080")
        df.with_columns(media_url=host).write_parquet(path)
    assert diff(new, moved)["changed"]["total"] == 0
    assert diff(old, moved)["changed"] == diff(old, new)["changed"]


def test_diff_names_moves_that_are_not_species_changes(
    builds: tuple[Path, Path, dict], tmp_path: Path
) -> None:
    old, new, names = builds
    moved = tmp_path / "moved"
    shutil.copytree(new, moved)
    audio = pl.read_parquet(layout.media_manifest_path(moved, "audio"))
    one = audio.filter((pl.col("split") == "train") & (pl.col("record_id") != names["reid"]))
    one = one.sort("record_id").head(1)
    _edit(moved, "audio", one, split="test")
    d = diff(old, moved)
    assert d["moved_split"] == {
        "total": 1, "species_changed": 0, "other": 1,
        "other_items": one.select(KEY).to_dicts(),
    }  # fmt: skip
    log = io.StringIO()
    print_diff(d, Console(file=log, width=300))
    assert "1 items moved split without a species change" in log.getvalue()


def test_cli_diff_json_and_errors(builds: tuple[Path, Path, dict], tmp_path: Path) -> None:
    old, new, _ = builds
    runner = CliRunner()
    res = runner.invoke(app, ["release", "diff", str(old), str(new), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert {"added", "removed", "changed", "moved_split"} <= set(d)
    assert d["removed"]["by_reason"]["withdrawn"] == 1
    table = runner.invoke(app, ["release", "diff", str(old), str(new)])
    assert table.exit_code == 0 and "moved split" in table.output
    # another schema version: one clear line
    other = tmp_path / "other"
    shutil.copytree(new, other)
    path = layout.media_manifest_path(other, "audio")
    pq.write_table(pq.read_table(path).drop_columns(["remarks"]), path)
    bad = runner.invoke(app, ["release", "diff", str(old), str(other)])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    assert "another schema version" in bad.output and "remarks" in bad.output
    # another pipeline (a different sample world; the same world at a later epoch is fine)
    shutil.rmtree(other)
    shutil.copytree(new, other)
    (old / "build.json").write_text(json.dumps({"world": {"size": "tiny", "seed": 0}}))
    (other / "build.json").write_text(json.dumps({"world": {"size": "tiny", "seed": 1}}))
    with pytest.raises(ReleaseError, match="different pipelines"):
        diff(old, other)
    (other / "build.json").write_text(
        json.dumps({"world": {"size": "tiny", "seed": 0, "epoch": 1}})
    )
    assert diff(old, other)["added"]["total"] == 5
    (old / "build.json").unlink()
    missing = runner.invoke(app, ["release", "diff", str(tmp_path / "nothing"), str(new)])
    assert missing.exit_code == 2 and "not a build folder" in missing.output


# ---- publish --tag, load by revision --------------------------------------------------------

LOAD_REVISIONS = r"""
import json, sys
import datasets
repo = sys.argv[1]
report = {}
for rev in sys.argv[2:]:
    ds = datasets.load_dataset(repo, "audio", revision=rev)
    report[rev] = {split: sorted(part["record_id"]) for split, part in ds.items()}
try:
    from biovita_data.loader.dataset import BioVITADataset
    from biovita_data.loader.index import resolve_folder
except ImportError:  # no torch here
    pass
else:
    for rev in sys.argv[2:]:
        loader = BioVITADataset.from_pretrained(repo, "train", revision=rev, with_image=False)
        pinned = resolve_folder(f"{repo}@{rev}")
        report[rev]["loader_train"] = len(loader)
        report[rev]["pinned_card"] = (pinned / "README.md").read_text()
print(json.dumps(report))
"""


def _rows(folder: Path) -> dict[str, list[str]]:
    out = {}
    for shard in sorted((folder / "audio").glob("*.parquet")):
        split = shard.name.split("-")[0]
        out.setdefault(split, []).extend(
            pq.read_table(shard, columns=["record_id"])["record_id"].to_pylist()
        )
    return {k: sorted(v) for k, v in out.items()}  # fmt: skip


def test_publish_tags_changelog_and_load_by_revision(tmp_path: Path) -> None:
    pytest.importorskip("olah")
    pytest.importorskip("datasets")
    out = make_build(tmp_path / "build")
    hub = tmp_path / "hub"
    remote = localhub.init_repo(hub, REPO_ID)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("HF_TOKEN", raising=False)
        first = publish(out, REPO_ID, git_remote=remote, tag="v1")
        assert first.tag == "v1" and first.previous_release is None
        v1 = _rows(first.folder)
        card = (first.folder / "README.md").read_text()
        assert "## Changelog" not in card
        assert json.loads((out / "build.json").read_text())["release"] == {
            "tag": "v1", "previous": None
        }  # fmt: skip
        assert (out / "releases" / "v1" / "manifests" / "audio.parquet").is_file()
        # the next release: one recording withdrawn, one photo relicensed
        audio = pl.read_parquet(layout.media_manifest_path(out, "audio"))
        gone = audio.filter(pl.col("split") == "train").sort("record_id").head(1)
        write_table(
            audio.join(gone, on=["source", "record_id"], how="anti").to_arrow().cast(MEDIA),
            layout.media_manifest_path(out, "audio"),
        )
        layout.removed_path(out).parent.mkdir(parents=True, exist_ok=True)
        write_table(
            gone.select(*KEY, reason=pl.lit("withdrawn"), detail=pl.lit("x"),
                        removed_at=pl.lit("2026-12-01T00:00:00+00:00")).to_arrow().cast(REMOVED),
            layout.removed_path(out),
        )  # fmt: skip
        second = publish(out, REPO_ID, git_remote=remote, tag="v2")
        assert second.tag == "v2" and second.previous_release == "v1"
        assert second.commit != first.commit
        v2 = _rows(second.folder)
        gone_id = gone["record_id"][0]
        assert {s: [r for r in ids if r != gone_id] for s, ids in v1.items()} == v2
        card = (second.folder / "README.md").read_text()
        assert "## Changelog" in card and "`v1`" in card and "withdrawn 1" in card
        build = json.loads((second.folder / "build.json").read_text())
        assert build["release"] == {"tag": "v2", "previous": "v1"}
        assert json.loads((out / "releases" / "index.json").read_text()) == {"tags": ["v1", "v2"]}
        # a tag never moves
        with pytest.raises(PublishError, match="never moves"):
            publish(
                out, REPO_ID, git_remote=remote, tag="v1", previous_release=out / "releases" / "v2"
            )
        with pytest.raises(ValueError, match="--tag"):
            publish(out, REPO_ID, git_remote=remote, tag="bad tag")
    tags = subprocess.run(
        ["git", "--git-dir", str(localhub.repo_path(hub, REPO_ID)), "tag", "--list"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert tags == ["v1", "v2"]
    env = localhub.hub_env(None, tmp_path / "hf_home", dict(os.environ))
    with localhub.serve(hub, wait_repo=REPO_ID) as url:
        proc = subprocess.run(
            [sys.executable, "-c", LOAD_REVISIONS, REPO_ID, "v1", "v2"],
            env={**env, "HF_ENDPOINT": url, "HF_DATASETS_CACHE": str(tmp_path / "ds")},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if importlib.util.find_spec("torch") is not None:  # the training loader ran too
        assert "loader_train" in report["v1"] and "pinned_card" in report["v2"]
    for rev, want in (("v1", v1), ("v2", v2)):
        assert {k: v for k, v in report[rev].items() if k in want} == want
        if "loader_train" in report[rev]:
            assert report[rev]["loader_train"] == len(want["train"])
    if "pinned_card" in report["v2"]:
        assert "## Changelog" in report["v2"]["pinned_card"]
        assert "## Changelog" not in report["v1"]["pinned_card"]


def test_hub_tag_is_created_on_the_uploaded_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    from biovita_data.publish import upload

    calls: list[tuple] = []
    tags: dict[str, str] = {}

    class Ref:
        def __init__(self, name: str, target: str) -> None:
            self.name, self.target_commit = name, target

    class FakeApi:
        def __init__(self, endpoint: str | None = None, token: str | None = None) -> None:
            pass

        def create_repo(self, repo_id: str, **kw) -> None:
            pass

        def upload_folder(self, **kw):
            return type("Info", (), {"oid": "c2", "commit_url": "https://hub/commit/c2"})()

        def list_repo_refs(self, repo_id: str, **kw):
            return type("Refs", (), {"tags": [Ref(k, v) for k, v in tags.items()],
                                     "branches": [Ref("main", "c2")]})()  # fmt: skip

        def create_tag(self, repo_id: str, **kw) -> None:
            calls.append(("create_tag", repo_id, kw["tag"], kw["revision"], kw["repo_type"]))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "README.md").write_text("x")
    upload.upload_to_hub(tmp_path / "f", REPO_ID, private=False, message="m", tag="v2")
    assert calls == [("create_tag", REPO_ID, "v2", "c2", "dataset")]
    tags["v1"] = "c1"
    with pytest.raises(PublishError, match="never moves"):
        upload.upload_to_hub(tmp_path / "f", REPO_ID, private=False, message="m", tag="v1")


def test_train_revision_option() -> None:
    pytest.importorskip("torch")
    from biovita_model.cli import app as model_app

    runner = CliRunner()
    res = runner.invoke(
        model_app,
        ["train", "--out", "/tmp/x", "--dataset", ".", "--stage", "1", "--revision", "v1"],
    )
    assert res.exit_code == 2 and "--revision needs --dataset as a Hub repo id" in res.output


# ---- Croissant -----------------------------------------------------------------------------


def test_croissant_validates_and_reads(tmp_path: Path) -> None:
    mlc = pytest.importorskip("mlcroissant")
    out = make_build(tmp_path / "build")
    gbif = layout.raw_dir(out, "gbif")
    gbif.mkdir(parents=True, exist_ok=True)
    (gbif / "citation.json").write_text(json.dumps({"downloads": [
        {"file": "d.zip", "doi": "10.15468/dl.sample", "citation": "GBIF.org (2026) GBIF "
         "Occurrence Download https://doi.org/10.15468/dl.sample"}]}))  # fmt: skip
    result = publish(out, REPO_ID, folder_only=True, tag="v2026.12")
    path = result.folder / "croissant.json"
    meta = json.loads(path.read_text())
    assert meta["conformsTo"] == "http://mlcommons.org/croissant/1.0"
    assert meta["version"] == "2026.12.0" and meta["url"].endswith("/tree/v2026.12")
    assert any("10.15468/dl.sample" in c for c in meta["citation"])
    assert [r["@id"] for r in meta["recordSet"]] == ["audio", "image", "species", "bench"]
    dataset = mlc.Dataset(jsonld=str(path))  # raises on any validation error
    species = list(dataset.records("species"))
    assert len(species) == result.rows["species"]["train"]
    assert not dataset.metadata.ctx.issues.warnings
    images = list(dataset.records("image"))
    assert len(images) == sum(result.rows["image"].values())
    assert {img["image/image"].size for img in images} == {(24, 16)}
    assert {bytes(r["species/split"]).decode() if isinstance(r["species/split"], bytes)
            else r["species/split"] for r in species} == {"train"}  # fmt: skip
