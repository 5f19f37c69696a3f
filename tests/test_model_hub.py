"""Towers by Hub repo id: tiny open_clip and CLAP model repos served by the local hub (olah, on
loopback), trained from by repo id (with a revision pin), imported by repo id, then rebuilt offline
from the huggingface_hub cache alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")
pytest.importorskip("transformers")
pytest.importorskip("olah")

from model_helpers import open_clip_folder, synthetic_world, tiny_clap  # noqa: E402

from biovita_data.publish import localhub  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GIT_ENV = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@127.0.0.1",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@127.0.0.1",
}
FAST = ["--batch-size", "4", "--threads", "1", "--no-progress", "--max-steps", "1"]
RUN_CLI = """
import json, sys
from biovita_model.cli import app
for args in json.loads(sys.argv[1]):
    app(args, standalone_mode=False)
"""
CHECK = """
import json, sys, torch
from biovita_model.model import load_model
pixels, tokens_text, want = torch.load(sys.argv[1])
out = {}
for run in sys.argv[2:]:
    m = load_model(run).eval()
    with torch.no_grad():
        out[run] = (m.encode_image(pixels) - want).abs().max().item()
print(json.dumps(out))
"""


def push_folder(folder: Path, remote: str, message: str) -> str:
    """Commit every file of `folder` (a git work tree made here) and push it to `remote` main;
    the commit's sha."""
    env = {**os.environ, **GIT_ENV}
    git = ["git", "-C", str(folder)]
    if not (folder / ".git").is_dir():
        subprocess.run([*git, "init", "-q", "-b", "main"], check=True, env=env)
    subprocess.run([*git, "add", "-A"], check=True, env=env)
    subprocess.run([*git, "commit", "-q", "-m", message], check=True, env=env)
    subprocess.run([*git, "push", "-q", remote, "main"], check=True, env=env)
    sha = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    return sha.stdout.strip()


def _python(code: str, args: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_train_and_import_by_repo_id(tmp_path: Path) -> None:
    world = synthetic_world(tmp_path / "hf")
    hub = tmp_path / "hub"
    # model repos: an open_clip folder (two commits: main moves on), a CLAP folder, a release
    bioclip = tmp_path / "bioclip"
    clip = open_clip_folder(bioclip, seed=1)
    remote = localhub.init_repo(hub, "test/tiny-bioclip", "models")
    first = push_folder(bioclip, remote, "seed 1")
    open_clip_folder(bioclip, seed=2)
    second = push_folder(bioclip, remote, "seed 2")
    clap = tiny_clap(3)
    clap.save_pretrained(tmp_path / "clap")
    clap_commit = push_folder(
        tmp_path / "clap", localhub.init_repo(hub, "test/tiny-clap", "models"), "clap"
    )
    (tmp_path / "release").mkdir()
    adapter = torch.nn.Linear(64, 64, bias=False)
    weights = {"clap_audio": clap.state_dict(), "audio_adapter": adapter.state_dict()}
    torch.save(weights, tmp_path / "release" / "clap_weights.pth")
    release = push_folder(
        tmp_path / "release", localhub.init_repo(hub, "test/tiny-release", "models"), "release"
    )
    runs = tmp_path / "runs"
    home = tmp_path / "hf_home"
    commands = [
        ["train", "--dataset", str(world), "--stage", "1", "--out", str(runs / "s1"),
         "--towers", f"hf-hub:test/tiny-bioclip@{first}", "--audio-tower", "test/tiny-clap",
         "--audio-config", "tiny", *FAST],
        ["import-official", "--clap-weights", "hf-hub:test/tiny-release",
         "--open-clip", "hf-hub:test/tiny-bioclip", "--audio", "tiny",
         "--out", str(runs / "imported")],
    ]  # fmt: skip
    with localhub.serve(hub) as url:
        _python(RUN_CLI, [json.dumps(commands)], localhub.hub_env(url, home, dict(os.environ)))
    # the run's config records repo ids and resolved commits, and references the frozen towers
    doc = json.loads((runs / "s1" / "config.json").read_text())
    origin = doc["tower_config"]["origin"]
    assert origin["open_clip"] == {
        "repo_id": "test/tiny-bioclip",
        "revision": first,
        "commit": first,
        "filename": "open_clip_pytorch_model.bin",
    }
    assert origin["audio"]["repo_id"] == "test/tiny-clap"
    assert origin["audio"]["commit"] == clap_commit
    assert origin["audio"]["filename"] == "model.safetensors"
    assert doc["references"]["image"] == origin["open_clip"]
    assert set(doc["references"]) == {"image", "text"}  # the audio tower trained: stored
    state = torch.load(runs / "s1" / "model.pt", weights_only=True)
    assert not any(k.startswith("clip.") for k in state)
    train_cfg = json.loads((runs / "s1" / "train_config.json").read_text())
    assert train_cfg["towers"] == f"hf-hub:test/tiny-bioclip@{first}"
    imported = json.loads((runs / "imported" / "config.json").read_text())
    assert imported["tower_config"]["origin"]["open_clip"]["commit"] == second  # main moved on
    assert imported["tower_config"]["origin"]["clap_weights"]["commit"] == release
    # offline, from the cache alone: Stage 2 from the Stage 1 run, and every run rebuilds
    offline = localhub.hub_env(None, home, dict(os.environ)) | {"HF_HUB_OFFLINE": "1"}
    stage2 = [["train", "--dataset", str(world), "--stage", "2", "--init", str(runs / "s1"),
               "--out", str(runs / "s2"), *FAST]]  # fmt: skip
    _python(RUN_CLI, [json.dumps(stage2)], offline)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = clip.encode_image(pixels, normalize=True)
    torch.save((pixels, None, want), tmp_path / "want.pt")
    names = [str(runs / n) for n in ("s1", "s2")]
    diffs = json.loads(
        _python(CHECK, [str(tmp_path / "want.pt"), *names], offline).splitlines()[-1]
    )
    assert all(d < 1e-5 for d in diffs.values()), diffs  # the pinned commit's image tower
