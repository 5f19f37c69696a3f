"""publish: the HF dataset folder from a small synthetic build (real FLAC/WAV/Ogg and JPEG bytes),
loaded back with `datasets` by path and by repo id through a self-hosted hub (olah) on loopback."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import yaml
from publish_helpers import (
    DUPLICATE,
    REPO_ID,
    SEGMENTED,
    SNAPSHOT,
    TAXA,
    make_build,
)
from rich.console import Console

from biovita_data.core import layout
from biovita_data.core.schemas import MEDIA, SPECIES
from biovita_data.core.tables import write_table
from biovita_data.curate.bench import task_csv_path
from biovita_data.curate.bench.csv_layout import LEVELS, TASKS
from biovita_data.publish import CONFIGS, SPLITS, PublishError, localhub, publish
from biovita_data.publish.features import columns
from biovita_data.publish.licensing import card_license
from biovita_data.publish.upload import push_to_git, redact


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_build(tmp_path_factory.mktemp("build"))


@pytest.fixture(scope="module")
def published(build: Path) -> Path:
    """The folder, with shards of at most 20 kB (several per split)."""
    publish(build, REPO_ID, folder_only=True, max_shard_bytes=20_000)
    return layout.hf_dir(build)


def _tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _expected_records(build: Path, modality: str) -> dict[str, set[tuple[str, str]]]:
    """Manifest records per split, minus the content duplicate."""
    df = pl.read_parquet(layout.media_manifest_path(build, modality))
    out: dict[str, set[tuple[str, str]]] = {}
    for source, rid, split in df.select("source", "record_id", "split").iter_rows():
        if (source, rid) != DUPLICATE[modality]:
            out.setdefault(split, set()).add((source, rid))
    return out


def _shard_bytes(build: Path, modality: str) -> dict[str, bytes]:
    """path -> bytes of every stored file in the media shards."""
    result = {}
    for shard in sorted(layout.media_dir(build, modality).glob("shard-*.parquet")):
        for row in pq.read_table(shard, columns=["path", "bytes"]).to_pylist():
            result[row["path"]] = row["bytes"]
    return result


# ---- the folder -------------------------------------------------------------------------------


def test_folder_layout_card_and_schema(published: Path) -> None:
    card = (published / "README.md").read_text()
    assert card.startswith("---\n")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert [c["config_name"] for c in meta["configs"]] == list(CONFIGS)
    assert meta["configs"][0]["default"] is True
    for entry in meta["configs"]:
        splits = [d["split"] for d in entry["data_files"]]
        assert splits == list(SPLITS[entry["config_name"]])
        for d in entry["data_files"]:
            assert d["path"] == f"{entry['config_name']}/{d['split']}-*.parquet"
    assert meta["license"] == "cc-by-nc-sa-4.0"  # covers cc0, cc-by, cc-by-nc and itself
    assert meta["size_categories"] == ["n<1K"] and "audio-classification" in meta["task_categories"]
    for needle in (
        "## Licences",
        "assets/per_class.png",
        "assets/long_tail.png",
        "trait_migration_partial_migrant",
        "BioVITA-Bench",
        SNAPSHOT,
        "biovita 0.0-test",
        "@inproceedings{shinoda2026biovita",
        "@misc{",
        f'load_dataset("{REPO_ID}", "audio"',
    ):
        assert needle in card, needle
    for png in ("per_class.png", "long_tail.png"):
        assert (published / "assets" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (published / "bench_ids" / "seen" / "audio_index.csv").exists()
    assert json.loads((published / "build.json").read_text())["snapshot"] == SNAPSHOT

    train = sorted((published / "audio").glob("train-*.parquet"))
    assert len(train) > 1
    assert [p.name for p in train] == [
        f"train-{i:05d}-of-{len(train):05d}.parquet" for i in range(len(train))
    ]
    schema = pq.read_schema(train[0])
    assert schema.names == [c for c, _ in columns("audio")]
    features = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
    assert features["audio"] == {"_type": "Audio"}
    assert features["label"]["names"] == [t[1] for t in sorted(TAXA)]
    assert features["segment"] == {"dtype": "int32", "_type": "Value"}
    assert not list(published.rglob("*.part"))


def test_published_rows_carry_where_and_how(build: Path, published: Path, tmp_path: Path) -> None:
    """Obscured coordinates, accuracy, background species and method reach both media modes."""
    copy = tmp_path / "copy"
    shutil.copytree(build, copy, ignore=shutil.ignore_patterns("hf", "media"))
    publish(copy, REPO_ID, media="urls", folder_only=True)
    manifest = pl.read_parquet(layout.media_manifest_path(build, "audio"))
    for folder in (published, layout.hf_dir(copy)):
        rows = pl.read_parquet(sorted((folder / "audio").glob("*.parquet")), columns=None)
        rows = rows.drop("audio") if "audio" in rows.columns else rows
        assert {"coordinates_obscured", "background_species", "recording_method"} <= set(
            rows.columns
        )
        joined = rows.unique("record_id").join(manifest, on="record_id", suffix="_m")
        assert len(joined) > 0
        for r in joined.iter_rows(named=True):
            assert r["coordinates_obscured"] == r["coordinates_obscured_m"]
            assert r["positional_accuracy"] == r["positional_accuracy_m"]
            expected = "; ".join(r["background_species_m"]) if r["background_species_m"] else None
            assert r["background_species"] == expected
        assert set(joined["background_species"].drop_nulls()) == {"Aa bb; Cc dd"}
        assert set(joined["coordinates_obscured"].drop_nulls()) == {True, False}


def test_publish_is_deterministic(build: Path, published: Path, tmp_path: Path) -> None:
    first = _tree(published)
    copy = tmp_path / "copy"
    shutil.copytree(build, copy, ignore=shutil.ignore_patterns("hf"))
    publish(copy, REPO_ID, folder_only=True, max_shard_bytes=20_000)
    assert _tree(layout.hf_dir(copy)) == first


def test_urls_mode_has_no_media(build: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(build, copy, ignore=shutil.ignore_patterns("hf", "media"))
    result = publish(copy, REPO_ID, media="urls", folder_only=True)
    for modality in ("audio", "image"):
        manifest = pl.read_parquet(layout.media_manifest_path(copy, modality))
        for split in SPLITS[modality]:
            assert result.rows[modality][split] == manifest.filter(pl.col("split") == split).height
            schema = pq.read_schema(layout.hf_dir(copy) / result.files[modality][split][0])
            assert modality not in schema.names and "media_url" in schema.names
            assert "license" in schema.names and "attribution" in schema.names


def test_empty_split_is_left_out(build: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    copy = tmp_path / "copy"
    shutil.copytree(build, copy, ignore=shutil.ignore_patterns("hf"))
    path = layout.media_manifest_path(copy, "audio")
    manifest = pl.read_parquet(path).with_columns(pl.col("split").replace("unseen", "test"))
    write_table(manifest.to_arrow().cast(MEDIA), path)
    result = publish(copy, REPO_ID, folder_only=True)
    assert result.rows["audio"]["unseen"] == 0 and result.files["audio"]["unseen"] == []
    hf = layout.hf_dir(copy)
    assert not list((hf / "audio").glob("unseen-*"))
    card = (hf / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    audio = next(c for c in meta["configs"] if c["config_name"] == "audio")
    assert [d["split"] for d in audio["data_files"]] == ["train", "test"]
    assert "not declared: `audio/unseen`" in card
    ds = datasets.load_dataset(str(hf), "audio", cache_dir=str(tmp_path / "cache"))
    assert {k: v.num_rows for k, v in ds.items()} == {"train": 8, "test": 8}


def test_card_license_rules() -> None:
    assert card_license(["cc0-1.0", "cc-by-4.0"]) == "cc-by-4.0"
    assert card_license(["cc0-1.0", "cc-by-4.0", "cc-by-nc-4.0"]) == "cc-by-nc-4.0"
    assert card_license(["cc-by-sa-4.0", "cc-by-nc-4.0"]) == "other"
    assert card_license(["cc-by-4.0", "cc-by-3.0"]) == "other"
    assert card_license(["cc-by-4.0", None]) == "other"
    assert card_license(["cc-by-nc-sa-4.0"]) == "cc-by-nc-sa-4.0"


# ---- load_dataset by path ---------------------------------------------------------------------


def _audio_decoder(datasets) -> bool:
    """Whether this `datasets` can decode Audio here (>= 4: torchcodec; 3.x: librosa)."""
    major = int(datasets.__version__.split(".")[0])
    return importlib.util.find_spec("torchcodec" if major >= 4 else "librosa") is not None


def test_load_by_path_decodes_everything(build: Path, published: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    names = [t[1] for t in sorted(TAXA)]
    cache = str(tmp_path / "cache")
    for modality in ("audio", "image"):
        stored = _shard_bytes(build, modality)
        expected = _expected_records(build, modality)
        ds = datasets.load_dataset(str(published), modality, cache_dir=cache)
        assert set(ds) == set(SPLITS[modality])
        assert ds["train"].features["label"].names == names
        for split in SPLITS[modality]:
            part = ds[split]
            assert {(r["source"], r["record_id"]) for r in part.remove_columns(modality)} == (
                expected.get(split, set())
            )
            decode = modality == "image" or _audio_decoder(datasets)
            for row in part if decode else part.remove_columns(modality):
                label = row["label"]
                assert names[label] == row["scientific_name"]
                if modality == "image":
                    assert row["image"].size == (24, 16)
                elif decode:
                    samples = row["audio"].get_all_samples()  # datasets >= 4: torchcodec (FFmpeg)
                    assert samples.sample_rate == row["sample_rate"] and samples.data.shape[0] == 1
            raw = part.cast_column(
                modality,
                datasets.Audio(decode=False)
                if modality == "audio"
                else datasets.Image(decode=False),
            )
            for row in raw:
                media = row[modality]
                assert media["bytes"] == stored[media["path"]]
                assert hashlib.sha256(media["bytes"]).hexdigest() == row["sha256"]
                if modality == "audio":  # and libsndfile reads every stored file as it is
                    info = sf.info(io.BytesIO(media["bytes"]))
                    assert info.samplerate == row["sample_rate"] and info.channels == 1
    audio = datasets.load_dataset(str(published), "audio", split="train", cache_dir=cache)
    seg = audio.filter(lambda r: (r["source"], r["record_id"]) == SEGMENTED)
    assert sorted(seg["segment"]) == [0, 1] and set(seg["n_segments"]) == {2}

    species = datasets.load_dataset(str(published), "species", split="train", cache_dir=cache)
    assert species.column_names == ["label", *SPECIES.names]
    assert species["species_id"] == sorted(t[0] for t in TAXA)
    assert species["label"] == list(range(len(TAXA)))
    assert species.features["trait_diet_fruit"].dtype == "int8"

    bench = datasets.load_dataset(str(published), "bench", cache_dir=cache)
    assert set(bench) == {"test", "unseen"}
    for split, subset in (("test", "seen"), ("unseen", "unseen")):
        rows = bench[split]
        csv_rows = pl.concat(
            pl.read_csv(
                task_csv_path(layout.bench_dir(build, subset), level, task), infer_schema=False
            )
            for level in LEVELS
            for task in TASKS
        )
        assert rows.num_rows == csv_rows.height > 0
        assert rows["candidates_taxa"] == csv_rows["candidates_taxa"].to_list()
        assert rows["candidates_target_ids"] == csv_rows["candidates_target_ids"].to_list()
        assert isinstance(json.loads(rows[0]["candidates_target_ids"])[0], list)


def test_skipped_counts(build: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(build, copy, ignore=shutil.ignore_patterns("hf"))
    result = publish(copy, REPO_ID, folder_only=True)
    assert result.skipped["audio"]["not_kept"] == 1
    assert result.skipped["audio"]["not_in_manifest"] == 1
    assert result.skipped["image"]["not_kept"] == 1
    assert result.rows["species"] == {"train": len(TAXA)}
    assert all(len(files) == 1 for files in result.files["audio"].values())


# ---- upload -----------------------------------------------------------------------------------


def test_hub_upload_uses_token_and_endpoint(
    build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    build_copy = tmp_path / "build"
    shutil.copytree(build, build_copy, ignore=shutil.ignore_patterns("hf"))
    build = build_copy

    calls: list[tuple[str, dict]] = []

    class FakeApi:
        def __init__(self, endpoint: str | None = None, token: str | None = None) -> None:
            calls.append(("init", {"endpoint": endpoint, "token": token}))

        def create_repo(self, repo_id: str, **kw) -> None:
            calls.append(("create_repo", {"repo_id": repo_id, **kw}))

        def upload_folder(self, **kw) -> str:
            calls.append(("upload_folder", kw))
            return "https://hub.example/commit/1"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(PublishError, match="HF_TOKEN is not set"):
        publish(build, REPO_ID)
    secret = "hf_secret_token_value"
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    log = io.StringIO()
    result = publish(build, REPO_ID, private=True, console=Console(file=log, width=200))
    assert calls[0] == ("init", {"endpoint": "http://127.0.0.1:9", "token": secret})
    assert calls[1] == (
        "create_repo",
        {"repo_id": REPO_ID, "repo_type": "dataset", "private": True, "exist_ok": True},
    )
    upload = calls[2][1]
    assert upload["repo_id"] == REPO_ID and upload["repo_type"] == "dataset"
    assert Path(upload["folder_path"]) == layout.hf_dir(build)
    assert upload["delete_patterns"] == ["*"]
    assert result.target == "https://hub.example/commit/1"
    assert secret not in log.getvalue() and "uploaded to" in log.getvalue()


def test_large_folder_uploads_resumably_and_deletes_stale_files(
    published: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large folder goes through upload_large_folder (where huggingface_hub has it), then one
    commit deletes the remote files it lacks; without it, upload_folder (itself multi-commit and
    resumable from huggingface_hub 2 on)."""
    import huggingface_hub

    from biovita_data.publish import upload

    calls: list[tuple[str, object]] = []

    class LargeApi:
        def __init__(self, endpoint: str | None = None, token: str | None = None) -> None:
            pass

        def create_repo(self, repo_id: str, **kw) -> None:
            calls.append(("create_repo", repo_id))

        def upload_large_folder(self, **kw) -> None:
            calls.append(("upload_large_folder", kw))

        def list_repo_files(self, repo_id: str, **kw) -> list[str]:
            return ["README.md", "audio/train-00000-of-00009.parquet", "old.txt"]

        def create_commit(self, repo_id: str, *, operations, **kw) -> None:
            calls.append(("delete", sorted(op.path_in_repo for op in operations)))

    monkeypatch.setenv("HF_TOKEN", "hf_x")
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setattr(huggingface_hub, "HfApi", LargeApi)
    (published / ".cache" / "huggingface").mkdir(parents=True, exist_ok=True)
    (published / ".cache" / "huggingface" / "state").write_text("resume state")
    url = upload.upload_to_hub(published, REPO_ID, private=False, message="m", large=True)
    assert url == f"https://huggingface.co/datasets/{REPO_ID}"
    assert calls[1][0] == "upload_large_folder"
    assert calls[1][1] == {
        "repo_id": REPO_ID, "folder_path": str(published), "repo_type": "dataset", "private": False
    }  # fmt: skip
    assert calls[2] == ("delete", ["audio/train-00000-of-00009.parquet", "old.txt"])
    assert not any(f.startswith(".cache") for f in upload.folder_files(published))
    assert ".gitattributes" in upload.folder_files(published)
    assert not upload.is_large(published)  # the tiny world: upload_folder by default
    shutil.rmtree(published / ".cache")


def test_git_push_is_idempotent_and_redacts(published: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    first = push_to_git(published, f"file://{remote}", message="m", date=SNAPSHOT)
    again = push_to_git(published, f"file://{remote}", message="m", date=SNAPSHOT)
    assert first == again  # same tree: nothing new to push
    ls = ["git", "--git-dir", str(remote), "ls-tree", "-r", "--name-only", "main"]
    listed = subprocess.run(ls, capture_output=True, text=True, check=True).stdout.split()
    assert sorted(listed) == sorted(_tree(published))
    assert redact("https://user:pw@host/x.git") == "https://***@host/x.git"
    with pytest.raises(PublishError) as err:
        push_to_git(published, "https://user:pw@127.0.0.1:9/x.git", message="m")
    assert "pw" not in str(err.value)


# ---- load_dataset by repo id through a self-hosted hub ----------------------------------------

LOAD_SCRIPT = r"""
import hashlib, json, sys
import datasets
repo = sys.argv[1]
report = {"version": datasets.__version__}
for config in ("audio", "image", "species", "bench"):
    ds = datasets.load_dataset(repo, config)
    report[config] = {}
    for split, part in ds.items():
        entry = {"rows": part.num_rows, "columns": part.column_names,
                 "features": {k: type(v).__name__ for k, v in part.features.items()}}
        if "label" in part.features:
            entry["names"] = part.features["label"].names
        if config in ("audio", "image") and config in part.column_names:
            raw = part.cast_column(config, getattr(datasets, config.title())(decode=False))
            entry["sha256"] = [hashlib.sha256(r[config]["bytes"]).hexdigest() for r in raw]
            decoded = 0
            try:
                for row in part:
                    media = row[config]
                    if config == "image":
                        media.load()
                    elif hasattr(media, "get_all_samples"):  # datasets >= 4 (torchcodec)
                        media.get_all_samples()
                    else:  # datasets 3.x (soundfile + librosa)
                        assert len(media["array"]) > 0 and media["sampling_rate"] > 0
                    decoded += 1
            except ImportError:  # no audio decoder for this datasets: libsndfile on the bytes
                import io, soundfile
                decoded = sum(soundfile.info(io.BytesIO(r[config]["bytes"])).frames > 0
                              for r in raw)
                entry["decoder"] = "soundfile"
            entry["decoded"] = decoded
        if config == "bench":
            entry["first"] = part[0] if part.num_rows else None
        report[config][split] = entry
if len(sys.argv) > 2 and sys.argv[2] == "stream":  # every config, every split, streamed
    report["streamed"] = {}
    for config in ("audio", "image", "species", "bench"):
        report["streamed"][config] = {}
        for split, part in datasets.load_dataset(repo, config, streaming=True).items():
            if config in ("audio", "image"):
                part = part.cast_column(config, getattr(datasets, config.title())(decode=False))
                got = [hashlib.sha256(r[config]["bytes"]).hexdigest() for r in part]
            else:
                got = sum(1 for _ in part)
            report["streamed"][config][split] = got
print(json.dumps(report))
"""


def _expected_report(folder: Path) -> dict:
    """What the load script must find, read straight from the folder's Parquet files."""
    report: dict = {}
    for config in CONFIGS:
        report[config] = {}
        for split in SPLITS[config]:
            files = sorted((folder / config).glob(f"{split}-*.parquet"))
            table = pa.concat_tables([pq.read_table(f) for f in files])
            entry: dict = {"rows": table.num_rows, "columns": table.column_names}
            if config in ("audio", "image"):
                col = table.column(config).combine_chunks().field("bytes").to_pylist()
                entry["sha256"] = [hashlib.sha256(b).hexdigest() for b in col]
                entry["decoded"] = table.num_rows
            if config == "bench" and table.num_rows:
                entry["first"] = table.slice(0, 1).to_pylist()[0]
            report[config][split] = entry
    return report


def _run_load(python: str, repo: str, env: dict[str, str], *extra: str) -> dict:
    proc = subprocess.run(
        [python, "-c", LOAD_SCRIPT, repo, *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check_report(report: dict, expected: dict) -> None:
    names = [t[1] for t in sorted(TAXA)]
    for config in CONFIGS:
        assert set(report[config]) == set(expected[config]), config
        for split, want in expected[config].items():
            got = report[config][split]
            for key, value in want.items():
                assert got[key] == value, (config, split, key)
            if config != "bench":
                assert got["names"] == names
                assert got["features"]["label"] == "ClassLabel"
            if config in ("audio", "image"):
                assert got["features"][config] == config.title()


@pytest.fixture
def hub_env(tmp_path: Path) -> dict[str, str]:
    env = localhub.hub_env(None, tmp_path / "hf_home", dict(os.environ))
    return {**env, "HF_DATASETS_CACHE": str(tmp_path / "ds_cache")}


def test_load_by_repo_id_through_olah(build: Path, tmp_path: Path, hub_env: dict) -> None:
    """publish(git_remote=...) into a bare repo (Parquet through git-LFS) where olah serves local
    mirrors behind the range proxy; load_dataset("ns/name", config) and every config streamed,
    with HF_ENDPOINT pointing at the hub; a ranged read answers 206 with the right bytes."""
    pytest.importorskip("olah")
    hub = tmp_path / "hub"
    remote = localhub.init_repo(hub, REPO_ID)
    copy = tmp_path / "build"
    shutil.copytree(build, copy, ignore=shutil.ignore_patterns("hf"))
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("HF_TOKEN", raising=False)  # a git remote needs no Hub token
        result = publish(copy, REPO_ID, git_remote=remote, max_shard_bytes=20_000)
    assert result.commit and result.target == remote
    published = layout.hf_dir(copy)
    bare = localhub.repo_path(hub, REPO_ID)
    lfs = subprocess.run(
        ["git", "lfs", "ls-files", "--name-only", "main"],
        cwd=bare,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    shards = sorted(str(p.relative_to(published)) for p in published.rglob("*.parquet"))
    assert shards and sorted(f for f in lfs if f.endswith(".parquet")) == shards
    assert len(list((bare / "lfs" / "objects").rglob("*"))) > len(shards)  # the objects too
    with localhub.serve(hub, wait_repo=REPO_ID) as url:
        shard = next(s for s in shards if s.startswith("audio/"))
        data = (published / shard).read_bytes()
        for ask, want in (("bytes=100-299", data[100:300]), ("bytes=-8", data[-8:])):
            request = urllib.request.Request(
                f"{url}/datasets/{REPO_ID}/resolve/main/{shard}", headers={"Range": ask}
            )
            with urllib.request.urlopen(request) as resp:
                assert resp.status == 206 and resp.read() == want
                assert resp.headers["Content-Range"].endswith(f"/{len(data)}")
        assert want.endswith(b"PAR1")
        report = _run_load(sys.executable, REPO_ID, {**hub_env, "HF_ENDPOINT": url}, "stream")
    expected = _expected_report(published)
    _check_report(report, expected)
    for config, splits in expected.items():
        for split, entry in splits.items():
            got = report["streamed"][config][split]
            assert got == entry.get("sha256", entry["rows"]), (config, split)


@pytest.mark.skipif(
    not os.environ.get("BIOVITA_DATASETS_COMPAT_PYTHON"),
    reason="set BIOVITA_DATASETS_COMPAT_PYTHON to a python with another datasets version",
)
def test_load_by_path_with_other_datasets_version(published: Path, hub_env: dict) -> None:
    """The same folder read by another `datasets` (e.g. 3.6 in a venv), offline, by path."""
    python = os.environ["BIOVITA_DATASETS_COMPAT_PYTHON"]
    report = _run_load(python, str(published), {**hub_env, "HF_HUB_OFFLINE": "1"})
    _check_report(report, _expected_report(published))


def test_long_tail_plot_of_a_corpus_without_records_warns_nothing(tmp_path: Path) -> None:
    """A card's long-tail figure for species that have no stored record yet: drawn without a
    legend (matplotlib warns of a legend with no line), a PNG all the same."""
    import warnings

    from biovita_data.publish.plots import plot_long_tail

    counts = pl.DataFrame({"species_id": [1, 2], "audio": [0, 0], "image": [0, 0]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = plot_long_tail(counts, tmp_path / "tail.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
