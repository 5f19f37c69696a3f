"""Towers of any width: a tiny 1024-d open_clip model (BioCLIP 2.5 Huge's width) served by Hub
repo id through the local hub: Stage 1, Stage 2, eval and probes follow the tower's config."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")
pytest.importorskip("olah")

from model_helpers import synthetic_world  # noqa: E402
from test_model_cli import write_bench  # noqa: E402
from test_model_hub import RUN_CLI, _python, push_folder  # noqa: E402

from biovita_data.publish import localhub  # noqa: E402
from biovita_model.towers import read_config, register_open_clip_configs  # noqa: E402

WIDTH = 1024
FAST = ["--batch-size", "4", "--threads", "1", "--no-progress", "--max-steps", "1"]


def wide_open_clip_folder(path: Path) -> None:
    """The tiny open_clip config at embed_dim 1024, random weights, as a Hub model folder."""
    register_open_clip_configs()
    model_cfg = dict(open_clip.get_model_config(read_config("tiny")["open_clip"]["name"]))
    model_cfg["embed_dim"] = WIDTH
    path.mkdir(parents=True)
    doc = {"model_cfg": model_cfg, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    (path / "open_clip_config.json").write_text(json.dumps(doc))
    torch.manual_seed(0)
    clip = open_clip.create_model(f"local-dir:{path}", load_weights=False)
    torch.save(clip.state_dict(), path / "open_clip_pytorch_model.bin")


def test_a_1024_wide_tower_by_repo_id_trains_and_evaluates(tmp_path: Path) -> None:
    world = synthetic_world(tmp_path / "hf")
    for subset in ("seen", "unseen"):
        write_bench(world, tmp_path / "bench", subset)
    hub, runs = tmp_path / "hub", tmp_path / "runs"
    wide_open_clip_folder(tmp_path / "wide")
    push_folder(tmp_path / "wide", localhub.init_repo(hub, "test/wide-clip", "models"), "wide")
    commands = [
        ["train", "--dataset", str(world), "--stage", "1", "--out", str(runs / "s1"),
         "--towers", "hf-hub:test/wide-clip", "--audio-config", "tiny", *FAST],
        ["train", "--dataset", str(world), "--stage", "2", "--init", str(runs / "s1"),
         "--out", str(runs / "s2"), *FAST],
        ["eval", "--run", str(runs / "s2"), "--bench", str(tmp_path / "bench"),
         "--dataset", str(world), "--threads", "1"],
        ["probe-traits", "--run", str(runs / "s2"), "--dataset", str(world),
         "--modality", "audio", "--threads", "1"],
    ]  # fmt: skip
    env = localhub.hub_env(None, tmp_path / "hf_home", dict(os.environ))
    env["BIOVITA_CACHE"] = str(tmp_path / "cache")
    with localhub.serve(hub) as url:
        env = localhub.hub_env(url, tmp_path / "hf_home", env)
        _python(RUN_CLI, [json.dumps(commands)], env)
    for run in ("s1", "s2"):
        doc = json.loads((runs / run / "config.json").read_text())
        assert doc["tower_config"]["embed_dim"] == WIDTH
        state = torch.load(runs / run / "model.pt", weights_only=True)
        assert state["audio_adapter.weight"].shape[0] == WIDTH  # audio projection -> 1024
    # Stage 1's frozen text tower: prompt embeddings cached at the tower's width
    (cached,) = (tmp_path / "cache" / "prompt-embeddings").glob("*.pt")
    assert torch.load(cached, weights_only=True)["embeddings"].shape[1] == WIDTH
    report = json.loads((runs / "s2" / "eval.json").read_text())
    assert {k.split("/")[0] for k in report["results"]} == {"seen", "unseen"}
    assert report["meta"]["short_clip"] == "repeat"  # the tiny front end's rule
    probe = json.loads((runs / "s2" / "probe.json").read_text())
    assert probe["modalities"]["audio"]["traits"]
