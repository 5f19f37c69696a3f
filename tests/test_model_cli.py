"""The `biovita-model` CLI end to end on a small synthetic world: pretrain-towers, train (stages
1 and 2), eval (= a per-query reference), embed, probe-traits, import-official."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")
pytest.importorskip("transformers")

from model_helpers import open_clip_folder, synthetic_world, tiny_clap  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from biovita_data.core.schemas import BENCH_MEDIA_INDEX, BENCH_TASK, BENCH_TEXT_INDEX  # noqa: E402
from biovita_data.curate.bench.csv_layout import LEVELS, TASKS  # noqa: E402
from biovita_data.loader import decode_clip, decode_image  # noqa: E402
from biovita_model.cli import app  # noqa: E402
from biovita_model.model import load_model  # noqa: E402

runner = CliRunner()
FAST = ["--epochs", "1", "--batch-size", "4", "--threads", "1", "--no-progress"]


def invoke(*args: str) -> str:
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _rows(folder: Path, config: str, split: str) -> pl.DataFrame:
    return pl.concat(
        pl.read_parquet(p) for p in sorted((folder / config).glob(f"{split}-*.parquet"))
    )


def write_bench(folder: Path, bench: Path, subset: str) -> Path:
    """A BENCH folder over the world's test (seen) or unseen items: every item a query, every
    taxon with a target group a candidate, groups = all the taxon's items (1 text)."""
    split = "test" if subset == "seen" else "unseen"
    species = _rows(folder, "species", "train")
    media = {m: _rows(folder, m, split) for m in ("audio", "image")}
    labels = sorted(set(media["audio"]["label"]) | set(media["image"]["label"]))
    sp = species.filter(pl.col("label").is_in(labels)).sort("label")
    out = bench / subset
    (out / "ids").mkdir(parents=True)
    for m, rows in media.items():
        index = pa.table(
            {
                "id": np.arange(rows.height),
                "file_path": rows[m].struct.field("path"),
                "source": rows["source"],
                "record_id": rows["record_id"],
                "species_id": rows["species_id"],
            },
            schema=BENCH_MEDIA_INDEX,
        )
        pq.write_table(index, out / "ids" / f"{m}_index.parquet")
    text = sp.select(
        pl.int_range(sp.height, dtype=pl.Int64).alias("id"),
        pl.col("scientific_name").alias("species"),
        "genus",
        "family",
        "class",
        "common_name",
        "species_id",
    )
    pq.write_table(text.to_arrow().cast(BENCH_TEXT_INDEX), out / "ids" / "text_index.parquet")
    name_of = {int(r["label"]): r for r in sp.iter_rows(named=True)}
    items = {m: [(i, name_of[int(k)]) for i, k in enumerate(media[m]["label"])] for m in media}
    items["text"] = [(i, name_of[int(k)]) for i, k in enumerate(sp["label"])]
    rows = []
    for level in LEVELS:
        key = "scientific_name" if level == "species" else level
        for task in TASKS:
            groups: dict[str, list[int]] = {}
            for i, r in items[task.target]:
                if task.target != "text" or r[key] not in groups:
                    groups.setdefault(r[key], []).append(i)
            taxa = sorted(groups)
            for i, r in items[task.query]:
                if r[key] in groups:
                    rows.append(
                        {
                            "task": task.code,
                            "taxon_level": level,
                            "query_payload_id": i,
                            "candidates_taxa": taxa,
                            "candidates_target_ids": [groups[t] for t in taxa],
                            "correct_taxon": r[key],
                            "taxon_class": r["class"],
                        }
                    )
    pq.write_table(pa.Table.from_pylist(rows, schema=BENCH_TASK), out / "tasks.parquet")
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    world = synthetic_world(root / "hf")
    for subset in ("seen", "unseen"):
        write_bench(world, root / "bench", subset)
    paths = {"world": world, "bench": root / "bench"}
    for name in ("pre", "s1", "s2"):
        paths[name] = root / "runs" / name
    out = invoke("pretrain-towers", "--dataset", world, "--out", paths["pre"], *FAST)
    invoke(
        "train",
        "--dataset",
        world,
        "--stage",
        "1",
        "--init",
        paths["pre"],
        "--out",
        paths["s1"],
        *FAST,
    )
    invoke(
        "train",
        "--dataset",
        world,
        "--stage",
        "2",
        "--init",
        paths["s1"],
        "--out",
        paths["s2"],
        "--lambda-max",
        "0.5",
        *FAST,
    )
    assert "stand-in" in out or (paths["pre"] / "config.json").is_file()
    return paths


def test_help_lists_the_commands() -> None:
    out = invoke("--help")
    for cmd in ("info", "train", "pretrain-towers", "eval", "embed", "probe-traits"):
        assert cmd in out
    assert "import-official" in out
    assert "torch" in invoke("info")


def test_train_runs_and_resume(runs: dict[str, Path]) -> None:
    s2 = runs["s2"]
    cfg = json.loads((s2 / "train_config.json").read_text())
    assert cfg["stage"] == "2" and cfg["lambda_max"] == 0.5 and cfg["init"] == str(runs["s1"])
    assert (s2 / "metrics.jsonl").read_text().count("\n") >= 1
    assert (s2 / "checkpoints" / "epoch-0001.pt").is_file()
    # a session stopped after one epoch; --resume takes the stored options and continues
    run = s2.parent / "resumed"
    invoke(
        "train",
        "--dataset",
        runs["world"],
        "--stage",
        "1",
        "--init",
        runs["pre"],
        "--out",
        run,
        "--epochs",
        "2",
        "--stop-after",
        "1",
        "--batch-size",
        "4",
        "--threads",
        "1",
    )
    assert not (run / "checkpoints" / "epoch-0002.pt").exists()
    invoke("train", "--out", run, "--resume", "--no-progress")
    assert (run / "checkpoints" / "epoch-0002.pt").is_file()
    assert json.loads((run / "train_summary.json").read_text())["resumed_from"] == 1
    other = runner.invoke(app, ["train", "--out", str(run), "--resume", "--epochs", "3"])
    assert other.exit_code == 1 and "continues exactly" in other.output  # one line, no traceback
    assert "Traceback" not in other.output and len(other.output.strip().splitlines()) == 1
    bad = runner.invoke(app, ["train", "--out", str(run / "x"), "--stage", "3", "--dataset", "d"])
    assert bad.exit_code != 0


def _reference(run: Path, world: Path, bench: Path, subset: str) -> dict:
    """Straightforward per-item embeddings and per-query scoring."""
    model = load_model(run).eval()
    _, eval_tf = model.image_transforms()
    split = "test" if subset == "seen" else "unseen"
    rows = {m: _rows(world, m, split) for m in ("audio", "image")}
    emb: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for m in ("audio", "image"):
            index = pl.read_parquet(bench / "ids" / f"{m}_index.parquet").sort("id")
            vecs = []
            for rid in index["record_id"]:
                data = rows[m].filter(pl.col("record_id") == rid)[m][0]["bytes"]
                if m == "audio":
                    clip = decode_clip(data, mode="onset")
                    wave = torch.from_numpy(clip.samples)[None]
                    vecs.append(model.encode_audio(wave, torch.tensor([clip.valid]))[0])
                else:
                    vecs.append(model.encode_image(eval_tf(decode_image(data))[None])[0])
            emb[m] = torch.stack(vecs).numpy()
        text = pl.read_parquet(bench / "ids" / "text_index.parquet").sort("id")
    results = {}
    for level in LEVELS:
        with torch.no_grad():
            emb["text"] = model.encode_text(model.tokenize(text[level].to_list())).numpy()
        tasks = pl.read_parquet(bench / "tasks.parquet").filter(pl.col("taxon_level") == level)
        for task in TASKS:
            ranks, n_cand = [], 0
            for r in tasks.filter(pl.col("task") == task.code).iter_rows(named=True):
                n_cand = max(n_cand, len(r["candidates_taxa"]))
                q = emb[task.query][r["query_payload_id"]]
                scores = [
                    max(float(q @ emb[task.target][i]) for i in g)
                    for g in r["candidates_target_ids"]
                ]
                right = scores[r["candidates_taxa"].index(r["correct_taxon"])]
                ranks.append(1 + sum(s > right + 1e-6 for s in scores))
            ranks = np.array(ranks)
            results[f"{subset}/{level}/{task.code}"] = {
                f"top{k}": None if k >= n_cand else float((ranks <= k).mean()) for k in (1, 5, 10)
            }
    return results


def test_eval_writes_the_report_and_matches_a_per_query_reference(runs: dict[str, Path]) -> None:
    run, bench = runs["s2"], runs["bench"]
    out = invoke("eval", "--run", run, "--bench", bench, "--dataset", runs["world"])
    assert "A2I" in out and "seen" in out and "common names" in out
    assert "n/a" in out  # top10 with at most 6 candidates is not meaningful
    report = json.loads((run / "eval.json").read_text())
    keys = {f"{s}/{lv}/{t.code}" for s in ("seen", "unseen") for lv in LEVELS for t in TASKS}
    assert set(report["results"]) == keys
    for entry in report["results"].values():
        assert {"top1", "top5", "top10", "n_queries", "n_candidates", "n_tied"} <= set(entry)
        tops = [entry[f"top{k}"] for k in (1, 5, 10) if k < entry["n_candidates"]]
        assert all(0 <= t <= 1 for t in tops) and tops == sorted(tops)
        assert all(entry[f"top{k}"] is None for k in (5, 10) if k >= entry["n_candidates"])
    assert (run / "eval.png").read_bytes()[:4] == b"\x89PNG"
    per_class = pl.read_csv(run / "eval_per_class.csv")
    assert {"subset", "level", "task", "class", "top1"} <= set(per_class.columns)
    for subset in ("seen", "unseen"):
        ref = _reference(run, runs["world"], bench / subset, subset)
        for key, want in ref.items():
            got = report["results"][key]
            for k, v in want.items():
                assert got[k] == (v if v is None else pytest.approx(v, abs=1e-9)), key
    # one subset, other cut-offs
    invoke(
        "eval", "--run", run, "--bench", bench / "seen", "--dataset", runs["world"], "--k", "1,3"
    )
    one = json.loads((run / "eval.json").read_text())
    assert set(one["results"]) == {k for k in keys if k.startswith("seen/")}
    assert "top3" in one["results"]["seen/species/A2I"]


def test_embed_every_modality(runs: dict[str, Path], tmp_path: Path) -> None:
    def embed(modality: str) -> pl.DataFrame:
        path = tmp_path / f"{modality}.parquet"
        invoke(
            "embed", "--run", runs["s2"], "--dataset", runs["world"], "--out", path,
            "--modality", modality,
        )  # fmt: skip
        return pl.read_parquet(path)

    for modality, n in (("audio", 6 * 4 + 2 * 2), ("image", 6 * 3 + 2 * 2)):
        df = embed(modality)
        assert df.height == n and {"label", "split", "record_id", "embedding"} <= set(df.columns)
        e = np.stack(df["embedding"].to_numpy())
        assert e.shape == (n, 64) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-4)
    df = embed("text")
    assert {"template", "text", "embedding"} <= set(df.columns) and df["label"].n_unique() == 8


def test_probe_traits(runs: dict[str, Path]) -> None:
    out = invoke("probe-traits", "--run", runs["s2"], "--dataset", runs["world"], "--threads", "1")
    assert "majority" in out
    report = json.loads((runs["s2"] / "probe.json").read_text())
    assert set(report["modalities"]) == {"audio", "image"}
    audio = report["modalities"]["audio"]
    assert set(audio["categories"]) == {
        "diet",
        "activity",
        "locomotion",
        "lifestyle",
        "habitat",
        "climate",
        "social",
        "migration",
    }
    scored = [e for e in audio["traits"].values() if e is not None]
    assert scored and all(0 <= e["f1"] <= 1 and 0 <= e["baseline_f1"] <= 1 for e in scored)


def test_import_official(tmp_path: Path) -> None:
    folder = tmp_path / "bioclip"
    open_clip_folder(folder, seed=0, preprocess=False)
    clap = tiny_clap(0)
    adapter = torch.nn.Linear(64, 64, bias=False)
    weights = {"clap_audio": clap.state_dict(), "audio_adapter": adapter.state_dict()}
    torch.save(weights, tmp_path / "clap_weights.pth")
    invoke(
        "import-official",
        "--clap-weights",
        tmp_path / "clap_weights.pth",
        "--open-clip",
        folder,
        "--out",
        tmp_path / "run",
        "--audio",
        "tiny",
    )
    model = load_model(tmp_path / "run")
    assert torch.equal(model.audio_adapter.weight, adapter.weight.detach())


def test_train_tiny_chain_is_idempotent(runs: dict[str, Path], tmp_path: Path) -> None:
    from biovita_model.training.recipes import train_tiny

    small = {"epochs": 1, "batch_size": 4, "threads": 1, "workers": 0, "progress": False}
    chain = train_tiny(runs["world"], tmp_path / "runs", bench=runs["bench"], **small)
    assert set(chain.runs) == {"towers", "stage1", "stage2"} and not chain.reused
    for stage in ("stage1", "stage2"):
        assert (chain.runs[stage] / "eval.json").is_file()
        assert chain.reports[stage]["results"]["seen/species/A2I"]["n_queries"] > 0
    again = train_tiny(runs["world"], tmp_path / "runs", **small)
    assert again.reused == ["towers", "stage1", "stage2"]
    assert "train-tiny" in invoke("--help")
